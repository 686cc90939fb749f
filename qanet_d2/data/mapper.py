"""Dataset dict -> model input for face parsing on full frames.

In training, the parser's face crops are cut here, in the data-loader workers, from the
original-resolution frame (before the detector's resize), with the crop augmentation of
:meth:`qanet_d2.data.training_crops.TrainingCropper.training_crops`: the same geometry and the same
augmentation draws as the face-instance route (:mod:`qanet_d2.data.instance_mapper`).
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
from .io import DataReadError, check_label_values, read_image, read_instance_map, read_label_map
from ..structures.label_sets import IGNORE_LABEL, LABEL_SETS, LabelSet, conversion_lut

__all__ = ["FaceParsingDatasetMapper", "RandomZoomOut"]

logger = logging.getLogger(__name__)


class RandomZoomOut(T.Augmentation):
    """With probability ``prob``, place the frame at a random position on a canvas ``s`` times
    its size (``s ~ U(1, max_scale)``, the same for both sides), filled with the frame's mean
    grey (label 0, background). Photos whose head fills the frame (FASSEG) then also show the
    detector heads that fill only part of it, so that it does not learn that a frame-filling box
    is a face.
    Runs before the resize; face crops are cut before the frame augmentations, so only the
    detector's view changes."""

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
    """Reads a frame, its label map and face boxes and resizes them together.

    Input: a dataset dict of :func:`qanet_d2.data.video_format.load_face_video_json`.

    Output dict (all keys of the input except ``annotations``, plus):

    * ``image``: uint8 tensor ``3 x H' x W'`` in ``image_format`` channel order (BGR by
      default), resized with ResizeShortestEdge (bilinear). Grayscale/RGBA/16-bit inputs become
      3-channel uint8 (see :mod:`qanet_d2.data.io`).
    * ``sem_seg``: int64 tensor ``H' x W'`` (nearest resize; 255 = ignore); only when the dict
      has ``sem_seg_file_name``.
    * ``instances``: ``Instances(image_size=(H', W'))`` with ``gt_boxes`` (Boxes, XYXY_ABS in
      the resized image) and ``gt_classes`` (int64 zeros). Boxes are clipped to the image and
      boxes narrower or shorter than ``min_box_size`` resized pixels are dropped.
    * ``height``, ``width``: the ORIGINAL image size (detectron2 convention: the model returns
      predictions at this size).
    * ``original_image`` (inference, when ``image`` was resized): the frame at its original
      resolution, uint8 ``3 x height x width`` in ``image_format``: the model's parser cuts its
      test crops from it, as training crops are cut from the original frame; the detector sees
      ``image``.
    * ``label_set``: the label set of ``sem_seg``, when the mapper knows the model's
      (``label_set``): a dict's own ``"label_set"`` (its dataset's, set by the training loader)
      that converts into the model's set has its labels converted and becomes the model's set
      (:func:`~qanet_d2.data.mixed_label_sets.training_route` "convert"); a coarser set is kept
      ("merge": the parser's losses merge its probabilities into it). A dict without one is in
      the model's set.
    * with a ``cropper`` (training of the parser), the frame's face crops cut from the ORIGINAL
      image and label map (boxes in the original frame, at most ``MAX_FACES_PER_IMAGE_TRAIN``,
      largest first, each with its own augmentation): ``face_crops`` (float32
      ``N x 3 x h x w``, normalised RGB, 0 = the mean colour outside the image) and
      ``face_crop_sem_seg`` (int64 ``N x h x w``, left/right classes swapped on flipped crops).
      Frames without a label map get none (``N = 0``).

    There is no image-level flip: flipping happens on face crops in the model, where the left
    and right part labels are swapped.

    Errors name the file: missing/corrupt image or label; image size different from the dict's
    ``height``/``width``; label size different from the image (both files named); label values
    that are neither class ids (< ``num_classes``) nor 255.
    """

    @configurable
    def __init__(self, is_train: bool = True, *, augmentations: List, image_format: str = "BGR",
                 num_classes: Optional[int] = None, ignore_label: int = IGNORE_LABEL,
                 min_box_size: float = 1.0, label_set: Optional[LabelSet] = None,
                 dataset_label_sets: Optional[Dict[str, LabelSet]] = None, cropper=None, generator=None,
                 grayscale_prob: float = 0.0, keep_crops: bool = True, allow_flip: bool = False):
        """
        Args:
            is_train: training or inference (only changes the resize sizes built from a config).
            augmentations: detectron2 augmentations; geometric ones must keep left/right
                (no flips).
            image_format: "BGR" or "RGB".
            num_classes: classes of the label set, background included; label values >= this
                (except ``ignore_label``) raise. None disables the check.
            ignore_label: the "ignore" value of label maps.
            min_box_size: boxes with a side below this (resized pixels) are dropped.
            label_set: the label set the model predicts (None: labels are used as they are).
            dataset_label_sets: ``{set name: LabelSet}`` of the sets dicts may state in their
                ``"label_set"`` (registered sets are also found by name).
            cropper: a :class:`~qanet_d2.data.training_crops.TrainingCropper` to cut the training
                face crops from the original frame; None: no crops.
            generator: NumPy ``Generator`` of the crop augmentation; None: NumPy's global
                generator (seeded per worker by detectron2 and per iteration by the trainer).
            grayscale_prob: probability that a frame is turned to grey before anything else
                (``INPUT.GRAYSCALE_PROB``; training only).
            keep_crops: False draws the augmentation of the crops (``cropper``) without cutting
                them: a detector-only training (``MODEL.QANET.TRAIN_MODE "detector"``) then sees
                the frames of joint training draw for draw, so that it trains the same detector.
            allow_flip: accept image-level flips (detector-only training, where only the frame
                and its boxes are used): the output then has no ``sem_seg``, whose left/right
                parts a flip would mirror without swapping their labels.
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
        self.ignore_label = ignore_label
        self.min_box_size = float(min_box_size)
        self.label_set = label_set
        self.dataset_label_sets = dict(dataset_label_sets or {})
        self._routes: Dict[str, tuple] = {}  # set name -> (route, its LabelSet, lut or None)
        self.cropper = cropper
        self.keep_crops = bool(keep_crops)
        self.generator = generator
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
        cropper = None
        if is_train:
            cropper = TrainingCropper(cfg)
        return {
            "is_train": is_train,
            "augmentations": augs,
            "image_format": cfg.INPUT.FORMAT,
            "num_classes": cfg.MODEL.QANET.NUM_CLASSES,
            "label_set": model_set,
            "dataset_label_sets": label_sets_by_name(training_label_sets(cfg) if is_train else []),
            "cropper": cropper,
            # a detector-only training draws the augmentation of crops it does not cut (same frames as joint)
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
            if label.shape != (h, w):
                raise DataReadError(
                    f"label map {label_file} is {label.shape[1]}x{label.shape[0]} (WxH) but its "
                    f"image {file_name} is {w}x{h}")
            label = self._to_model_label_set(dataset_dict, label, label_file)

        boxes = self._boxes(annotations, h, w, file_name)
        if self.cropper is not None and not self.keep_crops:
            if label is not None:  # the draws of the crops joint training cuts here, no crops
                self.cropper.skip_training_crops(len(self._clip_and_filter(boxes, h, w)), self._random())
        elif self.cropper is not None:
            if label is None:  # no labels: no crop (empty, so that every input of a batch has the keys)
                crop_h, crop_w = self.cropper.crop_size
                crops, crop_labels = torch.zeros((0, 3, crop_h, crop_w)), torch.zeros((0, crop_h, crop_w), dtype=torch.long)
            else:
                instance_map, face_ids = self._face_instances(dataset_dict, annotations, (h, w))
                keep = self._clip_and_filter(boxes, h, w, return_keep=True)
                crops, crop_labels = self.face_crops(image, label, self._clip_and_filter(boxes, h, w),
                                                     dataset_dict.get("label_set"), instance_map,
                                                     None if face_ids is None else face_ids[keep])
            dataset_dict["face_crops"], dataset_dict["face_crop_sem_seg"] = crops, crop_labels
        original = image
        aug_input = T.AugInput(image, sem_seg=label)
        transforms = self.augmentations(aug_input)
        image, label = aug_input.image, aug_input.sem_seg
        nh, nw = image.shape[:2]
        if not self.is_train and (nh, nw) != (h, w):  # the parser crops the faces from the original
            dataset_dict["original_image"] = torch.as_tensor(np.ascontiguousarray(original.transpose(2, 0, 1)))
        if len(boxes):
            boxes = transforms.apply_box(boxes)
        boxes = self._clip_and_filter(boxes, nh, nw)

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
        if self.grayscale_prob <= 0.0:
            return image
        draw = self.generator.random() if self.generator is not None else np.random.random()
        if draw >= self.grayscale_prob:
            return image
        code = cv2.COLOR_BGR2GRAY if self.image_format == "BGR" else cv2.COLOR_RGB2GRAY
        return cv2.cvtColor(cv2.cvtColor(np.ascontiguousarray(image), code), cv2.COLOR_GRAY2BGR)

    def _route(self, name: str) -> tuple:
        if name not in self._routes:
            from .mixed_label_sets import training_route

            ls = self.dataset_label_sets.get(name) or LABEL_SETS.get(name)
            if ls is None:
                raise KeyError(f"label set '{name}' of a training sample is unknown to the dataset mapper")
            route = training_route(self.label_set, ls)
            lut = conversion_lut(ls, self.label_set) if route == "convert" else None
            self._routes[name] = (route, ls, lut)
        return self._routes[name]

    def _to_model_label_set(self, dataset_dict: dict, label: np.ndarray, label_file: str) -> np.ndarray:
        """Check the label values against their label set and convert them into the model's set
        when their set converts into it; records the labels' set in ``dataset_dict``."""
        name = dataset_dict.get("label_set")
        if self.label_set is None or name is None or name == self.label_set.name:
            if self.num_classes is not None:
                check_label_values(label, self.num_classes, label_file, self.ignore_label)
            if self.label_set is not None:
                dataset_dict["label_set"] = self.label_set.name
            return label
        route, ls, lut = self._route(name)
        check_label_values(label, ls.num_classes, label_file, self.ignore_label)
        if route == "convert":
            label = lut[label]
            dataset_dict["label_set"] = self.label_set.name
        return label

    def face_crops(self, image: np.ndarray, label: np.ndarray, boxes: np.ndarray, label_set: Optional[str] = None,
                   instance_map: Optional[np.ndarray] = None, face_ids: Optional[np.ndarray] = None):
        """Augmented training crops of ``N x 4`` face ``boxes`` (XYXY_ABS) of one original
        ``H x W x 3`` uint8 ``image`` (``image_format``) and its ``H x W`` label map in label set
        ``label_set`` (its flip pairs swap the flipped crops' labels; None: the model's set):
        ``(N x 3 x h x w float32, N x h x w int64)``, by :meth:`TrainingCropper.training_crops`.
        ``instance_map`` (``H x W`` face ids) and ``face_ids`` (``N``, each box's id in it) let
        the crops label other faces' pixels as the cropper's ``other_faces`` says."""
        h, w = image.shape[:2]
        sample = {
            "image": torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1))),
            "sem_seg": torch.as_tensor(label.astype(np.int64)),
            "instances": Instances((h, w), gt_boxes=Boxes(torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4))),
        }
        if instance_map is not None and face_ids is not None:
            sample["face_instances"] = torch.as_tensor(instance_map.astype(np.int64))
            sample["instances"].gt_face_ids = torch.as_tensor(np.asarray(face_ids, dtype=np.int64).reshape(-1))
        if label_set is not None:
            sample["label_set"] = label_set
        with torch.no_grad():
            crops, labels, _ = self.cropper.training_crops([sample], generator=self._random())
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
        if instance_map.shape != tuple(size):
            raise DataReadError(f"face-instance map {path} is {instance_map.shape[1]}x{instance_map.shape[0]} (WxH) "
                                f"but its image {dataset_dict['file_name']} is {size[1]}x{size[0]}")
        first = dataset_dict.get("face_index", 0)
        ids = [first + k + 1 for k, ann in enumerate(annotations) if not ann.get("iscrowd", 0)]
        return instance_map, np.asarray(ids, dtype=np.int64)

    def _random(self):
        """The source of the crops' random draws: the mapper's generator, else NumPy's global one."""
        return np.random if self.generator is None else self.generator

    @staticmethod
    def _boxes(annotations, h, w, file_name) -> np.ndarray:
        out = []
        for ann in annotations:
            if ann.get("iscrowd", 0):
                continue
            box = BoxMode.convert(list(ann["bbox"]), ann.get("bbox_mode", BoxMode.XYXY_ABS),
                                  BoxMode.XYXY_ABS)
            out.append(box)
        boxes = np.asarray(out, dtype=np.float64).reshape(-1, 4)
        if not np.isfinite(boxes).all():
            raise DataReadError(f"{file_name}: non-finite face box in its annotations: {out}")
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, w)
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, h)
        return boxes

    def _clip_and_filter(self, boxes: np.ndarray, h: int, w: int, return_keep: bool = False) -> np.ndarray:
        """``boxes`` clipped to the ``h x w`` image, those with a side under ``min_box_size``
        dropped (``return_keep``: the boolean mask of the kept boxes instead)."""
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4).copy()
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, w)
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, h)
        keep = ((boxes[:, 2] - boxes[:, 0]) >= self.min_box_size) & (
            (boxes[:, 3] - boxes[:, 1]) >= self.min_box_size)
        return keep if return_keep else boxes[keep]


def add_data_config(cfg) -> None:
    """The data keys: INPUT (sizes, grey frames, zoom-out), DATALOADER (ratios, sample unit), DATASETS.SYNTHETIC."""
    # Input resizing of full images for the detector (detectron2's keys), kept small by default
    # because faces are parsed from crops of the original image.
    cfg.INPUT.MIN_SIZE_TRAIN = (640, 672, 704, 736, 768, 800)
    cfg.INPUT.MAX_SIZE_TRAIN = 1333
    cfg.INPUT.MIN_SIZE_TEST = 800
    cfg.INPUT.MAX_SIZE_TEST = 1333
    # Image-level horizontal flip is done on the face crops (with label swapping) instead.
    cfg.INPUT.RANDOM_FLIP = "none"
    # Training frames are turned to grey (the same grey in the three channels, before the face
    # crops are cut) with this probability: colour-free photos (old portraits, CCTV) then look
    # like training data. 0 draws no random number (runs stay as they were).
    cfg.INPUT.GRAYSCALE_PROB = 0.0
    # Zoom-out of training frames (the detector's view only; face crops are cut before): with
    # probability PROB the frame is placed at a random position on a canvas U(1, MAX_SCALE)
    # times its size, filled with its mean grey, before the resize. 0 = off (no random draw).
    cfg.INPUT.ZOOM_OUT = CN()
    cfg.INPUT.ZOOM_OUT.PROB = 0.0
    cfg.INPUT.ZOOM_OUT.MAX_SCALE = 2.0
    cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS = False
    # Sampling ratio of each dataset of DATASETS.TRAIN (same order, positive numbers, normalised
    # to sum 1): the share of training samples drawn from it, whatever its size. Empty = every
    # sample equally likely (datasets in proportion to their size, detectron2's TrainingSampler).
    cfg.DATALOADER.TRAIN_RATIOS = []
    # Training sample: "image" (a frame with all its faces: the detector's full frame and the
    # parser's crops of its faces; SOLVER.IMS_PER_BATCH counts frames) or "face" (one face crop,
    # as the official QANet code trains its parser: the dataset is the list of labelled faces, an
    # epoch visits each once and SOLVER.IMS_PER_BATCH counts crops; MODEL.QANET.TRAIN_MODE
    # "parser" only). Either way the crops are cut in the data-loader workers from the
    # original-resolution frame, with the same augmentation (qanet_d2/data/instance_mapper.py).
    cfg.DATALOADER.SAMPLE_UNIT = "image"

    # Generated face-video datasets (face_synth_*, face_composite_*): generated on first use
    # when missing.
    cfg.DATASETS.SYNTHETIC = CN()
    cfg.DATASETS.SYNTHETIC.AUTO_GENERATE = True
