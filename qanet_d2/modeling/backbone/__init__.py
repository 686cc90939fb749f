"""Parser backbones, registered in detectron2's ``BACKBONE_REGISTRY``: four feature maps at strides
4 to 32 named by ``MODEL.QANET.BACKBONE.OUT_FEATURES``, built from the parser's own keys.
"""
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone

from .hrnet import TimmHRNetBackbone, build_timm_hrnet_backbone
from .resnet import build_qanet_resnet_backbone

__all__ = ["TimmHRNetBackbone", "build_timm_hrnet_backbone", "build_qanet_resnet_backbone", "build_parser_backbone"]


def build_parser_backbone(cfg) -> Backbone:
    """The parser backbone named by ``MODEL.QANET.BACKBONE.NAME`` (3-channel RGB input)."""
    backbone = BACKBONE_REGISTRY.get(cfg.MODEL.QANET.BACKBONE.NAME)(cfg, ShapeSpec(channels=3))
    if not isinstance(backbone, Backbone):
        raise TypeError(f"{cfg.MODEL.QANET.BACKBONE.NAME} returned {type(backbone).__name__}, not a detectron2 Backbone")
    return backbone
