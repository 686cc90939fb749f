"""Post-processing of parsed faces: scoring, paste-back and painting (the one place for it).

Per-face results (:class:`~detectron2.structures.Instances`, one per image) carry
``pred_boxes`` (XYXY_ABS), ``box_scores``, ``iou_scores``, ``parsing_probs``
(``N x V x C x h x w`` crop probabilities, one per box-scale view; flipped views and ensemble
members are already averaged in the crop frame) and ``crop_affines`` (``N x V x 2 x 3``, crop
pixel -> image pixel, continuous pixel coordinates of :mod:`qanet_d2.layers.crops`).
:class:`FacePostProcessor` turns them into the image-level outputs. The algorithm, which a NumPy
reference can mirror line by line:

1. **Rescale** (:meth:`FacePostProcessor.rescale`): boxes and affines move from the model-input
   frame to the output frame (``x * width / input_width``, ``y * height / input_height``).
2. **Paste** one face (:func:`paste_face`): its window is the union of its views' crop windows
   (:func:`~qanet_d2.layers.crops.crop_windows`), clipped to the image. At every window pixel
   centre, each view whose crop contains it is sampled bilinearly (``grid_sample``,
   ``align_corners=False``, crop edges clamped) and the views are averaged; the face's label
   there is the argmax (first maximum), background (0) where the maximum is below ``1 / C``;
   pixels outside every view's crop are not the face's.
3. **Score** (:meth:`FacePostProcessor.score`): pixel score = mean of the per-pixel maximum
   probability over the pixels where it is >= ``PIXEL_SCORE_THRESH``, taken on the pasted,
   view-averaged probabilities at the image pixels inside the face's pasted crop region
   (``PIXEL_SCORE_REGION`` "pasted", as the official QANet code), at the image pixels whose
   centres lie inside the face box ("image"), or on the crop probabilities, padding included,
   averaged over views ("crop"). Quality score = ``(box^a * iou^b * pixel^c) ** (1 / (a + b + c))``.
4. **Smooth** (optional): a hook between scoring and painting that may change the faces'
   probabilities and scores (the video smoother, :class:`qanet_d2.video.VideoPredictor`).
5. **Paint** (:meth:`FacePostProcessor.paint`): the label map starts as background; faces whose
   quality score is >= ``QUALITY_SCORE_THRESH`` and whose box score is >= ``BOX_SCORE_THRESH``
   are painted in ascending paint score (the quality score with ``PAINT_ORDER`` "quality", the
   box score with "box"; ties: ascending other score, then instance order), each writing its
   non-background labels over the map, so the best face wins overlaps. Class scores (``sem_seg``, ``C x H x W``, only when asked for) start as
   background one-hot and take the face's view-averaged probabilities where it paints a label,
   so that their argmax is the label map.
6. **Per-face labels** (:meth:`FacePostProcessor.face_labels`): each face's own labels on its
   window (the pastes of step 5 reused), for consumers that need faces one by one (instance
   evaluation, the demo's per-face output): the crop probabilities are not pasted again elsewhere.

Speed and memory: the label map needs no ``C x H x W`` tensor. Faces' windows are cut into tiles
of at most ``PASTE_TILE`` pixels a side, and tiles are pasted in runs of at most
``PASTE_TILE ** 2`` (padded) pixels, several faces per tensor operation, so memory is bounded by
the tile size whatever the image and face sizes. The ``C``-channel interpolation runs only where
it can change the result: where the four crop pixels around a sample point have the same label
in every view, the bilinear mix of their probabilities (a convex combination of vectors sharing
an argmax) has that label too, so those pixels take it directly: an exact shortcut, not an
approximation. For the axis-aligned affines that inference produces, finding the crop cell of a
pixel is separable in x and y. Rotated affines (e.g. from a smoothing over a rotating track) and
class scores take the full interpolation.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from detectron2.config import CfgNode as CN
from detectron2.config import configurable
from detectron2.structures import Boxes, Instances

from ..layers.crops import crop_windows, invert_affines

__all__ = [
    "FacePostProcessor",
    "StageTimes",
    "PastedFace",
    "add_postprocessing_config",
    "face_windows",
    "paint_order",
    "face_scores",
    "channel_max",
    "crop_maxima",
    "CropMaxima",
    "pixel_scores_from_top",
    "PAINT_ORDERS",
    "PIXEL_SCORE_REGIONS",
    "SCORE_EPS",
]

PAINT_ORDERS = ("quality", "box")
PIXEL_SCORE_REGIONS = ("crop", "image", "pasted")
# Lower clamp of the box, IoU and pixel scores before their logarithms in the quality score.
SCORE_EPS = 1e-6

# Codes of the per-tile label image (class ids are < 254).
_OUTSIDE = 254  # the pixel is in no view's crop
_MIXED = 255  # the interpolation must be computed


# ---------------------------------------------------------------------------- scoring
def pixel_scores_from_top(top: torch.Tensor, thresh: float = 0.2) -> torch.Tensor:
    """Pixel score of each of ``N`` faces from its per-pixel max probabilities ``N x h x w``: the
    mean of those that are >= ``thresh`` (0 for a face with none)."""
    top = top.flatten(1)
    keep = (top >= thresh).to(top.dtype)
    return (top * keep).sum(dim=1) / keep.sum(dim=1).clamp(min=1)


class CropMaxima(NamedTuple):
    """Per crop pixel of ``N x V`` views: the max probability ``top`` (float) and its class
    ``labels`` (uint8, first maximum), each ``N x V x h x w`` (:func:`crop_maxima`)."""

    top: torch.Tensor
    labels: torch.Tensor


def crop_maxima(probs: torch.Tensor) -> CropMaxima:
    """:class:`CropMaxima` of ``N x V x C x h x w`` probabilities: one reduction over the classes
    that both the pixel score and the painting use."""
    return CropMaxima(*channel_max(probs, dim=2, label_dtype=torch.uint8))


def face_scores(box_scores, iou_scores, pix_scores, weights: Sequence[float] = (1.0, 0.5, 3.0)) -> torch.Tensor:
    """Quality score ``(box^a * iou^b * pixel^c) ** (1 / (a + b + c))`` (geometric mean, weighted).

    The predicted IoU is clamped to [0, 1] first (the IoU branch is unbounded).
    """
    a, b, c = (float(w) for w in weights)
    eps = SCORE_EPS
    terms = (
        a * box_scores.clamp(eps, 1.0).log()
        + b * iou_scores.clamp(eps, 1.0).log()
        + c * pix_scores.clamp(eps, 1.0).log()
    )
    return torch.exp(terms / max(a + b + c, eps))


def channel_max(probs: torch.Tensor, dim: int = 0, label_dtype: torch.dtype = torch.long) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(max, argmax)`` over dimension ``dim`` (the first maximum wins ties, as ``torch.argmax``),
    the argmax as ``label_dtype``.

    Same result as ``probs.max(dim)``. On the CPU, torch's reduction over an outer dimension of
    a large contiguous tensor is slow (about 1 ms for one 17 x 128 x 96 crop); a running maximum
    over the channel planes is elementwise and faster. Small tensors and channels-last ones
    (channel innermost) reduce fast natively.
    """
    small = probs.numel() <= 4096 * probs.shape[dim]
    if probs.device.type != "cpu" or probs.shape[dim] < 2 or probs.stride(dim) == 1 or small:
        top, labels = probs.max(dim=dim)
        return top, labels.to(label_dtype)
    planes = probs.unbind(dim)
    best = planes[0].clone()
    labels = torch.zeros(best.shape, dtype=label_dtype)
    for c in range(1, len(planes)):
        better = torch.gt(planes[c], best)
        torch.maximum(best, planes[c], out=best)
        # labels = c where better: arithmetic is several times faster than masked_fill_ here
        # (exact for uint8 too: the difference wraps around and back)
        labels.add_(better.to(label_dtype) * (c - labels))
    return best, labels


def paint_order(paint_scores: torch.Tensor, other_scores: torch.Tensor, keep: torch.Tensor) -> List[int]:
    """Indices of the faces to paint, in painting order: ascending ``paint_scores`` (ties:
    ascending ``other_scores``, then index), only faces where the bool mask ``keep`` is set."""
    key = paint_scores.detach().double().cpu().numpy()
    tie = other_scores.detach().double().cpu().numpy()
    order = np.lexsort((np.arange(len(key)), tie, key))
    keep = keep.detach().cpu().numpy()
    return [int(i) for i in order if keep[i]]


class StageTimes:
    """Wall-clock and CPU seconds per named stage, summed over calls (``wall``, ``cpu``).

    ``with times("paint"): ...`` times a stage; every stage is also a
    ``torch.profiler.record_function`` range, so a profiler sees the same stages. Pass one to
    :meth:`FacePostProcessor.__call__` or the model's ``inference`` (``times=``); without one the
    stages are only profiler ranges. ``sync``: wait for CUDA kernels at both ends of a stage.
    """

    def __init__(self, sync: bool = False):
        self.wall: Dict[str, float] = {}
        self.cpu: Dict[str, float] = {}
        self.sync = bool(sync) and torch.cuda.is_available()

    @contextmanager
    def __call__(self, name: str):
        with torch.profiler.record_function(name):
            if self.sync:
                torch.cuda.synchronize()
            wall, cpu = time.perf_counter(), time.process_time()
            try:
                yield
            finally:
                if self.sync:
                    torch.cuda.synchronize()
                self.wall[name] = self.wall.get(name, 0.0) + time.perf_counter() - wall
                self.cpu[name] = self.cpu.get(name, 0.0) + time.process_time() - cpu


def profiler_range(name: str):
    """A stage without timing: only a ``torch.profiler.record_function`` range."""
    return torch.profiler.record_function(name)


# ---------------------------------------------------------------------------- pasting
def face_windows(affines: torch.Tensor, crop_size: Sequence[int], image_size: Sequence[int]) -> List[Tuple[int, int, int, int]]:
    """Integer windows ``(x0, y0, x1, y1)`` covering the crops of each face's views
    (``N x V x 2 x 3`` affines), clipped to the image (empty, ``x1 <= x0`` or ``y1 <= y0``, when
    outside it)."""
    n, v = affines.shape[:2]
    if n == 0:
        return []
    wins = crop_windows(affines.reshape(n * v, 2, 3).float(), crop_size, image_size).reshape(n, v, 4)
    lo, hi = wins[:, :, :2].min(dim=1).values, wins[:, :, 2:].max(dim=1).values
    return [tuple(int(c) for c in row) for row in torch.cat([lo, hi], dim=1).tolist()]


@dataclass
class PastedFace:
    """One face pasted into its image window ``[x0, y0, x1, y1)``.

    ``labels``: ``(y1-y0) x (x1-x0)`` uint8, the face's labels, 0 (background) outside its crops.
    ``inside``: bool mask of the pixels inside at least one view's crop.
    ``top``: float max of the view-averaged probabilities (0 outside), when asked for.
    """

    window: Tuple[int, int, int, int]
    labels: torch.Tensor
    inside: torch.Tensor
    top: Optional[torch.Tensor] = None


def cells_from_labels(labels: torch.Tensor) -> torch.Tensor:
    """Labels of the interpolation cells of crops with ``... x h x w`` uint8 argmax labels:
    ``... x (h+1) x (w+1)`` uint8. Cell ``(i, j)`` is the square between the centres of crop
    pixels ``(i-1, j-1)`` and ``(i, j)`` (crop edges replicated); its value is the label that its
    four corners share, or ``_MIXED`` (255) when they differ."""
    h, w = labels.shape[-2:]
    rows = torch.arange(-1, h + 1, device=labels.device).clamp(0, h - 1)
    cols = torch.arange(-1, w + 1, device=labels.device).clamp(0, w - 1)
    pad = labels.index_select(-2, rows).index_select(-1, cols)  # ... x (h+2) x (w+2)
    a, b, c, d = pad[..., :-1, :-1], pad[..., :-1, 1:], pad[..., 1:, :-1], pad[..., 1:, 1:]
    uniform = (a == b) & (a == c) & (a == d)
    return torch.where(uniform, a, torch.full_like(a, _MIXED))


@dataclass
class _Item:
    """A piece of a face's window, pasted as one unit: face index and window ``(x0, y0, x1, y1)``."""

    face: int
    window: Tuple[int, int, int, int]

    @property
    def size(self) -> Tuple[int, int]:
        x0, y0, x1, y1 = self.window
        return y1 - y0, x1 - x0


def _items(windows: Dict[int, Tuple[int, int, int, int]], order: Sequence[int], tile: int) -> List[_Item]:
    """The faces' windows, in ``order``, cut into tiles of at most ``tile x tile`` pixels."""
    items = []
    for i in order:
        x0, y0, x1, y1 = windows[i]
        for ty in range(y0, y1, tile):
            for tx in range(x0, x1, tile):
                items.append(_Item(i, (tx, ty, min(tx + tile, x1), min(ty + tile, y1))))
    return items


def _chunks(items: List[_Item], max_pixels: int, max_items: int):
    """Consecutive runs of at most ``max_items`` items whose windows, padded to the largest
    height and width of the run, hold at most ``max_pixels`` pixels (a larger item alone)."""
    chunk, hmax, wmax = [], 0, 0
    for item in items:
        h, w = item.size
        nh, nw = max(hmax, h), max(wmax, w)
        if chunk and ((len(chunk) + 1) * nh * nw > max_pixels or len(chunk) >= max_items):
            yield chunk
            chunk, nh, nw = [], h, w
        chunk.append(item)
        hmax, wmax = nh, nw
    if chunk:
        yield chunk


def _paste_chunk(probs: torch.Tensor, inverse: np.ndarray, items: List[_Item], with_top: bool, with_probs: bool, maxima: CropMaxima):
    """Paste a run of items at once (steps 2 and 3 of the module docstring).

    Args:
        probs: ``F x V x C x h x w`` probabilities of the items' faces (one row per item).
        inverse: ``F x V x 2 x 3`` float64 image -> crop affines.
        maxima: the :class:`CropMaxima` of ``probs``.

    Returns:
        ``(codes, top, point_probs)``: ``F x Hmax x Wmax`` uint8 labels (``_OUTSIDE`` where no
        view covers a pixel, and beyond each item's own size), ``F x Hmax x Wmax`` max of the
        view-averaged probabilities (``with_top``) and, ``with_probs``, the ``K x C`` averaged
        probabilities (0 where no view covers the pixel) of every pixel of every item, item after
        item in row-major order (else None).
    """
    num_items, num_views, num_classes, h, w = probs.shape
    device = probs.device
    sizes = np.array([it.size for it in items])  # F x 2 (height, width)
    origin = np.array([it.window[:2] for it in items], dtype=np.float64)  # F x 2 (x0, y0)
    hmax, wmax = int(sizes[:, 0].max()), int(sizes[:, 1].max())
    # pixel centres of every item's window (padded to the largest), image coordinates
    xs = origin[:, 0:1] + np.arange(wmax) + 0.5  # F x Wmax
    ys = origin[:, 1:2] + np.arange(hmax) + 0.5  # F x Hmax
    valid_x = np.arange(wmax)[None, :] < sizes[:, 1:2]
    valid_y = np.arange(hmax)[None, :] < sizes[:, 0:1]
    axis_aligned = (inverse[:, :, 0, 1] == 0) & (inverse[:, :, 1, 0] == 0)  # F x V

    # items whose pixels are all computed the exact way: rotated views, or probabilities asked for
    exact_items = ~axis_aligned.all(axis=1) | with_probs
    if not with_probs:
        cells = cells_from_labels(maxima.labels)  # F x V x (h+1) x (w+1)
    top = None
    if with_top:
        top_maps = maxima.top  # F x V x h x w
        top = torch.zeros((num_items, hmax, wmax), device=device)
        top_count = torch.zeros((num_items, hmax, wmax), device=device)
    codes = None
    for v in range(num_views):
        a = inverse[:, v]
        # separable crop coordinates of the pixel centres (exact for axis-aligned views)
        gu = ((a[:, 0, 0:1] * xs + a[:, 0, 2:3]) * (2.0 / w) - 1.0).astype(np.float32)  # F x Wmax
        gv = ((a[:, 1, 1:2] * ys + a[:, 1, 2:3]) * (2.0 / h) - 1.0).astype(np.float32)  # F x Hmax
        inside = torch.from_numpy(((np.abs(gv) <= 1) & valid_y)[:, :, None] & ((np.abs(gu) <= 1) & valid_x)[:, None, :]).to(device)
        view_codes = torch.full((num_items, hmax, wmax), _OUTSIDE, dtype=torch.uint8, device=device)
        if not with_probs:
            # crop cell of a pixel: floor(u + 0.5) with u the crop coordinate, i.e. (g + 1) * w / 2
            jx = np.clip(np.floor((gu.astype(np.float64) + 1.0) * (w / 2.0) + 0.5), 0, w).astype(np.int64)
            iy = np.clip(np.floor((gv.astype(np.float64) + 1.0) * (h / 2.0) + 0.5), 0, h).astype(np.int64)
            jx, iy = torch.from_numpy(jx).to(device), torch.from_numpy(iy).to(device)
            for k in range(num_items):  # a row and a column selection per item: cheaper than one gather
                view_codes[k] = cells[k, v].index_select(0, iy[k]).index_select(1, jx[k])
            view_codes.masked_fill_(~inside, _OUTSIDE)
            if with_top:
                grid = torch.stack(torch.broadcast_tensors(torch.from_numpy(gu)[:, None, :], torch.from_numpy(gv)[:, :, None]), dim=-1)
                sampled = F.grid_sample(top_maps[:, v : v + 1], grid.to(device), mode="bilinear", padding_mode="border", align_corners=False)
                top += sampled[:, 0] * inside
                top_count += inside
        if v == 0:
            codes = view_codes
        else:  # a pixel covered by views that disagree is computed the exact way
            agree = (view_codes == codes) | (view_codes == _OUTSIDE)
            codes = torch.where(codes == _OUTSIDE, view_codes, torch.where(agree, codes, torch.full_like(codes, _MIXED)))
    if exact_items.any():
        everywhere = (valid_y[:, :, None] & valid_x[:, None, :]) & exact_items[:, None, None]
        codes = codes.masked_fill(torch.from_numpy(everywhere).to(device), _MIXED)
    if with_top:
        top = top / top_count.clamp(min=1.0)

    point_probs = None
    f, py, px = (codes == _MIXED).nonzero(as_tuple=True)
    if len(f):
        fi = f.cpu().numpy()
        x = origin[fi, 0] + px.cpu().numpy() + 0.5
        y = origin[fi, 1] + py.cpu().numpy() + 0.5
        counts = np.bincount(fi, minlength=num_items)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        pos = torch.from_numpy(np.arange(len(fi)) - starts[fi]).to(device)
        total, count = None, None
        for v in range(num_views):
            a = inverse[fi, v]  # K x 2 x 3
            gu = ((a[:, 0, 0] * x + a[:, 0, 1] * y + a[:, 0, 2]) * (2.0 / w) - 1.0).astype(np.float32)
            gv = ((a[:, 1, 0] * x + a[:, 1, 1] * y + a[:, 1, 2]) * (2.0 / h) - 1.0).astype(np.float32)
            inside = torch.from_numpy((np.abs(gu) <= 1) & (np.abs(gv) <= 1)).to(device, torch.float32)
            # one grid_sample for all items: each item's points, padded to the longest list
            grid = torch.zeros((num_items, 1, int(counts.max()), 2), device=device)
            grid[f, 0, pos] = torch.from_numpy(np.stack([gu, gv], axis=1)).to(device)
            sampled = F.grid_sample(probs[:, v], grid, mode="bilinear", padding_mode="border", align_corners=False)
            sampled = sampled[f, :, 0, pos] * inside[:, None]  # K x C
            total = sampled if total is None else total + sampled
            count = inside if count is None else count + inside
        avg = total / count.clamp(min=1.0)[:, None]
        exact_top, lab = avg.max(dim=1)
        lab = torch.where(exact_top < 1.0 / num_classes, torch.zeros_like(lab), lab)
        lab = torch.where(count > 0, lab, torch.full_like(lab, _OUTSIDE))
        codes[f, py, px] = lab.to(torch.uint8)
        if with_top:
            top[f, py, px] = exact_top
        if with_probs:
            point_probs = avg
    return codes, top, point_probs


def _paste(
    probs: torch.Tensor,
    affines: torch.Tensor,
    items: List[_Item],
    tile: int,
    with_top: bool = False,
    with_probs: bool = False,
    maxima: Optional[CropMaxima] = None,
):
    """Paste ``items`` (pieces of the windows of faces with ``N x V x C x h x w`` probabilities
    and ``N x V x 2 x 3`` crop -> image affines), a chunk of at most ``tile * tile`` pixels at a
    time, and yield them in order: ``(item, labels, inside, top, item_probs)`` with ``labels``
    (uint8, 0 outside the face's crops), ``inside`` (bool), ``top`` (float, ``with_top``) and
    ``item_probs`` (``C x h x w`` view-averaged probabilities, 0 outside, ``with_probs``) of the
    item's window. ``maxima``: the faces' :class:`CropMaxima`, if already computed."""
    if not items:
        return
    num_classes = probs.shape[2]
    faces = sorted({it.face for it in items})
    inverse = {i: inv for i, inv in zip(faces, invert_affines(affines[faces].reshape(-1, 2, 3).float()).double().reshape(len(faces), -1, 2, 3).cpu().numpy())}
    for chunk in _chunks(items, tile * tile, 32):
        rows = [it.face for it in chunk]
        consecutive = rows == list(range(rows[0], rows[0] + len(rows)))
        select = slice(rows[0], rows[0] + len(rows)) if consecutive else rows  # a view when possible
        chunk_probs = probs[select].float()
        chunk_maxima = crop_maxima(chunk_probs) if maxima is None else CropMaxima(maxima.top[select], maxima.labels[select])
        codes, top, point_probs = _paste_chunk(chunk_probs, np.stack([inverse[i] for i in rows]), chunk, with_top, with_probs, chunk_maxima)
        start = 0
        for k, item in enumerate(chunk):
            h, w = item.size
            item_codes = codes[k, :h, :w]
            inside = item_codes != _OUTSIDE
            item_probs = None
            if with_probs:
                # every pixel of every item was computed, item after item, in row-major order
                item_probs = point_probs[start : start + h * w].T.reshape(num_classes, h, w)
                start += h * w
            yield item, item_codes.masked_fill(~inside, 0), inside, None if top is None else top[k, :h, :w], item_probs


def _assemble(probs, affines, windows, faces, tile, with_top, maxima=None) -> Dict[int, PastedFace]:
    """:class:`PastedFace` of each face in ``faces``, assembled from its tiles."""
    out: Dict[int, PastedFace] = {}
    device = probs.device
    for i in faces:
        x0, y0, x1, y1 = windows[i]
        h, w = max(0, y1 - y0), max(0, x1 - x0)
        out[i] = PastedFace(
            windows[i], torch.zeros((h, w), dtype=torch.uint8, device=device), torch.zeros((h, w), dtype=torch.bool, device=device),
            torch.zeros((h, w), device=device) if with_top else None,
        )
    for item, labels, inside, top, _ in _paste(probs, affines, _items(windows, faces, tile), tile, with_top, maxima=maxima):
        face = out[item.face]
        x0, y0 = face.window[:2]
        tx0, ty0, tx1, ty1 = item.window
        sl = (slice(ty0 - y0, ty1 - y0), slice(tx0 - x0, tx1 - x0))
        face.labels[sl], face.inside[sl] = labels, inside
        if with_top:
            face.top[sl] = top * inside
    return out


# ---------------------------------------------------------------------------- the post-processor
def add_postprocessing_config(cfg: CN) -> None:
    """Add the post-processing keys (``MODEL.QANET.INFERENCE.*`` of :class:`FacePostProcessor`)."""
    if "INFERENCE" not in cfg.MODEL.QANET:
        cfg.MODEL.QANET.INFERENCE = CN()
    i = cfg.MODEL.QANET.INFERENCE
    # Quality score = (box^a * iou^b * pixel^c)^(1/(a+b+c)).
    i.SCORE_WEIGHTS = (1.0, 0.5, 3.0)
    # Pixel score: mean max-probability over pixels whose max-probability >= this.
    i.PIXEL_SCORE_THRESH = 0.2
    # Pixels of the pixel score: "pasted" (the pasted, view-averaged probabilities at the image
    # pixels inside the face's pasted crop region, as the official QANet code; the GPU configs'
    # setting), "image" (the same probabilities at the image pixels inside the face box only) or
    # "crop" (every pixel of the face crops, padding included, averaged over box-scale views).
    i.PIXEL_SCORE_REGION = "image"
    # A face is painted into the label map when its quality score >= QUALITY_SCORE_THRESH and its
    # detector box score >= BOX_SCORE_THRESH. Faces are painted in ascending order of a score, so
    # that the best face wins where faces overlap: PAINT_ORDER "box" (the box score, as the
    # official QANet code) or "quality" (the quality score); ties are broken by the other score.
    i.QUALITY_SCORE_THRESH = 0.0
    i.BOX_SCORE_THRESH = 0.3
    i.PAINT_ORDER = "box"
    # Faces are pasted back window by window in tiles of at most PASTE_TILE x PASTE_TILE image
    # pixels: the memory for pasting is bounded by the tile, whatever the image size.
    i.PASTE_TILE = 512


class FacePostProcessor:
    """Scores, pastes and paints per-face results (see the module docstring), stage by stage:
    :meth:`rescale` -> :meth:`score` -> a ``smooth`` hook -> :meth:`paint` -> :meth:`face_labels`;
    :meth:`__call__` runs them in that order.

    Built from ``MODEL.QANET.INFERENCE`` (:func:`add_postprocessing_config`) and
    ``MODEL.QANET.NUM_CLASSES``.
    """

    @configurable
    def __init__(
        self,
        *,
        num_classes: int,
        score_weights: Sequence[float] = (1.0, 0.5, 3.0),
        pixel_score_thresh: float = 0.2,
        quality_score_thresh: float = 0.0,
        box_score_thresh: float = 0.3,
        paint_order: str = "quality",
        pixel_score_region: str = "crop",
        paste_tile: int = 512,
    ):
        if paint_order not in PAINT_ORDERS:
            raise ValueError(f"MODEL.QANET.INFERENCE.PAINT_ORDER must be one of {PAINT_ORDERS}; got {paint_order!r}")
        if pixel_score_region not in PIXEL_SCORE_REGIONS:
            raise ValueError(
                f"MODEL.QANET.INFERENCE.PIXEL_SCORE_REGION must be one of {PIXEL_SCORE_REGIONS}; got {pixel_score_region!r}"
            )
        if not 2 <= int(num_classes) <= 254:
            raise ValueError(f"MODEL.QANET.NUM_CLASSES must be in [2, 254] for uint8 label maps; got {num_classes}")
        if int(paste_tile) < 16:
            raise ValueError(f"MODEL.QANET.INFERENCE.PASTE_TILE must be >= 16; got {paste_tile}")
        self.num_classes = int(num_classes)
        self.score_weights = tuple(float(w) for w in score_weights)
        self.pixel_score_thresh = float(pixel_score_thresh)
        self.quality_score_thresh = float(quality_score_thresh)
        self.box_score_thresh = float(box_score_thresh)
        self.paint_order = paint_order
        self.pixel_score_region = pixel_score_region
        self.paste_tile = int(paste_tile)

    @classmethod
    def from_config(cls, cfg):
        i = cfg.MODEL.QANET.INFERENCE
        return {
            "num_classes": cfg.MODEL.QANET.NUM_CLASSES,
            "score_weights": i.SCORE_WEIGHTS,
            "pixel_score_thresh": i.PIXEL_SCORE_THRESH,
            "quality_score_thresh": i.QUALITY_SCORE_THRESH,
            "box_score_thresh": i.BOX_SCORE_THRESH,
            "paint_order": i.PAINT_ORDER,
            "pixel_score_region": i.PIXEL_SCORE_REGION,
            "paste_tile": i.PASTE_TILE,
        }

    # ------------------------------------------------------------------ steps
    @staticmethod
    def rescale(faces: Instances, output_size: Sequence[int]) -> Instances:
        """``faces`` moved from their frame (``faces.image_size``) to ``output_size``
        ``(height, width)``: boxes scaled and clipped, affines and landmarks scaled; probabilities unchanged."""
        height, width = int(output_size[0]), int(output_size[1])
        in_h, in_w = faces.image_size
        out = Instances((height, width), **faces.get_fields())
        sx, sy = width / in_w, height / in_h
        if (sx, sy) == (1.0, 1.0):
            return out
        boxes = Boxes(faces.pred_boxes.tensor.clone())
        boxes.scale(sx, sy)
        boxes.clip((height, width))
        out.pred_boxes = boxes
        affines = faces.crop_affines.clone()
        affines[..., 0, :] *= sx
        affines[..., 1, :] *= sy
        out.crop_affines = affines
        if faces.has("pred_keypoints"):
            kp = faces.pred_keypoints.clone()
            kp[..., 0] *= sx
            kp[..., 1] *= sy
            out.pred_keypoints = kp
        return out

    def windows(self, faces: Instances) -> Dict[int, Tuple[int, int, int, int]]:
        """Each face's window ``(x0, y0, x1, y1)`` in ``faces.image_size`` (:func:`face_windows`)."""
        wins = face_windows(faces.crop_affines, faces.parsing_probs.shape[-2:], faces.image_size)
        return dict(enumerate(wins))

    def paste(
        self, faces: Instances, indices: Sequence[int], with_top: bool = False, maxima: Optional[CropMaxima] = None
    ) -> Dict[int, PastedFace]:
        """The faces ``indices`` of ``faces`` pasted into their windows of ``faces.image_size``
        (``maxima``: the faces' :class:`CropMaxima`, if already computed)."""
        return _assemble(
            faces.parsing_probs, faces.crop_affines, self.windows(faces), list(indices), self.paste_tile, with_top, maxima
        )

    def score(
        self, faces: Instances, pasted: Optional[Dict[int, PastedFace]] = None, maxima: Optional[CropMaxima] = None
    ) -> Instances:
        """Set ``pixel_scores`` and the quality ``scores`` of ``faces`` (in place; also returned).

        With ``PIXEL_SCORE_REGION`` "image" or "pasted" the faces are pasted (``faces`` must then be in the
        output frame); pass a dict as ``pasted`` to keep those pastes for :meth:`paint` (faces
        already in it with their ``top`` are not pasted again).
        ``maxima``: the faces' :class:`CropMaxima`, if already computed.
        """
        n = len(faces)
        probs = faces.parsing_probs
        if n and maxima is None:
            maxima = crop_maxima(probs)
        if self.pixel_score_region == "crop":
            views = probs.shape[1] if n else 1
            pix = sum(pixel_scores_from_top(maxima.top[:, v], self.pixel_score_thresh) for v in range(views)) / views if n else probs.new_zeros(0)
        else:
            known = {i: face for i, face in (pasted or {}).items() if i < n and face.top is not None}
            faces_pasted = {**known, **self.paste(faces, [i for i in range(n) if i not in known], with_top=True, maxima=maxima)}
            if pasted is not None:
                pasted.update(faces_pasted)
            if self.pixel_score_region == "image":
                values = [self._box_pixel_score(faces_pasted[i], faces.pred_boxes.tensor[i]) for i in range(n)]
            else:
                values = [self._region_pixel_score(faces_pasted[i]) for i in range(n)]
            pix = torch.stack(values) if values else probs.new_zeros(0)
        faces.pixel_scores = pix.to(faces.box_scores.device)
        faces.scores = face_scores(faces.box_scores, faces.iou_scores, faces.pixel_scores, self.score_weights)
        return faces

    def _box_pixel_score(self, face: PastedFace, box: torch.Tensor) -> torch.Tensor:
        x0, y0, x1, y1 = face.window
        bx0, by0, bx1, by1 = box.tolist()
        # pixels whose centres (i + 0.5) lie inside the box, within the window
        cx0, cx1 = max(x0, int(np.ceil(bx0 - 0.5))), min(x1, int(np.floor(bx1 - 0.5)) + 1)
        cy0, cy1 = max(y0, int(np.ceil(by0 - 0.5))), min(y1, int(np.floor(by1 - 0.5)) + 1)
        if cx1 <= cx0 or cy1 <= cy0:
            return face.labels.new_zeros((), dtype=torch.float32)
        sl = (slice(cy0 - y0, cy1 - y0), slice(cx0 - x0, cx1 - x0))
        top, inside = face.top[sl], face.inside[sl]
        keep = inside & (top >= self.pixel_score_thresh)
        return (top * keep).sum() / keep.sum().clamp(min=1)

    def _region_pixel_score(self, face: PastedFace) -> torch.Tensor:
        """Pixel score over the image pixels of the face's pasted crop region (its window's
        pixels inside at least one view's crop)."""
        keep = face.inside & (face.top >= self.pixel_score_thresh)
        return (face.top * keep).sum() / keep.sum().clamp(min=1)

    def order(self, faces: Instances) -> List[int]:
        """Indices of the faces to paint, in painting order (``PAINT_ORDER``; only faces with
        quality score >= ``QUALITY_SCORE_THRESH`` and box score >= ``BOX_SCORE_THRESH``)."""
        keep = (faces.scores >= self.quality_score_thresh) & (faces.box_scores >= self.box_score_thresh)
        if self.paint_order == "quality":
            return paint_order(faces.scores, faces.box_scores, keep)
        return paint_order(faces.box_scores, faces.scores, keep)

    def paint(
        self,
        faces: Instances,
        class_scores: bool = False,
        pasted: Optional[Dict[int, PastedFace]] = None,
        maxima: Optional[CropMaxima] = None,
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """The ``H x W`` uint8 label map of scored ``faces`` (in their frame ``faces.image_size``)
        and, with ``class_scores``, the ``C x H x W`` float class scores (else None).
        ``pasted``: faces already pasted (:meth:`score`); the faces this call pastes are added to
        it. ``maxima``: the faces' :class:`CropMaxima`, if already computed."""
        height, width = faces.image_size
        device = faces.parsing_probs.device
        labels = torch.zeros((height, width), dtype=torch.uint8, device=device)
        sem_seg = None
        if class_scores:
            sem_seg = torch.zeros((self.num_classes, height, width), device=device)
            sem_seg[0] = 1.0
        order = self.order(faces)
        if pasted is None:
            pasted = {}
        if not class_scores:
            # paste in instance order (consecutive faces share one computation), paint in paint order
            pasted.update(self.paste(faces, sorted(i for i in order if i not in pasted), maxima=maxima))
            pieces = ((pasted[i].window, pasted[i].labels, None) for i in order)
        else:
            items = _items(self.windows(faces), order, self.paste_tile)
            pieces = ((item.window, item_labels, item_probs) for item, item_labels, _, _, item_probs in
                      _paste(faces.parsing_probs, faces.crop_affines, items, self.paste_tile, with_probs=class_scores))
        for (x0, y0, x1, y1), face_labels, face_probs in pieces:
            if x1 <= x0 or y1 <= y0:
                continue
            fg = face_labels != 0
            labels[y0:y1, x0:x1] = torch.where(fg, face_labels, labels[y0:y1, x0:x1])
            if class_scores:
                sem_seg[:, y0:y1, x0:x1] = torch.where(fg[None], face_probs, sem_seg[:, y0:y1, x0:x1])
        return labels, sem_seg

    def face_labels(
        self, faces: Instances, pasted: Optional[Dict[int, PastedFace]] = None, maxima: Optional[CropMaxima] = None
    ) -> List[Dict]:
        """Each face's own parsing: ``window`` ``[x0, y0, x1, y1)`` and ``labels`` (uint8,
        window-sized, 0 outside its crops), in the frame of ``faces.image_size``, in instance
        order. ``pasted``: faces already pasted (:meth:`score`, :meth:`paint`), not pasted again."""
        pasted = dict(pasted or {})
        pasted.update(self.paste(faces, [i for i in range(len(faces)) if i not in pasted], maxima=maxima))
        return [{"window": list(pasted[i].window), "labels": pasted[i].labels} for i in range(len(faces))]

    def __call__(
        self,
        faces: Instances,
        output_size: Optional[Sequence[int]] = None,
        class_scores: bool = False,
        smooth: Optional[Callable[[Instances], Instances]] = None,
        times: Optional[StageTimes] = None,
    ) -> Dict:
        """All stages on the per-face results of one image: rescale (to ``output_size``), score,
        ``smooth`` (a callable that takes the scored faces and returns them with changed
        ``parsing_probs``, ``scores`` or ``box_scores``: the video smoother), paint, per-face labels.
        ``times``: a :class:`StageTimes` that records the stages.

        Returns:
            dict with ``instances`` (``pred_boxes``, ``scores``, ``box_scores``, ``iou_scores``,
            ``pixel_scores`` and the faces' other fields except their crop probabilities and
            affines, sorted by decreasing quality score), ``labels`` (``H x W`` uint8),
            ``painted`` (``N`` bool tensor: the faces painted into ``labels``), ``face_labels``
            (per face its ``window`` and ``labels``, :meth:`face_labels`) and, with
            ``class_scores``, ``sem_seg`` (``C x H x W``), all in ``instances``' order.
        """
        stage = times if times is not None else profiler_range
        with stage("rescale"):  # a new Instances either way: the caller's faces are not changed
            faces = self.rescale(faces, faces.image_size if output_size is None else output_size)
        pasted: Dict[int, PastedFace] = {}
        with stage("score"):
            maxima = crop_maxima(faces.parsing_probs) if len(faces) else None  # shared by scoring and painting
            faces = self.score(faces, pasted, maxima)
        if smooth is not None:
            with stage("smooth"):
                faces = smooth(faces)
                pasted, maxima = {}, None  # the probabilities may have changed
        with stage("paint"):
            labels, sem_seg = self.paint(faces, class_scores, pasted, maxima)
            painted = torch.zeros(len(faces), dtype=torch.bool)
            painted[self.order(faces)] = True
        with stage("face_labels"):
            per_face = self.face_labels(faces, pasted, maxima)
        rank = torch.argsort(faces.scores, descending=True, stable=True)
        instances = faces[rank]
        instances.remove("parsing_probs")
        instances.remove("crop_affines")
        result = {
            "instances": instances,
            "labels": labels,
            "painted": painted[rank.cpu()],
            "face_labels": [per_face[int(i)] for i in rank],
        }
        if class_scores:
            result["sem_seg"] = sem_seg
        return result
