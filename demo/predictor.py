"""Overlays of face parsing results with detectron2's ``Visualizer`` (as detectron2's demo does)."""
from __future__ import annotations

from typing import Dict, Iterator, Optional, Tuple

import cv2
import numpy as np

import qanet_d2  # noqa: F401  (compat shims before detectron2)
from detectron2.data.catalog import Metadata
from detectron2.utils.visualizer import VisImage, Visualizer
from qanet_d2.structures.label_sets import make_palette
from qanet_d2.predictor import FaceParsingPredictor, metadata_field
from qanet_d2.video import VideoPredictor

__all__ = ["VisualizationDemo", "overlay_metadata", "OVERLAYS"]

# "visualizer": detectron2's Visualizer (class names, anti-aliased contours); "opencv": colour
# blend and boxes only, fast enough for real-time video.
OVERLAYS = ("visualizer", "opencv")

# Faces are outlined in one colour (the parts carry the palette colours).
_BOX_COLOR = (0.1, 0.9, 0.1)


def overlay_metadata(predictor: FaceParsingPredictor) -> Metadata:
    """Metadata with ``stuff_classes`` / ``stuff_colors`` for ``draw_sem_seg``: the model's label
    set's (else the dataset's) when they fit this number of classes, else generated ones."""
    meta = predictor.metadata
    classes = list(predictor.class_names)
    ls = predictor.label_set
    colors = [list(c) for c in ls.palette] if ls is not None else metadata_field(meta, "stuff_colors")
    if colors is None or len(colors) != len(classes):
        colors = [list(c) for c in make_palette(classes)]
    return Metadata(name=f"{meta.name}_overlay", stuff_classes=classes, stuff_colors=[list(map(int, c)) for c in colors])


class ArrayImage:
    """A drawn RGB image with the part of ``VisImage``'s interface the demo uses (``get_image``,
    ``height``, ``width``), without a matplotlib figure."""

    def __init__(self, image_rgb: np.ndarray):
        self._image = np.ascontiguousarray(image_rgb)
        self.height, self.width = self._image.shape[:2]

    def get_image(self) -> np.ndarray:
        return self._image


class VisualizationDemo:
    """Runs a :class:`~qanet_d2.FaceParsingPredictor` and draws its results.

    The overlay shows the parts of every painted face with the dataset's palette and class names
    (``Visualizer.draw_sem_seg``; background is left undrawn) and the box of each painted face,
    labelled with the score that ``confidence_threshold`` (the threshold of the config's
    post-processor on that score) applies to ("face 0.87", :attr:`score_name`): the detector's
    box score with ``MODEL.QANET.INFERENCE.PAINT_ORDER`` "box", the quality score with "quality".
    """

    def __init__(
        self,
        cfg,
        predictor: Optional[FaceParsingPredictor] = None,
        confidence_threshold: Optional[float] = None,
        alpha: float = 0.6,
        temporal_window: Optional[int] = None,
        draw_boxes: bool = True,
        max_overlay_size: int = 4096,
        overlay: str = "visualizer",
    ):
        self.predictor = predictor if predictor is not None else FaceParsingPredictor(cfg)
        self.metadata = overlay_metadata(self.predictor)
        post = self.predictor.postprocessor
        self.score_name = post.paint_order  # "box" or "quality"
        if confidence_threshold is None:
            confidence_threshold = post.quality_score_thresh if self.score_name == "quality" else post.box_score_thresh
        self.confidence_threshold = float(confidence_threshold)
        self.colors = [[int(v) for v in c] for c in self.metadata.stuff_colors]
        self.legend = [{"id": i, "name": n, "color": c} for i, (n, c) in enumerate(zip(self.metadata.stuff_classes, self.colors))]
        self.alpha = float(alpha)
        self.draw_boxes = draw_boxes
        self.max_overlay_size = int(max_overlay_size)
        if overlay not in OVERLAYS:
            raise ValueError(f"overlay must be one of {OVERLAYS}, got {overlay!r}")
        self.overlay = overlay
        # BGR colour of each class id (background's row unused), for the OpenCV overlay.
        self._palette_bgr = np.asarray(self.metadata.stuff_colors, np.float32)[:, ::-1].copy()
        # Frames of videos and sequences: the config's VIDEO keys (detection every
        # VIDEO.DETECT_EVERY frames, smoothing over VIDEO.TEMPORAL_WINDOW unless given here).
        window = {} if temporal_window is None else {"window": max(1, int(temporal_window))}
        self.video = VideoPredictor(cfg, self.predictor, **window)

    def overlay_scale(self, size_hw) -> float:
        """Factor (<= 1) applied to an image before drawing: the overlay's longer side is at
        most ``max_overlay_size`` (matplotlib's canvas and detectron2's mask drawing need
        several bytes per pixel and class, too much for a 50-megapixel photo)."""
        longest = max(size_hw)
        return 1.0 if self.max_overlay_size <= 0 or longest <= self.max_overlay_size else self.max_overlay_size / longest

    def face_scores(self, result: Dict) -> np.ndarray:
        """Per face of ``result`` (best quality first), the score that ``confidence_threshold``
        thresholds: the box score or the quality score (:attr:`score_name`)."""
        if self.score_name == "box" and "instances" in result:
            return result["instances"].box_scores.numpy().astype(np.float32)
        return np.asarray(result["scores"], np.float32)

    def draw(self, image_bgr: np.ndarray, result: Dict) -> VisImage:
        """Overlay of ``result`` (a predictor result) on the BGR image, at the image's size
        unless that exceeds ``max_overlay_size`` (then scaled down, see :meth:`overlay_scale`)."""
        labels = result["labels"]
        boxes = result["boxes"]
        scale = self.overlay_scale(image_bgr.shape[:2])
        if scale < 1.0:
            size = (max(1, round(image_bgr.shape[1] * scale)), max(1, round(image_bgr.shape[0] * scale)))
            image_bgr = cv2.resize(image_bgr, size, interpolation=cv2.INTER_AREA)
            labels = cv2.resize(labels, size, interpolation=cv2.INTER_NEAREST)
            boxes = boxes * scale
        visualizer = Visualizer(image_bgr[:, :, ::-1], self.metadata)
        labels = labels.copy()
        labels[labels == 0] = 255  # draw_sem_seg skips ids outside stuff_classes: leave background as is
        vis = visualizer.draw_sem_seg(labels, alpha=self.alpha)
        if self.draw_boxes:
            keep = result["painted"]
            boxes = boxes[keep]
            if len(boxes):
                texts = [f"face {s:.2f}" for s in self.face_scores(result)[keep]]
                vis = visualizer.overlay_instances(boxes=boxes, labels=texts, assigned_colors=[_BOX_COLOR] * len(boxes))
        return vis

    def draw_opencv(self, image_bgr: np.ndarray, result: Dict) -> "ArrayImage":
        """The overlay of :meth:`draw` without matplotlib, for video at frame rate: parts blended
        in the palette colours, face boxes and scores drawn with OpenCV (no class names).
        A few milliseconds per 640x480 frame, against a few hundred for the Visualizer."""
        labels = result["labels"]
        image = image_bgr.astype(np.float32)
        painted = labels > 0
        image[painted] = (1.0 - self.alpha) * image[painted] + self.alpha * self._palette_bgr[labels[painted]]
        image = image.astype(np.uint8)
        if self.draw_boxes:
            keep = result["painted"]
            for box, score in zip(result["boxes"][keep], self.face_scores(result)[keep]):
                x0, y0, x1, y1 = (int(round(float(v))) for v in box)
                cv2.rectangle(image, (x0, y0), (x1, y1), (25, 230, 25), 1)
                cv2.putText(image, f"face {score:.2f}", (x0, max(10, y0 - 3)), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (25, 230, 25), 1, cv2.LINE_AA)
        return ArrayImage(image[:, :, ::-1])

    def run_on_image(self, image_bgr: np.ndarray, sequence: bool = False) -> Tuple[Dict, VisImage]:
        """Parse and draw one BGR image.

        Args:
            sequence: the image is the next frame of the current sequence (temporal smoothing,
                see :meth:`reset`); otherwise it is parsed on its own.

        Returns:
            ``(result, vis_output)``: the predictor's result dict and the drawn ``VisImage``
            (``vis_output.get_image()`` is RGB).
        """
        result = self.video(image_bgr) if sequence else self.predictor(image_bgr)
        draw = self.draw_opencv if self.overlay == "opencv" else self.draw
        return result, draw(image_bgr, result)

    def reset(self) -> None:
        """Start a new sequence (forget the faces tracked for temporal smoothing)."""
        self.video.reset()

    def run_on_video(self, video: cv2.VideoCapture) -> Iterator[Tuple[np.ndarray, Dict, np.ndarray]]:
        """Parse the frames of an opened video in order (with the demo's temporal window).

        Yields:
            ``(frame_bgr, result, overlay_bgr)`` per frame; the overlay has the frame's size.
        """
        self.reset()
        while video.isOpened():
            ok, frame = video.read()
            if not ok:
                break
            result, vis = self.run_on_image(frame, sequence=True)
            yield frame, result, cv2.cvtColor(vis.get_image(), cv2.COLOR_RGB2BGR)
