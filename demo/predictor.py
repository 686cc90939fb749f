"""Overlays of face parsing results with detectron2's ``Visualizer`` (as detectron2's demo does)."""
from __future__ import annotations

from typing import Dict, Iterator, Optional, Tuple

import cv2
import numpy as np

import qanet_d2  # noqa: F401  (compat shims before detectron2)
from detectron2.data.catalog import Metadata
from detectron2.utils.visualizer import Visualizer
from qanet_d2.structures.label_sets import make_palette
from qanet_d2.predictor import FaceParsingPredictor, metadata_field
from qanet_d2.video import VideoPredictor

__all__ = ["VisualizationDemo"]


class VisualizationDemo:
    """Runs a :class:`~qanet_d2.FaceParsingPredictor` and draws each painted face's parts in the
    model's colours and its box labelled with :attr:`score_name` ("box" or "quality", the config's
    ``PAINT_ORDER``), the score that the config's threshold :attr:`confidence_threshold` applies to.
    ``overlay``: "visualizer" (detectron2's ``Visualizer``, class names) or "opencv" (colour blend
    and boxes only, fast enough for real-time video)."""

    def __init__(self, cfg, predictor: FaceParsingPredictor, alpha: float = 0.6, temporal_window: Optional[int] = None,
                 max_overlay_size: int = 4096, overlay: str = "visualizer"):
        self.predictor = predictor
        # Class colours: the model's label set's (else the dataset's) when they fit its classes, else generated.
        meta, classes, ls = predictor.metadata, list(predictor.class_names), predictor.label_set
        colors = ls.palette if ls is not None else metadata_field(meta, "stuff_colors")
        if colors is None or len(colors) != len(classes):
            colors = make_palette(classes)
        self.colors = [list(map(int, c)) for c in colors]  # RGB per class id
        self.metadata = Metadata(name=f"{meta.name}_overlay", stuff_classes=classes, stuff_colors=self.colors)
        post = predictor.postprocessor
        self.score_name = post.paint_order  # "box" or "quality"
        threshold = post.quality_score_thresh if self.score_name == "quality" else post.box_score_thresh
        self.confidence_threshold = float(threshold)
        self.legend = [{"id": i, "name": n, "color": c} for i, (n, c) in enumerate(zip(classes, self.colors))]
        self.alpha = float(alpha)
        self.max_overlay_size = int(max_overlay_size)
        self.overlay = overlay
        # BGR colour of each class id, for the OpenCV overlay.
        self._palette_bgr = np.asarray(self.colors, np.float32)[:, ::-1].copy()
        # Videos and sequences: the config's VIDEO keys, with the window given here if any.
        window = {} if temporal_window is None else {"window": max(1, int(temporal_window))}
        self.video = VideoPredictor(cfg, predictor, **window)

    def face_scores(self, result: Dict) -> np.ndarray:
        """Per face of ``result``, the score that ``confidence_threshold`` thresholds."""
        scores = result["instances"].box_scores.numpy() if self.score_name == "box" else result["scores"]
        return np.asarray(scores, np.float32)

    def draw(self, image_bgr: np.ndarray, result: Dict) -> np.ndarray:
        """BGR overlay of ``result`` drawn by the ``Visualizer``, at the image's size unless its
        longer side exceeds ``max_overlay_size`` (then scaled down: matplotlib's canvas and
        detectron2's mask drawing need several bytes per pixel and class)."""
        labels, boxes = result["labels"], result["boxes"]
        longest = max(image_bgr.shape[:2])
        if 0 < self.max_overlay_size < longest:
            scale = self.max_overlay_size / longest
            size = (max(1, round(image_bgr.shape[1] * scale)), max(1, round(image_bgr.shape[0] * scale)))
            image_bgr = cv2.resize(image_bgr, size, interpolation=cv2.INTER_AREA)
            labels = cv2.resize(labels, size, interpolation=cv2.INTER_NEAREST)
            boxes = boxes * scale
        visualizer = Visualizer(image_bgr[:, :, ::-1], self.metadata)
        labels = np.where(labels == 0, 255, labels)  # draw_sem_seg skips ids outside stuff_classes: background
        vis = visualizer.draw_sem_seg(labels, alpha=self.alpha)
        keep = result["painted"]
        if keep.any():
            texts = [f"face {s:.2f}" for s in self.face_scores(result)[keep]]
            colors = [(0.1, 0.9, 0.1)] * len(texts)  # boxes in one colour: the parts carry the palette's
            vis = visualizer.overlay_instances(boxes=boxes[keep], labels=texts, assigned_colors=colors)
        image = cv2.cvtColor(vis.get_image(), cv2.COLOR_RGB2BGR)
        if image.shape[:2] != (vis.height, vis.width):  # matplotlib can round the canvas by a pixel
            image = cv2.resize(image, (vis.width, vis.height), interpolation=cv2.INTER_LINEAR)
        return image

    def draw_opencv(self, image_bgr: np.ndarray, result: Dict) -> np.ndarray:
        """The overlay of :meth:`draw` without matplotlib or class names: a few milliseconds per
        640x480 frame, against a few hundred for the Visualizer."""
        labels = result["labels"]
        image = image_bgr.astype(np.float32)
        painted = labels > 0
        image[painted] = (1.0 - self.alpha) * image[painted] + self.alpha * self._palette_bgr[labels[painted]]
        image = image.astype(np.uint8)
        keep = result["painted"]
        for box, score in zip(result["boxes"][keep], self.face_scores(result)[keep]):
            x0, y0, x1, y1 = (int(round(float(v))) for v in box)
            cv2.rectangle(image, (x0, y0), (x1, y1), (25, 230, 25), 1)
            cv2.putText(image, f"face {score:.2f}", (x0, max(10, y0 - 3)), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                        (25, 230, 25), 1, cv2.LINE_AA)
        return image

    def run_on_image(self, image_bgr: np.ndarray, sequence: bool = False) -> Tuple[Dict, np.ndarray]:
        """The predictor's result for one BGR image and its BGR overlay; ``sequence``: the image is the
        next frame of the current sequence (smoothed; ``video.reset()`` starts a new one)."""
        result = self.video(image_bgr) if sequence else self.predictor(image_bgr)
        draw = self.draw_opencv if self.overlay == "opencv" else self.draw
        return result, draw(image_bgr, result)

    def run_on_video(self, video: cv2.VideoCapture) -> Iterator[Tuple[Dict, np.ndarray]]:
        """``(result, overlay_bgr)`` per frame of an opened video, in order."""
        self.video.reset()
        ok, frame = video.read()
        while ok:
            yield self.run_on_image(frame, sequence=True)
            ok, frame = video.read()
