"""A Python predictor for face parsing (detectron2's ``DefaultPredictor``, for faces).

    from qanet_d2 import FaceParsingPredictor, get_qanet_cfg
    cfg = get_qanet_cfg()
    cfg.merge_from_file("configs/quickstart/qanet_fcos_synth.yaml")
    cfg.MODEL.WEIGHTS = "output/quickstart/model_final.pth"
    # real photos: the shipped real-face model (FASSEG's six classes), no training needed
    #   cfg.merge_from_file("configs/real_faces/qanet_fcos_fasseg_synth_composites.yaml")
    #   cfg.MODEL.WEIGHTS = "models/qanet_fcos_real_faces_fasseg.pth"
    predictor = FaceParsingPredictor(cfg)
    result = predictor(cv2.imread("photo.jpg"))      # BGR uint8, any size
    result["labels"]          # H x W uint8 label map (class ids of predictor.class_names)
    result["boxes"], result["scores"]                # per face, XYXY_ABS and quality score
    result["boxes"][result["painted"]]               # the faces painted into the label map
    predictor(image, return_scores=True)["sem_seg"]  # C x H x W class scores (memory: C*H*W*4 bytes)
    predictor.predict_batch([img1, img2, ...])       # several images per model call

The image goes through the model as in evaluation: resized by ``INPUT.MIN_SIZE_TEST`` /
``MAX_SIZE_TEST`` for the detector and the crops, with all outputs in the original image's frame.
Images of any size: the label map is painted face window by face window
(:class:`~qanet_d2.modeling.postprocessing.FacePostProcessor`), so only the class scores, when
asked for, take ``C x H x W`` floats.
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
from .modeling.test_time_augmentation import build_test_time_model

__all__ = [
    "FaceParsingPredictor",
    "read_image_bgr",
    "to_bgr_uint8",
    "ImageReadError",
]

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------- predictor
class FaceParsingPredictor:
    """Builds the model of ``cfg``, loads ``cfg.MODEL.WEIGHTS`` and parses BGR images.

    Attributes:
        model: the eval-mode :class:`~qanet_d2.modeling.meta_arch.QANetFaceParser`.
        test_model: what parses the inputs: ``model``, or its test-time wrapper when the config
            asks for ``TEST.AUG`` views or ``TEST.ENSEMBLE.WEIGHTS`` (as in evaluation).
        postprocessor: the model's :class:`~qanet_d2.modeling.postprocessing.FacePostProcessor`.
        metadata: ``MetadataCatalog`` entry of ``cfg.DATASETS.TEST[0]`` (or TRAIN[0]).
        class_names: class names (index = label id), from the metadata, or ``class_<i>``.
    """

    def __init__(self, cfg):
        """
        Args:
            cfg: a config with qanet_d2's keys (:func:`qanet_d2.get_qanet_cfg`).
        """
        from .engine.checkpoint import load_model_weights

        self.cfg = cfg.clone()
        if self.cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
            logger.warning(f"MODEL.DEVICE is {self.cfg.MODEL.DEVICE!r} but CUDA is not available: running on CPU.")
            self.cfg.defrost()
            self.cfg.MODEL.DEVICE = "cpu"
        self.model = build_model(self.cfg)
        self.model.eval()
        # MODEL.WEIGHTS and MODEL.QANET.DETECTOR_WEIGHTS/PARSER_WEIGHTS; warns about random parts.
        load_model_weights(self.cfg, self.model)
        # What runs on the inputs: the model, or with TEST.AUG / TEST.ENSEMBLE.WEIGHTS its
        # test-time wrapper, exactly as in evaluation.
        self.test_model = build_test_time_model(self.cfg, self.model)
        self.test_model.eval()
        if self.cfg.TEST.FUSE_CONV_BN:
            fuse_conv_bn(self.test_model)  # inference only: batch norms folded into their convs
        self.postprocessor = self.model.postprocessor
        self.aug = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MIN_SIZE_TEST], cfg.INPUT.MAX_SIZE_TEST)
        self.input_format = cfg.INPUT.FORMAT
        if self.input_format not in ("BGR", "RGB"):
            raise ValueError(f"INPUT.FORMAT must be BGR or RGB; got {self.input_format!r}")
        names = list(cfg.DATASETS.TEST) + list(cfg.DATASETS.TRAIN)
        self.metadata = MetadataCatalog.get(names[0]) if names else MetadataCatalog.get("__unused__")
        classes = metadata_field(self.metadata, "stuff_classes")
        n = int(cfg.MODEL.QANET.NUM_CLASSES)
        self.class_names = list(classes) if classes is not None and len(classes) == n else [f"class_{i}" for i in range(n)]
        self.num_classes = n

    # ------------------------------------------------------------------ public
    def __call__(
        self,
        image: np.ndarray,
        return_scores: bool = False,
        return_face_labels: bool = False,
        boxes: Optional[np.ndarray] = None,
    ) -> Dict:
        """Parse one image.

        Args:
            image: ``H x W x 3`` uint8 BGR (as ``cv2.imread`` gives); grayscale, BGRA, 16-bit
                and float arrays are converted (:func:`to_bgr_uint8`).
            boxes: optional ``N x 4`` XYXY_ABS face boxes (original image coordinates) to parse
                instead of the detector's (box score 1). Needed by parser-only models
                (``MODEL.QANET.DETECTOR.NAME ''``).
            return_scores: also return ``sem_seg``, the ``C x H x W`` float class scores
                (memory: ``C * H * W * 4`` bytes; the label map itself never needs them).
            return_face_labels: also return ``face_labels``, each face's own parsing.

        Returns:
            dict with
            ``labels``: ``H x W`` uint8 label map (ids of :attr:`class_names`; 0 = background),
            ``boxes``: ``N x 4`` float32 XYXY_ABS face boxes, ``scores``: ``N`` quality scores
            (sorted, best first; faces below ``MODEL.QANET.INFERENCE.FACE_SCORE_THRESH`` are
            returned but not painted), ``painted``: ``N`` bool, the faces painted into
            ``labels`` (the faces found: ``boxes[painted]``), ``instances``: the model's Instances on CPU in the original
            frame (``pred_boxes``, ``scores``, ``box_scores``, ``iou_scores``, ``pixel_scores``,
            ``parsing_probs`` ``N x V x C x h x w``, ``crop_affines`` ``N x V x 2 x 3`` crop ->
            image, V box-scale views), ``sem_seg`` if asked, and ``face_labels`` if asked: per
            face a dict with ``window`` ``[x0, y0, x1, y1)`` and ``labels`` (uint8 numpy label
            map of that window, 0 outside the face's crops).
        """
        return self.predict_batch(
            [image], return_scores=return_scores, return_face_labels=return_face_labels, boxes=None if boxes is None else [boxes]
        )[0]

    def predict_batch(
        self,
        images: Sequence[np.ndarray],
        return_scores: bool = False,
        return_face_labels: bool = False,
        batch_size: int = 4,
        boxes: Optional[Sequence[np.ndarray]] = None,
    ) -> List[Dict]:
        """Parse several images; ``batch_size`` images go through the model per call (the
        detector runs on the batch and all their faces are parsed in ``PARSER_BATCH``-sized
        parser batches). ``boxes``: optional face boxes per image (see :meth:`__call__`).
        Returns one result dict per image (see :meth:`__call__`)."""
        if boxes is not None and len(boxes) != len(images):
            raise ValueError(f"boxes: got {len(boxes)} box arrays for {len(images)} images")
        results = []
        step = max(1, int(batch_size))
        for start in range(0, len(images), step):
            chunk = images[start : start + step]
            chunk_boxes = None if boxes is None else boxes[start : start + step]
            inputs, face_boxes = self.model_inputs(chunk, chunk_boxes)
            with torch.no_grad():
                outputs = self.test_model.inference(inputs, face_boxes, class_scores=return_scores)
            for out in outputs:
                results.append(self._result(out, return_face_labels))
        return results

    def run_model(self, image: np.ndarray, boxes: Optional[np.ndarray] = None, box_scores: Optional[np.ndarray] = None) -> Instances:
        """The scored, unpainted faces of one image, in its original frame (on CPU): the model's
        per-face results (``do_postprocess=False``) rescaled and scored by the post-processor.
        :meth:`postprocess` paints them; the video smoother changes them in between.

        Args:
            boxes: optional ``N x 4`` XYXY_ABS face boxes (original frame) to parse instead of the
                detector's; the detector then does not run.
            box_scores: optional ``N`` box scores of ``boxes`` (default 1), which enter the faces'
                quality scores as a detector's would (the video tracker passes its tracks' last
                detected scores).
        """
        inputs, face_boxes = self.model_inputs(
            [image], None if boxes is None else [boxes], None if box_scores is None else [box_scores]
        )
        with torch.no_grad():
            faces = self.test_model.inference(inputs, face_boxes, do_postprocess=False)[0]["instances"]
            faces = self.postprocessor.rescale(faces, (inputs[0]["height"], inputs[0]["width"]))
            faces = self.postprocessor.score(faces)
        return faces.to("cpu")

    def postprocess(self, faces: Instances, return_scores: bool = False, return_face_labels: bool = False) -> Dict:
        """Paint scored faces (:meth:`run_model`, possibly changed since) into the result dict of
        :meth:`__call__`, with the model's post-processor."""
        with torch.no_grad():
            labels, sem_seg = self.postprocessor.paint(faces, class_scores=return_scores)
        out = {"instances": faces[torch.argsort(faces.scores, descending=True, stable=True)], "labels": labels}
        if return_scores:
            out["sem_seg"] = sem_seg
        return self._result(out, return_face_labels)

    def model_inputs(
        self,
        images: Sequence[np.ndarray],
        boxes: Optional[Sequence[np.ndarray]] = None,
        box_scores: Optional[Sequence[np.ndarray]] = None,
    ):
        """Model inputs of BGR images (resized by ``INPUT.MIN_SIZE_TEST`` / ``MAX_SIZE_TEST``, in
        ``INPUT.FORMAT``, ``height``/``width`` = the original size, ``original_image`` = the
        unresized image when it was resized: the parser's crops come from it) and, when ``boxes`` are given,
        the ``face_boxes`` argument of the model's inference (boxes scaled to the resized frame,
        with ``scores`` from ``box_scores`` when given)."""
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
                    scores = torch.as_tensor(np.asarray(box_scores[i], dtype=np.float32).reshape(-1))
                    if len(scores) != len(b):
                        raise ValueError(f"box_scores: got {len(scores)} scores for {len(b)} boxes")
                    inst.scores = scores
                face_boxes.append(inst)
        return inputs, (face_boxes if boxes is not None else None)

    def face_labels(self, faces: Instances) -> List[Dict]:
        """Each face's own parsing in image coordinates: ``window`` ``[x0, y0, x1, y1)`` and
        ``labels`` (uint8 numpy, window-sized, 0 outside the face's crops)."""
        with torch.no_grad():
            return [{"window": f["window"], "labels": f["labels"].cpu().numpy()} for f in self.postprocessor.face_labels(faces)]

    # ------------------------------------------------------------------ internals
    def _result(self, out: Dict, return_face_labels: bool) -> Dict:
        inst = out["instances"].to("cpu")
        painted = np.zeros(len(inst), bool)
        painted[self.postprocessor.order(inst)] = True
        result = {
            "labels": out["labels"].cpu().numpy(),
            "boxes": inst.pred_boxes.tensor.numpy().astype(np.float32),
            "scores": inst.scores.numpy().astype(np.float32),
            "painted": painted,
            "instances": inst,
        }
        if "sem_seg" in out:
            result["sem_seg"] = out["sem_seg"].cpu()
        if return_face_labels:
            result["face_labels"] = self.face_labels(inst)
        return result


def metadata_field(metadata, key: str, default=None):
    """``key`` ("stuff_classes", "stuff_colors" or "flip_pairs") of the label set of the dataset
    named ``metadata.name`` (:func:`~qanet_d2.data.datasets.face_video.dataset_label_set`);
    ``default`` when it has none, and, with a warning, when its files are absent (a dataset whose
    class names are read from its files)."""
    try:
        label_set = dataset_label_set(metadata.name)
    except DatasetNotFoundError as e:
        logger.warning(f"metadata {metadata.name!r} has no usable {key} ({e}); using defaults")
        return default
    return default if label_set is None else label_set_metadata(label_set)[key]
