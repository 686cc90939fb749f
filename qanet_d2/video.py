"""Video face parsing (:class:`VideoPredictor`) with temporal smoothing (:class:`TemporalSmoother`),
and the flicker measure (:func:`label_change_rate`, ``tools/measure_flicker.py``).

The smoother follows faces by box IoU (Hungarian assignment). A face's crop probabilities become a
weighted mean over its track's last ``window`` frames (the current frame weighs ``current_weight``,
the older ones share the rest; a plain mean blurs moving faces), in crop coordinates (``align="box"``)
or with the older crops warped into the current one (``align="image"``); its scores become the
track's score sum over the window divided by the window's frames since the track started (a missed
frame counts 0, a new face keeps its own score).
"""
from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass, field
from typing import Deque, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from detectron2.config import CfgNode as CN
from detectron2.config import configurable
from detectron2.structures import Boxes, Instances, pairwise_iou

from .layers.crops import compose_affines, crop_images, invert_affines


def add_video_config(cfg: CN) -> None:
    """Add the ``VIDEO`` keys of :class:`VideoPredictor`."""
    cfg.VIDEO = CN()
    # Run the face detector on frames 0, k, 2k, ... only (1 = on every frame).
    cfg.VIDEO.DETECT_EVERY = 1
    # Box of a track on a frame without detection: "velocity" or "still" (see VideoPredictor).
    cfg.VIDEO.TRACK_MOTION = "velocity"
    # TemporalSmoother: frames in the window (1 = off), alignment of older crops ("image" or
    # "box"), weight of the current frame's probabilities, box IoU to continue a track.
    cfg.VIDEO.TEMPORAL_WINDOW = 5
    cfg.VIDEO.ALIGN = "image"
    cfg.VIDEO.CURRENT_WEIGHT = 0.7
    cfg.VIDEO.IOU_THRESHOLD = 0.3

__all__ = ["TemporalSmoother", "VideoPredictor", "label_change_rate", "associate_boxes", "ALIGNS", "TRACK_MOTIONS"]

ALIGNS = ("image", "box")
TRACK_MOTIONS = ("velocity", "still")


def associate_boxes(prev_boxes: torch.Tensor, boxes: torch.Tensor, iou_threshold: float = 0.3) -> List[Tuple[int, int]]:
    """``(track_index, face_index)`` pairs of ``M x 4`` track and ``N x 4`` face boxes (XYXY_ABS)
    with maximum total IoU; pairs under ``iou_threshold`` are not matched."""
    if len(prev_boxes) == 0 or len(boxes) == 0:
        return []
    iou = pairwise_iou(Boxes(prev_boxes.float()), Boxes(boxes.float())).numpy()
    rows, cols = linear_sum_assignment(-iou)
    return [(int(r), int(c)) for r, c in zip(rows, cols) if iou[r, c] >= iou_threshold]


@dataclass
class _Observation:
    frame: int
    box: torch.Tensor  # 4, XYXY_ABS
    probs: torch.Tensor  # V x C x h x w
    affine: torch.Tensor  # V x 2 x 3 crop -> image
    score: torch.Tensor  # K scores


@dataclass
class _Track:
    track_id: int
    first_frame: int
    history: Deque[_Observation] = field(default_factory=deque)  # never empty: the last one is kept


class TemporalSmoother:
    """Smooths each face's crop probabilities and score over its track's last ``window`` frames
    (see the module docstring). Call it once per frame, in order; :meth:`reset` between videos."""

    def __init__(self, window: int = 5, iou_threshold: float = 0.3, align: str = "image",
                 current_weight: Optional[float] = 0.7):
        """
        Args:
            window: frames considered (the current one included); 1 disables smoothing. A track
                not seen for ``window`` frames is dropped.
            iou_threshold: minimum box IoU to continue a track.
            align: "box" or "image" (see the module docstring).
            current_weight: weight of the current frame's probabilities; None: a plain mean.
        """
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        if align not in ALIGNS:
            raise ValueError(f"align must be one of {ALIGNS}, got {align!r}")
        if current_weight is not None and not 0.0 < current_weight <= 1.0:
            raise ValueError(f"current_weight must be in (0, 1] or None, got {current_weight}")
        self.window = int(window)
        self.iou_threshold = float(iou_threshold)
        self.align = align
        self.current_weight = None if current_weight is None else float(current_weight)
        self.reset()

    def reset(self) -> None:
        self._tracks: Dict[int, _Track] = {}
        self._frame = -1
        self._ids = itertools.count()

    def __call__(self, boxes: torch.Tensor, probs: torch.Tensor, affines: torch.Tensor,
                 scores: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        """Add one frame's faces and return their smoothed values.

        Args:
            boxes: ``N x 4`` XYXY_ABS face boxes (original image coordinates).
            probs: ``N x C x h x w`` crop probabilities, or ``N x V x C x h x w`` with V views
                (each smoothed with the same view of older frames).
            affines: ``N x 2 x 3`` (or ``N x V x 2 x 3``) crop -> image affines.
            scores: ``N`` face scores, or ``N x K`` (each column smoothed alike); default 1.

        Returns:
            dict with ``probs`` and ``scores`` (smoothed, shaped as the inputs), ``track_ids``
            (``N`` long) and ``track_lengths`` (``N`` long, frames of the window with the track).
        """
        self._frame = frame = self._frame + 1
        n = int(boxes.shape[0])
        single_view = probs.dim() == 4
        boxes, probs, affines = (t.detach().float().cpu() for t in (boxes, probs, affines))
        if single_view:
            probs, affines = probs[:, None], affines[:, None]
        scores = scores.detach().float().cpu() if scores is not None else torch.ones(n)
        single_score = scores.dim() == 1
        scores = scores[:, None] if single_score else scores.reshape(n, scores.shape[-1])  # N x K, N may be 0
        # Tracks with an observation still inside the window can be continued.
        self._tracks = {t: tr for t, tr in self._tracks.items() if frame - tr.history[-1].frame < self.window}
        live = list(self._tracks.values())
        prev_boxes = torch.stack([t.history[-1].box for t in live]) if live else boxes.new_zeros((0, 4))
        matches = dict((f, live[t]) for t, f in associate_boxes(prev_boxes, boxes, self.iou_threshold))

        out_probs, out_scores = torch.empty_like(probs), torch.empty_like(scores)
        track_ids, lengths = torch.empty(n, dtype=torch.long), torch.empty(n, dtype=torch.long)
        for i in range(n):
            track = matches.get(i)
            if track is None:
                tid = next(self._ids)
                track = self._tracks[tid] = _Track(tid, first_frame=frame)
            track.history.append(_Observation(frame, boxes[i], probs[i], affines[i], scores[i]))
            while frame - track.history[0].frame >= self.window:
                track.history.popleft()
            out_probs[i] = self._average(track.history, affines[i])
            frames_in_window = min(self.window, frame - track.first_frame + 1)  # a new track is not held back
            out_scores[i] = sum(o.score for o in track.history) / frames_in_window
            track_ids[i], lengths[i] = track.track_id, len(track.history)
        if single_view:
            out_probs = out_probs[:, 0]
        if single_score:
            out_scores = out_scores[:, 0]
        return {"probs": out_probs, "scores": out_scores, "track_ids": track_ids, "track_lengths": lengths}

    def _average(self, history: Sequence[_Observation], affine: torch.Tensor) -> torch.Tensor:
        """Weighted mean of a track's ``V x C x h x w`` probabilities in the current crops' frame."""
        *older, last = history
        current = last.probs
        if not older:
            return current
        if self.current_weight is None:
            weight = older_weight = 1.0 / len(history)
        else:
            weight, older_weight = self.current_weight, (1.0 - self.current_weight) / len(older)
        if self.align == "box":
            return sum(older_weight * o.probs for o in older) + weight * current
        # "image": sample every older crop at the points of the current crop. The affine
        # current crop -> older crop is inverse(older crop -> image) o (current crop -> image).
        # Points outside an older crop take the current frame's value.
        views, c, h, w = current.shape
        total = current * weight
        for obs in older:
            cur_to_old = compose_affines(invert_affines(obs.affine), affine)
            # A ones channel tells which points fall inside the older crop.
            source = torch.cat([obs.probs, torch.ones((views, 1, h, w))], dim=1)
            warped = crop_images(source, torch.arange(views), cur_to_old, (h, w))
            inside = (warped[:, -1:] > 0.999).to(warped.dtype)
            total += older_weight * (warped[:, :-1] * inside + current * (1.0 - inside))
        return total


def label_change_rate(label_maps: Iterable[np.ndarray], ignore_label: Optional[int] = 255) -> float:
    """Flicker: the mean over consecutive frame pairs of the fraction of pixels whose label changes
    (pixels with ``ignore_label`` in either frame are not counted); 0.0 for fewer than two frames."""
    rates, prev = [], None
    for labels in map(np.asarray, label_maps):
        if prev is not None:
            if prev.shape != labels.shape:
                raise ValueError(f"label maps of one video differ in size: {prev.shape} vs {labels.shape}")
            valid = np.ones(labels.shape, bool)
            if ignore_label is not None:
                valid = (prev != ignore_label) & (labels != ignore_label)
            if valid.any():
                rates.append(float(((prev != labels) & valid).sum()) / int(valid.sum()))
        prev = labels
    return float(np.mean(rates)) if rates else 0.0


class VideoPredictor:
    """Parses the frames of one video in order, with temporal smoothing and, optionally, the face
    detector on frames 0, k, 2k, ... only (``detect_every`` k, counted from :meth:`reset`).

    ``VideoPredictor(predictor, window=5)`` (``window``, ``iou_threshold``, ``align``,
    ``current_weight``: see :class:`TemporalSmoother`) or ``VideoPredictor(cfg, predictor)`` (the
    ``VIDEO`` keys), ``predictor`` a :class:`qanet_d2.FaceParsingPredictor`. ``video(frame_bgr)``
    returns the predictor's result dict painted from the smoothed faces (``instances.scores`` /
    ``box_scores`` smoothed, ``instances.track_ids`` added). Between detection frames each track
    detected last is parsed in its predicted box with its last box score (``track_motion``
    "velocity": the last box moved by the per-frame change between the last two detections;
    "still": the last box).
    """

    @configurable
    def __init__(self, predictor, *, window: int = 5, iou_threshold: float = 0.3, align: str = "image",
                 current_weight: Optional[float] = 0.7, detect_every: int = 1, track_motion: str = "velocity"):
        if int(detect_every) < 1:
            raise ValueError(f"VIDEO.DETECT_EVERY must be >= 1, got {detect_every}")
        if track_motion not in TRACK_MOTIONS:
            raise ValueError(f"VIDEO.TRACK_MOTION must be one of {TRACK_MOTIONS}, got {track_motion!r}")
        self.predictor = predictor
        self.smoother = TemporalSmoother(window=window, iou_threshold=iou_threshold, align=align, current_weight=current_weight)
        self.detect_every = int(detect_every)
        self.track_motion = track_motion
        self.reset()

    @classmethod
    def from_config(cls, cfg, predictor, **overrides):
        v = cfg.VIDEO
        return {"predictor": predictor, "window": v.TEMPORAL_WINDOW, "iou_threshold": v.IOU_THRESHOLD, "align": v.ALIGN,
                "current_weight": v.CURRENT_WEIGHT, "detect_every": v.DETECT_EVERY, "track_motion": v.TRACK_MOTION,
                **overrides}

    def reset(self) -> None:
        """Start a new video: forget the tracks; the next frame is frame 0 (a detection frame)."""
        self.smoother.reset()
        self._frame = -1
        # track id -> its last two detections [(frame, box XYXY_ABS, box score)]
        self._detections: Dict[int, List[Tuple[int, torch.Tensor, float]]] = {}

    def is_detection_frame(self, frame: int) -> bool:
        return frame % self.detect_every == 0

    def track_boxes(self, frame: int, image_size: Tuple[int, int]) -> Tuple[np.ndarray, np.ndarray]:
        """The followed tracks' predicted ``N x 4`` XYXY_ABS boxes on frame ``frame``, clipped to
        ``image_size`` (height, width), and their last detected box scores (``N``)."""
        boxes, scores = [], []
        for tid in sorted(self._detections):
            *first, (last_frame, box, score) = self._detections[tid]
            if self.track_motion == "velocity" and first:
                first_frame, first_box, _ = first[0]
                box = box + (box - first_box) * ((frame - last_frame) / (last_frame - first_frame))
            boxes.append(box)
            scores.append(score)
        boxes = Boxes(torch.stack(boxes) if boxes else torch.zeros((0, 4)))
        boxes.clip(image_size)
        return boxes.tensor.numpy(), np.asarray(scores, np.float32)

    def __call__(self, image: np.ndarray, return_scores: bool = False, boxes: Optional[np.ndarray] = None, times=None) -> dict:
        """The next frame's result. ``boxes``: the frame's ``N x 4`` XYXY_ABS face boxes to use on a
        detection frame instead of the detector's (box score 1); ``times``: a
        :class:`~qanet_d2.modeling.postprocessing.StageTimes` that records the stages."""
        frame, box_scores = self._frame + 1, None
        if not self.is_detection_frame(frame):
            boxes, box_scores = self.track_boxes(frame, image.shape[:2])
        faces = self.predictor.run_model(image, boxes=boxes, box_scores=box_scores, times=times)
        return self.process(faces, return_scores=return_scores, times=times)

    def process(self, faces: Instances, return_scores: bool = False, times=None) -> dict:
        """The next frame's result from its parsed faces (:meth:`qanet_d2.FaceParsingPredictor.run_model`),
        so that one model run can serve several smoothing settings."""
        self._frame += 1
        return self.predictor.postprocess(faces, return_scores=return_scores, smooth=self.smooth, times=times)

    def smooth(self, faces: Instances) -> Instances:
        """The post-processor's smoothing hook: the scored faces with the smoother's probabilities
        and scores and their ``track_ids``. On a detection frame the faces' boxes and box scores
        are recorded as their tracks' detections."""
        scores = torch.stack([faces.scores, faces.box_scores], dim=1)
        smoothed = self.smoother(faces.pred_boxes.tensor, faces.parsing_probs, faces.crop_affines, scores)
        out = Instances(faces.image_size, **faces.get_fields())
        out.parsing_probs = smoothed["probs"].to(faces.parsing_probs)
        out.scores = smoothed["scores"][:, 0].to(faces.scores)
        out.box_scores = smoothed["scores"][:, 1].to(faces.box_scores)
        out.track_ids = smoothed["track_ids"].to(faces.scores.device)
        if self.is_detection_frame(self._frame):
            boxes = faces.pred_boxes.tensor.detach().float().cpu()
            detections = [(self._frame, box, float(score)) for box, score in zip(boxes, faces.box_scores)]
            self._detections = {tid: (self._detections.get(tid, []) + [d])[-2:]
                                for tid, d in zip(smoothed["track_ids"].tolist(), detections)}
        return out
