"""detectron2's ResNet as the parser backbone (``build_qanet_resnet_backbone``)."""
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY
from detectron2.modeling.backbone.resnet import build_resnet_backbone

__all__ = ["build_qanet_resnet_backbone"]


@BACKBONE_REGISTRY.register()
def build_qanet_resnet_backbone(cfg, input_shape: ShapeSpec):
    """detectron2's ResNet as the parser backbone, built on a copy of the config whose
    ``MODEL.RESNETS`` depth, norm, stride placement, outputs and freezing come from ``MODEL.QANET.BACKBONE``
    (the other ``MODEL.RESNETS`` keys are shared with the detector)."""
    pb = cfg.MODEL.QANET.BACKBONE
    sub = cfg.clone()
    sub.defrost()
    depth = int(pb.RESNET_DEPTH)
    sub.MODEL.RESNETS.DEPTH = depth
    sub.MODEL.RESNETS.NORM = pb.NORM
    sub.MODEL.RESNETS.STRIDE_IN_1X1 = bool(pb.STRIDE_IN_1X1)
    sub.MODEL.RESNETS.OUT_FEATURES = list(pb.OUT_FEATURES)
    sub.MODEL.BACKBONE.FREEZE_AT = int(pb.FREEZE_AT)
    sub.MODEL.RESNETS.RES2_OUT_CHANNELS = 64 if depth in (18, 34) else 256
    if depth in (18, 34):
        sub.MODEL.RESNETS.RES5_DILATION = 1
        sub.MODEL.RESNETS.DEFORM_ON_PER_STAGE = [False] * 4
    return build_resnet_backbone(sub, input_shape)
