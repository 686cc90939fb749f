"""QANet's inference scoring and the painting of faces into one image-level map."""
from __future__ import annotations

from typing import Sequence

import torch

__all__ = ["pixel_scores", "face_scores", "crop_labels_from_probs", "paint_faces"]


def pixel_scores(probs: torch.Tensor, thresh: float = 0.2) -> torch.Tensor:
    """Mean of the per-pixel max probability over the pixels where it is >= ``thresh``.

    ``probs``: ``N x C x h x w`` probabilities -> ``N`` (0 for a crop with no such pixel).
    """
    if probs.shape[0] == 0:
        return probs.new_zeros(0)
    top = probs.max(dim=1).values.flatten(1)
    keep = (top >= thresh).to(top.dtype)
    return (top * keep).sum(dim=1) / keep.sum(dim=1).clamp(min=1)


def face_scores(box_scores, iou_scores, pix_scores, weights: Sequence[float] = (1.0, 0.5, 3.0)) -> torch.Tensor:
    """Quality score ``(box^a * iou^b * pixel^c) ** (1 / (a + b + c))`` (geometric mean, weighted).

    The predicted IoU is clamped to [0, 1] first (the IoU branch is unbounded).
    """
    a, b, c = (float(w) for w in weights)
    eps = 1e-6
    terms = (
        a * box_scores.clamp(eps, 1.0).log()
        + b * iou_scores.clamp(eps, 1.0).log()
        + c * pix_scores.clamp(eps, 1.0).log()
    )
    return torch.exp(terms / max(a + b + c, eps))


def crop_labels_from_probs(probs: torch.Tensor) -> torch.Tensor:
    """Argmax labels, background (0) where the max probability is below 1 / C.

    ``probs``: ``... x C x h x w`` -> ``... x h x w`` long.
    """
    num_classes = probs.shape[-3]
    top, labels = probs.max(dim=-3)
    return torch.where(top < 1.0 / num_classes, torch.zeros_like(labels), labels)


def paint_faces(sem_seg: torch.Tensor, face_probs, windows: torch.Tensor, scores: torch.Tensor, thresh: float = 0.3) -> torch.Tensor:
    """Paint faces into an image-level score map, lowest score first, so the best face wins.

    Args:
        sem_seg: ``C x H x W`` map to paint into (in place), usually background one-hot.
        face_probs: per face, ``(probs, inside)``: ``C x h x w`` probabilities on the face's
            window and its ``h x w`` inside-mask (:func:`qanet_d2.data.crops.paste_probs`).
        windows: ``N x 4`` integer windows ``[x0, y0, x1, y1)`` in ``sem_seg``'s frame.
        scores: ``N`` face scores; faces below ``thresh`` are not painted.

    Only the face's foreground pixels (label != 0 by :func:`crop_labels_from_probs`) are
    painted, with the face's probabilities; elsewhere ``sem_seg`` keeps what it had.
    """
    for i in torch.argsort(scores, stable=True).tolist():
        if float(scores[i]) < thresh:
            continue
        x0, y0, x1, y1 = windows[i].tolist()
        if x1 <= x0 or y1 <= y0:
            continue
        probs, inside = face_probs[i]
        fg = (crop_labels_from_probs(probs) != 0) & inside
        region = sem_seg[:, y0:y1, x0:x1]
        region[:, fg] = probs[:, fg]
    return sem_seg
