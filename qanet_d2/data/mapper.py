"""Dataset dict -> model input for face parsing on full frames; in training also the parser's
face crops, cut here from the original-resolution frame (:class:`~.training_crops.TrainingCropper`).
"""
from __future__ import annotations

import copy
import logging
from typing import Dict, List, Optional

import cv2
import numpy as np
import torch
from detectron2.config import CfgNode as CN
from detectron2.config import configurable
from detectron2.data import transforms as T
from detectron2.structures import BoxMode, Boxes, Instances

from .training_crops import TrainingCropper
from .io import DataReadError, check_label_values, check_map_size, read_image, read_instance_map, read_label_map
from ..structures.label_sets import LABEL_SETS, LabelSet, conversion_lut

__all__ = ["FaceParsingDatasetMapper", "RandomZoomOut"]

logger = logging.getLogger(__name__)


class RandomZoomOut(T.Augmentation):
    """With probability ``prob``, place the frame at a random position on a canvas ``s`` times
    its size (``s ~ U(1, max_scale)``), filled with the frame's mean grey (label 0): frame-filling
    heads (FASSEG) then also show the detector heads that fill only part of the frame. Runs
    before the resize; face crops are cut before, so only the detector's view changes."""

    def __init__(self, prob: float, max_scale: float):
        super().__init__()
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"INPUT.ZOOM_OUT.PROB must be in [0, 1]; got {prob}")
        if max_scale < 1.0:
            raise ValueError(f"INPUT.ZOOM_OUT.MAX_SCALE must be >= 1; got {max_scale}")
        self._init(locals())

    def get_transform(self, image):
        h, w = image.shape[:2]
        if self._rand_range() >= self.prob:
            return T.NoOpTransform()
        s = self._rand_range(1.0, self.max_scale)
        pad_w, pad_h = int(round(w * (s - 1.0))), int(round(h * (s - 1.0)))
        x0, y0 = int(self._rand_range(0, pad_w + 1)), int(self._rand_range(0, pad_h + 1))
        x0, y0 = min(x0, pad_w), min(y0, pad_h)  # a float draw can round up to the bound
        return T.PadTransform(x0, y0, pad_w - x0, pad_h - y0, orig_w=w, orig_h=h,
                              pad_value=float(image.mean()), seg_pad_value=0)


class FaceParsingDatasetMapper:
    """Reads a frame (:func:`qanet_d2.data.video_format.load_face_video_json` dict), its label
    map and face boxes and resizes them together. Errors name the file.

    Output: the input's keys except ``annotations``, plus ``image`` (uint8 ``3 x H' x W'``),
    ``sem_seg`` (int64 ``H' x W'``, 255 = ignore, with a label map), ``instances`` (``gt_boxes``
    XYXY_ABS, ``gt_classes`` zeros), ``height``/``width`` (the ORIGINAL size), ``original_image``
    (inference, when resized), ``label_set`` (of ``sem_seg``, when the model's is known) and, with
    a ``cropper``, ``face_crops`` (float32 ``N x 3 x h x w``) and ``face_crop_sem_seg`` (int64
    ``N x h x w``) cut from the ORIGINAL frame. Crops, not frames, are flipped.
    """

    min_box_size = 1.0  # pixels: boxes with a shorter side are dropped

    @configurable
    def __init__(self, is_train: bool = True, *, augmentations: List, image_format: str = "BGR",
                 num_classes: Optional[int] = None, label_set: Optional[LabelSet] = None,
                 dataset_label_sets: Optional[Dict[str, LabelSet]] = None, cropper=None,
                 grayscale_prob: float = 0.0, keep_crops: bool = True, allow_flip: bool = False):
        """
        Args:
            augmentations: detectron2 augmentations; no flips unless ``allow_flip``.
            num_classes: label values >= this (except 255) raise; None: no check.
            label_set: the label set the model predicts (None: labels are used as they are).
            dataset_label_sets: ``{set name: LabelSet}`` of unregistered sets a dict's
                ``"label_set"`` may name.
            cropper: a :class:`~qanet_d2.data.training_crops.TrainingCropper` (None: no crops). Each
                sample draws one seed from NumPy's global generator: the crops' own torch stream.
            keep_crops: False draws that seed without cutting the crops, so that a detector-only
                training sees the frames of joint training draw for draw.
            allow_flip: accept image-level flips (detector-only training; the output has no ``sem_seg``).
        """
        for aug in augmentations:
            if isinstance(aug, T.RandomFlip) and not allow_flip:
                raise ValueError(
                    "FaceParsingDatasetMapper: image-level flips would mirror left/right parts "
                    "without swapping their labels; flipping is done on face crops instead")
        self.allow_flip = bool(allow_flip)
        self.is_train = is_train
        self.augmentations = T.AugmentationList(augmentations)
        self.image_format = image_format
        self.num_classes = num_classes
        self.label_set = label_set
        self.dataset_label_sets = dict(dataset_label_sets or {})
        self._routes: Dict[str, tuple] = {}  # set name -> (route, its LabelSet, lut or None)
        self.cropper = cropper
        self.keep_crops = bool(keep_crops)
        if not 0.0 <= float(grayscale_prob) <= 1.0:
            raise ValueError(f"INPUT.GRAYSCALE_PROB must be in [0, 1]; got {grayscale_prob}")
        self.grayscale_prob = float(grayscale_prob)
        mode = "training" if is_train else "inference"
        logger.info(f"[FaceParsingDatasetMapper] Augmentations used in {mode}: {augmentations}")

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        detector_only = cfg.MODEL.QANET.TRAIN_MODE == "detector"
        flip = cfg.INPUT.RANDOM_FLIP
        if flip != "none" and not (flip == "horizontal" and detector_only):
            raise ValueError(
                f"INPUT.RANDOM_FLIP must be 'none' (got {flip!r}): left/right part labels are swapped "
                f"only by the face-crop flip (MODEL.QANET.AUG.FLIP_PROB); 'horizontal' is for "
                f"detector-only training (MODEL.QANET.TRAIN_MODE detector)")
        flip = is_train and flip == "horizontal"
        if is_train:
            z = cfg.INPUT.ZOOM_OUT
            augs = [RandomZoomOut(z.PROB, z.MAX_SCALE)] if z.PROB > 0 else []
            augs += [T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN,
                                         cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING)]
            if flip:  # detectron2's FCOS recipe: after the resize, p = 0.5
                augs.append(T.RandomFlip(horizontal=True, vertical=False))
        elif cfg.INPUT.MIN_SIZE_TEST > 0:
            augs = [T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST, "choice")]
        else:
            augs = []
        from .mixed_label_sets import label_sets_by_name, model_label_set, training_label_sets

        model_set = model_label_set(cfg)
        return {
            "is_train": is_train,
            "augmentations": augs,
            "image_format": cfg.INPUT.FORMAT,
            "num_classes": cfg.MODEL.QANET.NUM_CLASSES,
            "label_set": model_set,
            "dataset_label_sets": label_sets_by_name(training_label_sets(cfg) if is_train else []),
            "cropper": TrainingCropper(cfg) if is_train else None,
            "keep_crops": not detector_only,
            "allow_flip": flip,
            "grayscale_prob": cfg.INPUT.GRAYSCALE_PROB if is_train else 0.0,
        }

    def __call__(self, dataset_dict: dict) -> dict:
        dataset_dict = copy.deepcopy(dataset_dict)
        annotations = dataset_dict.pop("annotations", [])
        file_name = dataset_dict["file_name"]
        image = read_image(file_name, format=self.image_format)
        h, w = image.shape[:2]
        exp_h, exp_w = dataset_dict.get("height"), dataset_dict.get("width")
        if (exp_h is not None and exp_h != h) or (exp_w is not None and exp_w != w):
            raise DataReadError(
                f"{file_name}: image is {w}x{h} (WxH) but the dataset says {exp_w}x{exp_h}")
        dataset_dict["height"], dataset_dict["width"] = h, w
        image = self._maybe_grayscale(image)

        label = None
        label_file = dataset_dict.get("sem_seg_file_name")
        if label_file:
            label = read_label_map(label_file)
            check_map_size(label, (h, w), "label map", label_file, file_name)
            label = self._to_model_label_set(dataset_dict, label, label_file)

        boxes = self._boxes(annotations, h, w, file_name)
        if self.cropper is not None:
            # one draw in every training mode, so that the detector's stream does not depend on the crops
            seed = int(np.random.randint(2**31))
            if self.keep_crops:
                dataset_dict["face_crops"], dataset_dict["face_crop_sem_seg"] = self.face_crops(
                    image, label, boxes, dataset_dict, annotations, torch.Generator().manual_seed(seed))
        original = image
        aug_input = T.AugInput(image, sem_seg=label)
        transforms = self.augmentations(aug_input)
        image, label = aug_input.image, aug_input.sem_seg
        nh, nw = image.shape[:2]
        if not self.is_train and (nh, nw) != (h, w):  # the parser crops the faces from the original
            dataset_dict["original_image"] = torch.as_tensor(np.ascontiguousarray(original.transpose(2, 0, 1)))
        boxes = _clip(transforms.apply_box(boxes) if len(boxes) else boxes, nh, nw)
        boxes = boxes[self._keep(boxes)]

        dataset_dict["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        if label is not None and not self.allow_flip:
            dataset_dict["sem_seg"] = torch.as_tensor(label.astype(np.int64))
        instances = Instances((nh, nw))
        instances.gt_boxes = Boxes(torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4))
        instances.gt_classes = torch.zeros(len(boxes), dtype=torch.int64)
        dataset_dict["instances"] = instances
        return dataset_dict

    def _maybe_grayscale(self, image: np.ndarray) -> np.ndarray:
        """``image`` turned to grey (luma of its ``image_format``, in all three channels) with
        probability ``grayscale_prob``."""
        if self.grayscale_prob <= 0.0 or np.random.random() >= self.grayscale_prob:  # 0: no draw
            return image
        code = cv2.COLOR_BGR2GRAY if self.image_format == "BGR" else cv2.COLOR_RGB2GRAY
        return cv2.cvtColor(cv2.cvtColor(np.ascontiguousarray(image), code), cv2.COLOR_GRAY2BGR)

    def _to_model_label_set(self, dataset_dict: dict, label: np.ndarray, label_file: str) -> np.ndarray:
        """Check the label values against their label set and convert them into the model's set
        when their set converts into it; records the labels' set in ``dataset_dict``."""
        name = dataset_dict.get("label_set")
        if self.label_set is None or name is None or name == self.label_set.name:
            if self.num_classes is not None:
                check_label_values(label, self.num_classes, label_file)
            if self.label_set is not None:
                dataset_dict["label_set"] = self.label_set.name
            return label
        if name not in self._routes:
            from .mixed_label_sets import training_route

            ls = self.dataset_label_sets.get(name) or LABEL_SETS.get(name)
            if ls is None:
                raise KeyError(f"label set '{name}' of a training sample is unknown to the dataset mapper")
            route = training_route(self.label_set, ls)
            self._routes[name] = (route, ls, conversion_lut(ls, self.label_set) if route == "convert" else None)
        route, ls, lut = self._routes[name]
        check_label_values(label, ls.num_classes, label_file)
        if route == "convert":
            label = lut[label]
            dataset_dict["label_set"] = self.label_set.name
        return label

    def face_crops(self, image: np.ndarray, label: Optional[np.ndarray], boxes: np.ndarray, dataset_dict: dict,
                   annotations: List[dict], generator: torch.Generator):
        """Training crops (:meth:`TrainingCropper.training_crops`, drawn from ``generator``) of the
        ``N x 4`` clipped non-crowd ``boxes`` (XYXY_ABS) of the original ``H x W x 3`` ``image``
        and its label map in the set ``dataset_dict["label_set"]`` (None: no labels, no crops):
        ``(N x 3 x h x w float32, N x h x w int64)``."""
        h, w = image.shape[:2]
        keep = self._keep(boxes)
        sample = {
            "image": torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1))),
            "instances": Instances((h, w), gt_boxes=Boxes(torch.as_tensor(boxes[keep], dtype=torch.float32))),
        }
        if label is not None:
            sample["sem_seg"] = torch.as_tensor(label.astype(np.int64))
            instance_map, face_ids = self._face_instances(dataset_dict, annotations, (h, w))
            if instance_map is not None:
                sample["face_instances"] = torch.as_tensor(instance_map.astype(np.int64))
                sample["instances"].gt_face_ids = torch.as_tensor(face_ids[keep])
        if dataset_dict.get("label_set") is not None:
            sample["label_set"] = dataset_dict["label_set"]
        with torch.no_grad():
            crops, labels, _ = self.cropper.training_crops([sample], generator=generator)
        return crops, labels

    @staticmethod
    def _face_instances(dataset_dict: dict, annotations, size):
        """``(face-instance map, face ids of the non-crowd annotations)`` of a frame whose dict
        has an ``instance_file_name`` (face ``k`` of the frame's faces has id ``k + 1``; a
        face-instance dict's one face is its ``face_index``), else ``(None, None)``."""
        path = dataset_dict.get("instance_file_name")
        if not path:
            return None, None
        instance_map = read_instance_map(path)
        check_map_size(instance_map, size, "face-instance map", path, dataset_dict["file_name"])
        first = dataset_dict.get("face_index", 0)
        ids = [first + k + 1 for k, ann in enumerate(annotations) if not ann.get("iscrowd", 0)]
        return instance_map, np.asarray(ids, dtype=np.int64)

    @staticmethod
    def _boxes(annotations, h, w, file_name) -> np.ndarray:
        """The non-crowd annotations' boxes, XYXY_ABS clipped to the ``h x w`` frame."""
        boxes = [BoxMode.convert(list(ann["bbox"]), ann.get("bbox_mode", BoxMode.XYXY_ABS), BoxMode.XYXY_ABS)
                 for ann in annotations if not ann.get("iscrowd", 0)]
        if not np.isfinite(np.asarray(boxes, dtype=np.float64)).all():
            raise DataReadError(f"{file_name}: non-finite face box in its annotations: {boxes}")
        return _clip(boxes, h, w)

    def _keep(self, boxes: np.ndarray) -> np.ndarray:
        """Mask of the boxes whose sides are at least ``min_box_size``."""
        return ((boxes[:, 2] - boxes[:, 0]) >= self.min_box_size) & ((boxes[:, 3] - boxes[:, 1]) >= self.min_box_size)


def _clip(boxes, h: int, w: int) -> np.ndarray:
    """``N x 4`` XYXY boxes (a float64 copy) clipped to an ``h x w`` image."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4).copy()
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, w)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, h)
    return boxes


def add_data_config(cfg) -> None:
    """The data keys: INPUT (sizes, grey frames, zoom-out), DATALOADER (ratios, sample unit), DATASETS.SYNTHETIC."""
    # The detector's resize of full frames (faces are parsed from crops of the original frame).
    cfg.INPUT.MIN_SIZE_TRAIN = (640, 672, 704, 736, 768, 800)
    cfg.INPUT.MAX_SIZE_TRAIN = 1333
    cfg.INPUT.MIN_SIZE_TEST = 800
    cfg.INPUT.MAX_SIZE_TEST = 1333
    # Image-level horizontal flip is done on the face crops (with label swapping) instead.
    cfg.INPUT.RANDOM_FLIP = "none"
    # Training frames turned to grey (before the face crops are cut) with this probability, so
    # that colour-free photos (old portraits, CCTV) look like training data. 0 draws no number.
    cfg.INPUT.GRAYSCALE_PROB = 0.0
    # Zoom-out of training frames (the detector's view only; RandomZoomOut). 0 = off (no draw).
    cfg.INPUT.ZOOM_OUT = CN()
    cfg.INPUT.ZOOM_OUT.PROB = 0.0
    cfg.INPUT.ZOOM_OUT.MAX_SCALE = 2.0
    cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS = False
    # Sampling ratio of each dataset of DATASETS.TRAIN (same order, normalised to sum 1): its share
    # of the training samples, whatever its size. Empty = in proportion to their size.
    cfg.DATALOADER.TRAIN_RATIOS = []
    # Training sample: "image" (a frame with all its faces; SOLVER.IMS_PER_BATCH counts frames) or
    # "face" (one face crop, as the official QANet code trains its parser; IMS_PER_BATCH counts
    # crops; TRAIN_MODE "parser" only). The crops are the same either way (instance_mapper.py).
    cfg.DATALOADER.SAMPLE_UNIT = "image"

    # Generated datasets (face_synth_*, face_composite_*) are generated on first use when missing.
    cfg.DATASETS.SYNTHETIC = CN()
    cfg.DATASETS.SYNTHETIC.AUTO_GENERATE = True
