"""QANet's losses: cross-entropy + Lovasz-softmax on the parsing, squared error on the IoU.

All losses are computed in float32 whatever the dtype of their inputs (float16/bfloat16 logits
under autocast): the Lovasz sort and cumulative sums over ~10^5 pixels per crop, and the
cross-entropy's log-softmax, lose their precision in 8-bit (bfloat16) or 11-bit (float16) mantissas.

Lovasz-softmax (Berman et al., CVPR 2018) is written here (~30 lines, vectorised over
classes) rather than taken from a segmentation library, to avoid a heavy dependency for one
loss; it follows the authors' reference ``lovasz_softmax(..., classes="present", per_image=False)``.
"""
from __future__ import annotations

import torch
from torch.nn import functional as F

__all__ = ["parsing_ce_loss", "lovasz_softmax_loss", "parsing_iou_targets", "iou_loss"]


def _at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32 if it is a narrower float (float16/bfloat16 under autocast), else ``x``."""
    return x.float() if x.is_floating_point() and torch.finfo(x.dtype).bits < 32 else x


def parsing_ce_loss(logits: torch.Tensor, labels: torch.Tensor, ignore_value: int = 255) -> torch.Tensor:
    """Pixel-mean cross-entropy. ``logits``: ``N x C x h x w``; ``labels``: ``N x h x w`` long."""
    logits = _at_least_float32(logits)
    if not (labels != ignore_value).any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits, labels, ignore_index=ignore_value, reduction="mean")


def _lovasz_grad(gt_sorted: torch.Tensor) -> torch.Tensor:
    """Gradient of the Lovasz extension of the Jaccard loss w.r.t. sorted errors."""
    gts = gt_sorted.sum()
    intersection = gts - gt_sorted.cumsum(dim=0)
    union = gts + (1.0 - gt_sorted).cumsum(dim=0)
    jaccard = 1.0 - intersection / union
    return torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]])


def lovasz_softmax_loss(logits: torch.Tensor, labels: torch.Tensor, ignore_value: int = 255) -> torch.Tensor:
    """Lovasz-softmax over all valid pixels of the batch, averaged over the classes present
    in the labels.

    Args:
        logits: ``N x C x h x w`` (softmax is applied here).
        labels: ``N x h x w`` long, ``ignore_value`` pixels excluded.

    Background pixels whose error is below the smallest foreground error of a class sort
    after every foreground pixel, where the Lovasz gradient is exactly 0 (the Jaccard
    index has reached 1); they are dropped before sorting, which gives the same loss and
    gradient for a fraction of the sorting cost once the parser is confident.
    """
    logits = _at_least_float32(logits)
    num_classes = logits.shape[1]
    probs = logits.softmax(dim=1).permute(1, 0, 2, 3).reshape(num_classes, -1)  # C x P
    labels = labels.reshape(-1)
    valid = labels != ignore_value
    if not valid.any():
        return logits.sum() * 0.0
    probs, labels = probs[:, valid], labels[valid]
    losses = []
    for c in torch.unique(labels).tolist():
        fg = labels == c
        errors = (fg.to(probs.dtype) - probs[c]).abs()
        keep = fg | (errors >= errors.detach()[fg].min())
        errors, fg = errors[keep], fg[keep].to(probs.dtype)
        # Stable sort and a torch reduction (not BLAS dot): bit-identical results run to run.
        errors_sorted, order = torch.sort(errors, descending=True, stable=True)
        losses.append((errors_sorted * _lovasz_grad(fg[order])).sum())
    return torch.stack(losses).mean()


@torch.no_grad()
def parsing_iou_targets(logits: torch.Tensor, labels: torch.Tensor, ignore_value: int = 255) -> torch.Tensor:
    """Per-crop mean IoU between the argmax parsing and the labels (QANet's IoU target).

    For each crop, IoU is computed per class (background included) over non-ignored pixels and
    averaged over the classes present in the prediction or the labels. Returns ``N`` floats in
    [0, 1] (float32, or the logits' dtype if wider); a crop without valid pixels gets 0.
    """
    n, num_classes = logits.shape[:2]
    pred = logits.argmax(dim=1).reshape(n, -1)
    gt = labels.reshape(n, -1)
    valid = gt != ignore_value
    crop = torch.arange(n, device=logits.device)[:, None].expand_as(gt)
    index = (crop * num_classes + gt.clamp(max=num_classes - 1)) * num_classes + pred
    hist = torch.bincount(index[valid], minlength=n * num_classes * num_classes)
    hist = hist.reshape(n, num_classes, num_classes).to(torch.float64)  # [crop, gt, pred]
    inter = hist.diagonal(dim1=1, dim2=2)
    union = hist.sum(dim=2) + hist.sum(dim=1) - inter
    counted = union > 0
    iou = torch.where(counted, inter / union.clamp(min=1), torch.zeros_like(union))
    mean = iou.sum(dim=1) / counted.sum(dim=1).clamp(min=1)
    return mean.to(torch.promote_types(logits.dtype, torch.float32))


def iou_loss(pred_iou: torch.Tensor, target_iou: torch.Tensor) -> torch.Tensor:
    """``0.5 * (p - t)**2`` averaged over crops with a positive target (QANet)."""
    pred_iou, target_iou = _at_least_float32(pred_iou), _at_least_float32(target_iou)
    keep = target_iou > 0
    if not keep.any():
        return pred_iou.sum() * 0.0
    return (0.5 * (pred_iou[keep] - target_iou[keep]) ** 2).mean()
