"""Region similarity J and contour accuracy F exactly as the DAVIS 2017 benchmark defines them.

Definitions (davis2017-evaluation, ``davis2017/metrics.py``):

* J = |S ∩ G| / |S ∪ G| over non-void pixels; an empty union gives J = 1.
* F: both masks (void pixels set to 0) become 1-pixel boundary maps (DAVIS's ``_seg2bmap``),
  each dilated with a disk of radius ``r = ceil(bound_th * diagonal)`` pixels (``r = bound_th``
  when ``bound_th >= 1``); precision = |B_pred ∩ dilate(B_gt)| / |B_pred|, recall likewise,
  F = 2PR / (P + R). Both boundaries empty: F = 1; only one empty: F = 0.

Why not DAVIS's code: it dilates two full-image maps per object and frame (about 0.8 s per 1080p
frame of 17 classes). Here the boundaries of every class come from one pass over the label map
(:func:`label_boundaries`), and "within the dilation" is "some boundary pixel within Euclidean
distance r", answered by a coarse grid (cells of side <= r / sqrt(2)) and a k-d tree for the
rest. Exact: squared distances are integers, so the query bound sqrt(r² + 0.5) separates r²
from the next value. A fractional pixel radius (an even-sized, off-centre DAVIS disk) is
dilated literally with ``cv2.dilate``.

J itself is the IoU of the confusion matrix (face_parsing_evaluator.score_frame). Arrays are
(H, W); pixel (y, x) = (row, column).
"""
from __future__ import annotations

import math
from typing import Dict, Iterable, Tuple

import cv2
import numpy as np
from scipy.spatial import cKDTree

__all__ = ["seg_to_boundary", "label_boundaries", "boundary_f_measure", "boundary_radius", "davis_disk"]

Points = Tuple[np.ndarray, np.ndarray]  # (ys, xs) integer pixel coordinates


def boundary_radius(bound_th: float, shape: Tuple[int, int]) -> float:
    """Contour tolerance in pixels: ``bound_th`` if it is >= 1, else ``ceil(bound_th * diagonal)``
    with diagonal = sqrt(H² + W²) of the (H, W) frame."""
    if bound_th >= 1:
        return float(bound_th)
    return float(np.ceil(bound_th * np.linalg.norm(shape[-2:])))


def davis_disk(radius: float) -> np.ndarray:
    """DAVIS's structuring element (``skimage.morphology.disk(radius)``): offsets
    ``arange(-radius, radius + 1)`` on both axes where ``x² + y² <= radius²``; uint8 0/1."""
    offsets = np.arange(-radius, radius + 1)
    xx, yy = np.meshgrid(offsets, offsets)
    return (xx**2 + yy**2 <= radius**2).astype(np.uint8)


def seg_to_boundary(mask: np.ndarray) -> np.ndarray:
    """1-pixel boundary map of a binary (H, W) mask, DAVIS's ``_seg2bmap`` (same-size output):
    pixels that differ from their right, lower or lower-right neighbour (edge replicated)."""
    seg = np.asarray(mask).astype(bool)
    if seg.ndim != 2:
        raise ValueError(f"seg_to_boundary expects a 2-D mask, got shape {seg.shape}")
    padded = np.pad(seg, ((0, 1), (0, 1)), mode="edge")
    return (seg != padded[:-1, 1:]) | (seg != padded[1:, :-1]) | (seg != padded[1:, 1:])


def label_boundaries(labels: np.ndarray, classes: Iterable[int]) -> Dict[int, Points]:
    """``{c: np.nonzero(seg_to_boundary(labels == c))}`` for every ``c`` in ``classes``, in one
    pass over the (H, W) label map; values not in ``classes`` belong to no class."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"label_boundaries expects a 2-D label map, got shape {labels.shape}")
    h, w = labels.shape
    padded = np.empty((h + 1, w + 1), labels.dtype)  # edge-replicated, cheaper than np.pad
    padded[:h, :w] = labels
    padded[h, :w] = labels[h - 1]
    padded[:, w] = padded[:, w - 1]
    changes = labels != padded[:h, 1:]
    changes |= labels != padded[1:, :w]
    changes |= labels != padded[1:, 1:]
    idx = np.flatnonzero(changes)  # much faster than np.nonzero on a 2-D mask
    ys = idx // w
    xs = idx - ys * w
    # A changing pixel is on the boundary of its own class and of every class among its three
    # neighbours (each of which then differs from it). Flat indices into ``padded``:
    at = idx + ys
    flat = padded.ravel()
    neighbourhood = np.stack([flat[at], flat[at + 1], flat[at + (w + 1)], flat[at + (w + 2)]])
    out = {}
    for c in classes:
        on = (neighbourhood == c).any(axis=0)
        out[int(c)] = (ys[on], xs[on])
    return out


def _count_within(points: Points, targets: Points, radius: float) -> int:
    """Number of ``points`` inside the DAVIS disk dilation of ``targets`` (both non-empty)."""
    if float(radius).is_integer():
        return _count_within_integer_radius(points, targets, int(radius))
    # Fractional pixel radius: DAVIS's even-sized kernel is not symmetric; dilate literally,
    # on the bounding box of both sets (cv2.dilate treats outside pixels as absent).
    ys, xs = np.concatenate((points[0], targets[0])), np.concatenate((points[1], targets[1]))
    y0, x0 = ys.min(), xs.min()
    canvas = np.zeros((ys.max() - y0 + 1, xs.max() - x0 + 1), np.uint8)
    canvas[targets[0] - y0, targets[1] - x0] = 1
    dilated = cv2.dilate(canvas, davis_disk(radius))
    return int(np.count_nonzero(dilated[points[0] - y0, points[1] - x0]))


def _count_within_integer_radius(points: Points, targets: Points, radius: int) -> int:
    """Exact count of ``points`` within Euclidean distance ``radius`` of some target: a point
    sharing a grid cell (side <= radius / sqrt(2)) with a target is; the rest are queried in a
    k-d tree of the targets in nearby cells."""
    py, px = points
    ty, tx = targets
    matched = 0
    cell = int(math.isqrt(radius * radius // 2))  # largest s with 2 s² <= r²
    if cell >= 2:
        rows = int(max(py.max(), ty.max())) // cell + 1
        cols = int(max(px.max(), tx.max())) // cell + 1
        t_cells = (ty // cell) * cols + tx // cell
        occupied = np.zeros(rows * cols, bool)
        occupied[t_cells] = True
        p_cells = (py // cell) * cols + px // cell
        hit = occupied[p_cells]
        matched = int(np.count_nonzero(hit))
        if matched == len(py):
            return matched
        py, px, p_cells = py[~hit], px[~hit], p_cells[~hit]
        # Targets within `radius` of a remaining point lie at most `reach` cells away.
        reach = radius // cell + 1
        near = np.zeros((rows, cols), np.uint8)
        near.ravel()[p_cells] = 1
        near = cv2.dilate(near, np.ones((2 * reach + 1, 2 * reach + 1), np.uint8))
        keep = near.ravel()[t_cells] > 0
        if not keep.any():
            return matched
        ty, tx = ty[keep], tx[keep]
    tree = cKDTree(np.column_stack((ty, tx)).astype(np.float64))
    # Squared distances are integers: accept d² <= r², reject r² + 1.
    bound = math.sqrt(radius * radius + 0.5)
    dist, _ = tree.query(np.column_stack((py, px)).astype(np.float64), k=1, distance_upper_bound=bound)
    return matched + int(np.count_nonzero(np.isfinite(dist)))


def boundary_f_measure(pred_points: Points, gt_points: Points, radius: float) -> float:
    """F of two boundary pixel sets with tolerance ``radius`` pixels, DAVIS's conventions for
    empty boundaries (see module docstring)."""
    n_pred, n_gt = len(pred_points[0]), len(gt_points[0])
    if n_pred == 0 and n_gt == 0:
        return 1.0
    if n_pred == 0 or n_gt == 0:
        return 0.0  # (P, R) = (1, 0) or (0, 1)
    precision = _count_within(pred_points, gt_points, radius) / n_pred
    recall = _count_within(gt_points, pred_points, radius) / n_gt
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)
