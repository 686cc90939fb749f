"""QANet's losses: cross-entropy + Lovasz-softmax on the parsing, squared error on the IoU.

The losses take (log-)probabilities, not logits, so that they apply to probabilities merged into a
coarser label set. They compute in float32 whatever their inputs' dtype: the Lovasz sort and
cumulative sums over ~10^5 pixels, and the log-softmax, lose their precision in float16/bfloat16.
Lovasz-softmax (Berman et al., CVPR 2018) follows the authors' reference
``lovasz_softmax(..., classes="present")``, without a segmentation library for one loss.
"""
from __future__ import annotations

import torch
from torch.nn import functional as F

__all__ = ["cross_entropy_loss", "lovasz_softmax", "iou_targets", "iou_loss", "merge_log_probs", "merged_labels"]


def at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32 if it is a narrower float (float16/bfloat16 under autocast), else ``x``."""
    return x.float() if x.is_floating_point() and torch.finfo(x.dtype).bits < 32 else x


def cross_entropy_loss(log_probs: torch.Tensor, labels: torch.Tensor, ignore_value: int = 255) -> torch.Tensor:
    """Pixel-mean NLL of ``N x C x h x w`` log-probabilities over the labels not ``ignore_value``
    (a differentiable 0 when all are)."""
    log_probs = at_least_float32(log_probs)
    if not (labels != ignore_value).any():
        return log_probs.sum() * 0.0
    return F.nll_loss(log_probs, labels, ignore_index=ignore_value, reduction="mean")


def _lovasz_grad(gt_sorted: torch.Tensor) -> torch.Tensor:
    """Gradient of the Lovasz extension of the Jaccard loss w.r.t. sorted errors."""
    gts = gt_sorted.sum()
    intersection = gts - gt_sorted.cumsum(dim=0)
    union = gts + (1.0 - gt_sorted).cumsum(dim=0)
    jaccard = 1.0 - intersection / union
    return torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]])


def _lovasz_softmax_flat(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Lovasz-softmax of ``C x P`` probabilities and ``P`` valid labels, averaged over the classes present.

    Background pixels whose error is below a class's smallest foreground error sort after every
    foreground pixel, where the Lovasz gradient is 0: dropping them before the sort gives the same
    loss and gradient, cheaper.
    """
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


def lovasz_softmax(probs: torch.Tensor, labels: torch.Tensor, ignore_value: int = 255, per_crop: bool = False) -> torch.Tensor:
    """Lovasz-softmax of ``N x C x h x w`` probabilities over all valid pixels of the batch, or
    ``per_crop`` summed over crops and divided by ``N`` (an empty crop counts 0, as the official
    QANet code)."""
    probs = at_least_float32(probs)
    num_classes = probs.shape[1]
    if not (labels != ignore_value).any():
        return probs.sum() * 0.0
    if not per_crop:
        flat = probs.permute(1, 0, 2, 3).reshape(num_classes, -1)  # C x P
        flat_labels = labels.reshape(-1)
        valid = flat_labels != ignore_value
        return _lovasz_softmax_flat(flat[:, valid], flat_labels[valid])
    total = probs.sum() * 0.0
    for crop_probs, crop_labels in zip(probs, labels):
        flat_labels = crop_labels.reshape(-1)
        valid = flat_labels != ignore_value
        if valid.any():
            total = total + _lovasz_softmax_flat(crop_probs.reshape(num_classes, -1)[:, valid], flat_labels[valid])
    return total / probs.shape[0]


@torch.no_grad()
def iou_targets(pred_labels: torch.Tensor, labels: torch.Tensor, num_classes: int, ignore_value: int = 255) -> torch.Tensor:
    """QANet's IoU target: per crop, the IoU of ``N x h x w`` predicted and true labels per class
    (background included) over the valid pixels, averaged over the classes present in either;
    ``N`` float32, 0 for a crop without valid pixels."""
    n = pred_labels.shape[0]
    pred = pred_labels.reshape(n, -1)
    gt = labels.reshape(n, -1)
    valid = gt != ignore_value
    crop = torch.arange(n, device=pred.device)[:, None].expand_as(gt)
    index = (crop * num_classes + gt.clamp(max=num_classes - 1)) * num_classes + pred
    hist = torch.bincount(index[valid], minlength=n * num_classes * num_classes)
    hist = hist.reshape(n, num_classes, num_classes).to(torch.float64)  # [crop, gt, pred]
    inter = hist.diagonal(dim1=1, dim2=2)
    union = hist.sum(dim=2) + hist.sum(dim=1) - inter
    counted = union > 0
    iou = torch.where(counted, inter / union.clamp(min=1), torch.zeros_like(union))
    mean = iou.sum(dim=1) / counted.sum(dim=1).clamp(min=1)
    return mean.to(torch.float32)


def iou_loss(pred_iou: torch.Tensor, target_iou: torch.Tensor) -> torch.Tensor:
    """``0.5 * (p - t)**2`` averaged over crops with a positive target (QANet)."""
    pred_iou, target_iou = at_least_float32(pred_iou), at_least_float32(target_iou)
    keep = target_iou > 0
    if not keep.any():
        return pred_iou.sum() * 0.0
    return (0.5 * (pred_iou[keep] - target_iou[keep]) ** 2).mean()


# ---------------------------------------------------------------------------- coarser label sets
def merge_log_probs(log_probs: torch.Tensor, ids, num_classes: int, ignore_value: int = 255) -> torch.Tensor:
    """``N x K x h x w`` fine log-probabilities merged into ``num_classes`` coarse ones: coarse class
    ``c`` sums the fine classes ``k`` with ``ids[k] == c`` (:func:`~qanet_d2.structures.label_sets.conversion_ids`),
    renormalised over the fine classes with a counterpart (``ids[k] == ignore_value`` takes no part).
    ``-inf`` for a coarse class no fine class maps to (:func:`merged_labels` ignores it).
    """
    log_probs = at_least_float32(log_probs)
    ids = torch.as_tensor(ids, dtype=torch.long, device=log_probs.device)
    mapped = (ids != ignore_value).nonzero().flatten()
    if len(mapped) == 0:
        raise ValueError("no fine class has a counterpart in the coarse label set")
    fine = log_probs.index_select(1, mapped)
    fine = fine - torch.logsumexp(fine, dim=1, keepdim=True)
    target = ids[mapped]
    shape = (fine.shape[0],) + tuple(fine.shape[2:])
    merged = []
    for c in range(num_classes):
        members = (target == c).nonzero().flatten()
        if len(members):
            merged.append(torch.logsumexp(fine.index_select(1, members), dim=1))
        else:  # nothing can be predicted as c: a constant, outside the graph
            merged.append(fine.new_full(shape, float("-inf")))
    return torch.stack(merged, dim=1)


def merged_labels(labels: torch.Tensor, ids, num_classes: int, ignore_value: int = 255) -> torch.Tensor:
    """``labels`` of the coarse set with the classes that no fine class maps to (see
    :func:`merge_log_probs`) set to ``ignore_value``: the model cannot be asked for them."""
    ids = torch.as_tensor(ids, dtype=torch.long, device=labels.device)
    reachable = torch.zeros(num_classes + 1, dtype=torch.bool, device=labels.device)
    reachable[ids[ids != ignore_value]] = True
    known = (labels >= 0) & (labels < num_classes)
    ok = torch.where(known, reachable[labels.clamp(0, num_classes)], torch.ones_like(known))
    return torch.where(ok, labels, torch.full_like(labels, ignore_value))
