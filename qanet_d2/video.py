"""Video face parsing with temporal smoothing, and the flicker measure.

A face parser run frame by frame flickers: a pixel near a part boundary, or a face whose score is
near the painting threshold, changes label from one frame to the next although nothing moved.
:class:`TemporalSmoother` removes much of that without changing the model:

1. each frame's faces are associated with the tracks of the previous frames by box IoU
   (Hungarian assignment, :func:`scipy.optimize.linear_sum_assignment`; a pair needs
   IoU >= ``iou_threshold``; unmatched faces start new tracks);
2. every track keeps the crop probabilities (``C x h x w``), crop affines and box/IoU scores of
   its last ``window`` frames;
3. a face's probabilities become the mean over its track's window, either in crop coordinates
   (``align="box"``: the crop follows the box, so this assumes the face moves with its box) or
   after warping the older crops into the current crop's frame through the image
   (``align="image"``: right for a still face under a jittering box). Box and IoU scores are
   averaged the same way, and the pixel and face scores are recomputed from the averaged
   probabilities with the model's own scoring functions;
4. the frame's label map is painted from the smoothed faces with the current frame's affines,
   exactly as the model paints a single image (:meth:`qanet_d2.FaceParsingPredictor.paint`).

A face seen once is unchanged (window of one), and a still sequence is unchanged because the
mean of equal maps is that map. :class:`VideoFaceParser` runs predictor + smoother frame by frame.

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

from detectron2.structures import Boxes, Instances, pairwise_iou

from .data.crops import crop_images, invert_affines

__all__ = ["TemporalSmoother", "VideoFaceParser", "label_change_rate", "associate_boxes", "compose_affines"]


def compose_affines(outer: torch.Tensor, inner: torch.Tensor) -> torch.Tensor:
    """``outer o inner`` of ``N x 2 x 3`` affines: the point ``p`` goes to ``outer(inner(p))``."""
    bottom = outer.new_tensor([0.0, 0.0, 1.0]).expand(outer.shape[0], 1, 3)
    o = torch.cat([outer, bottom], dim=1).double()
    i = torch.cat([inner.to(outer), bottom], dim=1).double()
    return (o @ i)[:, :2].to(outer.dtype)


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
    probs: torch.Tensor  # C x h x w
    affine: torch.Tensor  # 2 x 3 crop -> image
    box_score: float
    iou_score: float


@dataclass
class _Track:
    track_id: int
    box: torch.Tensor
    last_frame: int
    history: Deque[_Observation] = field(default_factory=deque)


class TemporalSmoother:
    """Averages each face's crop probabilities over its track's last ``window`` frames.

    Call it once per frame, in order, with that frame's faces; :meth:`reset` between videos.
    """

    def __init__(self, window: int = 3, iou_threshold: float = 0.3, align: str = "box"):
        """
        Args:
            window: frames averaged (the current one included); 1 disables smoothing.
            iou_threshold: minimum box IoU to continue a track. A track not seen for
                ``window - 1`` frames has no observation left in the window and is dropped.
            align: "box" (average in crop coordinates) or "image" (warp older crops into the
                current crop through image coordinates before averaging).
        """
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        if align not in ("box", "image"):
            raise ValueError(f"align must be 'box' or 'image', got {align!r}")
        self.window = int(window)
        self.iou_threshold = float(iou_threshold)
        self.align = align
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
        box_scores: Optional[torch.Tensor] = None,
        iou_scores: Optional[torch.Tensor] = None,
    ) -> Dict[str, torch.Tensor]:
        """Add one frame's faces and return their smoothed values.

        Args:
            boxes: ``N x 4`` XYXY_ABS face boxes (original image coordinates).
            probs: ``N x C x h x w`` crop probabilities.
            affines: ``N x 2 x 3`` crop -> image affines.
            box_scores, iou_scores: ``N`` detector and predicted-IoU scores (optional).

        Returns:
            dict with ``probs`` (``N x C x h x w``, smoothed), ``box_scores`` and ``iou_scores``
            (``N``, averaged; absent if not given), ``track_ids`` (``N`` long) and
            ``track_lengths`` (``N`` long, observations averaged per face).
        """
        self._frame += 1
        frame = self._frame
        n = int(boxes.shape[0])
        boxes = boxes.detach().float().cpu()
        probs = probs.detach().float().cpu()
        affines = affines.detach().float().cpu()
        bs = box_scores.detach().float().cpu() if box_scores is not None else torch.ones(n)
        ious = iou_scores.detach().float().cpu() if iou_scores is not None else torch.ones(n)

        # Tracks with an observation still inside the window can be continued.
        for tid in [t for t, tr in self._tracks.items() if frame - tr.last_frame >= self.window]:
            del self._tracks[tid]
        live = list(self._tracks.values())
        prev_boxes = torch.stack([t.box for t in live]) if live else boxes.new_zeros((0, 4))
        matches = dict((f, live[t]) for t, f in associate_boxes(prev_boxes, boxes, self.iou_threshold))

        out_probs = torch.empty_like(probs)
        out_bs, out_ious = torch.empty(n), torch.empty(n)
        track_ids, lengths = torch.empty(n, dtype=torch.long), torch.empty(n, dtype=torch.long)
        for i in range(n):
            track = matches.get(i)
            if track is None:
                track = _Track(track_id=next(self._ids), box=boxes[i], last_frame=frame)
                self._tracks[track.track_id] = track
            track.box, track.last_frame = boxes[i], frame
            track.history.append(_Observation(frame, probs[i], affines[i], float(bs[i]), float(ious[i])))
            while track.history and frame - track.history[0].frame >= self.window:
                track.history.popleft()
            out_probs[i] = self._average(track.history, affines[i])
            out_bs[i] = float(np.mean([o.box_score for o in track.history]))
            out_ious[i] = float(np.mean([o.iou_score for o in track.history]))
            track_ids[i], lengths[i] = track.track_id, len(track.history)

        result = {"probs": out_probs, "track_ids": track_ids, "track_lengths": lengths}
        if box_scores is not None:
            result["box_scores"] = out_bs
        if iou_scores is not None:
            result["iou_scores"] = out_ious
        return result

    def _average(self, history: Sequence[_Observation], affine: torch.Tensor) -> torch.Tensor:
        current = history[-1].probs
        if len(history) == 1:
            return current
        if self.align == "box":
            return torch.stack([o.probs for o in history]).mean(dim=0)
        # "image": sample every older crop at the points of the current crop. The affine
        # current crop -> older crop is inverse(older crop -> image) o (current crop -> image).
        c, h, w = current.shape
        total = current.clone()
        weight = torch.ones((1, h, w))
        for obs in list(history)[:-1]:
            cur_to_old = compose_affines(invert_affines(obs.affine[None]), affine[None])
            # A ones channel tells which points fall inside the older crop.
            source = torch.cat([obs.probs, torch.ones((1,) + obs.probs.shape[1:])], dim=0)[None]
            warped = crop_images(source, torch.zeros(1, dtype=torch.long), cur_to_old, (h, w))[0]
            inside = (warped[-1:] > 0.999).to(warped.dtype)
            total += warped[:-1] * inside
            weight += inside
        return total / weight


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


class VideoFaceParser:
    """Parses the frames of one video in order, with optional temporal smoothing.

    ``parser = VideoFaceParser(predictor, window=3)``; ``result = parser(frame_bgr)`` for each
    frame returns the predictor's result dict (``labels``, ``instances`` ... see
    :meth:`qanet_d2.FaceParsingPredictor.__call__`) computed from the smoothed faces; the
    instances gain a ``track_ids`` field. Call :meth:`reset` before another video.
    """

    def __init__(self, predictor, window: int = 3, iou_threshold: float = 0.3, align: str = "box"):
        self.predictor = predictor
        self.smoother = TemporalSmoother(window=window, iou_threshold=iou_threshold, align=align)

    def reset(self) -> None:
        self.smoother.reset()

    def __call__(self, image: np.ndarray, return_scores: bool = False) -> dict:
        return self.process(self.predictor.run_model(image), return_scores=return_scores)

    def process(self, raw: dict, return_scores: bool = False) -> dict:
        """Smooth and paint the model's raw output of the next frame
        (:meth:`qanet_d2.FaceParsingPredictor.run_model`); lets one model run serve several
        smoothing settings."""
        instances = raw["instances"]
        smoothed = self.smoother(
            instances.pred_boxes.tensor,
            instances.parsing_probs,
            instances.crop_affines,
            instances.box_scores if instances.has("box_scores") else None,
            instances.iou_scores if instances.has("iou_scores") else None,
        )
        instances = Instances(instances.image_size, **instances.get_fields())
        instances.track_ids = smoothed["track_ids"]
        instances = self.predictor.rescore(
            instances,
            probs=smoothed["probs"],
            box_scores=smoothed.get("box_scores"),
            iou_scores=smoothed.get("iou_scores"),
        )
        return self.predictor.postprocess(instances, raw["image_size"], return_scores=return_scores)
