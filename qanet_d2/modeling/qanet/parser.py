"""The QANet parser: backbone -> semantic-FPN neck -> parsing branch and IoU branch."""
from __future__ import annotations

from typing import Sequence, Tuple

import torch
from torch import nn

from detectron2.config import configurable

from ..backbone import build_parser_backbone
from .iou_branch import IoUBranch
from .neck import SemanticFPNNeck
from .parsing_branch import ParsingBranch

__all__ = ["QANetParser", "INPUT_SIZE_DIVISIBILITY"]

# MODEL.QANET.INPUT_SIZE must be a multiple of this in both dimensions: the coarsest stride of
# the parser backbones ("hr32", "res5"), so that the neck's upsampled levels line up.
INPUT_SIZE_DIVISIBILITY = 32


class QANetParser(nn.Module):
    """Parses normalised RGB face crops.

    ``forward(crops)`` with ``crops`` ``N x 3 x h x w`` returns ``(logits, iou)``:
    ``N x num_classes x h x w`` parsing logits and ``N`` predicted IoUs.
    """

    @configurable
    def __init__(self, *, backbone, neck: SemanticFPNNeck, parsing_branch: ParsingBranch, iou_branch: IoUBranch):
        super().__init__()
        self.backbone = backbone
        self.neck = neck
        self.parsing_branch = parsing_branch
        self.iou_branch = iou_branch

    @classmethod
    def from_config(cls, cfg):
        q = cfg.MODEL.QANET
        backbone = build_parser_backbone(cfg)
        shapes = backbone.output_shape()
        in_features = list(q.BACKBONE.OUT_FEATURES)
        missing = [f for f in in_features if f not in shapes]
        if missing:
            raise ValueError(f"MODEL.QANET.BACKBONE.OUT_FEATURES {missing} are not outputs of {q.BACKBONE.NAME}: {sorted(shapes)}")
        div = max(INPUT_SIZE_DIVISIBILITY, int(backbone.size_divisibility), max(shapes[f].stride for f in in_features))
        if any(int(s) % div for s in q.INPUT_SIZE):
            raise ValueError(f"MODEL.QANET.INPUT_SIZE {tuple(q.INPUT_SIZE)} must be divisible by {div} for {q.BACKBONE.NAME}")
        neck = SemanticFPNNeck(shapes, in_features, conv_dim=q.NECK.CONV_DIM, norm=q.NECK.NORM)
        return {
            "backbone": backbone,
            "neck": neck,
            "parsing_branch": ParsingBranch(neck.out_channels, q.NUM_CLASSES),
            "iou_branch": IoUBranch(neck.out_channels, conv_dim=q.IOU.CONV_DIM, fc_dim=q.IOU.FC_DIM),
        }

    def forward(self, crops: torch.Tensor, out_size: Sequence[int] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        out_size = crops.shape[-2:] if out_size is None else out_size
        fused = self.neck(self.backbone(crops))
        return self.parsing_branch(fused, out_size), self.iou_branch(fused)
