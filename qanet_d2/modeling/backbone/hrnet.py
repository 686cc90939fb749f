"""timm's HRNet (raw branch outputs at strides 4/8/16/32) as a detectron2 ``Backbone`` for
the parser, registered in ``BACKBONE_REGISTRY`` as ``build_timm_hrnet_backbone``."""
from __future__ import annotations

import logging
from typing import Dict

import torch
from torch import nn

from detectron2.layers import FrozenBatchNorm2d, ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone

__all__ = ["TimmHRNetBackbone", "build_timm_hrnet_backbone"]

logger = logging.getLogger(__name__)

_HRNET_STRIDES = (4, 8, 16, 32)


def _convert_norm(module: nn.Module, norm: str) -> nn.Module:
    if norm in ("", "BN"):
        return module
    if norm == "FrozenBN":
        return FrozenBatchNorm2d.convert_frozen_batchnorm(module)
    if norm == "SyncBN":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    raise ValueError(f"MODEL.QANET.HRNET.NORM must be one of BN, FrozenBN, SyncBN; got {norm!r}")


class TimmHRNetBackbone(Backbone):
    """timm HRNet (``features_only=True, feature_location=''``): the raw outputs of the four branches
    at strides 4/8/16/32, as in QANet (not timm's "incre" features); ``body`` has timm's key names
    without the classification head."""

    def __init__(
        self,
        name: str = "hrnet_w48",
        out_features=("hr4", "hr8", "hr16", "hr32"),
        norm: str = "BN",
        freeze_at: int = 0,
    ):
        super().__init__()
        import timm

        if len(out_features) != 4:
            raise ValueError(f"an HRNet parser backbone has 4 outputs (strides 4..32); got OUT_FEATURES {out_features}")
        # random initialisation (ImageNet weights: qanet_d2.engine.imagenet, when training starts)
        body = timm.create_model(name, features_only=True, feature_location="")
        reductions = body.feature_info.reduction()
        channels = body.feature_info.channels()
        self._indices = [reductions.index(s) for s in _HRNET_STRIDES]
        self.body = _convert_norm(body, norm)
        self.name = name
        self._out_features = list(out_features)
        self._out_feature_strides = {f: s for f, s in zip(out_features, _HRNET_STRIDES)}
        self._out_feature_channels = {f: channels[i] for f, i in zip(out_features, self._indices)}
        if freeze_at > 0:
            # freeze_at >= 1: the stem (two stride-2 convs); >= 2: also the first stage.
            frozen = ["conv1", "bn1", "conv2", "bn2"] + (["layer1"] if freeze_at >= 2 else [])
            for mod_name in frozen:
                module = getattr(self.body, mod_name)
                for p in module.parameters():
                    p.requires_grad_(False)
                FrozenBatchNorm2d.convert_frozen_batchnorm(module)

    @property
    def size_divisibility(self) -> int:
        return 32

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        feats = self.body(x)
        return {name: feats[i] for name, i in zip(self._out_features, self._indices)}


@BACKBONE_REGISTRY.register()
def build_timm_hrnet_backbone(cfg, input_shape: ShapeSpec):
    """timm HRNet from ``MODEL.QANET.HRNET`` and ``MODEL.QANET.BACKBONE``."""
    hr = cfg.MODEL.QANET.HRNET
    return TimmHRNetBackbone(
        name=hr.NAME,
        out_features=tuple(cfg.MODEL.QANET.BACKBONE.OUT_FEATURES),
        norm=hr.NORM,
        freeze_at=cfg.MODEL.QANET.BACKBONE.FREEZE_AT,
    )
