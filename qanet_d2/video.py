"""Video face parsing with temporal smoothing, and the flicker measure.

A face parser run frame by frame flickers: a pixel near a part boundary, or a face whose score is
near the painting threshold, changes label from one frame to the next although little moved.
:class:`TemporalSmoother` removes much of that without changing the model:

1. each frame's faces are associated with the tracks of the previous frames by box IoU
   (Hungarian assignment, :func:`scipy.optimize.linear_sum_assignment`; a pair needs
   IoU >= ``iou_threshold``; unmatched faces start new tracks);
2. every track keeps the crop probabilities (``V x C x h x w``, one per box-scale view), crop
   affines and face scores of each of its frames within the last ``window`` frames;
3. a face's probabilities become a weighted mean over its track's window: the current frame
   weighs ``current_weight`` (0.7), the older frames share the rest equally (None: all equal).
   The mean is taken in crop coordinates (``align="box"``: the crop follows the box, so this
   assumes the face moves with its box) or after warping the older crops into the current crop's
   frame through the image (``align="image"``: right for a still face under a jittering box);
4. a face's scores (quality and box score) become the sum of its track's scores over the window
   divided by the number of frames of the window since the track started: a frame where the
   track was not detected counts as 0, so a face that drops out in one frame of three keeps two
   thirds of its score, a face present throughout keeps its mean score, and a face that enters
   keeps its own score in the frame where it is first found (it is painted from that frame on,
   as it would be in a single image);
5. the frame's label map is painted from the smoothed faces with the current frame's affines by
   the model's post-processor, as it paints a single image: the smoother is the post-processor's
   hook between scoring and painting (:meth:`VideoPredictor.smooth`).

Why weighted and not a plain mean: faces move, turn and change scale within their boxes, so
older crops are only roughly aligned with the current one; on the synthetic videos a plain mean
over 3 frames lowered J&F while the current-weighted mean and the score rule lower flicker and
raise J&F (``tools/measure_flicker.py``, numbers in ``docs/tools.md``).

A face seen once is unchanged, and a still sequence is unchanged because the mean of equal maps
is that map (both tested). :class:`VideoPredictor` runs predictor + smoother + painting frame by frame.

:func:`label_change_rate` is the flicker measure: the fraction of pixels whose label differs
between consecutive frames (``tools/measure_flicker.py`` compares it with the ground truth's own
rate: the labels of a moving face *should* change at its edges).
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
    """Add the ``VIDEO`` keys of :class:`VideoPredictor` (the demo's --video-input / --webcam /
    --sequence, tools/measure_flicker.py, tools/benchmark_video.py)."""
    cfg.VIDEO = CN()
    # Run the face detector on frames 0, k, 2k, ... only; on the other frames the faces are
    # parsed in the boxes of their tracks (see TRACK_MOTION). 1 = detect on every frame.
    cfg.VIDEO.DETECT_EVERY = 1
    # Box of a track on a frame without detection: "velocity" (its last detected box moved by
    # the per-frame change between its last two detections) or "still" (its last box).
    cfg.VIDEO.TRACK_MOTION = "velocity"
    # Temporal smoothing of each tracked face (TemporalSmoother): frames in the window (1 = off),
    # alignment of older crops ("image" or "box"), weight of the current frame's probabilities
    # (the older frames share the rest), box IoU to continue a track.
    cfg.VIDEO.TEMPORAL_WINDOW = 5
    cfg.VIDEO.ALIGN = "image"
    cfg.VIDEO.CURRENT_WEIGHT = 0.7
    cfg.VIDEO.IOU_THRESHOLD = 0.3

__all__ = ["TemporalSmoother", "VideoPredictor", "label_change_rate", "associate_boxes", "ALIGNS", "TRACK_MOTIONS"]

ALIGNS = ("image", "box")
TRACK_MOTIONS = ("velocity", "still")


def associate_boxes(prev_boxes: torch.Tensor, boxes: torch.Tensor, iou_threshold: float = 0.3) -> List[Tuple[int, int]]:
    """Match boxes of two frames by maximum total IoU.

    Args:
        prev_boxes: ``M x 4`` XYXY_ABS boxes (tracks).
        boxes: ``N x 4`` XYXY_ABS boxes (current faces).
        iou_threshold: pairs with a lower IoU are not matched.

    Returns:
        ``(track_index, face_index)`` pairs.
    """
    if len(prev_boxes) == 0 or len(boxes) == 0:
        return []
    iou = pairwise_iou(Boxes(prev_boxes.float()), Boxes(boxes.float())).numpy()
    rows, cols = linear_sum_assignment(-iou)
    return [(int(r), int(c)) for r, c in zip(rows, cols) if iou[r, c] >= iou_threshold]


@dataclass
class _Observation:
    frame: int
    probs: torch.Tensor  # V x C x h x w
    affine: torch.Tensor  # V x 2 x 3 crop -> image
    score: torch.Tensor  # K scores


@dataclass
class _Track:
    track_id: int
    box: torch.Tensor
    last_frame: int
    first_frame: int
    history: Deque[_Observation] = field(default_factory=deque)


class TemporalSmoother:
    """Smooths each face's crop probabilities and score over its track's last ``window`` frames.

    Call it once per frame, in order, with that frame's faces; :meth:`reset` between videos.
    """

    def __init__(
        self,
        window: int = 5,
        iou_threshold: float = 0.3,
        align: str = "image",
        current_weight: Optional[float] = 0.7,
    ):
        """
        Args:
            window: frames considered (the current one included); 1 disables smoothing.
            iou_threshold: minimum box IoU to continue a track. A track not seen for
                ``window`` frames has no observation left in the window and is dropped.
            align: "box" (average in crop coordinates) or "image" (warp older crops into the
                current crop through image coordinates before averaging).
            current_weight: weight of the current frame's probabilities in the mean (the older
                frames of the track share ``1 - current_weight``); None: a plain mean.
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
        """Forget all tracks (call between videos)."""
        self._tracks: Dict[int, _Track] = {}
        self._frame = -1
        self._ids = itertools.count()

    def __call__(
        self,
        boxes: torch.Tensor,
        probs: torch.Tensor,
        affines: torch.Tensor,
        scores: Optional[torch.Tensor] = None,
    ) -> Dict[str, torch.Tensor]:
        """Add one frame's faces and return their smoothed values.

        Args:
            boxes: ``N x 4`` XYXY_ABS face boxes (original image coordinates).
            probs: ``N x C x h x w`` crop probabilities, or ``N x V x C x h x w`` with V views
                (each smoothed with the same view of older frames).
            affines: ``N x 2 x 3`` (or ``N x V x 2 x 3``) crop -> image affines.
            scores: ``N`` face scores, or ``N x K`` (each column smoothed alike); default 1.

        Returns:
            dict with ``probs`` (smoothed, shaped as the input), ``scores`` (smoothed, shaped as
            the input; see the module docstring), ``track_ids`` (``N`` long) and
            ``track_lengths`` (``N`` long, frames of the window in which the track was seen).
        """
        self._frame += 1
        frame = self._frame
        n = int(boxes.shape[0])
        single_view = probs.dim() == 4
        boxes = boxes.detach().float().cpu()
        probs = probs.detach().float().cpu()
        affines = affines.detach().float().cpu()
        if single_view:
            probs, affines = probs[:, None], affines[:, None]
        scores = scores.detach().float().cpu() if scores is not None else torch.ones(n)
        single_score = scores.dim() == 1
        scores = scores[:, None] if single_score else scores.reshape(n, scores.shape[-1])  # N x K, N may be 0
        # Tracks with an observation still inside the window can be continued.
        for tid in [t for t, tr in self._tracks.items() if frame - tr.last_frame >= self.window]:
            del self._tracks[tid]
        live = list(self._tracks.values())
        prev_boxes = torch.stack([t.box for t in live]) if live else boxes.new_zeros((0, 4))
        matches = dict((f, live[t]) for t, f in associate_boxes(prev_boxes, boxes, self.iou_threshold))

        out_probs = torch.empty_like(probs)
        out_scores = torch.empty_like(scores)
        track_ids, lengths = torch.empty(n, dtype=torch.long), torch.empty(n, dtype=torch.long)
        for i in range(n):
            track = matches.get(i)
            if track is None:
                track = _Track(track_id=next(self._ids), box=boxes[i], last_frame=frame, first_frame=frame)
                self._tracks[track.track_id] = track
            track.box, track.last_frame = boxes[i], frame
            track.history.append(_Observation(frame, probs[i], affines[i], scores[i]))
            while track.history and frame - track.history[0].frame >= self.window:
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

    def _weights(self, count: int) -> List[float]:
        if count == 1:
            return [1.0]
        if self.current_weight is None:
            return [1.0 / count] * count
        older = (1.0 - self.current_weight) / (count - 1)
        return [older] * (count - 1) + [self.current_weight]

    def _average(self, history: Sequence[_Observation], affine: torch.Tensor) -> torch.Tensor:
        """Weighted mean of a track's ``V x C x h x w`` probabilities, in the frame of the
        current crops (``V x 2 x 3`` ``affine``)."""
        current = history[-1].probs
        if len(history) == 1:
            return current
        weights = self._weights(len(history))
        if self.align == "box":
            return sum(w * o.probs for w, o in zip(weights, history))
        # "image": sample every older crop at the points of the current crop. The affine
        # current crop -> older crop is inverse(older crop -> image) o (current crop -> image).
        # Points outside an older crop take the current frame's value.
        views, c, h, w = current.shape
        total = current * weights[-1]
        for weight, obs in zip(weights[:-1], list(history)[:-1]):
            cur_to_old = compose_affines(invert_affines(obs.affine), affine)
            # A ones channel tells which points fall inside the older crop.
            source = torch.cat([obs.probs, torch.ones((views, 1, h, w))], dim=1)
            warped = crop_images(source, torch.arange(views), cur_to_old, (h, w))
            inside = (warped[:, -1:] > 0.999).to(warped.dtype)
            total += weight * (warped[:, :-1] * inside + current * (1.0 - inside))
        return total


def label_change_rate(label_maps: Iterable[np.ndarray], ignore_label: Optional[int] = 255) -> float:
    """Flicker: the mean over consecutive frame pairs of the fraction of pixels whose label changes.

    Args:
        label_maps: the frames' ``H x W`` integer label maps, in order.
        ignore_label: pixels with this value in either frame of a pair are not counted
            (None: count all).

    Returns:
        a rate in [0, 1]; 0.0 for fewer than two frames.
    """
    rates = []
    prev = None
    for labels in label_maps:
        labels = np.asarray(labels)
        if prev is not None:
            if prev.shape != labels.shape:
                raise ValueError(f"label maps of one video differ in size: {prev.shape} vs {labels.shape}")
            valid = np.ones(labels.shape, dtype=bool)
            if ignore_label is not None:
                valid = (prev != ignore_label) & (labels != ignore_label)
            count = int(valid.sum())
            if count:
                rates.append(float(((prev != labels) & valid).sum()) / count)
        prev = labels
    return float(np.mean(rates)) if rates else 0.0


class VideoPredictor:
    """Parses the frames of one video in order, with temporal smoothing and, optionally, the face
    detector on every ``detect_every``-th frame only.

    ``video = VideoPredictor(predictor, window=5)`` (or ``VideoPredictor(cfg, predictor)``, from
    the config's ``VIDEO`` keys); ``result = video(frame_bgr)`` for each frame returns the
    predictor's result dict (``labels``, ``boxes``, ``scores``, ``instances`` ... see
    :meth:`qanet_d2.FaceParsingPredictor.__call__`) painted from the smoothed faces:
    ``instances.scores`` and ``instances.box_scores`` are the smoothed values (IoU and pixel
    scores stay the frame's own) and ``instances.track_ids`` is added. Call :meth:`reset` before
    another video.

    Detection every k frames: frames 0, k, 2k, ... (counted from :meth:`reset`) run the detector;
    every face it returns continues or starts a track (the smoother's IoU association). On the
    frames in between, no detector runs: each track detected on the last detection frame is
    parsed in its predicted box (:meth:`track_boxes`; ``track_motion`` "velocity": its last
    detected box moved by the per-frame change between its last two detections, "still": its
    last detected box), with its last detected box score. New faces are found at the next
    detection frame; a track the detector no longer finds is not followed further.
    """

    @configurable
    def __init__(
        self,
        predictor,
        *,
        window: int = 5,
        iou_threshold: float = 0.3,
        align: str = "image",
        current_weight: Optional[float] = 0.7,
        detect_every: int = 1,
        track_motion: str = "velocity",
    ):
        """
        Args:
            predictor: a :class:`qanet_d2.FaceParsingPredictor` (``run_model`` / ``postprocess``,
                whose post-processor calls :meth:`smooth` between scoring and painting).
            window, iou_threshold, align, current_weight: see :class:`TemporalSmoother`.
            detect_every: run the detector on every k-th frame (1: on every frame).
            track_motion: "velocity" or "still" (see the class docstring).
        """
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
        args = {
            "predictor": predictor,
            "window": v.TEMPORAL_WINDOW,
            "iou_threshold": v.IOU_THRESHOLD,
            "align": v.ALIGN,
            "current_weight": v.CURRENT_WEIGHT,
            "detect_every": v.DETECT_EVERY,
            "track_motion": v.TRACK_MOTION,
        }
        args.update(overrides)
        return args

    def reset(self) -> None:
        """Start a new video: forget the tracks; the next frame is frame 0 (a detection frame)."""
        self.smoother.reset()
        self._frame = -1
        # track id -> its last two detections [(frame, box XYXY_ABS)] and last detected box score
        self._detections: Dict[int, List[Tuple[int, torch.Tensor]]] = {}
        self._box_scores: Dict[int, float] = {}

    def is_detection_frame(self, frame: int) -> bool:
        """Whether the detector runs on frame ``frame`` (counted from :meth:`reset`)."""
        return frame % self.detect_every == 0

    def track_boxes(self, frame: int) -> Tuple[List[int], torch.Tensor, torch.Tensor]:
        """The followed tracks' ids, their predicted ``N x 4`` XYXY_ABS boxes on frame ``frame``
        and their last detected box scores (``N``)."""
        ids = sorted(self._detections)
        boxes = []
        for tid in ids:
            dets = self._detections[tid]
            last_frame, last_box = dets[-1]
            box = last_box
            if self.track_motion == "velocity" and len(dets) == 2:
                first_frame, first_box = dets[0]
                box = last_box + (last_box - first_box) * ((frame - last_frame) / (last_frame - first_frame))
            boxes.append(box)
        boxes_t = torch.stack(boxes) if boxes else torch.zeros((0, 4))
        scores = torch.tensor([self._box_scores[t] for t in ids], dtype=torch.float32)
        return ids, boxes_t, scores

    def __call__(self, image: np.ndarray, return_scores: bool = False, boxes: Optional[np.ndarray] = None, times=None) -> dict:
        """The next frame's result. ``boxes``: the frame's ``N x 4`` XYXY_ABS face boxes to use on a
        detection frame instead of the detector's (box score 1); ``times``: a
        :class:`~qanet_d2.modeling.postprocessing.StageTimes` that records the stages."""
        frame = self._frame + 1
        if self.is_detection_frame(frame):
            faces = self.predictor.run_model(image, boxes=boxes, times=times)
        else:
            _, track_boxes, box_scores = self.track_boxes(frame)
            height, width = image.shape[:2]
            track_boxes[:, 0::2] = track_boxes[:, 0::2].clamp(0, width)
            track_boxes[:, 1::2] = track_boxes[:, 1::2].clamp(0, height)
            faces = self.predictor.run_model(image, boxes=track_boxes.numpy(), box_scores=box_scores.numpy(), times=times)
        return self.process(faces, return_scores=return_scores, times=times)

    def process(self, faces: Instances, return_scores: bool = False, times=None) -> dict:
        """The next frame's result from its parsed faces (:meth:`qanet_d2.FaceParsingPredictor.run_model`):
        the predictor's post-processing with :meth:`smooth` as its smoothing hook. Lets one model
        run serve several smoothing settings."""
        self._frame += 1
        return self.predictor.postprocess(faces, return_scores=return_scores, smooth=self.smooth, times=times)

    def smooth(self, faces: Instances) -> Instances:
        """The post-processor's smoothing hook: the frame's scored faces with their probabilities
        and scores replaced by the smoother's output and their ``track_ids`` added. On a
        detection frame (:meth:`is_detection_frame`) the faces' boxes and box scores are recorded
        as their tracks' detections (what the frames up to the next one follow)."""
        scores = torch.stack([faces.scores, faces.box_scores], dim=1)
        smoothed = self.smoother(faces.pred_boxes.tensor, faces.parsing_probs, faces.crop_affines, scores)
        out = Instances(faces.image_size, **faces.get_fields())
        out.parsing_probs = smoothed["probs"].to(faces.parsing_probs)
        out.scores = smoothed["scores"][:, 0].to(faces.scores)
        out.box_scores = smoothed["scores"][:, 1].to(faces.box_scores)
        out.track_ids = smoothed["track_ids"].to(faces.scores.device)
        if self.is_detection_frame(self._frame):
            boxes = faces.pred_boxes.tensor.detach().float().cpu()
            box_scores = faces.box_scores.detach().float().cpu()
            detections, last_scores = {}, {}
            for i, tid in enumerate(smoothed["track_ids"].tolist()):
                detections[tid] = (self._detections.get(tid, []) + [(self._frame, boxes[i])])[-2:]
                last_scores[tid] = float(box_scores[i])
            self._detections, self._box_scores = detections, last_scores
        return out
