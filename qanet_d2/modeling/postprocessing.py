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
   probability over the pixels where it is >= ``PIXEL_SCORE_THRESH``, taken on the crop
   probabilities and averaged over views (``PIXEL_SCORE_REGION`` "crop") or on the pasted,
   view-averaged probabilities at the image pixels whose centres lie inside the face box
   ("image"). Quality score = ``(box^a * iou^b * pixel^c) ** (1 / (a + b + c))``.
4. **Paint** (:meth:`FacePostProcessor.paint`): the label map starts as background; faces whose
   paint score (the quality score with ``PAINT_ORDER`` "quality", the box score with "box") is
   >= ``FACE_SCORE_THRESH`` are painted in ascending paint score (ties: ascending other score,
   then instance order), each writing its non-background labels over the map, so the best face
   wins overlaps. Class scores (``sem_seg``, ``C x H x W``, only when asked for) start as
   background one-hot and take the face's view-averaged probabilities where it paints a label,
   so that their argmax is the label map.

Speed and memory: the label map needs no ``C x H x W`` tensor. A face's window is processed in
tiles of at most ``PASTE_TILE`` pixels a side, and inside a tile the ``C``-channel interpolation
runs only where it can change the result: where the four crop pixels around a sample point have
the same label in every view, the (convex) bilinear mix of their probabilities has that label
too, so those pixels take it directly (an exact shortcut, not an approximation). For the
axis-aligned affines that inference produces, finding the crop cell of a pixel is separable in x
and y. Rotated affines (e.g. smoothing over a rotating track) take the full interpolation.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from detectron2.config import configurable
from detectron2.structures import Boxes, Instances

from ..layers.crops import crop_windows, invert_affines

__all__ = [
    "FacePostProcessor",
    "PastedFace",
    "paste_face",
    "face_window",
    "paint_order",
    "pixel_scores",
    "face_scores",
    "crop_labels_from_probs",
    "PAINT_ORDERS",
    "PIXEL_SCORE_REGIONS",
]

PAINT_ORDERS = ("quality", "box")
PIXEL_SCORE_REGIONS = ("crop", "image")

# Codes of the per-tile label image (class ids are < 254).
_OUTSIDE = 254  # the pixel is in no view's crop
_MIXED = 255  # the interpolation must be computed


# ---------------------------------------------------------------------------- scoring
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
    """Argmax labels (first maximum), background (0) where the max probability is below 1 / C.

    ``probs``: ``... x C x h x w`` -> ``... x h x w`` long.
    """
    num_classes = probs.shape[-3]
    top, labels = probs.max(dim=-3)
    return torch.where(top < 1.0 / num_classes, torch.zeros_like(labels), labels)


def paint_order(paint_scores: torch.Tensor, other_scores: torch.Tensor, thresh: float) -> List[int]:
    """Indices of the faces to paint, in painting order: ascending ``paint_scores`` (ties:
    ascending ``other_scores``, then index), faces with ``paint_scores < thresh`` left out."""
    key = paint_scores.detach().double().cpu().numpy()
    tie = other_scores.detach().double().cpu().numpy()
    order = np.lexsort((np.arange(len(key)), tie, key))
    return [int(i) for i in order if key[i] >= thresh]


# ---------------------------------------------------------------------------- pasting
def face_window(affines: torch.Tensor, crop_size: Sequence[int], image_size: Sequence[int]) -> Tuple[int, int, int, int]:
    """Integer window ``(x0, y0, x1, y1)`` covering the crops of one face's ``V x 2 x 3``
    views, clipped to the image (empty, ``x1 <= x0`` or ``y1 <= y0``, when outside it)."""
    wins = crop_windows(affines, crop_size, image_size)
    x0, y0 = wins[:, :2].min(dim=0).values.tolist()
    x1, y1 = wins[:, 2:].max(dim=0).values.tolist()
    return int(x0), int(y0), int(x1), int(y1)


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


class _View:
    """One view of a face: probabilities, image -> crop affine and its crop-cell labels."""

    def __init__(self, probs: torch.Tensor, affine: torch.Tensor):
        self.probs = probs[None].float()  # 1 x C x h x w
        self.h, self.w = probs.shape[-2:]
        self.inv = invert_affines(affine[None].float())[0].double().cpu()
        self.axis_aligned = bool(self.inv[0, 1] == 0 and self.inv[1, 0] == 0)
        self._cells = None
        self._top = None

    def normalised(self, x: torch.Tensor, y: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``grid_sample`` coordinates (float32) of image points (pixel centres, float64)."""
        a = self.inv.to(x.device)
        u = a[0, 0] * x + a[0, 1] * y + a[0, 2]
        v = a[1, 0] * x + a[1, 1] * y + a[1, 2]
        return (u * (2.0 / self.w) - 1.0).float(), (v * (2.0 / self.h) - 1.0).float()

    def cells(self) -> torch.Tensor:
        """``(h+1) x (w+1)`` uint8: per interpolation cell (the square between four crop pixel
        centres, crop edges replicated), the label its four corners share, or ``_MIXED``."""
        if self._cells is None:
            labels = self.probs[0].argmax(dim=0).to(torch.uint8)
            pad = F.pad(labels[None, None].float(), (1, 1, 1, 1), mode="replicate")[0, 0].to(torch.uint8)
            a, b, c, d = pad[:-1, :-1], pad[:-1, 1:], pad[1:, :-1], pad[1:, 1:]
            uniform = (a == b) & (a == c) & (a == d)
            self._cells = torch.where(uniform, a, torch.full_like(a, _MIXED))
        return self._cells

    def top_map(self) -> torch.Tensor:
        """``1 x 1 x h x w`` per-pixel max probability."""
        if self._top is None:
            self._top = self.probs.max(dim=1, keepdim=True).values
        return self._top


def _sample(view: _View, source: torch.Tensor, gu: torch.Tensor, gv: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of ``source`` (``1 x C x h x w``) at normalised points, crop edges
    clamped: ``C x <points shape>``."""
    grid = torch.stack([gu, gv], dim=-1).reshape(1, 1, -1, 2).to(source.device)
    out = F.grid_sample(source, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out[0, :, 0].reshape((source.shape[1],) + tuple(gu.shape))


def _paste_tile(views: List[_View], tile: Tuple[int, int, int, int], num_classes: int, with_top: bool, with_probs: bool):
    """Labels (uint8, ``_OUTSIDE`` where no view covers the pixel), optionally the max and
    the probabilities of the view-averaged interpolation, on one tile ``(x0, y0, x1, y1)``."""
    x0, y0, x1, y1 = tile
    device = views[0].probs.device
    xs = torch.arange(x0, x1, dtype=torch.float64) + 0.5
    ys = torch.arange(y0, y1, dtype=torch.float64) + 0.5
    th, tw = len(ys), len(xs)
    shortcut = not with_probs and all(v.axis_aligned for v in views)
    if shortcut:
        codes = torch.full((th, tw), _OUTSIDE, dtype=torch.uint8, device=device)
        for view in views:
            gu, gv = view.normalised(xs, torch.zeros_like(xs))[0], view.normalised(torch.zeros_like(ys), ys)[1]
            inside = (gv.abs() <= 1)[:, None] & (gu.abs() <= 1)[None, :]
            # crop cell of a pixel: floor(u + 0.5) with u the crop coordinate, i.e. (g + 1) * w / 2
            jx = torch.floor((gu.double() + 1.0) * (view.w / 2.0) + 0.5).clamp(0, view.w).long()
            iy = torch.floor((gv.double() + 1.0) * (view.h / 2.0) + 0.5).clamp(0, view.h).long()
            view_codes = view.cells().index_select(0, iy.to(device)).index_select(1, jx.to(device))
            view_codes = view_codes.masked_fill(~inside.to(device), _OUTSIDE)
            agree = (view_codes == codes) | (view_codes == _OUTSIDE)
            codes = torch.where(codes == _OUTSIDE, view_codes, torch.where(agree, codes, torch.full_like(codes, _MIXED)))
        exact = (codes == _MIXED).nonzero(as_tuple=True)
    else:
        codes = torch.empty((th, tw), dtype=torch.uint8, device=device)
        grid_y, grid_x = torch.meshgrid(torch.arange(th, device=device), torch.arange(tw, device=device), indexing="ij")
        exact = (grid_y.reshape(-1), grid_x.reshape(-1))

    probs, exact_top = None, None
    py, px = exact
    if len(py):
        x = xs[px.cpu()]
        y = ys[py.cpu()]
        total, count = None, None
        for view in views:
            gu, gv = view.normalised(x, y)
            inside = ((gu.abs() <= 1) & (gv.abs() <= 1)).to(device)
            sampled = _sample(view, view.probs, gu, gv) * inside.to(torch.float32)
            total = sampled if total is None else total + sampled
            count = inside.to(torch.float32) if count is None else count + inside.to(torch.float32)
        avg = total / count.clamp(min=1.0)
        exact_top, lab = avg.max(dim=0)
        lab = torch.where(exact_top < 1.0 / num_classes, torch.zeros_like(lab), lab)
        lab = torch.where(count > 0, lab, torch.full_like(lab, _OUTSIDE))
        codes[py, px] = lab.to(torch.uint8)
        if with_probs:
            probs = avg.reshape(num_classes, th, tw)
    elif with_probs:
        probs = torch.zeros((num_classes, th, tw), device=device)

    top_map = None
    if with_top:
        if shortcut:
            # Where the shortcut applies, the maximum is the interpolated per-pixel maximum.
            total = torch.zeros((th, tw), device=device)
            count = torch.zeros((th, tw), device=device)
            for view in views:
                gu, gv = view.normalised(xs, torch.zeros_like(xs))[0], view.normalised(torch.zeros_like(ys), ys)[1]
                inside = ((gv.abs() <= 1)[:, None] & (gu.abs() <= 1)[None, :]).to(device, torch.float32)
                sampled = _sample(view, view.top_map(), gu[None, :].expand(th, tw), gv[:, None].expand(th, tw))[0]
                total += sampled * inside
                count += inside
            top_map = total / count.clamp(min=1.0)
        else:
            top_map = torch.zeros((th, tw), device=device)
        if len(py):
            top_map[py, px] = exact_top
    return codes, top_map, probs


def _tiles(window: Tuple[int, int, int, int], tile: int):
    x0, y0, x1, y1 = window
    for ty in range(y0, y1, tile):
        for tx in range(x0, x1, tile):
            yield tx, ty, min(tx + tile, x1), min(ty + tile, y1)


def paste_face(
    probs: torch.Tensor,
    affines: torch.Tensor,
    image_size: Sequence[int],
    tile: int = 512,
    with_top: bool = False,
    window: Optional[Tuple[int, int, int, int]] = None,
) -> PastedFace:
    """Paste one face's views into its image window (step 2 of the module docstring).

    Args:
        probs: ``V x C x h x w`` crop probabilities of the face's views (``C <= 254``).
        affines: ``V x 2 x 3`` crop -> image affines, in the frame of ``image_size``.
        image_size: ``(height, width)`` of the image.
        tile: the window is processed in tiles of at most ``tile x tile`` pixels.
        with_top: also return the max of the view-averaged probabilities.
        window: the window to paste (default: :func:`face_window`).
    """
    views = [_View(p, a) for p, a in zip(probs, affines)]
    if window is None:
        window = face_window(affines, probs.shape[-2:], image_size)
    x0, y0, x1, y1 = window
    h, w = max(0, y1 - y0), max(0, x1 - x0)
    device = probs.device
    labels = torch.zeros((h, w), dtype=torch.uint8, device=device)
    inside = torch.zeros((h, w), dtype=torch.bool, device=device)
    top = torch.zeros((h, w), device=device) if with_top else None
    for tx0, ty0, tx1, ty1 in _tiles(window, max(16, int(tile))):
        codes, top_map, _ = _paste_tile(views, (tx0, ty0, tx1, ty1), probs.shape[1], with_top, False)
        sl = (slice(ty0 - y0, ty1 - y0), slice(tx0 - x0, tx1 - x0))
        covered = codes != _OUTSIDE
        labels[sl] = codes.masked_fill(~covered, 0)
        inside[sl] = covered
        if with_top:
            top[sl] = top_map * covered
    return PastedFace((x0, y0, x1, y1), labels, inside, top)


# ---------------------------------------------------------------------------- the post-processor
class FacePostProcessor:
    """Scores, pastes and paints per-face results (see the module docstring).

    Built from ``MODEL.QANET.INFERENCE`` (``SCORE_WEIGHTS``, ``PIXEL_SCORE_THRESH``,
    ``PIXEL_SCORE_REGION``, ``FACE_SCORE_THRESH``, ``PAINT_ORDER``, ``PASTE_TILE``) and
    ``MODEL.QANET.NUM_CLASSES``.
    """

    @configurable
    def __init__(
        self,
        *,
        num_classes: int,
        score_weights: Sequence[float] = (1.0, 0.5, 3.0),
        pixel_score_thresh: float = 0.2,
        face_score_thresh: float = 0.3,
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
        self.face_score_thresh = float(face_score_thresh)
        self.paint_order = paint_order
        self.pixel_score_region = pixel_score_region
        self.paste_tile = int(paste_tile)

    @classmethod
    def from_config(cls, cfg):
        q = cfg.MODEL.QANET
        i = q.INFERENCE
        return {
            "num_classes": q.NUM_CLASSES,
            "score_weights": i.SCORE_WEIGHTS,
            "pixel_score_thresh": i.PIXEL_SCORE_THRESH,
            "face_score_thresh": i.FACE_SCORE_THRESH,
            "paint_order": i.PAINT_ORDER,
            "pixel_score_region": i.PIXEL_SCORE_REGION,
            "paste_tile": i.PASTE_TILE,
        }

    # ------------------------------------------------------------------ steps
    @staticmethod
    def rescale(faces: Instances, output_size: Sequence[int]) -> Instances:
        """``faces`` moved from their frame (``faces.image_size``) to ``output_size``
        ``(height, width)``: boxes scaled and clipped, affines scaled; probabilities unchanged."""
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
        return out

    def paste(self, faces: Instances, index: int, with_top: bool = False) -> PastedFace:
        """Face ``index`` of ``faces`` pasted into its window of ``faces.image_size``."""
        return paste_face(
            faces.parsing_probs[index], faces.crop_affines[index], faces.image_size, self.paste_tile, with_top=with_top
        )

    def score(self, faces: Instances, pasted: Optional[Dict[int, PastedFace]] = None) -> Instances:
        """Set ``pixel_scores`` and the quality ``scores`` of ``faces`` (in place; also returned).

        With ``PIXEL_SCORE_REGION`` "image" the faces are pasted (``faces`` must then be in the
        output frame); pass a dict as ``pasted`` to keep those pastes for :meth:`paint`.
        """
        n = len(faces)
        probs = faces.parsing_probs
        if self.pixel_score_region == "crop":
            views = probs.shape[1] if n else 1
            pix = sum(pixel_scores(probs[:, v], self.pixel_score_thresh) for v in range(views)) / views if n else probs.new_zeros(0)
        else:
            values = []
            for i in range(n):
                face = self.paste(faces, i, with_top=True)
                if pasted is not None:
                    pasted[i] = face
                values.append(self._box_pixel_score(face, faces.pred_boxes.tensor[i]))
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

    def order(self, faces: Instances) -> List[int]:
        """Indices of the faces to paint, in painting order (``PAINT_ORDER``, ``FACE_SCORE_THRESH``)."""
        if self.paint_order == "quality":
            return paint_order(faces.scores, faces.box_scores, self.face_score_thresh)
        return paint_order(faces.box_scores, faces.scores, self.face_score_thresh)

    def paint(
        self, faces: Instances, class_scores: bool = False, pasted: Optional[Dict[int, PastedFace]] = None
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """The ``H x W`` uint8 label map of scored ``faces`` (in their frame ``faces.image_size``)
        and, with ``class_scores``, the ``C x H x W`` float class scores (else None)."""
        height, width = faces.image_size
        device = faces.parsing_probs.device
        labels = torch.zeros((height, width), dtype=torch.uint8, device=device)
        sem_seg = None
        if class_scores:
            sem_seg = torch.zeros((self.num_classes, height, width), device=device)
            sem_seg[0] = 1.0
        for i in self.order(faces):
            if class_scores:
                self._paint_with_scores(faces, i, labels, sem_seg)
                continue
            face = pasted[i] if pasted is not None and i in pasted else self.paste(faces, i)
            x0, y0, x1, y1 = face.window
            if x1 <= x0 or y1 <= y0:
                continue
            region = labels[y0:y1, x0:x1]
            labels[y0:y1, x0:x1] = torch.where(face.labels != 0, face.labels, region)
        return labels, sem_seg

    def _paint_with_scores(self, faces: Instances, i: int, labels: torch.Tensor, sem_seg: torch.Tensor) -> None:
        probs, affines = faces.parsing_probs[i], faces.crop_affines[i]
        views = [_View(p, a) for p, a in zip(probs, affines)]
        window = face_window(affines, probs.shape[-2:], faces.image_size)
        for tx0, ty0, tx1, ty1 in _tiles(window, self.paste_tile):
            codes, _, tile_probs = _paste_tile(views, (tx0, ty0, tx1, ty1), self.num_classes, False, True)
            fg = (codes != _OUTSIDE) & (codes != 0)
            labels[ty0:ty1, tx0:tx1] = torch.where(fg, codes, labels[ty0:ty1, tx0:tx1])
            sem_seg[:, ty0:ty1, tx0:tx1] = torch.where(fg[None], tile_probs, sem_seg[:, ty0:ty1, tx0:tx1])

    def face_labels(self, faces: Instances) -> List[Dict]:
        """Each face's own parsing: ``window`` ``[x0, y0, x1, y1)`` and ``labels`` (uint8,
        window-sized, 0 outside its crops), in the frame of ``faces.image_size``."""
        out = []
        for i in range(len(faces)):
            face = self.paste(faces, i)
            out.append({"window": list(face.window), "labels": face.labels})
        return out

    def __call__(self, faces: Instances, output_size: Optional[Sequence[int]] = None, class_scores: bool = False) -> Dict:
        """Rescale (to ``output_size``), score and paint per-face results of one image.

        Returns:
            dict with ``instances`` (``faces`` with ``pixel_scores`` and ``scores``, sorted by
            decreasing quality score), ``labels`` (``H x W`` uint8) and, with ``class_scores``,
            ``sem_seg`` (``C x H x W``).
        """
        if output_size is not None:
            faces = self.rescale(faces, output_size)
        pasted: Dict[int, PastedFace] = {}
        faces = self.score(faces, pasted)
        labels, sem_seg = self.paint(faces, class_scores, pasted)
        result = {"instances": faces[torch.argsort(faces.scores, descending=True, stable=True)], "labels": labels}
        if class_scores:
            result["sem_seg"] = sem_seg
        return result
