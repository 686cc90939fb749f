"""Instance-level face parsing metrics of Parsing R-CNN and QANet: APp, APvol, PCP.

Definitions, as the authors' evaluation codes compute them (Parsing R-CNN ``eval_seg_ap``, QANet
``ParsingEvaluator.computeAPp``; the MHP-v2 algorithm):

* A predicted face is its part label map in image coordinates (its labels on its window,
  background elsewhere); a ground-truth face is the ground-truth label map on that face's
  pixels (its face-instance id), background elsewhere.
* Part IoU of a (prediction, ground truth) pair: one confusion matrix over the whole image,
  per-class IoU for every class including background, NaN for a class absent from both; the
  pair's score is the mean over the non-NaN classes. Ground-truth void pixels are not counted
  (the authors count a void pixel outside the instance as background).
* Matching, per part-IoU threshold t in 0.1 ... 0.9: predictions of the whole dataset in
  descending score (ties: frame key, then face order); each takes the ground-truth face of its
  image with the highest mean part IoU (first on ties) and is a true positive if that IoU is > t
  and the face was not matched before at t; otherwise a false positive (no fall back).
* AP at t: VOC all-point interpolated area under precision over recall (recall = TP / number of
  ground-truth faces). ``APp50``: t = 0.5; ``APvol``: mean of the nine APs (the papers' AP^p_vol,
  printed by both codes as "APp @[mIoU=0.10:0.90]").
* PCP at t (``PCP50``): per ground-truth face, the share of its part classes with IoU > t with
  its match (0 when unmatched), averaged over all ground-truth faces.
* Before matching, as the official QANet code: predictions with ranking score < ``score_thresh``
  (0.01) are dropped, and a parsing NMS keeps a face only if its mean part IoU with every
  better-scored kept face is < ``nms_thresh`` (0.6); 0 turns each off.

Windows are integer pixel boxes ``[x0, y0, x1, y1)`` in the ground truth's image; label arrays
are (rows, columns) = (y, x).
"""
from __future__ import annotations

import math
from collections import OrderedDict
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import cv2
import numpy as np

__all__ = ["PART_IOU_THRESHOLDS", "PredictedFace", "face_part_ious", "match_faces", "parsing_nms",
           "pairwise_parsing_ious", "voc_ap", "InstanceParsingAccumulator", "single_face_instances"]

PART_IOU_THRESHOLDS: Tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


class PredictedFace(NamedTuple):
    """One predicted face: quality score, detector box score, integer window ``(x0, y0, x1, y1)``
    (exclusive end) and its ``(y1 - y0, x1 - x0)`` class ids on the window (0: no part)."""

    score: float
    box_score: float
    window: Tuple[int, int, int, int]
    labels: np.ndarray


def single_face_instances(gt_labels: np.ndarray, num_classes: int, ignore_label: Optional[int] = 255) -> np.ndarray:
    """(H, W) int32 face-instance map of a single-face image: 1 on every foreground class pixel."""
    gt = np.asarray(gt_labels)
    return (_valid_mask(gt, num_classes, ignore_label) & (gt > 0)).astype(np.int32)


def _valid_mask(gt_labels: np.ndarray, num_classes: int, ignore_label: Optional[int]) -> np.ndarray:
    valid = (gt_labels >= 0) & (gt_labels < num_classes)
    if ignore_label is not None:
        valid &= gt_labels != ignore_label
    return valid


def face_part_ious(
    windows: Sequence[Sequence[int]],
    labels: Sequence[np.ndarray],
    gt_labels: np.ndarray,
    gt_instances: np.ndarray,
    num_classes: int,
    ignore_label: Optional[int] = 255,
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class part IoUs of every (predicted face, ground-truth face) pair of one image.

    Args:
        windows, labels: P windows ``[x0, y0, x1, y1)`` (clipped to the image) and label arrays
            of their (unclipped) sizes.
        gt_labels: (H, W) class ids; ``ignore_label`` and values >= num_classes are void.
        gt_instances: (H, W) face ids, 0 = no face; faces are the positive ids, ascending.
    Returns:
        ``ious`` (P, G, C), NaN where a class is absent from both maps of a pair; ``num_parts``
        (G,) foreground classes in each ground-truth face (PCP's denominator); ``face_ids`` (G,).
    """
    gt_labels, gt_instances = np.asarray(gt_labels), np.asarray(gt_instances)
    if gt_labels.ndim != 2 or gt_labels.shape != gt_instances.shape:
        raise ValueError(f"ground-truth label map {gt_labels.shape} and face-instance map {gt_instances.shape} "
                         "must be 2-D maps of the same size")
    C = int(num_classes)
    H, W = gt_labels.shape
    valid = _valid_mask(gt_labels, C, ignore_label)
    total_valid = int(np.count_nonzero(valid))
    gt_idx = np.where(valid, gt_labels, 0).astype(np.int64)

    face_ids = np.unique(gt_instances[gt_instances > 0])
    masks = [gt_instances == fid for fid in face_ids]
    gt_faces = [(x, y, x + w, y + h) for x, y, w, h in (cv2.boundingRect(m.astype(np.uint8)) for m in masks)]
    num_parts = np.array([np.count_nonzero(np.unique(gt_idx[m & valid]) > 0) for m in masks], np.int64)

    ious = np.full((len(windows), len(face_ids), C), np.nan)
    for p, (win, lab) in enumerate(zip(windows, labels)):
        x0, y0, x1, y1 = (int(v) for v in win)
        lab = np.asarray(lab)
        if lab.shape != (max(0, y1 - y0), max(0, x1 - x0)):
            raise ValueError(f"face {p}: labels of shape {lab.shape} do not match its window {list(win)}")
        if lab.size and (lab.min() < 0 or lab.max() >= C):
            raise ValueError(f"face {p}: label values must be 0..{C - 1}, found {lab.min()}..{lab.max()}")
        box, lab = _clipped(win, lab, H, W)
        for g, (mask, face_box) in enumerate(zip(masks, gt_faces)):
            # The region where either map can be foreground; outside it both are background.
            rx0, ry0, rx1, ry1 = region = _union(box, face_box)
            region_valid = valid[ry0:ry1, rx0:rx1]
            gt_reg = np.where(mask[ry0:ry1, rx0:rx1], gt_idx[ry0:ry1, rx0:rx1], 0)
            pred_reg = _paste(lab, box, region)
            hist = np.bincount(gt_reg[region_valid] * C + pred_reg[region_valid], minlength=C * C).reshape(C, C)
            hist[0, 0] += total_valid - int(np.count_nonzero(region_valid))
            ious[p, g] = _class_ious(hist)
    return ious, num_parts, face_ids


def _class_ious(hist: np.ndarray) -> np.ndarray:
    """Per-class IoU of a (C, C) confusion matrix, NaN for classes absent from both maps."""
    tp = np.diag(hist).astype(np.float64)
    union = hist.sum(axis=0) + hist.sum(axis=1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / union, np.nan)


def _clipped(window, labels, height, width):
    """The window clipped to the image ((0, 0, 0, 0) when nothing is left) and its labels there."""
    x0, y0, x1, y1 = (int(v) for v in window)
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    if cx1 <= cx0 or cy1 <= cy0:
        return (0, 0, 0, 0), np.zeros((0, 0), np.int64)
    return (cx0, cy0, cx1, cy1), np.asarray(labels)[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0].astype(np.int64)


def _union(*boxes):
    """The smallest box holding every non-empty box; (0, 0, 0, 0) when there is none."""
    boxes = [b for b in boxes if b[2] > b[0]]
    if not boxes:
        return 0, 0, 0, 0
    x0, y0, x1, y1 = zip(*boxes)
    return min(x0), min(y0), max(x1), max(y1)


def _paste(labels, box, region):
    """(region height, width) int64 map: ``labels`` on ``box``, 0 elsewhere."""
    rx0, ry0, rx1, ry1 = region
    out = np.zeros((ry1 - ry0, rx1 - rx0), np.int64)
    if labels.size:
        out[box[1] - ry0 : box[3] - ry0, box[0] - rx0 : box[2] - rx0] = labels
    return out


def pairwise_parsing_ious(faces: Sequence[PredictedFace], image_size: Sequence[int], num_classes: int) -> np.ndarray:
    """(P, P) mean part IoU between the predicted faces of one image: each face is its label map
    on the whole ``(height, width)`` image (background outside its window), one confusion matrix
    per pair over all pixels, per-class IoU for every class including background, NaN classes
    (absent from both) skipped in the mean (the official QANet code's ``parsing_iou``)."""
    H, W = int(image_size[0]), int(image_size[1])
    C = int(num_classes)
    clipped = [_clipped(f.window, f.labels, H, W) for f in faces]
    P = len(faces)
    out = np.eye(P)
    for a in range(P):
        for b in range(a + 1, P):
            region = _union(clipped[a][0], clipped[b][0])
            ma, mb = (_paste(lab, box, region) for box, lab in (clipped[a], clipped[b]))
            hist = np.bincount((ma * C + mb).ravel(), minlength=C * C).reshape(C, C)
            hist[0, 0] += H * W - ma.size  # both background outside the region
            iou = _class_ious(hist)
            iou = iou[~np.isnan(iou)]
            out[a, b] = out[b, a] = float(iou.mean()) if iou.size else 1.0
    return out


def parsing_nms(scores: Sequence[float], ious: np.ndarray, nms_thresh: float = 0.6, score_thresh: float = 0.01) -> np.ndarray:
    """Indices (ascending) of the faces kept: score >= ``score_thresh``, then greedily in
    descending score (ties in input order) a face is dropped when its IoU (``ious``, P x P, e.g.
    :func:`pairwise_parsing_ious`) with a face kept before it is >= ``nms_thresh``.
    ``score_thresh`` <= 0 keeps every score; ``nms_thresh`` <= 0 turns the NMS off."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    candidates = [int(i) for i in np.argsort(-scores, kind="stable") if score_thresh <= 0 or scores[i] >= score_thresh]
    kept: List[int] = []
    for i in candidates:
        if nms_thresh <= 0 or all(ious[i, k] < nms_thresh for k in kept):
            kept.append(i)
    return np.array(sorted(kept), dtype=np.int64)


def _mean_ious(ious: np.ndarray) -> np.ndarray:
    """(P, G, C) -> (P, G) mean over non-NaN classes; -inf where all are NaN."""
    finite = ~np.isnan(ious)
    count = finite.sum(axis=-1)
    total = np.where(finite, ious, 0.0).sum(axis=-1)
    return np.where(count > 0, total / np.maximum(count, 1), -np.inf)


def match_faces(
    scores: Sequence[float],
    ious: np.ndarray,
    num_parts: np.ndarray,
    thresholds: Sequence[float] = PART_IOU_THRESHOLDS,
) -> Tuple[np.ndarray, np.ndarray]:
    """Match the predicted faces of one image (``scores`` (P,), ties in input order; ``ious`` (P, G, C)
    from :func:`face_part_ious`) to its ground-truth faces (module docstring). Returns ``tp``
    (P, T) bool and ``pcp`` (P, T): a true positive's share of parts with IoU > t, else 0."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    P, G = ious.shape[:2]
    T = len(thresholds)
    tp = np.zeros((P, T), bool)
    pcp = np.zeros((P, T), np.float64)
    if P == 0 or G == 0:
        return tp, pcp
    mean_iou = _mean_ious(ious)
    taken = np.zeros((T, G), bool)
    for p in np.argsort(-scores, kind="stable"):
        best = int(np.argmax(mean_iou[p]))  # first maximum
        overlap = mean_iou[p, best]
        part_iou = ious[p, best, 1:]
        for k, t in enumerate(thresholds):
            if overlap > t and not taken[k, best]:
                taken[k, best] = True
                tp[p, k] = True
                if num_parts[best] > 0:
                    pcp[p, k] = np.count_nonzero(part_iou > t) / num_parts[best]
    return tp, pcp


def voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """Area under the precision envelope (PASCAL VOC all-point interpolation), as both
    reference codes compute AP: recall padded with 0 and 1, precision with 0 and 0."""
    mrec = np.concatenate(([0.0], np.asarray(recall, np.float64), [1.0]))
    mpre = np.concatenate(([0.0], np.asarray(precision, np.float64), [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    i = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def _threshold_name(t: float) -> str:
    return f"{int(round(t * 100)):02d}"


class InstanceParsingAccumulator:
    """Accumulates predicted and ground-truth faces image by image, then computes APp at every
    threshold, APvol and PCP for each ranking: by the quality score (``"score"``) and by the
    detector's box score (``"box"``); part IoUs are computed once per image for both."""

    def __init__(self, num_classes: int, ignore_label: Optional[int] = 255, nms_thresh: float = 0.6,
                 score_thresh: float = 0.01):
        self.num_classes = int(num_classes)
        self.ignore_label = ignore_label
        self.thresholds = PART_IOU_THRESHOLDS
        self.nms_thresh = float(nms_thresh)
        self.score_thresh = float(score_thresh)
        self.rankings = {"score": "score", "box": "box_score"}  # name -> PredictedFace field
        self.reset()

    def reset(self):
        # per ranking: rows (score, image key, face index in image, tp (T,), pcp (T,))
        self.records: Dict[str, List[tuple]] = {r: [] for r in self.rankings}
        self.num_gt = 0
        self.num_pred = 0
        self.num_images = 0

    def add_image(self, image_key: str, faces: Sequence[PredictedFace], gt_labels: np.ndarray, gt_instances: np.ndarray):
        """Add one image: its predicted faces and its ground truth ((H, W) class ids and
        (H, W) face ids, 0 = no face). ``image_key`` orders score ties across images."""
        ious, num_parts, _ = face_part_ious([f.window for f in faces], [f.labels for f in faces], gt_labels,
                                            gt_instances, self.num_classes, self.ignore_label)
        self.num_gt += len(num_parts)
        self.num_pred += len(faces)
        self.num_images += 1
        pair_ious = np.eye(len(faces))
        if self.nms_thresh > 0 and len(faces) > 1:
            pair_ious = pairwise_parsing_ious(faces, np.asarray(gt_labels).shape, self.num_classes)
        for name, field in self.rankings.items():
            scores = np.array([float(getattr(f, field)) for f in faces], dtype=np.float64)
            keep = parsing_nms(scores, pair_ious, self.nms_thresh, self.score_thresh)
            tp, pcp = match_faces(scores[keep], ious[keep], num_parts, self.thresholds)
            for j, i in enumerate(keep.tolist()):
                self.records[name].append((float(scores[i]), str(image_key), i, tp[j], pcp[j]))

    def merge(self, other: "InstanceParsingAccumulator"):
        """Add the faces of another accumulator (another process's)."""
        for name in self.rankings:
            self.records[name].extend(other.records[name])
        self.num_gt += other.num_gt
        self.num_pred += other.num_pred
        self.num_images += other.num_images

    def compute(self, ranking: str) -> Dict[str, object]:
        """``{"AP": {threshold: AP}, "PCP": {threshold: PCP}, "APvol": ...}`` for one ranking, as
        fractions (NaN without ground-truth faces)."""
        if self.num_gt == 0:
            return {"AP": dict.fromkeys(self.thresholds, math.nan), "PCP": dict.fromkeys(self.thresholds, math.nan),
                    "APvol": math.nan}
        T = len(self.thresholds)
        rows = sorted(self.records[ranking], key=lambda r: (-r[0], r[1], r[2]))
        tp = np.array([r[3] for r in rows], bool).reshape(-1, T)
        pcp = np.array([r[4] for r in rows], np.float64).reshape(-1, T)
        ctp = np.cumsum(tp, axis=0)
        precision = ctp / np.arange(1, len(rows) + 1)[:, None]
        ap = {t: voc_ap(ctp[:, k] / float(self.num_gt), precision[:, k]) for k, t in enumerate(self.thresholds)}
        pcp_t = {t: float(pcp[:, k].sum() / self.num_gt) for k, t in enumerate(self.thresholds)}
        return {"AP": ap, "PCP": pcp_t, "APvol": float(np.mean(list(ap.values())))}

    def summarize(self) -> Tuple["OrderedDict[str, float]", dict]:
        """Results (percentages): ``APp50``, ``APvol``, ``PCP50`` by the quality score, the same
        with ``-box`` by the box score, ``APp<t>`` at every threshold, and counts; details: per
        ranking, AP and PCP at every threshold (fractions)."""
        results: "OrderedDict[str, float]" = OrderedDict()
        details = {}
        computed = {name: self.compute(name) for name in self.rankings}
        for i, (name, c) in enumerate(computed.items()):
            suffix = "" if i == 0 else f"-{name}"
            results[f"APp50{suffix}"] = 100.0 * c["AP"].get(0.5, math.nan)
            results[f"APvol{suffix}"] = 100.0 * c["APvol"]
            results[f"PCP50{suffix}"] = 100.0 * c["PCP"].get(0.5, math.nan)
            details[name] = {
                "ranked_by": self.rankings[name],
                "APvol": c["APvol"],
                "APp": {_threshold_name(t): v for t, v in c["AP"].items()},
                "PCP": {_threshold_name(t): v for t, v in c["PCP"].items()},
            }
        for t, v in computed["score"]["AP"].items():
            results[f"APp{_threshold_name(t)}"] = 100.0 * v
        results.update(num_frames=self.num_images, num_gt_faces=self.num_gt, num_pred_faces=self.num_pred)
        return results, details
