"""A Python predictor for face parsing (detectron2's ``DefaultPredictor``, for faces; usage in
``docs/tools.md``): images resized as in evaluation, all outputs in the original image's frame.
"""
from __future__ import annotations

import logging
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

import detectron2.data.transforms as T
from detectron2.data import MetadataCatalog
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances

from .data.datasets.face_video import DatasetNotFoundError, dataset_label_set, label_set_metadata
from .data.io import ImageReadError, read_image_bgr, to_bgr_uint8  # noqa: F401  (the one image conversion)
from .modeling.fusion import fuse_conv_bn
from .modeling.postprocessing import StageTimes, profiler_range
from .modeling.test_time_augmentation import build_test_time_model

__all__ = ["FaceParsingPredictor", "read_image_bgr", "to_bgr_uint8", "ImageReadError"]

logger = logging.getLogger(__name__)


class FaceParsingPredictor:
    """Builds the model of ``cfg`` (:func:`qanet_d2.get_qanet_cfg`), loads its weights, parses BGR images.

    Attributes:
        model: the eval-mode :class:`~qanet_d2.modeling.meta_arch.QANetFaceParser`.
        test_model: what parses the inputs: ``model``, or its test-time wrapper when the config
            asks for ``TEST.AUG`` views or ``TEST.ENSEMBLE.WEIGHTS`` (as in evaluation).
        metadata: ``MetadataCatalog`` entry of ``cfg.DATASETS.TEST[0]`` (or TRAIN[0]).
        label_set: the model's :class:`~qanet_d2.structures.label_sets.LabelSet` (None: it has none).
        class_names: class names (index = label id), the label set's, or ``class_<i>``.
    """

    def __init__(self, cfg):
        from .engine.checkpoint import load_model_weights

        self.cfg = cfg.clone()
        if self.cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
            logger.warning(f"MODEL.DEVICE is {self.cfg.MODEL.DEVICE!r} but CUDA is not available: running on CPU.")
            self.cfg.defrost()
            self.cfg.MODEL.DEVICE = "cpu"
        if not self.cfg.MODEL.QANET.LABEL_SET.NAME:
            from .data.mixed_label_sets import fill_model_label_set

            self.cfg.defrost()
            fill_model_label_set(self.cfg)  # as training set the config up: from its datasets
        self.model = build_model(self.cfg).eval()
        load_model_weights(self.cfg, self.model)  # warns about parts left random
        self.test_model = build_test_time_model(self.cfg, self.model).eval()
        if self.cfg.TEST.FUSE_CONV_BN:
            fuse_conv_bn(self.test_model)  # inference only: batch norms folded into their convs
        self.postprocessor = self.model.postprocessor
        self.aug = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MIN_SIZE_TEST], cfg.INPUT.MAX_SIZE_TEST)
        self.input_format = cfg.INPUT.FORMAT
        self.metadata = MetadataCatalog.get([*cfg.DATASETS.TEST, *cfg.DATASETS.TRAIN, "__unused__"][0])
        self.num_classes = n = int(cfg.MODEL.QANET.NUM_CLASSES)
        self.label_set = ls = self.model.label_set
        classes = ls.classes if ls is not None and len(ls.classes) == n else [f"class_{i}" for i in range(n)]
        self.class_names = list(classes)

    def __call__(self, image: np.ndarray, return_scores: bool = False, boxes: Optional[np.ndarray] = None) -> Dict:
        """Parse one image.

        Args:
            image: ``H x W x 3`` uint8 BGR (as ``cv2.imread`` gives); grayscale, BGRA, 16-bit
                and float arrays are converted (:func:`to_bgr_uint8`).
            boxes: optional ``N x 4`` XYXY_ABS face boxes (original frame) to parse instead of the
                detector's (box score 1); needed by parser-only models.
            return_scores: also return ``sem_seg``, the ``C x H x W`` float class scores.

        Returns:
            dict with ``labels`` (``H x W`` uint8, ids of :attr:`class_names`), ``boxes``
            (``N x 4`` float32 XYXY_ABS), ``scores`` (``N`` quality scores, best first; faces under
            the thresholds are returned but not painted), ``painted`` (``N`` bool), ``face_labels``
            (per face its ``window`` ``[x0, y0, x1, y1)`` and ``labels`` there), ``instances``
            (the faces on CPU, original frame) and ``sem_seg`` if asked.
        """
        return self.predict_batch([image], return_scores=return_scores, boxes=None if boxes is None else [boxes])[0]

    def predict_batch(self, images: Sequence[np.ndarray], return_scores: bool = False, batch_size: int = 4,
                      boxes: Optional[Sequence[np.ndarray]] = None, times: Optional[StageTimes] = None) -> List[Dict]:
        """One result dict (:meth:`__call__`) per image, ``batch_size`` images per model call.
        ``boxes``: optional face boxes per image; ``times``: a
        :class:`~qanet_d2.modeling.postprocessing.StageTimes` that records the stages."""
        if boxes is not None and len(boxes) != len(images):
            raise ValueError(f"boxes: got {len(boxes)} box arrays for {len(images)} images")
        results = []
        step = max(1, int(batch_size))
        for start in range(0, len(images), step):
            chunk_boxes = None if boxes is None else boxes[start : start + step]
            for faces in self._parse(images[start : start + step], chunk_boxes, None, times):
                results.append(self.postprocess(faces, return_scores=return_scores, times=times))
        return results

    def run_model(self, image: np.ndarray, boxes: Optional[np.ndarray] = None, box_scores: Optional[np.ndarray] = None,
                  times: Optional[StageTimes] = None) -> Instances:
        """The parsed faces of one image in its original frame, not yet scored or painted (:meth:`postprocess`
        does the rest: one model run can serve several post-processings). ``boxes`` replace the
        detector's; ``box_scores`` (default 1) enter the quality scores as a detector's would."""
        return self._parse([image], None if boxes is None else [boxes], None if box_scores is None else [box_scores], times)[0]

    def postprocess(self, faces: Instances, return_scores: bool = False, smooth=None,
                    times: Optional[StageTimes] = None) -> Dict:
        """The result dict of :meth:`__call__` from :meth:`run_model`'s faces (``smooth``: the
        post-processor's hook between scoring and painting)."""
        with torch.no_grad():
            out = self.postprocessor(faces, class_scores=return_scores, smooth=smooth, times=times)
        inst = out["instances"].to("cpu")
        result = {
            "labels": out["labels"].cpu().numpy(),
            "boxes": inst.pred_boxes.tensor.numpy().astype(np.float32),
            "scores": inst.scores.numpy().astype(np.float32),
            "painted": out["painted"].numpy(),
            "face_labels": [{"window": f["window"], "labels": f["labels"].cpu().numpy()} for f in out["face_labels"]],
            "instances": inst,
        }
        if return_scores:
            result["sem_seg"] = out["sem_seg"].cpu()
        return result

    def _parse(self, images, boxes=None, box_scores=None, times=None) -> List[Instances]:
        """The model's per-face results of ``images``, each rescaled to its original frame."""
        stage = times if times is not None else profiler_range
        with stage("resize"):
            inputs, face_boxes = self.model_inputs(images, boxes, box_scores)
        with torch.no_grad():
            outputs = self.test_model.inference(inputs, face_boxes, do_postprocess=False, times=times)
        with stage("rescale"):
            return [self.postprocessor.rescale(o["instances"], (x["height"], x["width"])) for o, x in zip(outputs, inputs)]

    def model_inputs(self, images: Sequence[np.ndarray], boxes: Optional[Sequence[np.ndarray]] = None,
                     box_scores: Optional[Sequence[np.ndarray]] = None):
        """Model inputs of BGR images (resized, in ``INPUT.FORMAT``; ``original_image``, where the
        parser crops from, when resized) and, with ``boxes``, the ``face_boxes`` argument of the
        model's inference (boxes in the resized frame, ``scores`` from ``box_scores``)."""
        if boxes is None and self.model.detector is None:
            raise ValueError("this model has no face detector (MODEL.QANET.DETECTOR.NAME ''): pass the face boxes")
        inputs, face_boxes = [], []
        for i, image in enumerate(images):
            bgr = to_bgr_uint8(image)
            height, width = bgr.shape[:2]
            model_image = bgr if self.input_format == "BGR" else bgr[:, :, ::-1]
            resized = self.aug.get_transform(model_image).apply_image(model_image)
            tensor = torch.as_tensor(np.ascontiguousarray(resized.transpose(2, 0, 1)))
            inputs.append({"image": tensor, "height": height, "width": width})
            if resized.shape[:2] != (height, width):  # the parser crops the faces from the original
                inputs[-1]["original_image"] = torch.as_tensor(np.ascontiguousarray(model_image.transpose(2, 0, 1)))
            if boxes is not None:
                b = Boxes(torch.as_tensor(np.asarray(boxes[i], dtype=np.float32).reshape(-1, 4)).clone())
                b.scale(resized.shape[1] / width, resized.shape[0] / height)
                inst = Instances(resized.shape[:2], pred_boxes=b)
                if box_scores is not None:
                    inst.scores = torch.as_tensor(np.asarray(box_scores[i], dtype=np.float32).reshape(-1))
                face_boxes.append(inst)
        return inputs, (face_boxes if boxes is not None else None)


def metadata_field(metadata, key: str, default=None):
    """``key`` ("stuff_classes", "stuff_colors" or "flip_pairs") of the label set of the dataset
    named ``metadata.name``; ``default`` when it has none, and, with a warning, when its files
    are absent."""
    try:
        label_set = dataset_label_set(metadata.name)
    except DatasetNotFoundError as e:
        logger.warning(f"metadata {metadata.name!r} has no usable {key} ({e}); using defaults")
        return default
    return default if label_set is None else label_set_metadata(label_set)[key]
