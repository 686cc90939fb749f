"""QANet's parser parts: neck, parsing and IoU branches, and the parser's losses."""
from .iou_branch import IoUBranch
from .losses import cross_entropy_loss, iou_loss, iou_targets, lovasz_softmax
from .neck import SemanticFPNNeck
from .parser import QANetParser
from .parsing_branch import ParsingBranch

__all__ = [
    "QANetParser", "SemanticFPNNeck", "ParsingBranch", "IoUBranch", "cross_entropy_loss", "lovasz_softmax",
    "iou_targets", "iou_loss",
]
