"""QANet's parser parts: neck, parsing and IoU branches, losses and inference scoring."""
from .inference import crop_labels_from_probs, face_scores, paint_faces, pixel_scores
from .iou_branch import IoUBranch
from .losses import iou_loss, lovasz_softmax_loss, parsing_ce_loss, parsing_iou_targets
from .neck import SemanticFPNNeck
from .parser import QANetParser
from .parsing_branch import ParsingBranch

__all__ = [
    "QANetParser",
    "SemanticFPNNeck",
    "ParsingBranch",
    "IoUBranch",
    "parsing_ce_loss",
    "lovasz_softmax_loss",
    "parsing_iou_targets",
    "iou_loss",
    "pixel_scores",
    "face_scores",
    "crop_labels_from_probs",
    "paint_faces",
]
