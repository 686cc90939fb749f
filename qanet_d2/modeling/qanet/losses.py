"""QANet's losses: cross-entropy + Lovasz-softmax on the parsing, squared error on the IoU.

The losses are functions of (log-)probabilities and labels, not of the parser's logits, so that
they apply as they are to probabilities derived from the parser's, e.g. summed into a coarser
label set; :class:`~qanet_d2.modeling.qanet.QANetParser.losses` combines them with the weights
of ``MODEL.QANET.PARSING`` / ``MODEL.QANET.IOU``.

All losses are computed in float32 whatever the dtype of their inputs (float16/bfloat16 logits
under autocast): the Lovasz sort and cumulative sums over ~10^5 pixels per crop, and the
cross-entropy's log-softmax, lose their precision in 8-bit (bfloat16) or 11-bit (float16) mantissas.

Lovasz-softmax (Berman et al., CVPR 2018) is written here (~30 lines, vectorised over
classes) rather than taken from a segmentation library, to avoid a heavy dependency for one
loss; it follows the authors' reference ``lovasz_softmax(..., classes="present")``, with
``per_image`` False (all pixels of the batch) or True (per crop, averaged over the crops).
"""
from __future__ import annotations

import torch
from torch.nn import functional as F

__all__ = [
    "cross_entropy_loss",
    "lovasz_softmax",
    "iou_targets",
    "iou_loss",
    "merge_log_probs",
    "merged_labels",
]


def at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32 if it is a narrower float (float16/bfloat16 under autocast), else ``x``."""
    return x.float() if x.is_floating_point() and torch.finfo(x.dtype).bits < 32 else x


def cross_entropy_loss(log_probs: torch.Tensor, labels: torch.Tensor, ignore_value: int = 255) -> torch.Tensor:
    """Pixel-mean negative log-likelihood over the pixels that are not ``ignore_value``.

    ``log_probs``: ``N x C x h x w`` log-probabilities; ``labels``: ``N x h x w`` long.
    0 (still differentiable) when every pixel is ignored.
    """
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
    """Lovasz-softmax of ``C x P`` probabilities and ``P`` labels (no ignored pixel), averaged
    over the classes present in the labels.

    Background pixels whose error is below the smallest foreground error of a class sort
    after every foreground pixel, where the Lovasz gradient is exactly 0 (the Jaccard index has
    reached 1); they are dropped before sorting, which gives the same loss and gradient for a
    fraction of the sorting cost once the parser is confident.
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
    """Lovasz-softmax loss of class probabilities.

    Args:
        probs: ``N x C x h x w`` probabilities.
        labels: ``N x h x w`` long, ``ignore_value`` pixels excluded.
        per_crop: False: one loss over all valid pixels of the batch, averaged over the classes
            present in its labels. True: one such loss per crop, summed and divided by ``N``
            (a crop without valid pixels counts 0, as in the official QANet code).
    """
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
    """Per-crop mean IoU between predicted and ground-truth label maps (QANet's IoU target).

    For each crop, IoU is computed per class (background included) over non-ignored pixels and
    averaged over the classes present in the prediction or the labels.

    Args:
        pred_labels: ``N x h x w`` long predicted classes (e.g. the argmax of the parsing).
        labels: ``N x h x w`` long ground truth.

    Returns:
        ``N`` float32 in [0, 1]; a crop without valid pixels gets 0.
    """
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
    """Log-probabilities of a fine label set merged into a coarser one.

    The probability of coarse class ``c`` is the sum of the fine probabilities of the classes
    ``k`` with ``ids[k] == c``, renormalised over the fine classes that have a coarse counterpart:
    a fine class with ``ids[k] == ignore_value`` takes no part (as if the model could not predict
    it). In log space: ``logsumexp`` of the fine log-probabilities per coarse class, minus their
    ``logsumexp`` over all mapped classes. A coarse model whose logit of ``c`` is the
    ``logsumexp`` of the fine logits mapped to ``c`` has exactly these log-probabilities.

    Args:
        log_probs: ``N x K x h x w`` fine log-probabilities (any normalisation over K).
        ids: ``K`` coarse id of each fine class, or ``ignore_value``
            (:func:`~qanet_d2.structures.label_sets.conversion_ids`).
        num_classes: ``C``, classes of the coarse set.

    Returns:
        ``N x C x h x w`` float32 log-probabilities; ``-inf`` for a coarse class that no fine
        class maps to (its labels must be ignored, :func:`merged_labels`).
    """
    log_probs = at_least_float32(log_probs)
    ids = torch.as_tensor(ids, dtype=torch.long, device=log_probs.device)
    if ids.shape != (log_probs.shape[1],):
        raise ValueError(f"conversion ids have shape {tuple(ids.shape)}, the log-probabilities {log_probs.shape[1]} classes")
    mapped = (ids != ignore_value).nonzero().flatten()
    if len(mapped) == 0:
        raise ValueError("no fine class has a counterpart in the coarse label set")
    if (ids[mapped] >= num_classes).any() or (ids[mapped] < 0).any():
        raise ValueError(f"conversion ids {ids.tolist()} outside 0..{num_classes - 1}")
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
