"""The face detector: detectron2's FCOS built from the yacs config.

detectron2 v0.6 ships FCOS as a LazyConfig-only model (no ``from_config``, not in
``META_ARCH_REGISTRY``); :func:`build_fcos_detector` is the small yacs builder that mirrors
``detectron2/model_zoo/configs/common/models/fcos.py``. The backbone is any registered one
(``MODEL.BACKBONE.NAME``); :func:`build_fcos_resnet_fpn_backbone` is the report's setting:
ResNet-FPN with P6/P7 computed from P5 (FCOS v2, Sec. 2.2 of arXiv:2006.09214).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, build_backbone
from detectron2.modeling.backbone.fpn import FPN, LastLevelP6P7
from detectron2.modeling.backbone.resnet import BasicBlock, BasicStem, ResNet, build_resnet_backbone
from detectron2.modeling.meta_arch.fcos import FCOSHead

from ... import compat
from .build import register_face_detector

__all__ = [
    "build_fcos_resnet_fpn_backbone", "build_basic_resnet", "build_fcos_detector", "checkpointable_fcos", "group_norm",
]


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with at most 32 groups of at least 4 channels (32 for 256 channels, as in FCOS;
    fewer for narrow heads). A callable for the FCOS head: it avoids v0.6's ``get_norm("GN", 1)`` probe."""
    groups = math.gcd(32, max(1, int(channels) // 4))
    return nn.GroupNorm(groups, channels)


def build_basic_resnet(cfg, input_shape: ShapeSpec) -> ResNet:
    """ResNet-18/34 (BasicBlock) of any width: ``MODEL.RESNETS.STEM_OUT_CHANNELS`` for the stem,
    ``RES2_OUT_CHANNELS`` for res2, doubled per stage. detectron2's ``build_resnet_backbone``
    builds the same network but only at width 64; narrower ones make cheap face detectors."""
    r = cfg.MODEL.RESNETS
    if r.DEPTH not in (18, 34):
        raise ValueError(f"build_basic_resnet builds ResNet-18/34; MODEL.RESNETS.DEPTH is {r.DEPTH}")
    blocks_per_stage = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3]}[r.DEPTH]
    stem = BasicStem(in_channels=input_shape.channels, out_channels=r.STEM_OUT_CHANNELS, norm=r.NORM)
    stages, in_channels, out_channels = [], r.STEM_OUT_CHANNELS, r.RES2_OUT_CHANNELS
    for idx, num_blocks in enumerate(blocks_per_stage):
        stages.append(ResNet.make_stage(
            block_class=BasicBlock, num_blocks=num_blocks, stride_per_block=[1 if idx == 0 else 2] + [1] * (num_blocks - 1),
            in_channels=in_channels, out_channels=out_channels, norm=r.NORM,
        ))
        in_channels, out_channels = out_channels, out_channels * 2
    return ResNet(stem, stages, out_features=r.OUT_FEATURES, freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT)


@BACKBONE_REGISTRY.register()
def build_fcos_resnet_fpn_backbone(cfg, input_shape: ShapeSpec):
    """ResNet-FPN (``MODEL.RESNETS``/``MODEL.FPN``) with P6 and P7 computed from P5.
    ResNet-18/34 may be narrower than 64 channels (:func:`build_basic_resnet`)."""
    r = cfg.MODEL.RESNETS
    if r.DEPTH in (18, 34) and r.RES2_OUT_CHANNELS != 64:
        bottom_up = build_basic_resnet(cfg, input_shape)
    else:
        bottom_up = build_resnet_backbone(cfg, input_shape)
    out_channels = cfg.MODEL.FPN.OUT_CHANNELS
    return FPN(
        bottom_up=bottom_up,
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=out_channels,
        norm=cfg.MODEL.FPN.NORM,
        top_block=LastLevelP6P7(out_channels, out_channels, in_feature="p5"),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )


def checkpointable_fcos(fcos_class):
    """``fcos_class`` with its losses in float32 under autocast and its loss-normaliser EMA in a
    buffer: detectron2 keeps that EMA (of the positive anchors) as a plain attribute, which
    checkpoints do not save, so a resumed run would train differently from an uninterrupted one."""

    class FaceFCOS(fcos_class):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            # Negative = not started; float64 so that the value equals detectron2's Python float.
            self.register_buffer("loss_normalizer_ema", torch.tensor(-1.0, dtype=torch.float64))

        def _ema_update(self, name, value, initial_value, momentum=0.9):
            if name != "loss_normalizer":
                return super()._ema_update(name, value, initial_value, momentum)
            old = float(self.loss_normalizer_ema) if self.loss_normalizer_ema >= 0 else initial_value
            new = old * momentum + value * (1 - momentum)
            self.loss_normalizer_ema.fill_(new)
            return new

        def forward_training(self, images, features, predictions, gt_instances):
            # Losses in float32 under autocast: box coordinates of ~1000 px lose whole pixels in
            # float16/bfloat16, and fvcore's giou_loss fails on mixed float16/float32 boxes.
            predictions = [
                [p.float() if p.dtype in (torch.float16, torch.bfloat16) else p for p in per_level]
                for per_level in predictions
            ]
            return super().forward_training(images, features, predictions, gt_instances)

    FaceFCOS.__name__ = FaceFCOS.__qualname__ = f"Checkpointable{fcos_class.__name__}"
    return FaceFCOS


@register_face_detector("FCOS")
def build_fcos_detector(cfg):
    """The report's trainable detector: detectron2's FCOS (one class, "face") on ``build_backbone(cfg)``,
    from ``MODEL.FCOS``, ``MODEL.PIXEL_MEAN/STD`` (``INPUT.FORMAT`` order) and ``TEST.DETECTIONS_PER_IMAGE``;
    the class of :func:`compat.build_fcos_class` (it also trains on images without faces on v0.6)."""
    fcos_cfg = cfg.MODEL.FCOS
    backbone = build_backbone(cfg)
    shapes = backbone.output_shape()
    in_features = list(fcos_cfg.IN_FEATURES)
    missing = [f for f in in_features if f not in shapes]
    if missing:
        raise ValueError(f"MODEL.FCOS.IN_FEATURES {missing} are not outputs of the backbone {sorted(shapes)}")
    channels = shapes[in_features[0]].channels
    norm = fcos_cfg.HEAD_NORM
    if norm == "GN":
        norm = group_norm
    head = FCOSHead(
        input_shape=[shapes[f] for f in in_features],
        conv_dims=[channels] * fcos_cfg.NUM_CONVS,
        num_classes=fcos_cfg.NUM_CLASSES,
        norm=norm,
        prior_prob=fcos_cfg.PRIOR_PROB,
    )
    fcos_class = checkpointable_fcos(compat.build_fcos_class())
    return fcos_class(
        backbone=backbone,
        head=head,
        head_in_features=in_features,
        num_classes=fcos_cfg.NUM_CLASSES,
        center_sampling_radius=fcos_cfg.CENTER_SAMPLING_RADIUS,
        focal_loss_alpha=fcos_cfg.FOCAL_LOSS_ALPHA,
        focal_loss_gamma=fcos_cfg.FOCAL_LOSS_GAMMA,
        test_score_thresh=fcos_cfg.SCORE_THRESH_TEST,
        test_topk_candidates=fcos_cfg.TOPK_CANDIDATES_TEST,
        test_nms_thresh=fcos_cfg.NMS_THRESH_TEST,
        max_detections_per_image=cfg.TEST.DETECTIONS_PER_IMAGE,
        pixel_mean=cfg.MODEL.PIXEL_MEAN,
        pixel_std=cfg.MODEL.PIXEL_STD,
    )
