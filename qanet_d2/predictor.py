"""A Python predictor for face parsing (detectron2's ``DefaultPredictor``, for faces).

    from qanet_d2 import FaceParsingPredictor, get_qanet_cfg
    cfg = get_qanet_cfg()
    cfg.merge_from_file("configs/quickstart/qanet_fcos_synth.yaml")
    cfg.MODEL.WEIGHTS = "output/quickstart/model_final.pth"
    predictor = FaceParsingPredictor(cfg)
    result = predictor(cv2.imread("photo.jpg"))      # BGR uint8, any size
    result["labels"]          # H x W uint8 label map (class ids of predictor.class_names)
    result["boxes"], result["scores"]                # per face, XYXY_ABS and quality score
    predictor(image, return_scores=True)["sem_seg"]  # C x H x W class scores (memory: C*H*W*4 bytes)
    predictor.predict_batch([img1, img2, ...])       # several images per model call

The image goes through the model as in evaluation: resized by ``INPUT.MIN_SIZE_TEST`` /
``MAX_SIZE_TEST`` for the detector and the crops, with all outputs in the original image's frame.

Large images: the model's ``sem_seg`` holds ``C x H x W`` floats in the output frame
(3.6 GB for 19 classes at 8000 x 6000). When that would exceed ``score_map_limit_mb`` and the
class scores are not asked for, the predictor lets the model work in the resized frame and paints
the label map at full size face window by face window (:func:`paint_label_map`), which needs
memory for one label map plus one face window of probabilities. The result is the same label
map as the argmax of the model's full-size ``sem_seg`` (tested); with multi-view test-time
augmentation (``TEST.AUG``) the large-image path paints the base view only.
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

from .data.crops import crop_windows, paste_probs, scale_affines
from .data.datasets.face_video import DatasetNotFoundError, dataset_label_set, label_set_metadata
from .data.io import ImageReadError, read_image_bgr, to_bgr_uint8  # noqa: F401  (the one image conversion)
from .modeling.test_time_augmentation import build_test_time_model
from .modeling.qanet.inference import crop_labels_from_probs

__all__ = [
    "FaceParsingPredictor",
    "paint_label_map",
    "face_window_labels",
    "read_image_bgr",
    "to_bgr_uint8",
    "ImageReadError",
]

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------- painting
def paint_label_map(
    probs: torch.Tensor,
    affines: torch.Tensor,
    scores: torch.Tensor,
    image_size: Sequence[int],
    score_thresh: float = 0.3,
    tile: int = 1024,
) -> np.ndarray:
    """The image-level label map of pasted faces, without an image-size score map.

    Same result as ``argmax`` of the model's ``paste_and_paint`` for one view: faces with
    ``score >= score_thresh`` are pasted (:func:`qanet_d2.data.crops.paste_probs`) in ascending
    score order, and each writes its foreground labels
    (:func:`~qanet_d2.modeling.qanet.inference.crop_labels_from_probs` != 0, inside its crop)
    over what was there; unpainted pixels are background (0). A face's window is pasted in
    tiles of at most ``tile x tile`` pixels, so the memory is one uint8 label map plus
    ``C x tile x tile`` floats, whatever the image and face sizes.

    Args:
        probs: ``N x C x h x w`` crop probabilities.
        affines: ``N x 2 x 3`` crop -> image affines in the frame of ``image_size``.
        scores: ``N`` face scores.
        image_size: ``(height, width)`` of the label map.

    Returns:
        ``H x W`` uint8 label map.
    """
    height, width = int(image_size[0]), int(image_size[1])
    labels = np.zeros((height, width), dtype=np.uint8)
    if len(scores) == 0:
        return labels
    probs, affines, scores = probs.detach().float().cpu(), affines.detach().float().cpu(), scores.detach().float().cpu()
    windows = crop_windows(affines, probs.shape[-2:], (height, width)).tolist()
    for i in torch.argsort(scores, stable=True).tolist():
        if float(scores[i]) < score_thresh:
            continue
        x0, y0, x1, y1 = windows[i]
        face = face_window_labels(probs[i], affines[i], windows[i], tile)
        fg = face != 0
        labels[y0:y1, x0:x1][fg] = face[fg]
    return labels


def face_window_labels(probs: torch.Tensor, affine: torch.Tensor, window: Sequence[int], tile: int = 1024) -> np.ndarray:
    """One face's labels on its image window ``[x0, y0, x1, y1)``: its crop probabilities
    (``C x h x w``, crop -> image ``affine`` ``2 x 3``) pasted tile by tile
    (:func:`qanet_d2.data.crops.paste_probs`) and labelled by
    :func:`~qanet_d2.modeling.qanet.inference.crop_labels_from_probs`; 0 outside the crop.

    Returns:
        ``(y1 - y0) x (x1 - x0)`` uint8.
    """
    x0, y0, x1, y1 = (int(v) for v in window)
    out = np.zeros((max(0, y1 - y0), max(0, x1 - x0)), dtype=np.uint8)
    tile = max(16, int(tile))
    for ty in range(y0, y1, tile):
        for tx in range(x0, x1, tile):
            win = torch.tensor([[tx, ty, min(tx + tile, x1), min(ty + tile, y1)]])
            ((tile_probs, inside),) = paste_probs(probs[None].float(), affine[None].float(), win, chunk=1)
            tile_labels = crop_labels_from_probs(tile_probs).numpy().astype(np.uint8)
            tile_labels[~inside.numpy()] = 0
            out[ty - y0 : int(win[0, 3]) - y0, tx - x0 : int(win[0, 2]) - x0] = tile_labels
    return out


# ---------------------------------------------------------------------------- predictor
class FaceParsingPredictor:
    """Builds the model of ``cfg``, loads ``cfg.MODEL.WEIGHTS`` and parses BGR images.

    Attributes:
        model: the eval-mode :class:`~qanet_d2.modeling.meta_arch.QANetFaceParser`.
        test_model: what parses the inputs: ``model``, or its test-time wrapper when the config
            asks for ``TEST.AUG`` views or ``TEST.ENSEMBLE.WEIGHTS`` (as in evaluation).
        metadata: ``MetadataCatalog`` entry of ``cfg.DATASETS.TEST[0]`` (or TRAIN[0]).
        class_names: class names (index = label id), from the metadata, or ``class_<i>``.
    """

    def __init__(self, cfg, score_map_limit_mb: float = 512.0):
        """
        Args:
            cfg: a config with qanet_d2's keys (:func:`qanet_d2.get_qanet_cfg`).
            score_map_limit_mb: above this size of the ``C x H x W`` score map, the label
                map is painted window by window (see the module docstring).
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
        self.aug = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MIN_SIZE_TEST], cfg.INPUT.MAX_SIZE_TEST)
        self.input_format = cfg.INPUT.FORMAT
        if self.input_format not in ("BGR", "RGB"):
            raise ValueError(f"INPUT.FORMAT must be BGR or RGB; got {self.input_format!r}")
        self.score_map_limit_mb = float(score_map_limit_mb)
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
                (``MODEL.FCOS.ENABLED False``).
            return_scores: also return ``sem_seg``, the ``C x H x W`` float class scores.
            return_face_labels: also return ``face_labels``, each face's own parsing.

        Returns:
            dict with
            ``labels``: ``H x W`` uint8 label map (ids of :attr:`class_names`; 0 = background),
            ``boxes``: ``N x 4`` float32 XYXY_ABS face boxes, ``scores``: ``N`` quality scores
            (sorted, best first; faces below ``MODEL.QANET.INFERENCE.FACE_SCORE_THRESH`` are
            returned but not painted), ``instances``: the model's Instances on CPU in the original
            frame (``pred_boxes``, ``scores``, ``box_scores``, ``iou_scores``, ``pixel_scores``,
            ``parsing_probs`` ``N x C x h x w``, ``crop_affines`` ``N x 2 x 3`` crop -> image),
            ``sem_seg`` if asked, and ``face_labels`` if asked: per face a dict with ``window``
            ``[x0, y0, x1, y1)`` and ``labels`` (uint8 label map of that window, 0 outside the crop).
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
        results = []
        step = max(1, int(batch_size))
        for start in range(0, len(images), step):
            chunk = images[start : start + step]
            chunk_boxes = None if boxes is None else boxes[start : start + step]
            for raw in self.run_model_batch(chunk, full_size_scores=None, boxes=chunk_boxes):
                results.append(self._finish(raw, return_scores, return_face_labels))
        return results

    def run_model(self, image: np.ndarray, boxes: Optional[np.ndarray] = None) -> Dict:
        """The model's raw output for one image (see :meth:`run_model_batch`)."""
        return self.run_model_batch([image], boxes=None if boxes is None else [boxes])[0]

    @torch.no_grad()
    def run_model_batch(
        self,
        images: Sequence[np.ndarray],
        full_size_scores: Optional[bool] = False,
        boxes: Optional[Sequence[np.ndarray]] = None,
    ) -> List[Dict]:
        """Run the model on BGR images.

        Args:
            full_size_scores: True: the model pastes its ``sem_seg`` at the original size;
                False: in the resized frame (cheap; ``sem_seg`` is then dropped); None: at the
                original size unless that map exceeds ``score_map_limit_mb``.
            boxes: optional ``N_i x 4`` XYXY_ABS face boxes per image (original coordinates),
                parsed instead of the detector's.

        Returns:
            per image a dict with ``instances`` (CPU, original frame), ``image_size``
            ``(H, W)`` and, when pasted at the original size, ``sem_seg`` (``C x H x W``).
        """
        if boxes is not None and len(boxes) != len(images):
            raise ValueError(f"boxes: got {len(boxes)} box arrays for {len(images)} images")
        if boxes is None and self.model.detector is None:
            raise ValueError("this model has no face detector (MODEL.FCOS.ENABLED False): pass the face boxes")
        inputs, sizes, full = [], [], []
        for i, image in enumerate(images):
            bgr = to_bgr_uint8(image)
            height, width = bgr.shape[:2]
            model_image = bgr if self.input_format == "BGR" else bgr[:, :, ::-1]
            resized = self.aug.get_transform(model_image).apply_image(model_image)
            tensor = torch.as_tensor(np.ascontiguousarray(resized.transpose(2, 0, 1)))
            at_full = full_size_scores
            if at_full is None:
                at_full = self.score_map_bytes((height, width)) <= self.score_map_limit_mb * 2**20
            out_h, out_w = (height, width) if at_full else resized.shape[:2]
            inputs.append({"image": tensor, "height": out_h, "width": out_w})
            if boxes is not None:
                b = Boxes(torch.as_tensor(np.asarray(boxes[i], dtype=np.float32).reshape(-1, 4)).clone())
                b.scale(resized.shape[1] / width, resized.shape[0] / height)
                inputs[-1]["instances"] = Instances(resized.shape[:2], gt_boxes=b)
            sizes.append((height, width))
            full.append(at_full)
        saved_mode = self.model.test_boxes
        try:
            if boxes is not None:
                self.model.test_boxes = "gt"  # the model parses the inputs' gt_boxes
            outputs = self.test_model(inputs)
        finally:
            self.model.test_boxes = saved_mode
        raws = []
        for out, (height, width), at_full in zip(outputs, sizes, full):
            inst = out["instances"].to("cpu")
            raw = {"image_size": (height, width)}
            if at_full:
                raw["sem_seg"] = out["sem_seg"].to("cpu")
            else:
                inst = rescale_instances(inst, (height, width))
            raw["instances"] = inst
            raws.append(raw)
        return raws

    def score_map_bytes(self, image_size: Sequence[int]) -> int:
        """Bytes of a ``C x H x W`` float32 score map of this size."""
        return int(image_size[0]) * int(image_size[1]) * self.num_classes * 4

    def postprocess(
        self, instances: Instances, image_size: Sequence[int], return_scores: bool = False, return_face_labels: bool = False
    ) -> Dict:
        """Paint ``instances`` (original frame) into the result dict of :meth:`__call__`."""
        return self._finish({"instances": instances, "image_size": tuple(image_size)}, return_scores, return_face_labels)

    def paint_scores(self, instances: Instances, image_size: Sequence[int]) -> torch.Tensor:
        """``C x H x W`` class scores of ``instances`` painted by the model's ``paste_and_paint``."""
        model = self.model
        device = model.device
        return model.paste_and_paint(
            [instances.parsing_probs.to(device)], [instances.crop_affines.to(device)], instances.scores.to(device), tuple(image_size)
        ).cpu()

    def face_labels(self, instances: Instances, image_size: Sequence[int]) -> List[Dict]:
        """Each face's own parsing in image coordinates: ``window`` ``[x0, y0, x1, y1)`` and
        ``labels`` (uint8, window-sized, 0 outside the face's crop)."""
        if len(instances) == 0:
            return []
        probs, affines = instances.parsing_probs.float(), instances.crop_affines.float()
        windows = crop_windows(affines, probs.shape[-2:], image_size).tolist()
        return [
            {"window": w, "labels": face_window_labels(p, a, w)} for p, a, w in zip(probs, affines, windows)
        ]

    # ------------------------------------------------------------------ internals
    def _finish(self, raw: Dict, return_scores: bool, return_face_labels: bool) -> Dict:
        inst, size = raw["instances"], raw["image_size"]
        sem_seg = raw.get("sem_seg")
        if sem_seg is None and return_scores:
            sem_seg = self.paint_scores(inst, size)
        if sem_seg is not None:
            labels = sem_seg.argmax(dim=0).numpy().astype(np.uint8)
        else:
            labels = paint_label_map(inst.parsing_probs, inst.crop_affines, inst.scores, size, self.model.face_score_thresh)
        result = {
            "labels": labels,
            "boxes": inst.pred_boxes.tensor.numpy().astype(np.float32),
            "scores": inst.scores.numpy().astype(np.float32),
            "instances": inst,
        }
        if return_scores:
            result["sem_seg"] = sem_seg
        if return_face_labels:
            result["face_labels"] = self.face_labels(inst, size)
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


def rescale_instances(instances: Instances, image_size: Sequence[int]) -> Instances:
    """Move model outputs from the frame they were computed in (``instances.image_size``) to
    ``image_size``: boxes and crop affines are scaled (crop probabilities stay as they are)."""
    src_h, src_w = instances.image_size
    height, width = int(image_size[0]), int(image_size[1])
    sx, sy = width / src_w, height / src_h
    out = Instances((height, width), **instances.get_fields())
    boxes = instances.pred_boxes.tensor.clone()
    boxes[:, 0::2] *= sx
    boxes[:, 1::2] *= sy
    out.pred_boxes = Boxes(boxes)
    out.pred_boxes.clip((height, width))
    out.crop_affines = scale_affines(instances.crop_affines, sx, sy)
    return out
