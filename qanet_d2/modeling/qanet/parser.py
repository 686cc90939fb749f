"""The QANet parser: backbone -> semantic-FPN neck -> parsing branch and IoU branch, and its losses."""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import numpy as np

import torch
from torch import nn
from torch.nn import functional as F

from detectron2.config import CfgNode as CN
from detectron2.config import configurable
from detectron2.utils import events

from ...structures.label_sets import IGNORE_LABEL, LABEL_SETS, LabelSet, conversion_ids, label_set_from_config
from ..backbone import build_parser_backbone
from .iou_branch import IoUBranch
from .losses import (at_least_float32, cross_entropy_loss, iou_loss, iou_targets, lovasz_softmax, merge_log_probs,
                     merged_labels)
from .neck import SemanticFPNNeck
from .parsing_branch import ParsingBranch

__all__ = ["QANetParser", "INPUT_SIZE_DIVISIBILITY"]

# MODEL.QANET.INPUT_SIZE must be a multiple of this in both dimensions: the coarsest stride of
# the parser backbones ("hr32", "res5"), so that the neck's upsampled levels line up.
INPUT_SIZE_DIVISIBILITY = 32


class QANetParser(nn.Module):
    """Parses normalised RGB face crops: ``forward(crops)`` (``N x 3 x h x w``) returns ``N x C x h x w``
    logits and ``N`` predicted IoUs; :meth:`losses` scores them.

    The parser owns the classes it predicts: ``label_set`` (from ``MODEL.QANET.LABEL_SET``, else a
    checkpoint's record) and ``flip_permutation``, a buffer saved in checkpoints, so that a model
    keeps its flip pairs wherever it is loaded.
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
        lovasz_per_crop: bool = False,
        label_set: Optional[LabelSet] = None,
    ):
        super().__init__()
        self.backbone = backbone
        self.neck = neck
        self.parsing_branch = parsing_branch
        self.iou_branch = iou_branch
        self.ce_weight = float(ce_weight)
        self.lovasz_weight = float(lovasz_weight)
        self.iou_weight = float(iou_weight)
        self.ignore_value = IGNORE_LABEL
        self.lovasz_per_crop = bool(lovasz_per_crop)
        # (a parser without layers, for its losses alone, takes its classes from its label set)
        num_classes = label_set.num_classes if parsing_branch is None else int(parsing_branch.predictor.out_channels)
        self.register_buffer("flip_permutation", torch.arange(num_classes), persistent=True)
        self.label_set: Optional[LabelSet] = None
        if label_set is not None:
            self.set_label_set(label_set)
        self.label_set_conversions: Dict[str, np.ndarray] = {}  # coarser set name -> conversion_ids

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
            "lovasz_per_crop": q.PARSING.LOVASZ_PER_CROP,
            "label_set": label_set_from_config(cfg),
        }

    def forward(self, crops: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        fused = self.neck(self.backbone(crops))
        return self.parsing_branch(fused, crops.shape[-2:]), self.iou_branch(fused)

    def set_label_set(self, label_set: LabelSet) -> None:
        """Make ``label_set`` (of the parser's number of classes) the set the parser predicts."""
        n = len(self.flip_permutation)
        if label_set.num_classes != n:
            raise ValueError(f"MODEL.QANET.NUM_CLASSES = {n}, but the label set '{label_set.name}' has "
                             f"{label_set.num_classes} classes: {list(label_set.classes)}")
        self.label_set = label_set
        self.flip_permutation.copy_(torch.as_tensor(label_set.flip_permutation()))

    def flip_back(self, probs: torch.Tensor) -> torch.Tensor:
        """``N x C x h x w`` probabilities of mirrored crops mirrored back (left/right channels swapped)."""
        return probs.flip(-1)[:, self.flip_permutation]

    def conversion(self, label_set: str) -> np.ndarray:
        """Conversion ids from the model's label set into the coarser ``label_set``."""
        ids = self.label_set_conversions.get(label_set)
        if ids is None:
            if self.label_set is None or label_set not in LABEL_SETS:
                raise KeyError(
                    f"crops labelled in label set '{label_set}', but the parser predicts label set "
                    f"{None if self.label_set is None else self.label_set.name!r} and has no conversion into it")
            ids = self.label_set_conversions[label_set] = conversion_ids(self.label_set, label_set)
        return ids

    def losses(
        self,
        logits: torch.Tensor,
        pred_iou: torch.Tensor,
        labels: torch.Tensor,
        label_sets: Optional[Sequence[Optional[str]]] = None,
    ) -> Dict[str, torch.Tensor]:
        """Weighted ``loss_parsing_ce`` (pixel mean), ``loss_parsing_lovasz`` and ``loss_iou``
        (predicted IoU against the IoU of the detached argmax) of ``N x h x w`` crop labels.

        ``label_sets``: the crops' label-set names (None: the model's). A crop of a coarser set is
        scored on the probabilities merged into it (:func:`merge_log_probs`); the
        cross-entropy averages all valid pixels of the batch, the Lovasz loss of each label set is
        weighted by its share of the crops.
        """
        if len(logits) == 0:
            zero = sum(p.sum() for p in self.parameters() if p.requires_grad) * 0.0
            return {"loss_parsing_ce": zero, "loss_parsing_lovasz": zero, "loss_iou": zero}
        logits, pred_iou = at_least_float32(logits), at_least_float32(pred_iou)  # losses in float32 under autocast
        log_probs = F.log_softmax(logits, dim=1)
        groups = self._group_crops(label_sets)
        if len(groups) == 1 and groups[0][0] is None:
            probs = logits.softmax(dim=1)
            target_iou = iou_targets(logits.detach().argmax(dim=1), labels, logits.shape[1], self.ignore_value)
            ce = cross_entropy_loss(log_probs, labels, self.ignore_value)
            lovasz = lovasz_softmax(probs, labels, self.ignore_value, self.lovasz_per_crop)
        else:
            ce, lovasz, target_iou = self._grouped_losses(log_probs, labels, groups)
        if events._CURRENT_STORAGE_STACK:
            storage = events.get_event_storage()
            storage.put_scalar("qanet/crops_per_batch", float(len(logits)))
            storage.put_scalar("qanet/iou_target", float(target_iou.mean()))
        return {
            "loss_parsing_ce": self.ce_weight * ce,
            "loss_parsing_lovasz": self.lovasz_weight * lovasz,
            "loss_iou": self.iou_weight * iou_loss(pred_iou, target_iou),
        }

    def _group_crops(self, label_sets):
        """``[(set name or None for the model's set, crop indices)]`` in order of first appearance."""
        if label_sets is None:
            return [(None, None)]
        groups: Dict[Optional[str], list] = {}
        for i, name in enumerate(label_sets):
            # a parser without a label set cannot convert: it scores every crop as it is
            own = name is None or self.label_set is None or name == self.label_set.name
            groups.setdefault(None if own else name, []).append(i)
        if list(groups) == [None]:
            return [(None, None)]
        return list(groups.items())

    def _grouped_losses(self, log_probs, labels, groups):
        n = log_probs.shape[0]
        device = log_probs.device
        ce_sum, lovasz, valid_total = log_probs.sum() * 0.0, log_probs.sum() * 0.0, 0
        target_iou = torch.zeros(n, dtype=torch.float32, device=device)
        for name, index in groups:
            idx = torch.as_tensor(index, dtype=torch.long, device=device)
            lp, lab = log_probs.index_select(0, idx), labels.index_select(0, idx)
            if name is None:
                num_classes = lp.shape[1]
            else:
                ids = self.conversion(name)
                num_classes = int(LABEL_SETS[name].num_classes) if name in LABEL_SETS else int(ids[ids != self.ignore_value].max()) + 1
                lp = merge_log_probs(lp, ids, num_classes, self.ignore_value)
                lab = merged_labels(lab, ids, num_classes, self.ignore_value)
            valid = int((lab != self.ignore_value).sum())
            if valid:
                ce_sum = ce_sum + cross_entropy_loss(lp, lab, self.ignore_value) * valid
                valid_total += valid
            lovasz = lovasz + lovasz_softmax(lp.exp(), lab, self.ignore_value, self.lovasz_per_crop) * (len(index) / n)
            target_iou[idx] = iou_targets(lp.detach().argmax(dim=1), lab, num_classes, self.ignore_value)
        ce = ce_sum / valid_total if valid_total else ce_sum
        return ce, lovasz, target_iou


def add_parser_config(cfg) -> None:
    """The parser's MODEL.QANET keys: label set, classes, crops, BACKBONE, HRNET, NECK, PARSING, IOU."""
    # Number of parsing classes, background included. Must match the model's label set.
    cfg.MODEL.QANET.NUM_CLASSES = 19
    # The label set the model predicts (datasets/README.md), recorded in every checkpoint. NAME: a
    # registered set or a dataset's ("sfp"); "" = the set of the first dataset of DATASETS.TRAIN
    # (else DATASETS.TEST). CLASSES, COLORS ((R, G, B) per class) and FLIP_PAIRS ((id_a, id_b)) are
    # filled from it by train_net.py, or written by hand for a set no dataset registers.
    cfg.MODEL.QANET.LABEL_SET = CN()
    cfg.MODEL.QANET.LABEL_SET.NAME = ""
    cfg.MODEL.QANET.LABEL_SET.CLASSES = []
    cfg.MODEL.QANET.LABEL_SET.COLORS = []
    cfg.MODEL.QANET.LABEL_SET.FLIP_PAIRS = []

    # Parser input crop: the box's shorter side grows to ASPECT_RATIO around its centre, then x BOX_EXPAND.
    cfg.MODEL.QANET.INPUT_SIZE = (512, 384)  # (height, width)
    cfg.MODEL.QANET.ASPECT_RATIO = 0.75  # width / height
    cfg.MODEL.QANET.BOX_EXPAND = 1.25
    # Parser pixel normalisation (RGB order after conversion from INPUT.FORMAT); ImageNet stats.
    cfg.MODEL.QANET.PIXEL_MEAN = [123.675, 116.28, 103.53]
    cfg.MODEL.QANET.PIXEL_STD = [58.395, 57.12, 57.375]

    # Parser backbone: a name in detectron2's BACKBONE_REGISTRY.
    cfg.MODEL.QANET.BACKBONE = CN()
    cfg.MODEL.QANET.BACKBONE.NAME = "build_timm_hrnet_backbone"
    # Backbone features fed to the neck, from stride 4 to stride 32.
    cfg.MODEL.QANET.BACKBONE.OUT_FEATURES = ["hr4", "hr8", "hr16", "hr32"]
    cfg.MODEL.QANET.BACKBONE.FREEZE_AT = 0
    # For a ResNet parser backbone: depth and the keys of MODEL.RESNETS used for it.
    cfg.MODEL.QANET.BACKBONE.RESNET_DEPTH = 50
    # Norm of a ResNet parser backbone. "BN": fine-tuned, like the HRNet's (32 crops per GPU).
    cfg.MODEL.QANET.BACKBONE.NORM = "BN"
    # Stride in the 1x1 conv (MSRA) or the 3x3 conv (False: torchvision's, as RESNET_WEIGHTS).
    cfg.MODEL.QANET.BACKBONE.STRIDE_IN_1X1 = False
    # ImageNet weights of a ResNet parser backbone: torchvision's resnet*.pth (URL or path), loaded
    # strictly when training starts unless a checkpoint provides the parser. "" = random init.
    cfg.MODEL.QANET.BACKBONE.RESNET_WEIGHTS = ""

    # HRNet from timm (features_only, raw branch outputs at strides 4/8/16/32).
    cfg.MODEL.QANET.HRNET = CN()
    cfg.MODEL.QANET.HRNET.NAME = "hrnet_w48"  # hrnet_w18_small, hrnet_w18, hrnet_w32, hrnet_w48, ...
    # Initialise the HRNet from timm's ImageNet weights when training starts (unless a checkpoint
    # provides the parser), strictly, from PRETRAINED_PATH or the Hugging Face hub
    # (docs/pretrained.md). False = random initialisation.
    cfg.MODEL.QANET.HRNET.PRETRAINED = False
    # Local ImageNet weights of HRNET.NAME in timm's keys (.pth / .safetensors; the HRNet authors'
    # hrnetv2_w48_imagenet_pretrained.pth has them).
    cfg.MODEL.QANET.HRNET.PRETRAINED_PATH = ""
    cfg.MODEL.QANET.HRNET.NORM = "BN"

    # Semantic-FPN neck ("PFPN"): each level brought to stride 4 by conv-BN-ReLU(-upsample), summed.
    cfg.MODEL.QANET.NECK = CN()
    cfg.MODEL.QANET.NECK.CONV_DIM = 256
    cfg.MODEL.QANET.NECK.NORM = "BN"

    # Parsing branch: 1x1 conv to NUM_CLASSES, bilinear upsampling to the crop size.
    cfg.MODEL.QANET.PARSING = CN()
    cfg.MODEL.QANET.PARSING.CE_WEIGHT = 1.0
    cfg.MODEL.QANET.PARSING.LOVASZ_WEIGHT = 1.0
    # Lovasz-softmax per crop, averaged over the crops (True, the official QANet code), or over all
    # valid pixels of the batch (False).
    cfg.MODEL.QANET.PARSING.LOVASZ_PER_CROP = True

    # IoU ("quality") branch: 1x1 conv + ReLU, global pooling, two FC layers, one output.
    cfg.MODEL.QANET.IOU = CN()
    cfg.MODEL.QANET.IOU.CONV_DIM = 256
    cfg.MODEL.QANET.IOU.FC_DIM = 512
    cfg.MODEL.QANET.IOU.LOSS_WEIGHT = 1.0
