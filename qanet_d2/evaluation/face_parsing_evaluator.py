"""Face parsing evaluation: DAVIS J/F per (video, class) object, and confusion-matrix mIoU / F1.

:func:`score_frame` scores one frame, :func:`summarize` aggregates the frames;
:class:`FaceParsingEvaluator` (also driven by ``tools/evaluate_pngs.py``) wraps both. Protocol:

* Each (video, foreground class) occurring outside void pixels in the ground truth or prediction
  of at least one frame is one object. Per frame, J and F of ``pred == c`` vs ``gt == c``;
  ground-truth ignore pixels (and values outside the label set) are void for both.
* A class absent from both maps in a frame is skipped (``absent_class="skip"``) or scores 1 as
  in DAVIS (``"one"``); ``J&F(skip)`` ... ``F(one)`` give the dataset means under both.
* Per object: mean over frames, recall (share of frames > 0.5) and decay (first minus last of
  DAVIS's 4 quarter bins; videos of more than one frame). Dataset J / F: mean over objects.
* Confusion matrix over all frames (void excluded; a predicted value outside the label set is
  wrong): mIoU over classes with support (background included, as SemSegEvaluator), fg_mIoU and
  mean_F1 over foreground classes (the LaPa / CelebAMask-HQ convention), pixel accuracy.
"""
from __future__ import annotations

import itertools
import json
import logging
import math
import os
from collections import OrderedDict, defaultdict
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch

from detectron2.data import MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm
from detectron2.utils.logger import create_small_table

from ..data.io import read_label_map
from .davis import boundary_f_measure, boundary_radius, label_boundaries

__all__ = ["FaceParsingEvaluator", "FrameScores", "score_frame", "summarize", "label_png_path", "frame_key",
           "RESULTS_FILE", "ABSENT_CLASS_MODES", "convert_label_map", "prediction_converter"]

logger = logging.getLogger(__name__)

RESULTS_FILE = "face_parsing_results.json"
ABSENT_CLASS_MODES = ("skip", "one")


# ---------------------------------------------------------------------------- one frame
@dataclass
class FrameScores:
    """Scores of one frame. ``j``, ``f``: (C,), NaN for background and skipped classes;
    ``present``: (C,) class in either map outside void; ``confusion``: (C, C+1), rows ground
    truth, last column predicted values outside the label set; ``invalid_gt_pixels``: ground-truth
    pixels neither a class nor the ignore label (treated as void)."""

    j: np.ndarray
    f: np.ndarray
    present: np.ndarray
    confusion: np.ndarray
    invalid_gt_pixels: int = 0


def _to_index_map(labels: np.ndarray, num_classes: int, void_value: Optional[int] = None) -> np.ndarray:
    """uint8 map with class ids kept and every other value (and ``void_value``) set to ``num_classes``."""
    lut = np.full(256, num_classes, np.uint8)
    lut[:num_classes] = np.arange(num_classes, dtype=np.uint8)
    if void_value is not None and 0 <= void_value < 256:
        lut[void_value] = num_classes
    return _apply_lut(labels, lut, num_classes)


def _apply_lut(labels: np.ndarray, lut: np.ndarray, fill: int) -> np.ndarray:
    """``lut[labels]`` (uint8, 256 entries); values outside 0..255 become ``fill``."""
    labels = np.asarray(labels)
    if labels.dtype == np.uint8:
        return cv2.LUT(np.ascontiguousarray(labels), lut)  # ~8x faster than lut[labels]
    labels = labels.astype(np.int64, copy=False)
    return np.where((labels >= 0) & (labels < 256), lut[labels.clip(0, 255)], np.uint8(fill))


def _histogram(values: np.ndarray, num_bins: int) -> np.ndarray:
    """Counts of 0..num_bins-1 in a uint16 array, int64. cv2.calcHist is ~3x faster than
    np.bincount; it accumulates integers and returns float32, exact below 2^24 pixels."""
    if values.size < (1 << 24):
        hist = cv2.calcHist([values], [0], None, [num_bins], [0, num_bins])
        return hist.ravel().astype(np.int64)
    return np.bincount(values.ravel(), minlength=num_bins)


def score_frame(
    pred_labels: np.ndarray,
    gt_labels: np.ndarray,
    num_classes: int,
    ignore_label: Optional[int] = 255,
    absent_class: str = "skip",
    bound_th: float = 0.008,
) -> FrameScores:
    """Per-class J and F (DAVIS definitions) and the confusion matrix of one frame's (H, W)
    label maps. ``num_classes`` (background included) is at most 255; ``bound_th``: contour
    tolerance (fraction of the diagonal if < 1, pixels if >= 1). ValueError for maps that are
    not 2-D or differ in shape."""
    if absent_class not in ABSENT_CLASS_MODES:
        raise ValueError(f"absent_class must be one of {ABSENT_CLASS_MODES}, got {absent_class!r}")
    if not 1 <= num_classes <= 255:
        raise ValueError(f"num_classes must be in [1, 255], got {num_classes}")
    pred_labels, gt_labels = np.asarray(pred_labels), np.asarray(gt_labels)
    if gt_labels.ndim != 2 or pred_labels.shape != gt_labels.shape:
        raise ValueError(f"label maps must be 2-D and of the same size: prediction size {pred_labels.shape}, "
                         f"ground-truth size {gt_labels.shape}")
    C = num_classes
    void_id = C  # in both index maps: C = "no class" (void in the ground truth, invalid in the prediction)

    gt_idx = _to_index_map(gt_labels, C, ignore_label)
    pred_idx = _to_index_map(pred_labels, C)

    # One bincount gives the frame's full (C+1)x(C+1) table; row C is the void ground truth.
    key = gt_idx.astype(np.uint16)
    key *= C + 1
    key += pred_idx
    full = _histogram(key, (C + 1) ** 2).reshape(C + 1, C + 1)
    confusion = full[:C].astype(np.int64)
    num_void = int(full[C].sum())
    num_ignored = int(np.count_nonzero(gt_labels == ignore_label)) if num_void and ignore_label is not None else 0
    invalid_gt = num_void - num_ignored

    iou = _confusion_metrics(confusion)[0]
    present = ~np.isnan(iou)
    j = np.where(present, iou, np.nan if absent_class == "skip" else 1.0)
    j[0] = np.nan  # background is not an object
    f = j.copy()  # the present classes' F is computed below

    scored = [c for c in range(1, C) if present[c]]
    if scored:
        if num_void:  # void pixels belong to no class in either map
            pred_idx = np.where(gt_idx == void_id, np.uint8(void_id), pred_idx)
        radius = boundary_radius(bound_th, gt_labels.shape)
        pred_b = label_boundaries(pred_idx, scored)
        gt_b = label_boundaries(gt_idx, scored)
        for c in scored:
            f[c] = boundary_f_measure(pred_b[c], gt_b[c], radius)
    return FrameScores(j=j, f=f, present=present, confusion=confusion, invalid_gt_pixels=invalid_gt)


# ---------------------------------------------------------------------------- aggregation
def _db_statistics(values: np.ndarray) -> Tuple[float, float, float]:
    """Mean, recall and decay of one object's per-frame values (NaN = frame not scored), with
    DAVIS's decay binning: 4 overlapping quarters of the frame sequence, first minus last."""
    scored = values[~np.isnan(values)]
    mean = float(scored.mean())
    recall = float(np.mean(scored > 0.5))
    n = len(values)
    ids = (np.round(np.linspace(1, n, 5) + 1e-10) - 1).astype(np.int64)
    first = values[ids[0] : ids[1] + 1]
    last = values[ids[3] : ids[4] + 1]
    decay = math.nan if np.isnan(first).all() or np.isnan(last).all() else float(np.nanmean(first) - np.nanmean(last))
    return mean, recall, decay


def _nanmean(values) -> float:
    values = np.asarray(values, dtype=np.float64)
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else math.nan


def _pct(value: float) -> float:
    return value * 100.0 if value == value else math.nan  # NaN stays NaN


def _confusion_metrics(confusion: np.ndarray) -> Tuple[np.ndarray, np.ndarray, float]:
    """Per-class IoU and F1 ((C,) fractions, NaN without support) and the pixel accuracy of a
    (C, C+1) confusion matrix (rows ground truth, last column predictions outside the set)."""
    C = confusion.shape[0]
    tp = np.diag(confusion[:, :C]).astype(np.float64)
    gt_total = confusion.sum(axis=1).astype(np.float64)
    pred_total = confusion[:, :C].sum(axis=0).astype(np.float64)
    fp, fn = pred_total - tp, gt_total - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(tp + fp + fn > 0, tp / (tp + fp + fn), np.nan)
        f1 = np.where(tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), np.nan)
    total = gt_total.sum()
    return iou, f1, (tp.sum() / total if total > 0 else math.nan)


def _per_pose(records: Sequence[dict], class_names: Sequence[str]) -> "OrderedDict[str, dict]":
    """Confusion-matrix metrics per head pose, for records that carry ``pose`` and ``confusion``
    (FASSEG's multipose frames), ordered by pose."""
    by_pose: Dict[float, list] = defaultdict(list)
    for r in records:
        if r.get("pose") is not None and r.get("confusion") is not None:
            by_pose[float(r["pose"])].append(np.asarray(r["confusion"], np.int64))
    out: "OrderedDict[str, dict]" = OrderedDict()
    for pose in sorted(by_pose):
        iou, f1, _ = _confusion_metrics(sum(by_pose[pose]))
        out[f"{pose:g}"] = {
            "num_frames": len(by_pose[pose]), "mIoU": _pct(_nanmean(iou)), "mean_F1": _pct(_nanmean(f1[1:])),
            "F1": {class_names[c]: _pct(f1[c]) for c in range(1, len(class_names))},
        }
    return out


def summarize(
    records: Sequence[dict],
    confusion: np.ndarray,
    class_names: Sequence[str],
    absent_class: str = "skip",
    failed_frames: Sequence[dict] = (),
) -> Tuple["OrderedDict[str, float]", dict]:
    """Aggregate per-frame records into ``(results, details)``: metric name -> percentage (counts
    as ints), and the per-class, per-video and per-frame numbers (JSON-ready apart from NaN).

    Args:
        records: one dict per scored frame, in any order: ``video_id``, ``frame_index``,
            ``file_name``, ``j``, ``f``, ``present`` (from :func:`score_frame`); optionally
            ``pose`` (head pan, degrees) with the frame's ``confusion`` (``details["per_pose"]``).
        confusion: (C, C+1) confusion matrix summed over the frames.
        class_names: C names, background first.
        failed_frames: dicts with ``file_name`` and ``problem`` of frames that could not be scored.
    """
    if absent_class not in ABSENT_CLASS_MODES:
        raise ValueError(f"absent_class must be one of {ABSENT_CLASS_MODES}, got {absent_class!r}")
    C = len(class_names)
    confusion = np.asarray(confusion, dtype=np.int64)

    by_video: Dict[str, List[dict]] = defaultdict(list)
    for r in records:
        by_video[str(r["video_id"])].append(r)

    obj_classes, obj_stats, obj_means = [], [], []  # per object: class, (J, F) x (mean, recall, decay), means
    multi_frame = []  # whether the object's video has more than one frame (decay is defined)
    per_video, per_frame = OrderedDict(), []
    for video_id in sorted(by_video):
        frames = sorted(by_video[video_id], key=lambda r: (int(r["frame_index"]), str(r["file_name"])))
        for r in frames:
            shown = [c for c in range(1, C) if r["present"][c]]
            per_frame.append({
                "video_id": video_id, "frame_index": int(r["frame_index"]), "file_name": str(r["file_name"]),
                "J": {class_names[c]: float(r["j"][c]) for c in shown},
                "F": {class_names[c]: float(r["f"][c]) for c in shown},
            })
        J, F = (np.array([r[k] for r in frames], np.float64) for k in "jf")
        present = np.stack([np.asarray(r["present"], bool) for r in frames])
        # per convention: J and F with the frames where a class is absent NaN (skip) or 1 (one)
        filled = {m: [np.where(present, X, math.nan if m == "skip" else 1.0) for X in (J, F)]
                  for m in ABSENT_CLASS_MODES}
        video_objects = OrderedDict()
        for c in range(1, C):
            if not present[:, c].any():
                continue
            jv, fv = (X[:, c] for X in filled[absent_class])
            js, fs = _db_statistics(jv), _db_statistics(fv)
            obj_classes.append(c)
            obj_stats.append((js, fs))
            obj_means.append([[_nanmean(X[:, c]) for X in filled[mode]] for mode in ABSENT_CLASS_MODES])
            multi_frame.append(len(frames) > 1)
            video_objects[class_names[c]] = {
                "J": js[0], "F": fs[0], "J_recall": js[1], "F_recall": fs[1],
                "J_decay": js[2] if len(frames) > 1 else None, "F_decay": fs[2] if len(frames) > 1 else None,
                "num_scored_frames": int(np.count_nonzero(~np.isnan(jv))),
            }
        vj = _nanmean([o["J"] for o in video_objects.values()])
        vf = _nanmean([o["F"] for o in video_objects.values()])
        per_video[video_id] = {"J&F": (vj + vf) / 2, "J": vj, "F": vf, "num_frames": len(frames),
                               "objects": video_objects}
    stats = np.array(obj_stats, np.float64).reshape(-1, 2, 3)  # object, J / F, mean / recall / decay
    means = np.array(obj_means, np.float64).reshape(-1, len(ABSENT_CLASS_MODES), 2)  # object, mode, J / F
    obj_classes, multi_frame = np.array(obj_classes, np.int64), np.array(multi_frame, bool)
    results: "OrderedDict[str, float]" = OrderedDict()

    def put_jf(suffix: str, jf: np.ndarray):  # jf: (objects, 2) J and F values
        jm, fm = _nanmean(jf[:, 0]), _nanmean(jf[:, 1])
        results[f"J&F{suffix}"], results[f"J{suffix}"], results[f"F{suffix}"] = _pct((jm + fm) / 2), _pct(jm), _pct(fm)

    put_jf("", stats[:, :, 0])
    for m, mode in enumerate(ABSENT_CLASS_MODES):  # both conventions from the same per-frame scores
        put_jf(f"({mode})", means[:, m])
    results.update(J_recall=_pct(_nanmean(stats[:, 0, 1])), F_recall=_pct(_nanmean(stats[:, 1, 1])))
    if multi_frame.any():
        results.update(J_decay=_pct(_nanmean(stats[multi_frame, 0, 2])),
                       F_decay=_pct(_nanmean(stats[multi_frame, 1, 2])))
    iou, f1, pacc = _confusion_metrics(confusion)  # over the whole dataset
    results.update(mIoU=_pct(_nanmean(iou)), fg_mIoU=_pct(_nanmean(iou[1:])), mean_F1=_pct(_nanmean(f1[1:])),
                   pACC=_pct(pacc))
    results.update(num_frames=len(records), num_videos=len(by_video), num_objects=len(obj_classes),
                   num_failed_frames=len(failed_frames))

    per_class = []
    for c, name in enumerate(class_names):
        entry = {"id": c, "name": name, "IoU": _pct(iou[c]), "F1": _pct(f1[c])}
        if c > 0:
            entry.update(J=_pct(_nanmean(stats[obj_classes == c, 0, 0])),
                         F=_pct(_nanmean(stats[obj_classes == c, 1, 0])), num_objects=int(np.sum(obj_classes == c)))
        per_class.append(entry)
    results.update((f"{k}-{e['name']}", e[k]) for e in per_class[1:] for k in ("J", "F"))
    results.update((f"IoU-{e['name']}", e["IoU"]) for e in per_class)
    results.update((f"F1-{e['name']}", e["F1"]) for e in per_class[1:])

    details = {
        "protocol": {
            "objects": "(video, foreground class) pairs whose class occurs in the ground truth or the "
                       "prediction of at least one frame",
            "absent_class": absent_class,
            "absent_class_conventions": "J&F, J, F and all per-class / per-video numbers follow absent_class; "
                                        "J&F(skip), J(skip), F(skip): a class absent from both maps in a frame "
                                        "is not scored in that frame; J&F(one), J(one), F(one): it scores 1 "
                                        "(DAVIS)",
            "J_F": "DAVIS 2017 definitions (davis2017-evaluation metrics.py)",
            "mIoU": "confusion matrix summed over the dataset, all classes with support",
            "mean_F1": "confusion matrix summed over the dataset, foreground classes",
            "units": "percent, except per-video / per-frame values (fractions)",
        },
        "summary": dict(results),
        "per_class": per_class,
        "per_video": per_video,
        "per_frame": per_frame,
        "failed_frames": list(failed_frames),
        "per_pose": _per_pose(records, class_names),
        "confusion_matrix": {
            "rows": "ground-truth class", "columns": list(class_names) + ["<not a class>"],
            "counts": confusion.tolist(),
        },
    }
    return results, details


def _json_safe(obj):
    """NaN / inf -> None, numpy scalars -> Python (strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, (np.integer, np.bool_)):
        return obj.item()
    return obj


def write_json(output_dir: str, name: str, obj) -> str:
    """Write ``obj`` as strict JSON (:func:`_json_safe`) to ``<output_dir>/<name>``; returns the path."""
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, name)
    with open(path, "w") as f:
        json.dump(_json_safe(obj), f, indent=1)
    return path


def format_results_tables(results: dict, details: dict) -> str:
    """Readable tables: the headline numbers, then one row per class."""
    from tabulate import tabulate

    head = create_small_table({k: results[k] for k in ("J&F", "J", "F", "J_recall", "F_recall", "J_decay", "F_decay",
                                                       "mIoU", "fg_mIoU", "mean_F1", "pACC") if k in results})
    both = [k for m in ABSENT_CLASS_MODES for k in (f"J&F({m})", f"J({m})", f"F({m})") if k in results]
    if both:
        head += "\n" + create_small_table({k: results[k] for k in both})
    rows = [
        [e["id"], e["name"], e.get("J", ""), e.get("F", ""), e["IoU"], e["F1"], e.get("num_objects", "")]
        for e in details["per_class"]
    ]
    per_class = tabulate(rows, headers=["id", "class", "J", "F", "IoU", "F1", "objects"],
                         tablefmt="pipe", floatfmt=".2f", numalign="right")
    counts = ", ".join(f"{k[4:]} {results[k]}" for k in ("num_frames", "num_videos", "num_objects", "num_failed_frames"))
    text = f"{head}\n{per_class}\n({counts}; absent classes: {details['protocol']['absent_class']})"
    per_pose = details.get("per_pose")
    if per_pose and len(per_pose) > 1:  # one table row per head pose (FASSEG multipose)
        names = [e["name"] for e in details["per_class"][1:]]
        rows = [[pose, p["num_frames"], p["mIoU"], p["mean_F1"]] + [p["F1"][n] for n in names]
                for pose, p in per_pose.items()]
        text += "\nPer head pose (degrees of pan):\n" + tabulate(
            rows, headers=["pose", "frames", "mIoU", "mean F1"] + [f"F1 {n}" for n in names],
            tablefmt="pipe", floatfmt=".2f", numalign="right")
    return text


def gather_shards(state, distributed: bool):
    """Every process's ``state`` as a list on the main process (``[state]`` when not distributed);
    None on the other processes."""
    if not distributed:
        return [state]
    comm.synchronize()
    gathered = comm.gather(state, dst=0)
    return gathered if comm.is_main_process() else None


# ---------------------------------------------------------------------------- files
def frame_key(input_dict: dict) -> Tuple[str, int]:
    """(video_id, frame_index) of a dataset dict / model input; a dict without ``video_id`` is a
    one-frame video named by its ``image_id`` (else its ``file_name``)."""
    if "video_id" in input_dict:
        return str(input_dict["video_id"]), int(input_dict.get("frame_index", 0))
    return str(input_dict.get("image_id", input_dict.get("file_name", ""))), 0


def label_png_path(root: str, video_id: str, file_name: str) -> str:
    """Where a frame's predicted label PNG lives: ``<root>/<video_id>/<stem of file_name>.png``
    (the layout of ``--save-labels`` and of ``TEST.FACE_PARSING.SAVE_LABELS``)."""
    stem = os.path.splitext(os.path.basename(file_name))[0]
    return os.path.join(root, str(video_id), stem + ".png")


# ---------------------------------------------------------------------------- label-set conversion
def prediction_converter(dataset_name: str, prediction_label_set) -> Tuple[Optional[np.ndarray], Optional[str]]:
    """``(conversion ids, note)`` from the model's label set into the dataset's, or ``(None,
    None)`` when they are the same (or either is unknown). Raises ValueError naming both sets when
    the model's classes do not convert into the dataset's."""
    from ..data.datasets.face_video import DatasetNotFoundError, dataset_label_set
    from ..data.mixed_label_sets import NoConversionError, prediction_conversion

    if prediction_label_set is None:
        return None, None
    try:
        data = dataset_label_set(dataset_name)
        ids = None if data is None else prediction_conversion(prediction_label_set, data)
    except DatasetNotFoundError:
        return None, None
    except NoConversionError as e:
        raise ValueError(f"evaluation of {dataset_name}: {e}") from None
    if ids is None:
        return None, None
    return ids, f"predictions converted from {prediction_label_set.name} to {data.name}"


def convert_label_map(labels: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """(H, W) predicted label map of the model's set -> uint8 map of the dataset's set by the
    conversion ``ids``: class ``k`` becomes ``ids[k]`` (255: no counterpart, scored as wrong);
    values outside the model's classes become 255."""
    lut = np.full(256, 255, np.uint8)
    lut[: len(ids)] = np.asarray(ids, np.int64).clip(0, 255).astype(np.uint8)
    return _apply_lut(labels, lut, 255)


# ---------------------------------------------------------------------------- evaluator
class FaceParsingEvaluator(DatasetEvaluator):
    """J/F (DAVIS), mIoU and F1 (percentages) of the model's painted label maps ``outputs[i]["labels"]``.

    Inputs need ``sem_seg_file_name``, ``file_name``, ``video_id`` and ``frame_index`` (an input
    without ``video_id`` is its own one-frame video). Any number of processes gives the
    single-process numbers. A frame that cannot be scored is logged, counted and listed.

    ``prediction_label_set``: the model's :class:`~qanet_d2.structures.label_sets.LabelSet` when it
    may differ from the dataset's (predictions converted, 255 for a class without counterpart).
    ``output_dir``: where ``face_parsing_results.json`` is written (None: nowhere); ``save_labels``
    also writes each predicted label map to ``<output_dir>/labels/<video_id>/<frame stem>.png``.
    """

    def __init__(
        self,
        dataset_name: str,
        *,
        distributed: bool = True,
        output_dir: Optional[str] = None,
        absent_class: str = "skip",
        bound_th: float = 0.008,
        save_labels: bool = False,
        prediction_label_set=None,
    ):
        if absent_class not in ABSENT_CLASS_MODES:
            raise ValueError(f"absent_class must be one of {ABSENT_CLASS_MODES}, got {absent_class!r}")
        meta = MetadataCatalog.get(dataset_name)
        self._dataset_name = dataset_name
        self._class_names = list(meta.stuff_classes)
        self._num_classes = len(self._class_names)
        self._ignore_label = meta.get("ignore_label", 255)
        self._distributed = distributed
        self._output_dir = output_dir
        self._absent_class = absent_class
        self._bound_th = float(bound_th)
        self._save_labels = save_labels
        if save_labels and not output_dir:
            raise ValueError("save_labels needs an output_dir")
        self._conversion, self.conversion_note = prediction_converter(dataset_name, prediction_label_set)
        self.reset()

    @property
    def class_names(self) -> List[str]:
        return list(self._class_names)

    def reset(self):
        self._records: List[dict] = []
        self._failed: List[dict] = []
        self._confusion = np.zeros((self._num_classes, self._num_classes + 1), np.int64)
        self._invalid_gt_pixels = 0

    def process(self, inputs, outputs):
        for inp, out in zip(inputs, outputs):
            if "labels" not in out:
                raise KeyError(f"a model output for {self._dataset_name} has no 'labels' label map "
                               f"(keys: {sorted(out)})")
            labels = out["labels"]
            labels = labels.cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
            if self._conversion is not None:
                labels = convert_label_map(labels, self._conversion)
            self.process_label_map(inp, labels)

    def process_label_map(self, input_dict: dict, pred_labels: np.ndarray) -> Optional[FrameScores]:
        """Score one frame's predicted (H, W) label map (also used by ``tools/evaluate_pngs.py``).
        Returns the scores, or None if the frame failed."""
        video_id, frame_index = frame_key(input_dict)
        file_name = str(input_dict.get("file_name", ""))
        if self._save_labels:
            path = label_png_path(os.path.join(self._output_dir, "labels"), video_id, file_name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            if not cv2.imwrite(path, np.asarray(pred_labels, np.uint8)):
                logger.warning("Could not write %s", path)
        gt_file = input_dict.get("sem_seg_file_name")
        if not gt_file:
            self.record_failure(input_dict, "no ground-truth label file")
            return None
        try:
            gt = read_label_map(gt_file)
            scores = score_frame(pred_labels, gt, self._num_classes, self._ignore_label, "skip", self._bound_th)
        except (OSError, ValueError) as e:
            self.record_failure(input_dict, f"{type(e).__name__}: {e}")
            return None
        self._confusion += scores.confusion
        self._invalid_gt_pixels += scores.invalid_gt_pixels
        record = {"video_id": video_id, "frame_index": frame_index, "file_name": file_name,
                  "j": scores.j, "f": scores.f, "present": scores.present}
        if input_dict.get("pose") is not None:  # per-pose numbers (FASSEG multipose)
            record.update(pose=input_dict["pose"], confusion=scores.confusion)
        self._records.append(record)
        return scores

    def record_failure(self, input_dict: dict, problem: str):
        """Count a frame that cannot be scored; it is logged now and listed in the results."""
        entry = {k: str(input_dict.get(k, "")) for k in ("file_name", "sem_seg_file_name", "video_id")}
        entry["problem"] = problem
        logger.warning("Face parsing evaluation: frame %s not scored: %s", entry["file_name"], problem)
        self._failed.append(entry)

    def evaluate(self):
        state = (self._records, self._confusion, self._failed, self._invalid_gt_pixels)
        gathered = gather_shards(state, self._distributed)
        if gathered is None:
            return {}
        records, confusions, failed, invalid = zip(*gathered)
        records, failed = list(itertools.chain(*records)), list(itertools.chain(*failed))
        confusion, invalid_gt = sum(confusions), sum(invalid)
        if invalid_gt:
            logger.warning("%s: %d ground-truth pixels have values outside the %d classes and the ignore label; "
                           "they were treated as ignored.", self._dataset_name, invalid_gt, self._num_classes)
        if not records:
            logger.warning("%s: no frame could be scored (%d failed).", self._dataset_name, len(failed))
        results, details = summarize(records, confusion, self._class_names, self._absent_class, failed)
        if self.conversion_note:
            details["protocol"]["predictions"] = self.conversion_note
        details["protocol"]["bound_th"] = self._bound_th
        details.update(dataset=self._dataset_name, invalid_gt_pixels=int(invalid_gt))
        note = f" ({self.conversion_note})" if self.conversion_note else ""
        logger.info("Face parsing evaluation of %s%s:\n%s", self._dataset_name, note, format_results_tables(results, details))
        if failed:
            logger.warning("%s: %d frame(s) could not be scored, e.g. %s: %s", self._dataset_name, len(failed),
                           failed[0]["file_name"], failed[0]["problem"])
        if self._output_dir:
            path = write_json(self._output_dir, RESULTS_FILE, details)
            logger.info("Per-class, per-video and per-frame numbers: %s", path)
        return OrderedDict(face_parsing=results)
