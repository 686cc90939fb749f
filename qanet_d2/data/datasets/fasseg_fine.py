"""FASSEG in fine classes: label maps of label set ``fasseg_fine`` derived from FASSEG's six coarse
classes and the five landmarks of a face detector (rules in datasets/README.md, "FASSEG in fine
classes"; the constants below set them). An undecided pixel becomes 255.

Landmarks are ``5 x 2`` (x, y) image coordinates in YuNet's order: the person's right eye, left
eye, nose tip, right mouth corner, left mouth corner.
"""
from __future__ import annotations

import json
import logging
import os
from collections import Counter
from typing import Dict, Optional, Sequence, Tuple

import cv2
import numpy as np

from ...structures.label_sets import FASSEG, FASSEG_FINE, IGNORE_LABEL

__all__ = ["derive_fine_labels", "derive_fasseg_fine", "RIGHT_EYE", "LEFT_EYE", "NOSE",
           "RIGHT_MOUTH", "LEFT_MOUTH", "FASSEG_FINE_SPLITS"]

logger = logging.getLogger(__name__)

# landmark rows (YuNet's order; "left" is the person's left)
RIGHT_EYE, LEFT_EYE, NOSE, RIGHT_MOUTH, LEFT_MOUTH = range(5)

EYE_MARGIN = 0.08              # x eye distance: half-width of the undecided band at the bisector
COMPONENT_SIDE_FRACTION = 0.9  # an eye region this much on one side goes to that side whole
BROW_BAND_UP = (0.0, 0.75)     # x eye-to-mouth distance, above the eye centre
BROW_BAND_HALF_WIDTH = 0.55    # x eye-to-mouth distance, along the eye axis
BROW_CORE_UP = (0.05, 0.55)    # x eye-to-mouth distance: where a brow joined to other hair may be
BROW_CORE_HALF_WIDTH = 0.45    # (its pixels there are ignored)
BROW_COMPONENT_FRACTION = 0.8  # a hair region this much inside the bands is a brow
LIP_MARGIN = 0.04              # x mouth width (at least 1 pixel): undecided band at the corner line
INNER_MOUTH_DARK = 0.6         # x median mouth luminance: darker pixels at the line are the opening
SEAM_MAX_SHIFT = 0.2          # x mouth width: how far the seam may lie from the corner line
SEAM_SMOOTH = 9                # slices: median smoothing of the seam
INNER_MOUTH_BAND = 0.3         # x mouth width: how far from the corner line the opening may reach

# training splits first; multipose_train is multipose_dev_train + multipose_dev_val
FASSEG_FINE_SPLITS = ("frontal_train", "multipose_dev_train", "frontal_test", "multipose_dev_val",
                      "multipose_train", "multipose_test")

_C = {n: FASSEG.class_id(n) for n in FASSEG.classes}
_F = {n: FASSEG_FINE.class_id(n) for n in FASSEG_FINE.classes}
_REFINED = ("l_eye", "r_eye", "l_brow", "r_brow", "u_lip", "l_lip", "mouth")  # the fine classes of eyes, hair, mouth


def _unit(v: np.ndarray) -> Optional[np.ndarray]:
    n = float(np.hypot(*v))
    return v / n if n > 1e-6 else None


def derive_fine_labels(coarse: np.ndarray, landmarks: Optional[np.ndarray],
                       image: Optional[np.ndarray] = None) -> Tuple[np.ndarray, Dict[str, int]]:
    """``(fine, counts)`` of one ``H x W`` uint8 FASSEG label map: ``fasseg_fine`` ids (255 =
    undecided) and pixel counts ``{"<class>_decided": n, "<class>_ignored": n}`` for eyes, hair
    and mouth. ``landmarks``: ``5 x 2`` (module doc) or None; ``image``: the ``H x W x 3`` photo
    (any channel order) for the inner mouth's darkness, None: the mouth line's band is ignored."""
    coarse = np.asarray(coarse)
    if coarse.ndim != 2:
        raise ValueError(f"coarse label map must be H x W, got shape {coarse.shape}")
    h, w = coarse.shape
    fine = np.full((h, w), IGNORE_LABEL, dtype=np.uint8)
    for name in ("background", "skin", "nose"):
        fine[coarse == _C[name]] = _F[name]
    eyes, hair, mouth = (coarse == _C["eyes"]), (coarse == _C["hair"]), (coarse == _C["mouth"])
    fine[hair] = _F["hair"]

    counts: Dict[str, int] = {}

    def finish():
        for name, m in (("eyes", eyes), ("hair", hair), ("mouth", mouth)):
            ign = int((fine[m] == IGNORE_LABEL).sum())
            counts[f"{name}_ignored"] = ign
            counts[f"{name}_decided"] = int(m.sum()) - ign
        return fine, counts

    lm = None if landmarks is None else np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    if lm is None or not np.isfinite(lm).all():
        fine[hair] = IGNORE_LABEL  # brows cannot be found
        return finish()

    ys, xs = np.mgrid[0:h, 0:w]
    pts = np.stack([xs, ys], axis=-1).astype(np.float64) + 0.5  # pixel centres

    eye_r, eye_l = lm[RIGHT_EYE], lm[LEFT_EYE]
    eye_mid = (eye_r + eye_l) / 2
    mouth_r, mouth_l = lm[RIGHT_MOUTH], lm[LEFT_MOUTH]
    mouth_mid = (mouth_r + mouth_l) / 2
    up = _unit(eye_mid - mouth_mid)
    iod = float(np.hypot(*(eye_l - eye_r)))
    scale = float(np.hypot(*(eye_mid - mouth_mid)))
    if up is None or iod < 1.0:
        fine[eyes | hair | mouth] = IGNORE_LABEL
        return finish()

    # ---- eyes: side of the bisector of the two eye landmarks (> 0: the left eye's side)
    side = ((pts - eye_mid) @ (eye_l - eye_r)) / iod  # signed distance, pixels
    margin = EYE_MARGIN * iod
    n, comp = cv2.connectedComponents(eyes.astype(np.uint8), connectivity=8)
    for k in range(1, n):
        m = comp == k
        s = side[m]
        frac_l = float((s > 0).mean())
        if frac_l >= COMPONENT_SIDE_FRACTION:
            fine[m] = _F["l_eye"]
        elif frac_l <= 1 - COMPONENT_SIDE_FRACTION:
            fine[m] = _F["r_eye"]
        else:
            fine[m] = np.select([s > margin, s < -margin], [_F["l_eye"], _F["r_eye"]], IGNORE_LABEL)

    # ---- brows: hair in a band above each eye; the eye centre is the mean of its pixels when
    # the eye is labelled, else the landmark
    axis = np.array([-up[1], up[0]])  # perpendicular to up
    bands, cores = {}, []
    for name, lmk in (("l_brow", eye_l), ("r_brow", eye_r)):
        eye_px = fine == _F["l_eye" if name == "l_brow" else "r_eye"]
        centre = pts[eye_px].mean(axis=0) if eye_px.sum() >= 4 else lmk
        d = pts - centre
        t = d @ up
        a = d @ axis
        bands[name] = ((t >= BROW_BAND_UP[0] * scale) & (t <= BROW_BAND_UP[1] * scale)
                       & (np.abs(a) <= BROW_BAND_HALF_WIDTH * scale))
        cores.append((t >= BROW_CORE_UP[0] * scale) & (t <= BROW_CORE_UP[1] * scale)
                     & (np.abs(a) <= BROW_CORE_HALF_WIDTH * scale))
    in_bands = bands["l_brow"] | bands["r_brow"]
    in_cores = cores[0] | cores[1]
    n, comp = cv2.connectedComponents(hair.astype(np.uint8), connectivity=8)
    for k in range(1, n):
        m = comp == k
        inside = m & in_bands
        if not inside.any():
            continue
        if inside.sum() >= BROW_COMPONENT_FRACTION * m.sum():
            in_l, in_r = (m & bands["l_brow"]).any(), (m & bands["r_brow"]).any()
            if in_l and not in_r:
                fine[m] = _F["l_brow"]
            elif in_r and not in_l:
                fine[m] = _F["r_brow"]
            else:  # one region over both eyes: split at the bisector
                s = side[m]
                fine[m] = np.select([s > margin, s < -margin], [_F["l_brow"], _F["r_brow"]], IGNORE_LABEL)
        else:
            fine[m & in_cores] = IGNORE_LABEL

    # ---- mouth: the lips meet at the darkest pixels along the corner line (the seam); without a
    # photo, at the corner line itself. Above the seam: upper lip; below: lower lip; dark pixels
    # touching the seam: the opening (inner mouth); pixels at the seam otherwise undecided.
    mouth_w = max(float(np.hypot(*(mouth_l - mouth_r))), 1.0)
    if mouth.any():
        line = _unit(mouth_l - mouth_r) if mouth_w > 1.0 else axis
        normal = np.array([line[1], -line[0]])
        if normal @ up < 0:
            normal = -normal
        dist = (pts - mouth_mid) @ normal  # > 0: above the corner line
        lip_margin = max(1.0, LIP_MARGIN * mouth_w)
        lum = None
        if image is not None:
            img = np.asarray(image, dtype=np.float32)
            lum = img[..., :3].mean(axis=-1) if img.ndim == 3 else img
            lum = cv2.GaussianBlur(lum, (0, 0), 1.0)
            seam = _seam_offsets(mouth, dist, (pts - mouth_mid) @ line, lum, mouth_w)
            dist = dist - seam
        out = fine.copy()
        out[mouth & (dist > lip_margin)] = _F["u_lip"]
        out[mouth & (dist < -lip_margin)] = _F["l_lip"]
        out[mouth & (np.abs(dist) <= lip_margin)] = IGNORE_LABEL
        if lum is not None:
            med = float(np.median(lum[mouth]))
            near = mouth & (np.abs(dist) <= INNER_MOUTH_BAND * mouth_w)
            dark = near & (lum < INNER_MOUTH_DARK * med)
            if dark.any():
                n, comp = cv2.connectedComponents(dark.astype(np.uint8), connectivity=8)
                at_seam = np.abs(dist) <= lip_margin
                for k in range(1, n):
                    m = comp == k
                    if (m & at_seam).any():
                        out[m] = _F["mouth"]
        fine[mouth] = out[mouth]
    return finish()


def _seam_offsets(mouth: np.ndarray, dist: np.ndarray, along: np.ndarray, lum: np.ndarray,
                  mouth_w: float) -> np.ndarray:
    """Per-pixel offset (pixels, along the corner line's normal) of the seam between the lips:
    in each one-pixel slice across the mouth, the darkest mouth pixel within
    ``SEAM_MAX_SHIFT`` mouth widths of the corner line; slices without one are interpolated,
    and the seam is median-smoothed over ``SEAM_SMOOTH`` slices."""
    from scipy.ndimage import median_filter

    offsets = np.zeros(mouth.shape, dtype=np.float64)
    ys, xs = np.nonzero(mouth)
    if len(ys) == 0:
        return offsets
    bins = np.round(along[ys, xs]).astype(np.int64)
    lo, hi = bins.min(), bins.max()
    seam = np.full(hi - lo + 1, np.nan)
    d, v = dist[ys, xs], lum[ys, xs]
    ok = np.abs(d) <= SEAM_MAX_SHIFT * mouth_w
    b, d, v = bins[ok], d[ok], v[ok]
    order = np.lexsort((v, b))  # by slice, darkest first
    b, d = b[order], d[order]
    first = np.ones(len(b), dtype=bool)
    first[1:] = b[1:] != b[:-1]
    seam[b[first] - lo] = d[first]
    have = ~np.isnan(seam)
    if not have.any():
        return offsets
    idx = np.arange(len(seam))
    seam = np.interp(idx, idx[have], seam[have])
    seam = median_filter(seam, size=SEAM_SMOOTH, mode="nearest")
    offsets[ys, xs] = seam[bins - lo]
    return offsets


# ---------------------------------------------------------------------------- datasets
def _detect_landmarks(detector, image_bgr: np.ndarray, bbox: Optional[Sequence[float]]):
    """The 5 landmarks of the detection that best covers ``bbox`` (the labelled face box), or of
    the highest-scoring one; None when nothing is found."""
    import torch

    h, w = image_bgr.shape[:2]
    x = torch.as_tensor(np.ascontiguousarray(image_bgr.transpose(2, 0, 1)), dtype=torch.float32)
    inst = detector.detect_image(x, (h, w))
    if len(inst) == 0:
        return None, 0.0
    boxes = inst.pred_boxes.tensor.numpy()
    scores = inst.scores.numpy()
    best = int(np.argmax(scores))
    if bbox is not None:
        bx = np.asarray(bbox, dtype=np.float64)
        ix = np.clip(np.minimum(boxes[:, 2], bx[2]) - np.maximum(boxes[:, 0], bx[0]), 0, None)
        iy = np.clip(np.minimum(boxes[:, 3], bx[3]) - np.maximum(boxes[:, 1], bx[1]), 0, None)
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        cover = ix * iy / np.maximum(area, 1e-6)  # share of the detection inside the face box
        best = int(np.argmax(cover * scores))
    return inst.pred_keypoints[best, :, :2].numpy().astype(np.float64), float(scores[best])


def derive_fasseg_fine(fasseg_root: str, dst_root: str, splits: Sequence[str] = FASSEG_FINE_SPLITS,
                       detector=None, log_every: int = 50) -> Dict[str, Dict[str, int]]:
    """Write ``<dst_root>/<split>.json`` (label set ``fasseg_fine``, pointing at the photos under
    ``fasseg_root``) and its label PNGs for each prepared FASSEG split. ``detector``: a
    ``YuNetFaceDetector`` (default: the shipped YuNet-n, score >= 0.3). Returns ``{split: counts}``."""
    from PIL import Image

    from ..io import read_label_map
    from ..inputs import read_image_bgr
    from ..video_format import write_face_video_json

    if detector is None:
        from ...modeling.detectors.yunet import YuNetFaceDetector

        detector = YuNetFaceDetector(variant="n", weights="models/yunet/yunet_n.pth",
                                     score_thresh=0.3, max_size=4096)
    os.makedirs(dst_root, exist_ok=True)
    rel_src = os.path.relpath(os.path.abspath(fasseg_root), os.path.abspath(dst_root))
    stats: Dict[str, Dict[str, int]] = {}
    for split in splits:
        src_json = os.path.join(fasseg_root, f"{split}.json")
        if not os.path.isfile(src_json):
            logger.info("%s: no %s, skipped", split, src_json)
            continue
        with open(src_json) as f:
            data = json.load(f)
        if data.get("label_set") != FASSEG.name:
            raise ValueError(f"{src_json}: label set {data.get('label_set')!r}, expected 'fasseg'")
        total: Counter = Counter()
        videos = []
        for video in data["videos"]:
            frames = []
            for frame in video["frames"]:
                if not frame.get("label_file"):
                    continue
                coarse = read_label_map(os.path.join(fasseg_root, frame["label_file"]))
                image = read_image_bgr(os.path.join(fasseg_root, frame["file_name"]))
                faces = frame.get("faces") or []
                lm, score = _detect_landmarks(detector, image, faces[0]["bbox"] if faces else None)
                fine, counts = derive_fine_labels(coarse, lm, image)
                total.update(counts)
                total["images"] += 1
                total["no_landmarks"] += int(lm is None)
                for name in _REFINED:
                    total[f"with_{name}"] += int((fine == _F[name]).any())
                label_rel = os.path.join("labels", video["video_id"], os.path.basename(frame["label_file"]))
                os.makedirs(os.path.join(dst_root, os.path.dirname(label_rel)), exist_ok=True)
                Image.fromarray(fine, mode="L").save(os.path.join(dst_root, label_rel))
                rec = {**frame, "file_name": os.path.join(rel_src, frame["file_name"]), "label_file": label_rel}
                if lm is not None:
                    rec["landmarks"] = [[round(float(v), 2) for v in p] for p in lm]
                frames.append(rec)
                if log_every and total["images"] % log_every == 0:
                    logger.info("%s: %d images", split, total["images"])
            videos.append({"video_id": video["video_id"], "frames": frames})
        write_face_video_json(os.path.join(dst_root, f"{split}.json"), FASSEG_FINE, videos,
                              extra={"source": f"derived from {src_json} (datasets/derive_fasseg_fine.py)"})
        stats[split] = dict(total)
        logger.info("%s: %s", split, _summary(total))
    return stats


def _summary(c) -> str:
    parts = [f"{c.get('images', 0)} images, {c.get('no_landmarks', 0)} without landmarks"]
    for name in ("eyes", "hair", "mouth"):
        d, i = c.get(f"{name}_decided", 0), c.get(f"{name}_ignored", 0)
        parts.append(f"{name} {100.0 * d / max(d + i, 1):.1f}% decided")
    parts.append("images with " + ", ".join(
        f"{n} {c.get('with_' + n, 0)}" for n in _REFINED))
    return "; ".join(parts)
