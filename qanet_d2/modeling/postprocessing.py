"""Post-processing of parsed faces: scoring, paste-back and painting (the one place for it).

Per-face results (:class:`~detectron2.structures.Instances`, one per image) carry ``pred_boxes``
(XYXY_ABS), ``box_scores``, ``iou_scores``, ``parsing_probs`` (``N x V x C x h x w``, one per
box-scale view; flips and ensemble members already averaged in the crop frame) and
``crop_affines`` (``N x V x 2 x 3``, crop pixel -> image pixel, the continuous pixel coordinates of
:mod:`qanet_d2.layers.crops`). :class:`FacePostProcessor` turns them into the image-level outputs
(``qanet_d2.runtime.postprocess`` mirrors it in NumPy):

1. **Rescale**: boxes and affines from the model-input frame to the output frame.
2. **Paste** one face: its window is the union of its views' crop windows, clipped to the image.
   At every pixel centre, the views whose crop contains it are sampled bilinearly (``grid_sample``,
   ``align_corners=False``, crop edges clamped) and averaged; the label is the argmax (first
   maximum), background (0) where the maximum is below ``1 / C``, none outside every view's crop.
3. **Score**: pixel score = mean of the per-pixel max probability over the pixels where it is
   >= ``PIXEL_SCORE_THRESH``, on the pasted probabilities inside the face's pasted crop region
   (``PIXEL_SCORE_REGION`` "pasted", the official QANet code), inside the face box ("image"), or on
   the crops, padding included, averaged over views ("crop").
   Quality score = ``(box^a * iou^b * pixel^c) ** (1 / (a + b + c))``.
4. **Smooth** (optional): a hook that may change the faces' probabilities and scores (the video
   smoother).
5. **Paint**: faces with quality score >= ``QUALITY_SCORE_THRESH`` and box score >=
   ``BOX_SCORE_THRESH`` write their non-background labels in ascending paint score (``PAINT_ORDER``;
   ties: the other score, then instance order), so the best face wins overlaps. Class scores
   (``sem_seg``, on request) take the face's averaged probabilities where it paints, so their
   argmax is the label map.
6. **Per-face labels**: each face's own labels on its window (the pastes of step 5 reused).

Speed and memory: windows are pasted in tiles of at most ``PASTE_TILE`` pixels a side, several
faces per tensor operation. The ``C``-channel interpolation runs only where the four crop pixels
around a point differ in label in some view: elsewhere the bilinear mix has their label (exact).
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from detectron2.config import CfgNode as CN
from detectron2.config import configurable
from detectron2.structures import Boxes, Instances

from ..layers.crops import crop_windows, invert_affines

__all__ = [
    "FacePostProcessor", "StageTimes", "PastedFace", "add_postprocessing_config", "paint_order", "face_scores",
    "channel_max", "pixel_scores_from_top", "PAINT_ORDERS", "PIXEL_SCORE_REGIONS", "SCORE_EPS",
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
    """Pixel scores from ``... x h x w`` max probabilities: the mean of those >= ``thresh`` (0 for
    none)."""
    top = top.flatten(-2)
    keep = (top >= thresh).to(top.dtype)
    return (top * keep).sum(dim=-1) / keep.sum(dim=-1).clamp(min=1)


def crop_maxima(probs: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Max probability and its uint8 class per crop pixel of ``N x V x C x h x w`` probabilities
    (``N x V x h x w`` each; shared by scoring and painting)."""
    return channel_max(probs, dim=2, label_dtype=torch.uint8)


def face_scores(box_scores, iou_scores, pix_scores, weights: Sequence[float] = (1.0, 0.5, 3.0)) -> torch.Tensor:
    """Quality score ``(box^a * iou^b * pixel^c) ** (1 / (a + b + c))``, each score clamped to
    ``[SCORE_EPS, 1]`` (the IoU branch is unbounded)."""
    a, b, c = (float(w) for w in weights)
    eps = SCORE_EPS
    terms = sum(w * x.clamp(eps, 1.0).log() for w, x in ((a, box_scores), (b, iou_scores), (c, pix_scores)))
    return torch.exp(terms / max(a + b + c, eps))


def channel_max(probs: torch.Tensor, dim: int = 0, label_dtype: torch.dtype = torch.long) -> Tuple[torch.Tensor, torch.Tensor]:
    """``probs.max(dim)`` (first maximum wins), the argmax as ``label_dtype``.

    On the CPU torch's reduction over an outer dimension of a large contiguous tensor is slow
    (about 1 ms for one 17 x 128 x 96 crop); a running maximum over the planes is faster.
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

    ``with times("paint"): ...`` times a stage, also a ``torch.profiler.record_function`` range.
    ``sync``: wait for CUDA kernels at both ends of a stage.
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


profiler_range = torch.profiler.record_function  # a stage without timing


# ---------------------------------------------------------------------------- pasting
@dataclass
class PastedFace:
    """One face pasted into its image window ``[x0, y0, x1, y1)``: window-sized uint8 ``labels``
    (0 outside its crops), ``inside`` (in at least one view's crop) and optionally ``top`` (max of
    the view-averaged probabilities, 0 outside)."""

    window: Tuple[int, int, int, int]
    labels: torch.Tensor
    inside: torch.Tensor
    top: Optional[torch.Tensor] = None


def cells_from_labels(labels: torch.Tensor) -> torch.Tensor:
    """``... x (h+1) x (w+1)`` labels of the interpolation cells of ``... x h x w`` crop labels:
    cell ``(i, j)`` lies between pixel centres ``(i-1, j-1)`` and ``(i, j)`` (edges replicated);
    its value is the label its four corners share, else ``_MIXED``."""
    h, w = labels.shape[-2:]
    rows = torch.arange(-1, h + 1, device=labels.device).clamp(0, h - 1)
    cols = torch.arange(-1, w + 1, device=labels.device).clamp(0, w - 1)
    pad = labels.index_select(-2, rows).index_select(-1, cols)  # ... x (h+2) x (w+2)
    a, b, c, d = pad[..., :-1, :-1], pad[..., :-1, 1:], pad[..., 1:, :-1], pad[..., 1:, 1:]
    uniform = (a == b) & (a == c) & (a == d)
    return torch.where(uniform, a, torch.full_like(a, _MIXED))


@dataclass
class _Item:
    """A tile of a face's window, pasted as one unit."""

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
    """Runs of at most ``max_items`` items holding at most ``max_pixels`` pixels once padded to
    the run's largest size (a larger item alone)."""
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


def _paste_chunk(probs: torch.Tensor, inverse: np.ndarray, items: List[_Item], with_top: bool, with_probs: bool,
                 maxima):
    """Paste a run of items at once, from their faces' ``F x V x C x h x w`` ``probs`` (one row per
    item), ``F x V x 2 x 3`` float64 image -> crop affines ``inverse`` and :func:`crop_maxima`.

    Returns ``(codes, top, point_probs)``: ``F x Hmax x Wmax`` uint8 labels (``_OUTSIDE`` where no
    view covers a pixel or beyond the item), the max of the view-averaged probabilities
    (``with_top``) and, ``with_probs``, the ``K x C`` averaged probabilities of every pixel of every
    item, item after item in row-major order.
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
        cells = cells_from_labels(maxima[1])  # F x V x (h+1) x (w+1)
    top = None
    if with_top:
        top_maps = maxima[0]  # F x V x h x w
        top = torch.zeros((num_items, hmax, wmax), device=device)
        top_count = torch.zeros((num_items, hmax, wmax), device=device)
    codes = torch.full((num_items, hmax, wmax), _OUTSIDE, dtype=torch.uint8, device=device)
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
        # a pixel covered by views that disagree is computed the exact way
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
        pos = torch.from_numpy(np.arange(len(fi)) - np.searchsorted(fi, fi)).to(device)  # index among its item's points
        total, count = 0.0, 0.0
        for v in range(num_views):
            a = inverse[fi, v]  # K x 2 x 3
            gu = ((a[:, 0, 0] * x + a[:, 0, 1] * y + a[:, 0, 2]) * (2.0 / w) - 1.0).astype(np.float32)
            gv = ((a[:, 1, 0] * x + a[:, 1, 1] * y + a[:, 1, 2]) * (2.0 / h) - 1.0).astype(np.float32)
            inside = torch.from_numpy((np.abs(gu) <= 1) & (np.abs(gv) <= 1)).to(device, torch.float32)
            # one grid_sample for all items: each item's points, padded to the longest list
            grid = torch.zeros((num_items, 1, int(pos.max()) + 1, 2), device=device)
            grid[f, 0, pos] = torch.from_numpy(np.stack([gu, gv], axis=1)).to(device)
            sampled = F.grid_sample(probs[:, v], grid, mode="bilinear", padding_mode="border", align_corners=False)
            sampled = sampled[f, :, 0, pos] * inside[:, None]  # K x C
            total, count = total + sampled, count + inside
        avg = total / count.clamp(min=1.0)[:, None]
        exact_top, lab = avg.max(dim=1)
        lab = lab.masked_fill(exact_top < 1.0 / num_classes, 0).masked_fill(count == 0, _OUTSIDE)
        codes[f, py, px] = lab.to(torch.uint8)
        if with_top:
            top[f, py, px] = exact_top
        if with_probs:
            point_probs = avg
    return codes, top, point_probs


def _paste(probs: torch.Tensor, affines: torch.Tensor, items: List[_Item], tile: int, with_top: bool = False,
           with_probs: bool = False, maxima=None):
    """Paste ``items`` a chunk of at most ``tile * tile`` pixels at a time and yield, in order,
    ``(item, labels, inside, top, item_probs)`` of each item's window (``top`` with ``with_top``,
    the ``C x h x w`` averaged ``item_probs`` with ``with_probs``)."""
    if not items:
        return
    num_classes = probs.shape[2]
    faces = sorted({it.face for it in items})
    inverse = invert_affines(affines[faces].flatten(0, 1).float()).double().unflatten(0, (len(faces), -1))
    inverse = dict(zip(faces, inverse.cpu().numpy()))
    for chunk in _chunks(items, tile * tile, 32):
        rows = [it.face for it in chunk]
        consecutive = rows == list(range(rows[0], rows[0] + len(rows)))
        select = slice(rows[0], rows[0] + len(rows)) if consecutive else rows  # a view when possible
        chunk_probs = probs[select].float()
        chunk_maxima = crop_maxima(chunk_probs) if maxima is None else tuple(m[select] for m in maxima)
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
    # Pixels of the pixel score (module docstring): "pasted" (the official QANet code; the GPU
    # configs'), "image" (pasted, inside the face box) or "crop" (the crops, padding included).
    i.PIXEL_SCORE_REGION = "image"
    # Faces painted: quality score >= QUALITY_SCORE_THRESH and box score >= BOX_SCORE_THRESH, in
    # ascending PAINT_ORDER score ("box", as the official QANet code, or "quality"), so the best
    # face wins overlaps; ties are broken by the other score.
    i.QUALITY_SCORE_THRESH = 0.0
    i.BOX_SCORE_THRESH = 0.3
    i.PAINT_ORDER = "box"
    # Tile side of the paste-back: bounds its memory whatever the image size.
    i.PASTE_TILE = 512


class FacePostProcessor:
    """Scores, pastes and paints per-face results (module docstring): :meth:`__call__` runs
    :meth:`rescale` -> :meth:`score` -> a ``smooth`` hook -> :meth:`paint` -> :meth:`face_labels`.
    Built from ``MODEL.QANET.INFERENCE`` and ``MODEL.QANET.NUM_CLASSES``."""

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
        """``faces`` moved from their frame to ``output_size`` ``(height, width)``: boxes scaled and
        clipped, affines and landmarks scaled."""
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
        out.crop_affines = faces.crop_affines * faces.crop_affines.new_tensor([[sx], [sy]])
        if faces.has("pred_keypoints"):
            out.pred_keypoints = faces.pred_keypoints.clone()
            out.pred_keypoints[..., :2] *= out.pred_keypoints.new_tensor([sx, sy])
        return out

    def windows(self, faces: Instances) -> Dict[int, Tuple[int, int, int, int]]:
        """Each face's integer window ``(x0, y0, x1, y1)`` covering its views' crops, clipped to the
        image (possibly empty)."""
        wins = crop_windows(faces.crop_affines.flatten(0, 1).float(), faces.parsing_probs.shape[-2:], faces.image_size)
        wins = wins.unflatten(0, faces.crop_affines.shape[:2])
        lo, hi = wins[:, :, :2].min(dim=1).values, wins[:, :, 2:].max(dim=1).values
        return dict(enumerate(map(tuple, torch.cat([lo, hi], dim=1).tolist())))

    def paste(self, faces: Instances, indices: Sequence[int], with_top: bool = False,
              maxima=None) -> Dict[int, PastedFace]:
        """The faces ``indices`` pasted into their windows (``maxima``: :func:`crop_maxima`, if
        already computed)."""
        windows, device = self.windows(faces), faces.parsing_probs.device
        out = {}
        for i in indices:
            x0, y0, x1, y1 = windows[i]
            size = (y1 - y0, x1 - x0)
            out[i] = PastedFace(windows[i], torch.zeros(size, dtype=torch.uint8, device=device),
                                torch.zeros(size, dtype=torch.bool, device=device),
                                torch.zeros(size, device=device) if with_top else None)
        items = _items(windows, indices, self.paste_tile)
        for item, labels, inside, top, _ in _paste(faces.parsing_probs, faces.crop_affines, items, self.paste_tile,
                                                   with_top, maxima=maxima):
            face = out[item.face]
            x0, y0 = face.window[:2]
            tx0, ty0, tx1, ty1 = item.window
            sl = (slice(ty0 - y0, ty1 - y0), slice(tx0 - x0, tx1 - x0))
            face.labels[sl], face.inside[sl] = labels, inside
            if with_top:
                face.top[sl] = top * inside
        return out

    def score(self, faces: Instances, pasted: Optional[Dict[int, PastedFace]] = None, maxima=None) -> Instances:
        """Set ``pixel_scores`` and the quality ``scores`` of ``faces`` (in place; also returned).

        Regions "image" and "pasted" paste the faces (in the output frame); a ``pasted`` dict keeps
        those pastes for :meth:`paint` (faces already in it with their ``top`` are reused).
        """
        n = len(faces)
        if self.pixel_score_region == "crop":
            top = (crop_maxima(faces.parsing_probs) if maxima is None else maxima)[0]
            pix = pixel_scores_from_top(top, self.pixel_score_thresh).mean(dim=1)  # views averaged
        else:
            pasted = {} if pasted is None else pasted
            missing = [i for i in range(n) if i not in pasted or pasted[i].top is None]
            pasted.update(self.paste(faces, missing, with_top=True, maxima=maxima))
            boxes = faces.pred_boxes.tensor if self.pixel_score_region == "image" else [None] * n
            values = [self._pasted_pixel_score(pasted[i], boxes[i]) for i in range(n)]
            pix = torch.stack(values) if n else faces.box_scores.new_zeros(0)
        faces.pixel_scores = pix.to(faces.box_scores.device)
        faces.scores = face_scores(faces.box_scores, faces.iou_scores, faces.pixel_scores, self.score_weights)
        return faces

    def _pasted_pixel_score(self, face: PastedFace, box: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Pixel score over the face's pasted crop region, with ``box`` only at the pixels whose
        centres lie inside the box."""
        top, inside = face.top, face.inside
        if box is not None:
            x0, y0, x1, y1 = face.window
            bx0, by0, bx1, by1 = box.tolist()
            cx0, cx1 = max(x0, int(np.ceil(bx0 - 0.5))), min(x1, int(np.floor(bx1 - 0.5)) + 1)
            cy0, cy1 = max(y0, int(np.ceil(by0 - 0.5))), min(y1, int(np.floor(by1 - 0.5)) + 1)
            if cx1 <= cx0 or cy1 <= cy0:
                return face.labels.new_zeros((), dtype=torch.float32)
            sl = (slice(cy0 - y0, cy1 - y0), slice(cx0 - x0, cx1 - x0))
            top, inside = top[sl], inside[sl]
        keep = inside & (top >= self.pixel_score_thresh)
        return (top * keep).sum() / keep.sum().clamp(min=1)

    def order(self, faces: Instances) -> List[int]:
        """Indices of the faces to paint (both thresholds), in ``PAINT_ORDER``."""
        keep = (faces.scores >= self.quality_score_thresh) & (faces.box_scores >= self.box_score_thresh)
        if self.paint_order == "quality":
            return paint_order(faces.scores, faces.box_scores, keep)
        return paint_order(faces.box_scores, faces.scores, keep)

    def paint(self, faces: Instances, class_scores: bool = False, pasted: Optional[Dict[int, PastedFace]] = None,
              maxima=None) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """The ``H x W`` uint8 label map of scored ``faces`` and, with ``class_scores``, the
        ``C x H x W`` class scores (else None). ``pasted``: faces already pasted, added to."""
        height, width = faces.image_size
        device = faces.parsing_probs.device
        labels = torch.zeros((height, width), dtype=torch.uint8, device=device)
        sem_seg = None
        order = self.order(faces)
        if class_scores:
            sem_seg = torch.zeros((self.num_classes, height, width), device=device)
            sem_seg[0] = 1.0
            items = _items(self.windows(faces), order, self.paste_tile)
            pieces = ((item.window, item_labels, item_probs) for item, item_labels, _, _, item_probs in
                      _paste(faces.parsing_probs, faces.crop_affines, items, self.paste_tile, with_probs=True))
        else:  # paste in instance order (consecutive faces share one computation), paint in paint order
            pasted = {} if pasted is None else pasted
            pasted.update(self.paste(faces, sorted(i for i in order if i not in pasted), maxima=maxima))
            pieces = ((pasted[i].window, pasted[i].labels, None) for i in order)
        for (x0, y0, x1, y1), face_labels, face_probs in pieces:
            fg = face_labels != 0
            labels[y0:y1, x0:x1] = torch.where(fg, face_labels, labels[y0:y1, x0:x1])
            if class_scores:
                sem_seg[:, y0:y1, x0:x1] = torch.where(fg[None], face_probs, sem_seg[:, y0:y1, x0:x1])
        return labels, sem_seg

    def face_labels(self, faces: Instances, pasted: Optional[Dict[int, PastedFace]] = None, maxima=None) -> List[Dict]:
        """Each face's ``window`` ``[x0, y0, x1, y1)`` and window-sized uint8 ``labels`` (0 outside
        its crops), in instance order; faces in ``pasted`` are not pasted again."""
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
        """All stages on the per-face results of one image. ``smooth`` takes the scored faces and
        returns them with changed ``parsing_probs``, ``scores`` or ``box_scores``; ``times`` records
        the stages.

        Returns:
            dict with ``instances`` (the faces' fields but their probabilities and affines, with
            ``scores`` and ``pixel_scores``, by decreasing quality score), ``labels`` (``H x W``
            uint8), ``painted`` (``N`` bool), ``face_labels`` (:meth:`face_labels`) and, with
            ``class_scores``, ``sem_seg`` (``C x H x W``), all in ``instances``' order.
        """
        stage = times if times is not None else profiler_range
        with stage("rescale"):  # a new Instances either way: the caller's faces are not changed
            faces = self.rescale(faces, faces.image_size if output_size is None else output_size)
        pasted: Dict[int, PastedFace] = {}
        with stage("score"):
            maxima = crop_maxima(faces.parsing_probs)  # shared by scoring and painting
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
