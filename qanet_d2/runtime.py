"""A reference runtime of the exported face-parsing pipeline: NumPy, OpenCV and ONNX Runtime only
(never torch; usage in docs/export.md).

It mirrors the torch pipeline (``FaceParsingPredictor`` -> ``QANetFaceParser.inference``) step by
step (docs/export.md); every number it uses comes from the export's ``metadata.json``:

1. **Resize** (:func:`resize_shortest_edge`): detectron2's ``ResizeShortestEdge`` with PIL's
   bilinear filter, fixed-point arithmetic included (:func:`resample_uint8`): the model-input frame.
2. **Detect** (:meth:`FaceParsingRuntime.detect`): FCOS on the image resized by
   ``detector.input_scale`` (torch's antialiased bilinear, :func:`resample_float`), decoded as
   detectron2's (:func:`decode_fcos`, :func:`nms`); or YuNet (:func:`decode_yunet`) and the box
   adapter (:func:`head_boxes`).
3. **Crop** (:func:`crop_affines`, :func:`crop_faces`): the crop geometry of
   ``qanet_d2/layers/crops.py``, sampled with ``cv2.warpAffine`` from the normalised RGB image.
4. **Parse** (:meth:`FaceParsingRuntime.parse`): ``parser.onnx`` per view; flipped views mirrored
   back with ``flip_permutation`` and averaged; IoUs averaged over all views and clamped to [0, 1].
5. **Post-process** (:func:`postprocess`): the NumPy mirror of ``qanet_d2/modeling/postprocessing.py``.
"""
from __future__ import annotations

import json
import math
import os
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

__all__ = [
    "FaceParsingRuntime", "ExportError", "load_metadata", "resize_shortest_edge", "resample_uint8", "resample_float",
    "decode_fcos", "nms", "crop_regions", "crop_affines", "crop_faces", "paste_face", "face_scores", "paint_order",
    "postprocess", "colorize",
]

METADATA_FILE = "metadata.json"
SUPPORTED_VERSIONS = (3,)  # 3: the score thresholds name their score


class ExportError(ValueError):
    """An export folder that cannot be run (missing files, unknown metadata version)."""


def load_metadata(export_dir: str) -> Dict:
    """The export's ``metadata.json``, checked for the files it names."""
    path = os.path.join(export_dir, METADATA_FILE)
    if not os.path.isfile(path):
        raise ExportError(f"{path}: no such file (export with tools/export.py)")
    with open(path) as f:
        meta = json.load(f)
    if meta.get("format_version") not in SUPPORTED_VERSIONS:
        raise ExportError(f"{path}: format_version {meta.get('format_version')!r} is not one of {SUPPORTED_VERSIONS}")
    for part in ("detector", "parser"):
        if meta.get(part) and not os.path.isfile(os.path.join(export_dir, meta[part]["file"])):
            raise ExportError(f"{os.path.join(export_dir, meta[part]['file'])}: no such file (named by {path})")
    return meta


# ---------------------------------------------------------------------------- resizing
def _resample_taps(in_size: int, out_size: int) -> Tuple[np.ndarray, np.ndarray]:
    """Bilinear filter taps of a 1-d resize, widened when reducing (PIL's ``precompute_coeffs``,
    which torch's ``antialias=True`` copies): ``out_size x K`` input indices and float64 weights."""
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 1.0 * filterscale
    ksize = int(math.ceil(support)) * 2 + 1
    center = (np.arange(out_size) + 0.5) * scale
    # C's (int) cast truncates towards zero
    xmin = np.maximum(np.trunc(center - support + 0.5).astype(np.int64), 0)
    count = np.minimum(np.trunc(center + support + 0.5).astype(np.int64), in_size) - xmin
    taps = np.arange(ksize)
    weight = np.clip(1.0 - np.abs((taps[None, :] + xmin[:, None] - center[:, None] + 0.5) / filterscale), 0.0, None)
    weight[taps[None, :] >= count[:, None]] = 0.0
    total = weight.sum(axis=1, keepdims=True)
    weight = np.where(total != 0, weight / np.where(total != 0, total, 1.0), weight)
    used = int(count.max()) if out_size else 0
    index = np.minimum(xmin[:, None] + taps[None, :used], in_size - 1)
    return index, weight[:, :used]


def _apply_taps(array: np.ndarray, index: np.ndarray, weight: np.ndarray, axis: int) -> np.ndarray:
    shape = [1] * array.ndim
    shape[axis] = -1
    return sum(np.take(array, index[:, k], axis=axis) * weight[:, k].reshape(shape) for k in range(index.shape[1]))


def resample_uint8(image: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """PIL's bilinear ``Image.resize`` of an ``H x W (x C)`` uint8 image: separable, horizontal
    pass first, 22-bit fixed-point weights, each pass rounded to uint8 (as detectron2's
    ``ResizeTransform`` does it for uint8 images)."""
    precision = 22
    out = image
    for axis, size in ((1, out_w), (0, out_h)):
        if out.shape[axis] == size:
            continue  # PIL skips a pass whose size does not change
        index, weight = _resample_taps(out.shape[axis], size)
        # sum(pixel * weight) < 255 * 2^22 + 2^21 fits in int32
        iweight = np.floor(0.5 + weight * (1 << precision)).astype(np.int32)
        acc = _apply_taps(out.astype(np.int32), index, iweight, axis) + np.int32(1 << (precision - 1))
        out = np.clip(acc >> precision, 0, 255).astype(np.uint8)
    return out


def resample_float(image: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """``F.interpolate(mode="bilinear", align_corners=False, antialias=True)`` of an ``H x W x C``
    image, as float32."""
    out = image.astype(np.float32)
    for axis, size in ((1, out_w), (0, out_h)):
        if out.shape[axis] != size:
            index, weight = _resample_taps(out.shape[axis], size)
            out = _apply_taps(out, index, weight.astype(np.float32), axis).astype(np.float32)
    return out


def resize_shortest_edge(image: np.ndarray, min_size: int, max_size: int) -> np.ndarray:
    """detectron2's ``ResizeShortestEdge`` test transform of a uint8 image."""
    h, w = image.shape[:2]
    scale = min_size / min(h, w)
    newh, neww = (min_size, scale * w) if h < w else (scale * h, min_size)
    if max(newh, neww) > max_size:
        scale = max_size / max(newh, neww)
        newh, neww = newh * scale, neww * scale
    return resample_uint8(image, int(newh + 0.5), int(neww + 0.5))


# ---------------------------------------------------------------------------- detector decoding
def _sigmoid(x: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-x.astype(np.float32)))).astype(np.float32)


def nms(boxes: np.ndarray, scores: np.ndarray, thresh: float) -> np.ndarray:
    """Indices kept by greedy NMS (torchvision's): by decreasing score, a box is dropped when its
    IoU with a kept box is > ``thresh``."""
    order = np.argsort(-scores, kind="stable")
    x0, y0, x1, y1 = (boxes[:, k].astype(np.float32) for k in range(4))
    area = (x1 - x0) * (y1 - y0)
    suppressed = np.zeros(len(boxes), bool)
    keep = []
    for pos, i in enumerate(order):
        if suppressed[i]:
            continue
        keep.append(i)
        rest = order[pos + 1 :]
        w = np.clip(np.minimum(x1[i], x1[rest]) - np.maximum(x0[i], x0[rest]), 0, None)
        h = np.clip(np.minimum(y1[i], y1[rest]) - np.maximum(y0[i], y0[rest]), 0, None)
        inter = w * h
        with np.errstate(invalid="ignore", divide="ignore"):  # 0/0 for two empty boxes: NaN, not suppressed
            iou = inter / (area[i] + area[rest] - inter)
        suppressed[rest[iou > thresh]] = True
    return np.asarray(keep, np.int64)


def decode_fcos(outputs: Dict[str, np.ndarray], det: Dict) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(boxes, scores, classes)`` of one image after NMS, in the detector's input frame, from its
    raw outputs ``cls_<level>``, ``box_<level>``, ``ctr_<level>`` (detectron2's FCOS inference:
    score ``sqrt(sigmoid(cls) * sigmoid(ctr))``, box ``point -+ relu(ltrb) * stride``)."""
    found = []
    for level, stride in zip(det["levels"], det["strides"]):
        cls = outputs[f"cls_{level}"][0]  # K x H x W
        box = outputs[f"box_{level}"][0]
        ctr = outputs[f"ctr_{level}"][0]
        k, h, w = cls.shape
        scores = np.sqrt(_sigmoid(cls) * _sigmoid(ctr)).transpose(1, 2, 0).reshape(-1)  # (H*W) x K, flattened
        cand = np.nonzero(scores > det["score_thresh"])[0]
        order = np.argsort(-scores[cand], kind="stable")[: det["topk_candidates"]]
        cand = cand[order]
        anchor, classes = cand // k, cand % k
        ys, xs = anchor // w, anchor % w
        offset = det["anchor_offset"] * stride
        cx = (xs * stride + offset).astype(np.float32)
        cy = (ys * stride + offset).astype(np.float32)
        deltas = np.maximum(box.reshape(4, -1)[:, anchor].T, 0).astype(np.float32)
        if det["box_normalized_by_stride"]:
            deltas = deltas * np.float32(stride)
        boxes = np.stack([cx - deltas[:, 0], cy - deltas[:, 1], cx + deltas[:, 2], cy + deltas[:, 3]], axis=1)
        found.append((boxes, scores[cand], classes))
    boxes, scores, classes = (np.concatenate(parts) for parts in zip(*found))  # float32, float32, int64
    keep = []
    for c in np.unique(classes):  # class-wise NMS, merged by score
        idx = np.nonzero(classes == c)[0]
        keep.append(idx[nms(boxes[idx], scores[idx], det["nms_thresh"])])
    keep = np.concatenate(keep) if keep else np.zeros(0, np.int64)
    keep = keep[np.argsort(-scores[keep], kind="stable")][: det["max_detections_per_image"]]
    return boxes[keep], scores[keep], classes[keep]


def decode_yunet(outputs: Dict[str, np.ndarray], det: Dict, height: int, width: int):
    """YuNet's faces of one padded ``height`` x ``width`` input (``qanet_d2.modeling.detectors.yunet``):
    ``(boxes N x 4, landmarks N x 5 x 2, scores N)`` of the cells scoring at least
    ``score_thresh`` (at most ``topk_candidates``), before NMS, in the padded input's frame."""
    found = []
    for s in det["strides"]:
        gh, gw = height // s, width // s
        ys, xs = np.meshgrid(np.arange(gh, dtype=np.float32), np.arange(gw, dtype=np.float32), indexing="ij")
        prior = np.stack([xs.reshape(-1), ys.reshape(-1)], 1) * np.float32(s)
        score = (outputs[f"cls_{s}"][0, :, 0] * outputs[f"obj_{s}"][0, :, 0]).astype(np.float32)
        b = outputs[f"bbox_{s}"][0].astype(np.float32)
        centre = prior + b[:, :2] * np.float32(s)
        size = np.exp(b[:, 2:]) * np.float32(s)
        kps = prior[:, None, :] + outputs[f"kps_{s}"][0].astype(np.float32).reshape(-1, 5, 2) * np.float32(s)
        found.append((np.concatenate([centre - size / 2, centre + size / 2], 1), kps, score))
    boxes, kps, scores = (np.concatenate(parts) for parts in zip(*found))
    keep = np.nonzero(scores >= det["score_thresh"])[0]
    keep = keep[np.argsort(-scores[keep], kind="stable")][: det["topk_candidates"]]
    return boxes[keep], kps[keep], scores[keep]


def head_boxes(face_boxes: np.ndarray, landmarks: np.ndarray, weights: Sequence[Sequence[float]]) -> np.ndarray:
    """The box adapter (``qanet_d2.modeling.detectors.box_adapter.HeadBoxAdapter``): head boxes of
    ``N x 4`` face boxes and their ``N x 5 x 2`` landmarks, with the ``4 x 11`` weights."""
    centre = (face_boxes[:, :2] + face_boxes[:, 2:]) / 2
    size = np.maximum(face_boxes[:, 2:] - face_boxes[:, :2], 1e-6)
    uv = (landmarks[..., :2] - centre[:, None]) / size[:, None]
    f = np.concatenate([np.ones((len(face_boxes), 1), np.float32), uv[..., 0], uv[..., 1]], 1)
    t = f @ np.asarray(weights, np.float32).T
    head = np.concatenate([centre + t[:, :2] * size, centre + t[:, 2:] * size], 1)
    head[:, 2:] = np.maximum(head[:, 2:], head[:, :2] + 1.0)
    return head.astype(np.float32)


# ---------------------------------------------------------------------------- crops
def crop_regions(boxes: np.ndarray, aspect: float, expand: float, scale: float = 1.0) -> np.ndarray:
    """``N x 4`` crop regions of boxes: the shorter side grown to ``aspect`` around the centre, x
    ``expand``, x ``scale`` (float32, in the order of operations of ``qanet_d2.layers.crops``)."""
    b = np.asarray(boxes, np.float32).reshape(-1, 4)
    f = np.float32
    cx, cy = (b[:, 0] + b[:, 2]) * f(0.5), (b[:, 1] + b[:, 3]) * f(0.5)
    w = np.maximum(b[:, 2] - b[:, 0], f(1e-3))
    h = np.maximum(b[:, 3] - b[:, 1], f(1e-3))
    w, h = np.maximum(w, h * f(aspect)), np.maximum(h, w / f(aspect))
    w, h = w * f(expand), h * f(expand)
    regions = np.stack([cx - f(0.5) * w, cy - f(0.5) * h, cx + f(0.5) * w, cy + f(0.5) * h], axis=1)
    if scale != 1.0:
        cx, cy = (regions[:, 0] + regions[:, 2]) * f(0.5), (regions[:, 1] + regions[:, 3]) * f(0.5)
        hw, hh = (regions[:, 2] - regions[:, 0]) * f(0.5) * f(scale), (regions[:, 3] - regions[:, 1]) * f(0.5) * f(scale)
        regions = np.stack([cx - hw, cy - hh, cx + hw, cy + hh], axis=1)
    return regions


def crop_affines(regions: np.ndarray, crop_size: Sequence[int]) -> np.ndarray:
    """``N x 2 x 3`` float32 crop -> image affines of ``crop_size`` ``(h, w)`` crops onto the regions."""
    f = np.float32
    out_h, out_w = f(crop_size[0]), f(crop_size[1])
    cx, cy = (regions[:, 0] + regions[:, 2]) * f(0.5), (regions[:, 1] + regions[:, 3]) * f(0.5)
    sx, sy = (regions[:, 2] - regions[:, 0]) / out_w, (regions[:, 3] - regions[:, 1]) / out_h
    a = np.zeros((len(regions), 2, 3), np.float32)
    a[:, 0, 0], a[:, 0, 2] = sx, cx - sx * (out_w * f(0.5))
    a[:, 1, 1], a[:, 1, 2] = sy, cy - sy * (out_h * f(0.5))
    return a


MAX_SUPERSAMPLING = 4  # as qanet_d2/layers/crops.py


def crop_faces(image: np.ndarray, affines: np.ndarray, crop_size: Sequence[int]) -> np.ndarray:
    """``N x C x h x w`` bilinear crops of an ``H x W x C`` float32 image (0 outside), anti-aliased as
    the model's: ``k x k`` samples per pixel, ``k = ceil(span)`` in ``[1, MAX_SUPERSAMPLING]``."""
    h, w = int(crop_size[0]), int(crop_size[1])
    crops = np.zeros((len(affines), image.shape[2], h, w), np.float32)
    for i, a in enumerate(affines):
        a = np.asarray(a, np.float64)
        span = max(np.hypot(a[0, 0], a[1, 0]), np.hypot(a[0, 1], a[1, 1]))
        k = int(min(max(math.ceil(span - 1e-6), 1), MAX_SUPERSAMPLING))
        sub = a.copy()
        sub[:, :2] /= k
        sub = sub.astype(np.float32).astype(np.float64)
        # OpenCV puts pixel centres at integers, not at +0.5: M (j, i, 1) = A (j + 0.5, i + 0.5, 1) - 0.5
        sub[:, 2] = sub[:, :2] @ np.array([0.5, 0.5]) + sub[:, 2] - 0.5
        crop = cv2.warpAffine(
            image, sub, (w * k, h * k), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_CONSTANT, borderValue=0.0,
        ).reshape(h * k, w * k, -1)
        if k > 1:
            crop = crop.reshape(h, k, w, k, -1).mean(axis=(1, 3))
        crops[i] = crop.transpose(2, 0, 1)
    return crops


# ---------------------------------------------------------------------------- post-processing
def face_window(affines: np.ndarray, crop_size: Sequence[int], image_size: Sequence[int]) -> Tuple[int, int, int, int]:
    """Window ``(x0, y0, x1, y1)`` of one face's ``V x 2 x 3`` views, clipped (``FacePostProcessor.windows``)."""
    h, w = float(crop_size[0]), float(crop_size[1])
    corners = np.array([[0, 0, 1], [w, 0, 1], [0, h, 1], [w, h, 1]], np.float32).T
    pts = affines.astype(np.float32) @ corners  # V x 2 x 4
    limits = np.array([image_size[1], image_size[0]], np.float32)
    lo = np.clip(np.floor(pts.min(axis=2)), 0, limits).min(axis=0)
    hi = np.clip(np.ceil(pts.max(axis=2)), 0, limits).max(axis=0)
    return int(lo[0]), int(lo[1]), int(hi[0]), int(hi[1])


def _bilinear_taps(g: np.ndarray, size: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``grid_sample`` taps (``align_corners=False``, border) of normalised ``g`` along ``size``
    pixels: lower and upper index, upper weight."""
    pos = np.clip(((g.astype(np.float32) + np.float32(1)) * np.float32(size) - np.float32(1)) / np.float32(2), 0, size - 1)
    lo = np.floor(pos).astype(np.int64)
    frac = (pos - lo).astype(np.float32)
    return lo, np.minimum(lo + 1, size - 1), frac


def paste_face(probs: np.ndarray, affines: np.ndarray, image_size: Sequence[int], with_top: bool = False):
    """One face's ``V x C x h x w`` crop probabilities pasted with its ``V x 2 x 3`` affines into its
    window: ``(window, labels, inside, top)``, ``labels`` uint8 (0 outside the crops), ``inside`` the
    pixels in a view's crop and, ``with_top``, the max of the averaged probabilities (0 outside)."""
    num_views, num_classes, h, w = probs.shape
    x0, y0, x1, y1 = face_window(affines, (h, w), image_size)
    wh, ww = max(0, y1 - y0), max(0, x1 - x0)
    total = np.zeros((num_classes, wh, ww), np.float32)
    count = np.zeros((wh, ww), np.float32)
    gx, gy = np.meshgrid(np.arange(x0, x0 + ww, dtype=np.float64) + 0.5, np.arange(y0, y0 + wh, dtype=np.float64) + 0.5)
    full = np.zeros((num_views, 3, 3))
    full[:, :2], full[:, 2, 2] = affines, 1.0
    inverse = np.linalg.inv(full)[:, :2].astype(np.float32).astype(np.float64)  # rounded to float32 as invert_affines
    for v, a in enumerate(inverse):
        gu = ((a[0, 0] * gx + a[0, 1] * gy + a[0, 2]) * (2.0 / w) - 1.0).astype(np.float32)
        gv = ((a[1, 0] * gx + a[1, 1] * gy + a[1, 2]) * (2.0 / h) - 1.0).astype(np.float32)
        inside = (np.abs(gu) <= 1) & (np.abs(gv) <= 1)
        xl, xh, fx = _bilinear_taps(gu, w)
        yl, yh, fy = _bilinear_taps(gv, h)
        p = probs[v]
        sampled = (p[:, yl, xl] * (1 - fx) + p[:, yl, xh] * fx) * (1 - fy) + (p[:, yh, xl] * (1 - fx) + p[:, yh, xh] * fx) * fy
        total += sampled * inside
        count += inside
    avg = total / np.maximum(count, 1.0)
    top, labels = avg.max(axis=0), avg.argmax(axis=0)
    inside = count > 0
    labels = np.where((top < 1.0 / num_classes) | ~inside, 0, labels).astype(np.uint8)
    return (x0, y0, x1, y1), labels, inside, (top * inside if with_top else None)


def face_scores(box_scores, iou_scores, pixel_scores, weights: Sequence[float], eps: float) -> np.ndarray:
    """Quality scores ``(box^a * iou^b * pixel^c) ** (1 / (a + b + c))`` (float32)."""
    a, b, c = (float(x) for x in weights)
    clamp = lambda x: np.log(np.clip(np.asarray(x, np.float32), np.float32(eps), np.float32(1)))  # noqa: E731
    terms = np.float32(a) * clamp(box_scores) + np.float32(b) * clamp(iou_scores) + np.float32(c) * clamp(pixel_scores)
    return np.exp(terms / np.float32(max(a + b + c, eps))).astype(np.float32)


def paint_order(paint_scores: np.ndarray, other_scores: np.ndarray, keep: np.ndarray) -> List[int]:
    """Faces to paint in painting order: ascending ``paint_scores`` (ties: ascending
    ``other_scores``, then index), only those where the bool mask ``keep`` is set."""
    key, tie = np.asarray(paint_scores, np.float64), np.asarray(other_scores, np.float64)
    order = np.lexsort((np.arange(len(key)), tie, key))
    return [int(i) for i in order if keep[i]]


def _pasted_pixel_score(window, top: np.ndarray, inside: np.ndarray, box, thresh: float) -> np.float32:
    """Pixel score over the pasted crop region, with ``box`` only at pixel centres inside it."""
    if box is not None:
        x0, y0, x1, y1 = window
        bx0, by0, bx1, by1 = (float(v) for v in box)
        cx0, cx1 = max(x0, int(np.ceil(bx0 - 0.5))), min(x1, int(np.floor(bx1 - 0.5)) + 1)
        cy0, cy1 = max(y0, int(np.ceil(by0 - 0.5))), min(y1, int(np.floor(by1 - 0.5)) + 1)
        if cx1 <= cx0 or cy1 <= cy0:
            return np.float32(0)
        top, inside = top[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0], inside[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]
    keep = inside & (top >= thresh)
    return np.float32((top * keep).sum() / max(keep.sum(), 1))


def postprocess(faces: Dict[str, np.ndarray], input_size: Sequence[int], output_size: Sequence[int], pp: Dict) -> Dict[str, np.ndarray]:
    """``FacePostProcessor.__call__`` in NumPy: per-face results of one image (:meth:`FaceParsingRuntime.parse`,
    frame ``input_size``) and the metadata's ``postprocessing`` section -> ``labels`` (``H x W``
    uint8 in ``output_size``) and, best first, ``boxes``, ``scores``, ``box_scores``, ``iou_scores``,
    ``pixel_scores``."""
    height, width = int(output_size[0]), int(output_size[1])
    boxes, affines, probs = faces["boxes"].astype(np.float32), faces["affines"].astype(np.float32), faces["probs"]
    sx, sy = width / input_size[1], height / input_size[0]
    if (sx, sy) != (1.0, 1.0):  # FacePostProcessor.rescale
        scale = np.float32([sx, sy])
        boxes = np.clip(boxes * np.tile(scale, 2), 0, np.float32([width, height, width, height]))
        affines *= scale[:, None]
    n, views, _, h, w = probs.shape
    thresh = pp["pixel_score_thresh"]
    pasted = {}
    if pp["pixel_score_region"] == "crop":  # per view over its crop, then averaged over views
        top = probs.max(axis=2).reshape(n, views, h * w)
        keep = (top >= thresh).astype(np.float32)
        pix = ((top * keep).sum(axis=2) / np.maximum(keep.sum(axis=2), 1.0)).mean(axis=1)
    elif pp["pixel_score_region"] in ("image", "pasted"):
        pix = np.zeros(n, np.float32)
        for i in range(n):
            pasted[i] = paste_face(probs[i], affines[i], (height, width), with_top=True)
            window, _, inside, top_i = pasted[i]
            box = boxes[i] if pp["pixel_score_region"] == "image" else None
            pix[i] = _pasted_pixel_score(window, top_i, inside, box, thresh)
    else:
        raise ExportError(f"postprocessing.pixel_score_region {pp['pixel_score_region']!r} is not 'crop', 'image' or 'pasted'")
    scores = face_scores(faces["box_scores"], faces["iou_scores"], pix, pp["score_weights"], pp["score_eps"])
    box_scores = np.asarray(faces["box_scores"], np.float32)
    keep = (scores >= np.float32(pp["quality_score_thresh"])) & (box_scores >= np.float32(pp["box_score_thresh"]))
    if pp["paint_order"] not in ("quality", "box"):
        raise ExportError(f"postprocessing.paint_order {pp['paint_order']!r} is not 'quality' or 'box'")
    key, tie = (scores, box_scores) if pp["paint_order"] == "quality" else (box_scores, scores)
    order = paint_order(key, tie, keep)
    labels = np.zeros((height, width), np.uint8)
    for i in order:
        if i not in pasted:
            pasted[i] = paste_face(probs[i], affines[i], (height, width))
        (x0, y0, x1, y1), face_labels, _, _ = pasted[i]
        labels[y0:y1, x0:x1][face_labels != 0] = face_labels[face_labels != 0]
    best = np.argsort(-scores, kind="stable")
    return {
        "labels": labels,
        "boxes": boxes[best],
        "scores": scores[best],
        "box_scores": box_scores[best],
        "iou_scores": np.asarray(faces["iou_scores"], np.float32)[best],
        "pixel_scores": np.asarray(pix, np.float32)[best],
    }


def colorize(labels: np.ndarray, colors: Sequence[Sequence[int]]) -> np.ndarray:
    """``H x W x 3`` uint8 BGR image of a label map painted with RGB ``colors``."""
    palette = np.zeros((256, 3), np.uint8)
    palette[: len(colors)] = np.asarray(colors, np.uint8)
    return palette[labels][:, :, ::-1].copy()


# ---------------------------------------------------------------------------- the runtime
class FaceParsingRuntime:
    """Runs an export folder (``tools/export.py``) on BGR images: ``runtime(image)`` -> the dict of
    :func:`postprocess` in the image's frame (faces below the thresholds returned, not painted).
    ``runtime(image, boxes=...)`` parses the given boxes (box score 1) instead of detecting.
    """

    def __init__(self, export_dir: str, providers: Sequence[str] = ("CPUExecutionProvider",), threads: int = 0):
        import onnxruntime as ort

        self.meta = load_metadata(export_dir)
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
        options.log_severity_level = 3
        self.parser = ort.InferenceSession(os.path.join(export_dir, self.meta["parser"]["file"]), options, providers=list(providers))
        self.detector = None
        if self.meta.get("detector"):
            self.detector = ort.InferenceSession(os.path.join(export_dir, self.meta["detector"]["file"]), options, providers=list(providers))
        self.classes = list(self.meta["classes"])
        self.colors = [list(c) for c in self.meta["colors"]]

    # ------------------------------------------------------------------ steps
    def detect(self, image: np.ndarray, original: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
        """Face boxes (model-input frame, clipped, non-empty; head boxes with a box adapter) and
        scores of a model-input image; YuNet runs on ``original`` (larger, unresized) when given."""
        if self.meta["detector"].get("type", "FCOS") == "YuNet":
            boxes, landmarks, scores = self.detect_yunet(image if original is None else original, image.shape[:2])
            if self.meta.get("box_adapter"):
                boxes = head_boxes(boxes, landmarks, self.meta["box_adapter"])
            return boxes, scores
        det = self.meta["detector"]
        h, w = image.shape[:2]
        nh, nw = max(1, int(round(h * det["input_scale"]))), max(1, int(round(w * det["input_scale"])))
        x = resample_float(image, nh, nw)
        x = (x - np.asarray(det["pixel_mean"], np.float32)) / np.asarray(det["pixel_std"], np.float32)
        outputs, _ = self._run_detector(x, det["size_divisibility"])
        boxes, scores, _ = decode_fcos(outputs, det)
        # detector_postprocess: to the model-input frame, clipped, empty boxes dropped
        boxes = np.clip(boxes * np.float32([w / nw, h / nh] * 2), 0, np.float32([w, h] * 2))
        keep = (boxes[:, 2] - boxes[:, 0] > 0) & (boxes[:, 3] - boxes[:, 1] > 0)
        return boxes[keep], scores[keep]

    def detect_yunet(self, image: np.ndarray, out_size: Sequence[int]) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """YuNet's boxes, landmarks and scores in the ``out_size`` frame (``YuNetFaceDetector.detect_image``)."""
        det = self.meta["detector"]
        h, w = image.shape[:2]
        oh, ow = int(out_size[0]), int(out_size[1])
        bgr = image if self.meta["input"]["format"] == "BGR" else image[:, :, ::-1]
        sizes = {}  # an ordered set: each size runs once
        for f in det["scales"]:
            s = f if not det["max_size"] else min(f, det["max_size"] / max(h, w))
            sizes[(max(1, int(round(h * s))), max(1, int(round(w * s))))] = None
        found = []
        for sh, sw in sizes:
            outputs, (ph, pw) = self._run_detector(resample_float(bgr, sh, sw), 32)
            boxes, kps, scores = decode_yunet(outputs, det, ph, pw)
            fx, fy = np.float32(ow / sw), np.float32(oh / sh)
            found.append((boxes * np.array([fx, fy, fx, fy], np.float32), kps * np.array([fx, fy], np.float32), scores))
        boxes, kps, scores = (np.concatenate(parts) for parts in zip(*found))
        boxes = np.clip(boxes, 0, np.float32([ow, oh] * 2))
        keep = nms(boxes, scores, det["nms_thresh"])[: det["max_detections_per_image"]]
        return boxes[keep], kps[keep], scores[keep]

    def _run_detector(self, x: np.ndarray, div: int) -> Tuple[Dict[str, np.ndarray], Tuple[int, int]]:
        """``detector.onnx`` on an ``H x W x 3`` float32 image zero-padded to multiples of ``div``:
        its outputs by name and the padded size."""
        h, w, div = x.shape[0], x.shape[1], max(int(div), 1)
        ph, pw = -(-h // div) * div, -(-w // div) * div
        batch = np.zeros((1, 3, ph, pw), np.float32)
        batch[0, :, :h, :w] = x.transpose(2, 0, 1)
        names = [o.name for o in self.detector.get_outputs()]
        return dict(zip(names, self.detector.run(names, {self.detector.get_inputs()[0].name: batch}))), (ph, pw)

    def parse(self, image: np.ndarray, boxes: np.ndarray, box_scores: np.ndarray) -> Dict[str, np.ndarray]:
        """Crop and parse the faces of a model-input image (``QANetFaceParser.parse_faces``)."""
        p = self.meta["parser"]
        boxes, box_scores = np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(box_scores, np.float32)
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        boxes, box_scores = boxes[keep], box_scores[keep]
        if len(boxes) > p["max_parsed_faces"]:
            best = np.argsort(-box_scores, kind="stable")[: p["max_parsed_faces"]]
            boxes, box_scores = boxes[best], box_scores[best]
        rgb = image if self.meta["input"]["format"] == "RGB" else image[:, :, ::-1]
        normalised = ((rgb.astype(np.float32) - np.asarray(p["pixel_mean"], np.float32)) / np.asarray(p["pixel_std"], np.float32))
        scales: Dict[float, Dict[bool, None]] = {}  # the flips of each box scale, as an ordered set
        for s, f in p["views"]:  # group_views: the flips of one box scale share a crop
            scales.setdefault(float(s), {})[bool(f)] = None
        n, (h, w) = len(boxes), p["crop_size"]
        num_classes = self.meta["postprocessing"]["num_classes"]
        perm = np.asarray(p["flip_permutation"])
        probs = np.zeros((n, len(scales), num_classes, h, w), np.float32)
        affines = np.zeros((n, len(scales), 2, 3), np.float32)
        iou_sum = np.zeros(n, np.float32)
        for v, (scale, flips) in enumerate(scales.items()):
            a = crop_affines(crop_regions(boxes, p["aspect_ratio"], p["box_expand"], scale), (h, w))
            affines[:, v] = a
            for start in range(0, n, p["batch"]):
                crops = crop_faces(normalised, a[start : start + p["batch"]], (h, w))
                acc_p, acc_i = 0.0, 0.0
                for flip in flips:
                    out_p, out_i = self.parser.run(["probs", "iou"], {"crops": np.ascontiguousarray(crops[..., ::-1]) if flip else crops})
                    acc_p = acc_p + (out_p[..., ::-1][:, perm] if flip else out_p)
                    acc_i = acc_i + out_i
                probs[start : start + p["batch"], v] = acc_p / len(flips)
                iou_sum[start : start + p["batch"]] += np.clip(acc_i / len(flips), 0.0, 1.0)
        return {"boxes": boxes, "box_scores": box_scores, "iou_scores": iou_sum / len(scales), "probs": probs, "affines": affines}

    def __call__(self, image_bgr: np.ndarray, boxes: Optional[np.ndarray] = None) -> Dict[str, np.ndarray]:
        image = _to_bgr(image_bgr)
        height, width = image.shape[:2]
        inp = self.meta["input"]
        # the model-input format; the faces are cropped from this original image (as QANetFaceParser.inference does)
        original = image if inp["format"] == "BGR" else np.ascontiguousarray(image[:, :, ::-1])
        model_image = resize_shortest_edge(original, inp["min_size_test"], inp["max_size_test"])
        mh, mw = model_image.shape[:2]
        if boxes is None:
            if self.detector is None:
                raise ExportError("this export has no detector: pass the face boxes")
            face_boxes, box_scores = self.detect(model_image, original if height * width > mh * mw else None)
            face_boxes *= np.float32([width / mw, height / mh] * 2)  # to the original frame
        else:
            face_boxes = np.asarray(boxes, np.float32).reshape(-1, 4).copy()
            box_scores = np.ones(len(face_boxes), np.float32)
        faces = self.parse(original, face_boxes, box_scores)
        return postprocess(faces, (height, width), (height, width), self.meta["postprocessing"])


def _to_bgr(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image (as cv2.imread gives); got {image.dtype}")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim == 3 and image.shape[2] == 4:
        return np.ascontiguousarray(image[:, :, :3])
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an H x W, H x W x 3 or H x W x 4 image; got shape {image.shape}")
    return image
