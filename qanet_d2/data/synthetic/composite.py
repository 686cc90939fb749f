"""Real labelled faces of a registered dataset (a *face source*, e.g. ``fasseg_frontal_train``)
cut out along their labels and composited into :class:`~.generator.Scene` videos, labelled in the
source's label set (how: datasets/README.md, "How a face is made"). Image and coverage are
resampled premultiplied, so the photo's own background never bleeds into the edge; labels are not
blended: a pixel takes the class of the largest resampled coverage, "not this face" included.
"""
from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np

from ..io import DataReadError, read_image, read_instance_map, read_label_map
from ...structures.label_sets import IGNORE_LABEL, LabelSet
from ..video_format import face_box_excluded_ids
from .generator import FACE_COUNT_P, MAX_FACES, MIN_FACE_HEIGHT, FrameResult, Scene, smooth_track

__all__ = ["SourceFace", "FacePlacement", "CompositeVideo", "collect_source_faces",
           "assign_source_faces", "COMPOSITE_VERSION", "FEATHER_SIGMA"]

logger = logging.getLogger(__name__)

COMPOSITE_VERSION = 1
FEATHER_SIGMA = 0.6  # frame pixels: softness of a pasted face's alpha edge
EDGE_ROUNDING = 0.3  # depth of the rounding of cuts at the photo's edges, in span lengths
MIN_SPECK_FRACTION = 0.01  # face components below this share of the face's pixels are dropped
# Appended to the seed keys of composite videos so that they never share the random stream of
# a cartoon video of the same seed, split and index.
COMPOSITE_TAG = 192


# ---------------------------------------------------------------------------- sources
@dataclass(frozen=True)
class SourceFace:
    """One labelled face of a source dataset: ``box`` XYXY_ABS (pixel edges) in the source image,
    ``instance_id`` its index + 1 in ``instance_file`` or 0 (one face per image); absolute paths."""

    dataset: str
    image_id: str
    file_name: str
    label_file: str
    box: Tuple[float, float, float, float]
    instance_file: Optional[str] = None
    instance_id: int = 0


def collect_source_faces(dataset_names: Sequence[str]) -> Tuple[LabelSet, List[SourceFace]]:
    """The label set and every usable face of the registered datasets ``dataset_names``: one per
    box of a frame with a face-instance map, else one of a frame with exactly one box. KeyError /
    DatasetNotFoundError: a source is not registered / not prepared; ValueError: the sources have
    different label sets, or hold no usable face."""
    from detectron2.data import DatasetCatalog

    from ..datasets.face_video import DatasetNotFoundError, get_dataset_label_set

    label_set, first = None, None
    faces: List[SourceFace] = []
    for name in dataset_names:
        if name not in DatasetCatalog.list():
            raise KeyError(f"face source '{name}' is not a registered dataset (see "
                           f"datasets/README.md for the registered names)")
        try:
            ls = get_dataset_label_set(name)
            dicts = DatasetCatalog.get(name)
        except DatasetNotFoundError as e:
            raise DatasetNotFoundError(
                f"face source '{name}' is not available, so no faces can be cut from it: "
                f"{e}") from None
        if label_set is None:
            label_set, first = ls, name
        elif ls != label_set:
            raise ValueError(
                f"face sources must share one label set (one label set per generated dataset): "
                f"'{name}' has '{ls.name}' {list(ls.classes)}, '{first}' has '{label_set.name}' "
                f"{list(label_set.classes)}")
        skipped = 0
        for d in dicts:
            anns = d.get("annotations") or []
            if "sem_seg_file_name" not in d or not anns:
                skipped += 1
                continue
            common = dict(dataset=name, image_id=str(d["image_id"]), file_name=d["file_name"],
                          label_file=d["sem_seg_file_name"])
            if d.get("instance_file_name"):
                faces += [SourceFace(box=tuple(float(v) for v in a["bbox"]),
                                     instance_file=d["instance_file_name"], instance_id=k + 1,
                                     **common) for k, a in enumerate(anns)]
            elif len(anns) == 1:
                faces.append(SourceFace(box=tuple(float(v) for v in anns[0]["bbox"]), **common))
            else:
                skipped += 1
        if skipped:
            logger.warning("face source '%s': %d frame(s) without a label map, without a face box or "
                           "with several boxes and no face-instance map are not used", name, skipped)
    if not faces:
        raise ValueError(f"face sources {list(dataset_names)} hold no face with a label map and "
                         f"a face box")
    return label_set, faces


def assign_source_faces(num_sources: int, num_videos: int, seed_key: Sequence[int]) -> List[List[int]]:
    """Source-face indices of each video (1-4 faces, as the cartoon videos), taken in turn from
    shuffled passes over all sources: a split uses every source face once before any twice."""
    rng = np.random.default_rng(np.random.SeedSequence([int(k) for k in seed_key]))
    counts = rng.choice(np.arange(1, MAX_FACES + 1), size=num_videos, p=FACE_COUNT_P)
    stream: List[int] = []
    while len(stream) < int(counts.sum()):
        stream += rng.permutation(num_sources).tolist()
    return [stream[end - n:end] for n, end in zip(counts.tolist(), np.cumsum(counts).tolist())]


@functools.lru_cache(maxsize=8)
def _load_source(face: SourceFace):
    """``(image, label, mask, (x0, y0, x1, y1), at_edge)``: the crop around the face's pixels and
    box (BGR uint8, label ids, its pixels as bool), its place in the source image (pixel edges)
    and whether it touches the top, bottom, left, right edge. Cached per process."""
    image = read_image(face.file_name, "BGR")
    label = read_label_map(face.label_file)
    if label.shape != image.shape[:2]:
        raise DataReadError(f"{face.label_file}: label map is {label.shape[1]}x{label.shape[0]} "
                            f"(WxH) but its image {face.file_name} is {image.shape[1]}x"
                            f"{image.shape[0]}")
    mask = (label != 0) & (label != IGNORE_LABEL)
    if face.instance_file:
        inst = read_instance_map(face.instance_file)
        if inst.shape != label.shape:
            raise DataReadError(f"{face.instance_file}: face-instance map size {inst.shape} "
                                f"differs from its label map {face.label_file} {label.shape}")
        mask &= inst == face.instance_id
    n, comp, stats, _ = cv2.connectedComponentsWithStats(mask.view(np.uint8), connectivity=8)
    if n <= 1:
        raise DataReadError(f"{face.label_file}: face {face.instance_id or 1} of {face.image_id} "
                            f"({face.dataset}) has no labelled pixel")
    areas = stats[1:, cv2.CC_STAT_AREA]
    mask = np.concatenate([[False], areas >= MIN_SPECK_FRACTION * areas.sum()])[comp]
    h, w = mask.shape
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    bx0, by0, bx1, by1 = face.box
    x0 = max(0, min(int(cols[0]), int(math.floor(bx0))))
    y0 = max(0, min(int(rows[0]), int(math.floor(by0))))
    x1 = min(w, max(int(cols[-1]) + 1, int(math.ceil(bx1))))
    y1 = min(h, max(int(rows[-1]) + 1, int(math.ceil(by1))))
    crop = (slice(y0, y1), slice(x0, x1))
    # the crop touches the photo's edges where the face does: remember which are real edges
    at_edge = (y0 == 0, y1 == h, x0 == 0, x1 == w)  # top, bottom, left, right
    return image[crop].copy(), label[crop].copy(), mask[crop].copy(), (x0, y0, x1, y1), at_edge


def _round_edge_cuts(mask: np.ndarray, keep: np.ndarray, at_edge: Tuple[bool, ...],
                     max_depth: float) -> None:
    """Round, in place, the straight cuts where the face touches the photo's edges (``at_edge``:
    top, bottom, left, right) into a dome: for the top edge, with ``[a, b)`` the face's span on it
    and ``D`` = ``EDGE_ROUNDING`` x its length (at most ``max_depth``), everything above a parabola
    through row ``D`` at the face's extent and the span's middle on the edge is removed. An end
    of the span where the torso takes over (``keep`` False beyond it) is not carved."""
    views = (lambda x: x, lambda x: x[::-1], lambda x: x.T, lambda x: x.T[::-1])
    for on, view in zip(at_edge, views):
        if not on:
            continue
        m, k = view(mask), view(keep)
        depth_n, n = m.shape
        on_edge = np.flatnonzero(m[0])
        if on_edge.size == 0:
            continue
        a, b = int(on_edge[0]), int(on_edge[-1]) + 1
        free_a = a == 0 or bool(k[0, a - 1])
        free_b = b == n or bool(k[0, b])
        d = int(min(EDGE_ROUNDING * (b - a), max_depth, depth_n - 1))
        row = np.flatnonzero(m[d]) if d > 0 else np.zeros(0, int)
        if row.size == 0 or not (free_a or free_b):
            continue
        mid = (a + b - 1) / 2.0
        xl = min(float(row[0]), mid) if free_a else mid
        xr = max(float(row[-1]), mid) if free_b else mid
        x = np.arange(n, dtype=np.float64)
        u = np.zeros(n)
        left, right = x < mid, x > mid
        if xl < mid:
            u[left] = (mid - x[left]) / (mid - xl)
        if xr > mid:
            u[right] = (x[right] - mid) / (xr - mid)
        cut = np.floor(d * np.minimum(u, 1.0) ** 2).astype(int)
        if not free_a:
            cut[left] = 0
        if not free_b:
            cut[right] = 0
        rows = np.arange(depth_n)[:, None]
        m[rows < cut[None, :]] = False


@dataclass
class _CutFace:
    """A face ready to paste, in crop pixel coordinates: ``stack`` (h x w x (4 + len(classes))
    float32: BGR x coverage, coverage, one indicator per class id of ``classes``), ``box`` (XYXY
    pixel edges), ``torso`` (N x 2 polygon, pixel centres), ``src_to_crop`` (3 x 3, flip included)."""

    stack: np.ndarray
    classes: np.ndarray
    box: np.ndarray
    torso: np.ndarray
    src_to_crop: np.ndarray
    levels: dict = field(default_factory=dict)  # downscaled copies of stack


def _prepare_face(face: SourceFace, label_set: LabelSet, flip: bool, neck_drop: float,
                  dip: float, neck_halfwidth: float, shoulder: float, shoulder_drop: float
                  ) -> _CutFace:
    """Cut ``face`` out (datasets/README.md) with a torso: the neckline ``neck_drop`` box heights
    below the box, its V ``dip`` box heights deep and ``neck_halfwidth`` box widths wide; shoulders
    ``shoulder`` box widths from the neck and ``shoulder_drop`` box heights below the neckline."""
    image, label, mask, (cx0, cy0, cx1, cy1), at_edge = _load_source(face)
    bx0, by0, bx1, by1 = face.box
    if flip:
        image, label, mask = image[:, ::-1], label_set.flip_lut()[label[:, ::-1]], mask[:, ::-1]
        box = np.array([cx1 - bx1, by0 - cy0, cx1 - bx0, by1 - cy0])
        src_to_crop = np.array([[-1.0, 0, cx1 - 1], [0, 1, -cy0], [0, 0, 1]])
        at_edge = (at_edge[0], at_edge[1], at_edge[3], at_edge[2])
    else:
        box = np.array([bx0 - cx0, by0 - cy0, bx1 - cx0, by1 - cy0])
        src_to_crop = np.array([[1.0, 0, -cx0], [0, 1, -cy0], [0, 0, 1]])
    mask = np.ascontiguousarray(mask)
    h, w = mask.shape
    bw, bh = float(box[2] - box[0]), float(box[3] - box[1])
    rows = np.flatnonzero(mask.any(axis=1))
    # neckline (pixel-centre row): below the chin, above the lowest face pixel
    y_t = max(float(min(box[3] + neck_drop * bh, rows[-1] - 0.02 * bh)), float(box[3]) - 0.5)
    # below y_c (a little below the chin, whose estimate may be short) only the neck is kept:
    # shoulders, clothes and hair there would end in the photo's bottom edge
    y_c = min(float(box[3]) + 0.06 * bh, y_t)
    # the neck's centre: the longest run of face pixels just below the chin
    r_n = int(np.clip(round(min(box[3] + 0.05 * bh, y_t)), 0, h - 1))
    d = np.diff(np.concatenate([[0], mask[r_n].view(np.int8), [0]]))
    runs = list(zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist()))  # [start, end)
    if runs:
        a, b = max(runs, key=lambda r: r[1] - r[0])
        x_n = (a + b - 1) / 2.0
    else:
        x_n = (box[0] + box[2]) / 2.0 - 0.5
    wn, sw = neck_halfwidth * bw, shoulder * bw
    y_s = y_t + shoulder_drop * bh
    r_x, r_y = 0.16 * bw, 0.16 * bh  # shoulder roundness
    # the torso's top outline, left to right: shoulder, V neckline, shoulder; rounded shoulders
    inner = np.array([
        [x_n - sw + r_x, y_s], [x_n - wn - 0.3 * bw, y_t + 0.04 * bh], [x_n - wn, y_t],
        [x_n, y_t + dip * bh], [x_n + wn, y_t], [x_n + wn + 0.3 * bw, y_t + 0.04 * bh],
        [x_n + sw - r_x, y_s]])
    t = np.linspace(0, np.pi / 2, 7)[1:]
    right = np.stack([inner[-1, 0] + r_x * np.sin(t), inner[-1, 1] + r_y * (1 - np.cos(t))], 1)
    left = np.stack([inner[0, 0] - r_x * np.sin(t), inner[0, 1] + r_y * (1 - np.cos(t))], 1)
    outline = np.concatenate([left[::-1], inner, right])
    bottom = y_t + 2.2 * bh
    torso = np.concatenate([outline, [[x_n + sw - 0.04 * bw, bottom],
                                      [x_n - sw + 0.04 * bw, bottom]]])
    # keep the face above y_c, below it the neck down to 1 px under the torso's outline
    half = wn + 0.1 * bw
    xs = np.union1d(np.linspace(x_n - half, x_n + half, 33), [x_n])
    band = np.concatenate([np.stack([xs, np.interp(xs, outline[:, 0], outline[:, 1]) + 1.0], 1),
                           [[x_n + half, -1.0], [x_n - half, -1.0]]])
    keep = np.zeros((h, w), np.uint8)
    keep[:max(0, int(math.floor(y_c)) + 1)] = 1
    cv2.fillPoly(keep, [np.round(band * 16).astype(np.int32)], 1, cv2.LINE_8, 4)
    keep = keep.astype(bool)
    mask = mask & keep
    _round_edge_cuts(mask, keep, at_edge, EDGE_ROUNDING * bw)
    if not mask.any():
        raise DataReadError(f"{face.label_file}: face {face.instance_id or 1} of "
                            f"{face.image_id} ({face.dataset}) has no labelled pixel above its "
                            f"chin (box {list(face.box)})")
    m = mask.astype(np.float32)
    premult = np.concatenate([image.astype(np.float32) * m[..., None], m[..., None]], axis=2)
    lab = np.where(mask, label, 0)
    classes = np.array([c for c in np.unique(lab) if c != 0], np.int64)
    onehot = [(lab == c).astype(np.float32)[..., None] for c in classes]
    return _CutFace(np.concatenate([premult] + onehot, axis=2), classes, box.astype(np.float64),
                    torso, src_to_crop)


# ---------------------------------------------------------------------------- resampling
_LEVELS_PER_OCTAVE = 4  # pre-downscaled copies of a face: scales 2^(-k/4)


def _warp(a: np.ndarray, crop_to_dst: np.ndarray, dst_size: Tuple[int, int], levels: dict) -> np.ndarray:
    """Resample an H x W x C float32 array into ``dst_size`` (W, H) through ``crop_to_dst`` (3 x 3,
    pixel centres): area downscaling to the nearest scale 2^(-k/4) at or above the target scale
    (cached in ``levels`` by k), then bilinear warping."""
    s = math.sqrt(abs(np.linalg.det(crop_to_dst[:2, :2])))
    h, w = a.shape[:2]
    m = crop_to_dst
    k = int(math.floor(-math.log2(s) * _LEVELS_PER_OCTAVE)) if s < 1 else 0
    if k > 0:
        f = 2.0 ** (-k / _LEVELS_PER_OCTAVE)
        nw, nh = max(1, int(round(w * f))), max(1, int(round(h * f)))
        if k not in levels:  # INTER_AREA takes at most 4 channels at a time
            chunks = [cv2.resize(a[:, :, i:i + 4], (nw, nh), interpolation=cv2.INTER_AREA)
                      for i in range(0, a.shape[2], 4)]
            levels[k] = np.concatenate([c.reshape(nh, nw, -1) for c in chunks], axis=2)
        a = levels[k]
        sx, sy = nw / w, nh / h
        # INTER_AREA maps pre-resized pixel centre u to source centre (u + 0.5) / s - 0.5
        pre_to_crop = np.array([[1 / sx, 0, 0.5 / sx - 0.5], [0, 1 / sy, 0.5 / sy - 0.5],
                                [0, 0, 1]])
        m = m @ pre_to_crop
    return cv2.warpAffine(a, m[:2].astype(np.float64), dst_size, flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def _jitter_colors(rgb: np.ndarray, cover: np.ndarray, gain: float, contrast: float,
                   saturation: float, hue: float, shade: np.ndarray) -> np.ndarray:
    """Colour variation of a face (float32 H x W x 3 BGR 0..255, un-premultiplied): hue shift in
    degrees, contrast about the face's mean, per-pixel shading factor ``shade``."""
    hsv = cv2.cvtColor(np.clip(rgb, 0, 255) / 255.0, cv2.COLOR_BGR2HSV)
    hsv[..., 0] = np.mod(hsv[..., 0] + hue, 360.0)
    hsv[..., 1] = np.clip(hsv[..., 1] * saturation, 0, 1)
    out = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR) * 255.0
    wsum = float(cover.sum())
    mean = (out * cover[..., None]).reshape(-1, 3).sum(0) / wsum if wsum > 0 else 0.0
    out = (out - mean) * contrast + mean
    return out * (gain * shade)[..., None]


# ---------------------------------------------------------------------------- videos
@dataclass
class FacePlacement:
    """Where face ``source`` (its index in the video) is in one frame: source box centre at ``(cx, cy)``
    frame pixels, ``scale`` frame pixels per source pixel, ``angle`` degrees clockwise on screen,
    ``matrix`` (2 x 3, flip included): what ``cv2.warpAffine(source image, matrix, (W, H))`` applies."""

    source: int
    flip: bool
    cx: float
    cy: float
    scale: float
    angle: float
    matrix: np.ndarray


@dataclass
class _Placed:
    face: SourceFace
    cut: _CutFace
    flip: bool
    cx: np.ndarray
    cy: np.ndarray
    scale: np.ndarray  # frame pixels per source pixel
    angle: np.ndarray
    gain: np.ndarray
    contrast: np.ndarray
    saturation: np.ndarray
    hue: np.ndarray
    shade_amp: float
    shade_dir: float
    cloth_color: Tuple[float, float, float]
    cloth_amp: float
    cloth_period: float  # box heights
    cloth_dir: float


class CompositeVideo(Scene):
    """A video of real ``faces`` (of datasets of ``label_set``) in a :class:`~.generator.Scene`;
    ``render(t)`` draws frame ``t``, independent of the order frames are drawn in."""

    def __init__(self, seed_key: Sequence[int], width: int, height: int, frames: int,
                 faces: Sequence[SourceFace], label_set: LabelSet,
                 photos: Optional[Sequence[Tuple[str, str]]] = None, photo_share: float = 0.0):
        super().__init__(seed_key, width, height, frames, photos, photo_share)
        rng, h, T = self._rng, self.h, self.frames
        names = [c.lower() for c in label_set.classes]
        self.cloth_id = names.index("cloth") if "cloth" in names else 0
        self.body = np.zeros(256, bool)  # label ids outside face boxes
        self.body[list(face_box_excluded_ids(label_set))] = True
        n = len(faces)
        if not 1 <= n <= MAX_FACES:
            raise ValueError(f"a composite video holds 1..{MAX_FACES} faces, got {n}")
        heights = np.sort(self._face_heights(n))  # small (far) faces painted first
        self.faces: List[_Placed] = []
        placed = []
        for i, face in enumerate(faces):
            flip = bool(rng.uniform() < 0.5)
            cut = _prepare_face(face, label_set, flip, neck_drop=rng.uniform(0.08, 0.3),
                                dip=rng.uniform(0.03, 0.15),
                                neck_halfwidth=rng.uniform(0.15, 0.26),
                                shoulder=rng.uniform(0.95, 1.25),
                                shoulder_drop=rng.uniform(0.15, 0.3))
            src_h = float(cut.box[3] - cut.box[1])
            hb0 = heights[i]
            hb1, c0, c1, a0, a1 = self._place_face(hb0, placed)
            cx, cy, scale, angle = self._motion(c0, c1, hb0 / src_h, hb1 / src_h, a0, a1)
            self.faces.append(_Placed(
                face=face, cut=cut, flip=flip, cx=cx, cy=cy,
                scale=np.clip(scale, MIN_FACE_HEIGHT / src_h, 0.95 * h / src_h), angle=angle,
                gain=smooth_track(rng, rng.uniform(0.7, 1.25), rng.uniform(0.7, 1.25), T, 0.03),
                contrast=smooth_track(rng, rng.uniform(0.7, 1.3), rng.uniform(0.7, 1.3), T, 0.0),
                saturation=smooth_track(rng, rng.uniform(0.5, 1.5), rng.uniform(0.5, 1.5), T,
                                         0.0),
                hue=smooth_track(rng, rng.uniform(-12, 12), rng.uniform(-12, 12), T, 0.0),
                shade_amp=float(rng.uniform(0, 0.35)), shade_dir=float(rng.uniform(0, 2 * np.pi)),
                cloth_color=tuple(float(v) for v in rng.uniform(10, 245, 3)),
                cloth_amp=float(rng.choice([0.0, 0.0, 0.12, 0.25])),
                cloth_period=float(rng.uniform(0.06, 0.2)), cloth_dir=float(rng.uniform(0, np.pi)),
            ))
        self._add_occluders([(p.cx, p.cy, float(p.scale[0] * (p.cut.box[3] - p.cut.box[1])))
                             for p in self.faces])

    # ------------------------------------------------------------------ geometry
    def _crop_to_frame(self, p: _Placed, t: int) -> np.ndarray:
        """3 x 3: crop pixel centres -> frame pixel centres at frame ``t``."""
        s, a = float(p.scale[t]), math.radians(float(p.angle[t]))
        r = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]]) * s
        anchor = (p.cut.box[:2] + p.cut.box[2:]) / 2.0 - 0.5
        m = np.eye(3)
        m[:2, :2] = r
        m[:2, 2] = np.array([p.cx[t], p.cy[t]]) - r @ anchor
        return m

    def placement(self, k: int, t: int) -> FacePlacement:
        """:class:`FacePlacement` of face ``k`` (painting order) at frame ``t``."""
        p = self.faces[k]
        m = self._crop_to_frame(p, t) @ p.cut.src_to_crop
        return FacePlacement(k, p.flip, float(p.cx[t]), float(p.cy[t]), float(p.scale[t]),
                             float(p.angle[t]), m[:2].copy())

    # ------------------------------------------------------------------ drawing
    def _paint_face(self, image, label, owner, k: int, t: int):
        """Paste face ``k`` at frame ``t``; returns the frame pixels of its box polygon (bool), or None
        when the face lies outside the frame."""
        p, cut = self.faces[k], self.faces[k].cut
        h, w = label.shape
        m = self._crop_to_frame(p, t)
        ch, cw = cut.stack.shape[:2]
        corners = np.array([[-0.5, -0.5, 1], [cw - 0.5, -0.5, 1], [cw - 0.5, ch - 0.5, 1],
                            [-0.5, ch - 0.5, 1]]) @ m[:2].T
        pad = int(math.ceil(3 * FEATHER_SIGMA)) + 1
        x0 = max(0, int(math.floor(corners[:, 0].min())) - pad)
        y0 = max(0, int(math.floor(corners[:, 1].min())) - pad)
        x1 = min(w, int(math.ceil(corners[:, 0].max())) + pad + 1)
        y1 = min(h, int(math.ceil(corners[:, 1].max())) + pad + 1)
        if x1 <= x0 or y1 <= y0:
            return None
        to_roi = np.array([[1.0, 0, -x0], [0, 1, -y0], [0, 0, 1]]) @ m
        out = _warp(cut.stack, to_roi, (x1 - x0, y1 - y0), cut.levels)
        prem, cover, cls = out[..., :3], out[..., 3], out[..., 4:]
        # labels: the class with the largest coverage, "not this face" (1 - coverage) included
        best = cls.argmax(axis=2)
        is_face = cls.max(axis=2) > np.maximum(1.0 - cover, 0.0)
        # colours: un-premultiply, vary, premultiply again, feather
        rgb = prem / np.maximum(cover, 1e-6)[..., None]
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        hb = float(p.scale[t] * (cut.box[3] - cut.box[1]))
        proj = ((xx - p.cx[t]) * math.cos(p.shade_dir) + (yy - p.cy[t]) * math.sin(p.shade_dir))
        shade = 1.0 + p.shade_amp * np.clip(proj / (0.5 * hb), -1, 1)
        rgb = _jitter_colors(rgb, cover, float(p.gain[t]), float(p.contrast[t]),
                             float(p.saturation[t]), float(p.hue[t]), shade)
        prem = rgb * cover[..., None]
        alpha = cv2.GaussianBlur(cover, (0, 0), FEATHER_SIGMA)
        prem = cv2.GaussianBlur(prem, (0, 0), FEATHER_SIGMA)
        roi = image[y0:y1, x0:x1].astype(np.float32)
        roi = roi * (1.0 - alpha[..., None]) + prem
        image[y0:y1, x0:x1] = np.clip(np.round(roi), 0, 255).astype(np.uint8)
        lab_roi, own_roi = label[y0:y1, x0:x1], owner[y0:y1, x0:x1]
        lab_roi[is_face] = cut.classes[best[is_face]]
        own_roi[is_face] = k
        # the face box: the source box as a rotated rectangle in the frame
        bx0, by0, bx1, by1 = cut.box - 0.5
        quad = np.array([[bx0, by0, 1], [bx1, by0, 1], [bx1, by1, 1], [bx0, by1, 1]]) @ m[:2].T
        in_roi = np.zeros((y1 - y0, x1 - x0), np.uint8)
        cv2.fillPoly(in_roi, [np.round((quad - [x0, y0]) * 16).astype(np.int32)], 1, cv2.LINE_8, 4)
        in_box = np.zeros((h, w), bool)
        in_box[y0:y1, x0:x1] = in_roi
        return in_box

    def _paint_torso(self, image, label, owner, k: int, t: int) -> None:
        p = self.faces[k]
        h, w = label.shape
        m = self._crop_to_frame(p, t)
        pts = np.concatenate([p.cut.torso, np.ones((len(p.cut.torso), 1))], axis=1) @ m[:2].T
        ipts = np.round(pts * 16).astype(np.int32)
        cover = np.zeros((h, w), np.uint8)
        cv2.fillPoly(cover, [ipts], 255, cv2.LINE_AA, 4)
        ys, xs = np.nonzero(cover)
        if ys.size == 0:
            return
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        a = cover[y0:y1, x0:x1].astype(np.float32)[..., None] / 255.0
        col = np.array(p.cloth_color, np.float32)
        if p.cloth_amp > 0:
            yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
            period = max(2.0, p.cloth_period * float(p.scale[t] * (p.cut.box[3] - p.cut.box[1])))
            d = p.cloth_dir + math.radians(float(p.angle[t]))
            stripes = np.sign(np.sin(2 * np.pi / period * (xx * math.cos(d) + yy * math.sin(d))))
            col = col[None, None] * (1 + p.cloth_amp * stripes)[..., None]
        roi = image[y0:y1, x0:x1].astype(np.float32)
        image[y0:y1, x0:x1] = np.clip(np.round(roi * (1 - a) + col * a), 0, 255).astype(np.uint8)
        inside = cv2.fillPoly(np.zeros((h, w), np.uint8), [ipts], 1, cv2.LINE_8, 4).astype(bool)
        label[inside] = self.cloth_id
        owner[inside] = k if self.cloth_id else -1

    def render(self, t: int) -> FrameResult:
        """Frame ``t``: image before JPEG, labels of the source set, owners, boxes and the faces'
        :class:`FacePlacement` as ``poses``."""
        rng = self.frame_rng(t)
        image, label, owner = self._blank_maps(t)
        in_box, amodal = [], []
        for k in range(len(self.faces)):
            in_box.append(self._paint_face(image, label, owner, k, t))
            amodal.append(0 if in_box[k] is None else int(np.count_nonzero(
                (owner == k) & in_box[k] & ~self.body[label])))
            self._paint_torso(image, label, owner, k, t)
        self.paint_occluders(image, label, owner, t)
        boxes, box_owner = self._boxes([None if box is None else (owner == k) & box & ~self.body[label]
                                        for k, box in enumerate(in_box)], amodal)
        image = self.light_blur_noise(image.astype(np.float32), t, rng)
        poses = [self.placement(k, t) for k in range(len(self.faces))]
        return FrameResult(image, label, owner, boxes, box_owner, poses, amodal)
