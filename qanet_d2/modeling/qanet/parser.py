"""The QANet parser: backbone -> semantic-FPN neck -> parsing branch and IoU branch, and its losses."""
from __future__ import annotations

from typing import Dict, Sequence, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from detectron2.config import configurable
from detectron2.utils import events

from ..backbone import build_parser_backbone
from .iou_branch import IoUBranch
from .losses import at_least_float32, cross_entropy_loss, iou_loss, iou_targets, lovasz_softmax
from .neck import SemanticFPNNeck
from .parsing_branch import ParsingBranch

__all__ = ["QANetParser", "INPUT_SIZE_DIVISIBILITY"]

# MODEL.QANET.INPUT_SIZE must be a multiple of this in both dimensions: the coarsest stride of
# the parser backbones ("hr32", "res5"), so that the neck's upsampled levels line up.
INPUT_SIZE_DIVISIBILITY = 32


class QANetParser(nn.Module):
    """Parses normalised RGB face crops, and computes its own training losses.

    ``forward(crops)`` with ``crops`` ``N x 3 x h x w`` returns ``(logits, iou)``:
    ``N x num_classes x h x w`` parsing logits and ``N`` predicted IoUs.
    :meth:`losses` turns them and the crops' labels into the loss dict
    (``MODEL.QANET.PARSING.*``, ``MODEL.QANET.IOU.LOSS_WEIGHT``).
    """

    @configurable
    def __init__(
        self,
        *,
        backbone,
        neck: SemanticFPNNeck,
        parsing_branch: ParsingBranch,
        iou_branch: IoUBranch,
        ce_weight: float = 1.0,
        lovasz_weight: float = 1.0,
        iou_weight: float = 1.0,
        ignore_value: int = 255,
        lovasz_per_crop: bool = False,
    ):
        super().__init__()
        self.backbone = backbone
        self.neck = neck
        self.parsing_branch = parsing_branch
        self.iou_branch = iou_branch
        self.ce_weight = float(ce_weight)
        self.lovasz_weight = float(lovasz_weight)
        self.iou_weight = float(iou_weight)
        self.ignore_value = int(ignore_value)
        self.lovasz_per_crop = bool(lovasz_per_crop)

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
            "ce_weight": q.PARSING.CE_WEIGHT,
            "lovasz_weight": q.PARSING.LOVASZ_WEIGHT,
            "iou_weight": q.IOU.LOSS_WEIGHT,
            "ignore_value": q.PARSING.IGNORE_VALUE,
            "lovasz_per_crop": q.PARSING.LOVASZ_PER_CROP,
        }

    def forward(self, crops: torch.Tensor, out_size: Sequence[int] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        out_size = crops.shape[-2:] if out_size is None else out_size
        fused = self.neck(self.backbone(crops))
        return self.parsing_branch(fused, out_size), self.iou_branch(fused)

    def losses(self, logits: torch.Tensor, pred_iou: torch.Tensor, labels: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Training losses of one batch of crops.

        Args:
            logits: ``N x C x h x w`` parsing logits, ``pred_iou``: ``N`` predicted IoUs
                (:meth:`forward`).
            labels: ``N x h x w`` long crop labels, ``ignore_value`` where unknown.

        Returns:
            ``loss_parsing_ce`` (pixel-mean cross-entropy), ``loss_parsing_lovasz``
            (Lovasz-softmax, per crop or over the batch by ``lovasz_per_crop``) and ``loss_iou``
            (squared error of the predicted IoU against the IoU of the detached argmax parsing),
            each multiplied by its weight.
        """
        if len(logits) == 0:
            zero = sum(p.sum() for p in self.parameters() if p.requires_grad) * 0.0
            return {"loss_parsing_ce": zero, "loss_parsing_lovasz": zero, "loss_iou": zero}
        logits, pred_iou = at_least_float32(logits), at_least_float32(pred_iou)  # losses in float32 under autocast
        log_probs = F.log_softmax(logits, dim=1)
        probs = logits.softmax(dim=1)
        target_iou = iou_targets(logits.detach().argmax(dim=1), labels, logits.shape[1], self.ignore_value)
        if events._CURRENT_STORAGE_STACK:
            storage = events.get_event_storage()
            storage.put_scalar("qanet/crops_per_batch", float(len(logits)))
            storage.put_scalar("qanet/iou_target", float(target_iou.mean()))
        return {
            "loss_parsing_ce": self.ce_weight * cross_entropy_loss(log_probs, labels, self.ignore_value),
            "loss_parsing_lovasz": self.lovasz_weight * lovasz_softmax(probs, labels, self.ignore_value, self.lovasz_per_crop),
            "loss_iou": self.iou_weight * iou_loss(pred_iou, target_iou),
        }
