"""TrainingCropper: the parser's augmented training crops and their labels, cut in the data
loader from a frame at its original resolution (geometry: :mod:`qanet_d2.layers.crops`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from detectron2.config import CfgNode as CN
from detectron2.config import configurable
from detectron2.structures import ImageList

from ..layers.crops import crop_images, crop_labels, face_crop_affines, normalize_image
from ..structures.label_sets import IGNORE_LABEL, LABEL_SETS, LabelSet

__all__ = ["TrainingCropper", "CropAugmentation", "CROP_OUTSIDE_LABELS", "CROP_OTHER_FACES"]

CROP_OUTSIDE_LABELS = ("ignore", "background")
CROP_OTHER_FACES = ("background", "keep")


@dataclass
class CropAugmentation:
    """Per-crop augmentation (length ``N``): ``scale`` box scale factor, ``rotation`` degrees,
    ``flip`` mirrored crop, ``shift`` ``N x 2`` centre shift as a fraction of the box size."""

    scale: torch.Tensor
    rotation: torch.Tensor
    flip: torch.Tensor
    shift: torch.Tensor


class TrainingCropper:
    """Cuts the augmented training crops of a frame's faces (on CPU, in the data loader).

    Coordinates are those of :mod:`qanet_d2.layers.crops`, in the frame it is given. The crop
    geometry and normalisation arguments repeat FaceCropper's: data/ does not import the model;
    both compute through :mod:`qanet_d2.layers.crops`, and a test checks they agree.
    """

    @configurable
    def __init__(
        self,
        *,
        crop_size: Tuple[int, int],
        num_classes: int,
        aspect_ratio: float = 0.75,
        box_expand: float = 1.25,
        pixel_mean: Sequence[float] = (123.675, 116.28, 103.53),
        pixel_std: Sequence[float] = (58.395, 57.12, 57.375),
        input_format: str = "BGR",
        label_set: Optional[LabelSet] = None,
        label_set_flip_permutations: Optional[Dict[str, Sequence[int]]] = None,
        aug_enabled: bool = True,
        aug_scale_std: float = 0.3,
        aug_scale_range: Tuple[float, float] = (0.7, 1.3),
        aug_rotation_std: float = 40.0,
        aug_rotation_max: float = 80.0,
        aug_rotation_prob: float = 0.6,
        aug_flip_prob: float = 0.5,
        aug_shift_std: float = 0.0,
        aug_off_face_prob: float = 0.0,
        aug_off_face_shift: Tuple[float, float] = (0.5, 1.5),
        aug_off_face_scale: Tuple[float, float] = (1.0, 3.0),
        outside_label: str = "ignore",
        other_faces: str = "keep",
        ignore_value: int = IGNORE_LABEL,
        max_faces_per_image: int = 16,
    ):
        """
        Args:
            crop_size: parser input ``(height, width)``; ``pixel_mean``, ``pixel_std``: RGB.
            label_set: the label set the model predicts (None: labels are not swapped).
            label_set_flip_permutations: ``{label set name: permutation}`` of other sets the
                inputs' ``"label_set"`` may name (a registered set not listed: its flip pairs).
            aug_*, outside_label, other_faces, max_faces_per_image: ``MODEL.QANET.AUG.*``,
                ``CROP_OUTSIDE_LABEL``, ``CROP_OTHER_FACES``, ``MAX_FACES_PER_IMAGE_TRAIN``.
        """
        if input_format not in ("BGR", "RGB"):
            raise ValueError(f"INPUT.FORMAT must be BGR or RGB; got {input_format!r}")
        if outside_label not in CROP_OUTSIDE_LABELS:
            raise ValueError(f"MODEL.QANET.CROP_OUTSIDE_LABEL must be one of {CROP_OUTSIDE_LABELS}; got {outside_label!r}")
        if other_faces not in CROP_OTHER_FACES:
            raise ValueError(f"MODEL.QANET.CROP_OTHER_FACES must be one of {CROP_OTHER_FACES}; got {other_faces!r}")
        if not 0.0 <= float(aug_off_face_prob) <= 1.0:
            raise ValueError(f"MODEL.QANET.AUG.OFF_FACE_PROB must be in [0, 1]; got {aug_off_face_prob}")
        for key, (lo, hi), least in (("OFF_FACE_SHIFT", aug_off_face_shift, 0.0), ("OFF_FACE_SCALE", aug_off_face_scale, 1e-6)):
            if not least <= float(lo) <= float(hi):
                raise ValueError(f"MODEL.QANET.AUG.{key} must be a range (low, high) with {least:g} <= low <= high; "
                                 f"got {(lo, hi)}")
        self.crop_size = (int(crop_size[0]), int(crop_size[1]))
        self.num_classes = int(num_classes)
        self.aspect_ratio = float(aspect_ratio)
        self.box_expand = float(box_expand)
        self.input_format = input_format
        self.pixel_mean = torch.tensor(pixel_mean, dtype=torch.float32).view(-1, 1, 1)
        self.pixel_std = torch.tensor(pixel_std, dtype=torch.float32).view(-1, 1, 1)
        self.label_set = label_set
        self.label_set_flip_permutations: Dict[str, torch.Tensor] = {
            k: torch.as_tensor(np.asarray(v), dtype=torch.long) for k, v in (label_set_flip_permutations or {}).items()}
        self.aug_enabled = bool(aug_enabled)
        self.aug_scale_std = float(aug_scale_std)
        self.aug_scale_range = (float(aug_scale_range[0]), float(aug_scale_range[1]))
        self.aug_rotation_std = float(aug_rotation_std)
        self.aug_rotation_max = float(aug_rotation_max)
        self.aug_rotation_prob = float(aug_rotation_prob)
        self.aug_flip_prob = float(aug_flip_prob)
        self.aug_shift_std = float(aug_shift_std)
        self.aug_off_face_prob = float(aug_off_face_prob)
        self.aug_off_face_shift = (float(aug_off_face_shift[0]), float(aug_off_face_shift[1]))
        self.aug_off_face_scale = (float(aug_off_face_scale[0]), float(aug_off_face_scale[1]))
        self.outside_label = outside_label
        self.other_faces = other_faces
        self.ignore_value = int(ignore_value)
        self.max_faces_per_image = int(max_faces_per_image)

    @classmethod
    def from_config(cls, cfg):
        from .mixed_label_sets import model_label_set, training_label_sets

        q = cfg.MODEL.QANET
        model_set = model_label_set(cfg)
        return {
            "crop_size": q.INPUT_SIZE,
            "num_classes": q.NUM_CLASSES,
            "aspect_ratio": q.ASPECT_RATIO,
            "box_expand": q.BOX_EXPAND,
            "pixel_mean": q.PIXEL_MEAN,
            "pixel_std": q.PIXEL_STD,
            "input_format": cfg.INPUT.FORMAT,
            "label_set": model_set,
            "label_set_flip_permutations": {ls.name: ls.flip_permutation() for ls in training_label_sets(cfg)
                                            if model_set is None or ls.name != model_set.name},
            "aug_enabled": q.AUG.ENABLED,
            "aug_scale_std": q.AUG.SCALE_STD,
            "aug_scale_range": q.AUG.SCALE_RANGE,
            "aug_rotation_std": q.AUG.ROTATION_STD,
            "aug_rotation_max": q.AUG.ROTATION_MAX,
            "aug_rotation_prob": q.AUG.ROTATION_PROB,
            "aug_flip_prob": q.AUG.FLIP_PROB,
            "aug_shift_std": q.AUG.SHIFT_STD,
            "aug_off_face_prob": q.AUG.OFF_FACE_PROB,
            "aug_off_face_shift": q.AUG.OFF_FACE_SHIFT,
            "aug_off_face_scale": q.AUG.OFF_FACE_SCALE,
            "outside_label": q.CROP_OUTSIDE_LABEL,
            "other_faces": q.CROP_OTHER_FACES,
            "max_faces_per_image": q.MAX_FACES_PER_IMAGE_TRAIN,
        }

    device = torch.device("cpu")  # the data-loader workers

    def crop_labels(self, label_maps: torch.Tensor, batch_idx: torch.Tensor, affines: torch.Tensor,
                    flip: Optional[torch.Tensor] = None,
                    label_sets: Optional[Sequence[Optional[str]]] = None) -> torch.Tensor:
        """``N x h x w`` nearest-neighbour crops of ``B x H x W`` label maps padded with -1
        (:meth:`label_batch`); pixels outside the images get ``ignore_value`` or 0 by
        ``outside_label``. ``flip``-ped crops have their left/right classes swapped in their own
        label set (``label_sets``, ``N`` names; None: the model's set)."""
        outside = self.ignore_value if self.outside_label == "ignore" else 0
        labels = crop_labels(label_maps, batch_idx, affines, self.crop_size, self.ignore_value, outside_value=outside)
        if flip is not None:
            swap = flip.to(labels.device)[:, None, None] & (labels != self.ignore_value)
            names = [None] * len(labels) if label_sets is None else list(label_sets)
            for name in dict.fromkeys(names):
                perm = self.label_set_flip_permutation(name)
                crops = torch.as_tensor([n == name for n in names], dtype=torch.bool, device=labels.device)
                mask = swap & crops[:, None, None]
                labels = torch.where(mask, perm[labels.clamp(0, len(perm) - 1)], labels)
        return labels

    def label_set_flip_permutation(self, label_set: Optional[str]) -> torch.Tensor:
        """The flip permutation of label ids of ``label_set`` (None: the model's set, identity
        without one; a set given at construction; else a registered set's flip pairs)."""
        if label_set is None and self.label_set is None:
            return torch.arange(self.num_classes, device=self.device)
        name = self.label_set.name if label_set is None else label_set
        if name not in self.label_set_flip_permutations:
            ls = self.label_set if self.label_set is not None and name == self.label_set.name else LABEL_SETS.get(name)
            if ls is None:
                raise KeyError(f"training crops labelled in label set '{name}', whose flip pairs the "
                               f"face cropper does not know (known: {sorted(self.label_set_flip_permutations)})")
            self.label_set_flip_permutations[name] = torch.as_tensor(ls.flip_permutation(), dtype=torch.long)
        return self.label_set_flip_permutations[name]

    def label_batch(self, label_maps: Sequence[torch.Tensor]) -> torch.Tensor:
        """``H_i x W_i`` label maps -> one ``B x H x W`` long batch padded with -1 ("outside")."""
        maps = [m.to(self.device, torch.long) for m in label_maps]
        return ImageList.from_tensors(maps, 0, pad_value=-1).tensor

    # ------------------------------------------------------------------ augmentation
    def sample_augmentation(self, n: int, generator: Optional[torch.Generator] = None) -> CropAugmentation:
        """Draw the augmentation of ``n`` training crops from ``generator`` (None: torch's global
        one), as the ``MODEL.QANET.AUG`` keys describe; the identity when ``AUG.ENABLED`` is off."""
        if not self.aug_enabled:
            return CropAugmentation(torch.ones(n), torch.zeros(n), torch.zeros(n, dtype=torch.bool), torch.zeros(n, 2))

        def normal(*size):
            return torch.randn(*size, generator=generator)

        def uniform(*size):
            return torch.rand(*size, generator=generator)

        lo, hi = self.aug_scale_range
        scale = (normal(n) * self.aug_scale_std + 1.0).clamp(lo, hi)
        rotation = (normal(n) * self.aug_rotation_std).clamp(-self.aug_rotation_max, self.aug_rotation_max)
        rotation = torch.where(uniform(n) < self.aug_rotation_prob, rotation, torch.zeros_like(rotation))
        flip = uniform(n) < self.aug_flip_prob
        shift = torch.zeros(n, 2)
        if self.aug_shift_std > 0:
            shift = (normal(n, 2) * self.aug_shift_std).clamp(-2 * self.aug_shift_std, 2 * self.aug_shift_std)
        if self.aug_off_face_prob > 0:
            off = uniform(n) < self.aug_off_face_prob
            (d_lo, d_hi), (s_lo, s_hi) = self.aug_off_face_shift, self.aug_off_face_scale
            distance = d_lo + uniform(n) * (d_hi - d_lo)
            angle = uniform(n) * (2 * math.pi)
            off_shift = torch.stack([angle.cos(), angle.sin()], 1) * distance[:, None]
            off_scale = s_lo + uniform(n) * (s_hi - s_lo)
            shift = torch.where(off[:, None], off_shift, shift)
            scale = torch.where(off, off_scale, scale)
        return CropAugmentation(scale, rotation, flip, shift)

    # ------------------------------------------------------------------ training crops
    def training_crops(self, batched_inputs: List[Dict],
                       generator: Optional[torch.Generator] = None) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Augmented crops of each image's ``instances.gt_boxes`` (at most ``max_faces_per_image``,
        largest first; none from images without ``sem_seg``). Optional input keys: ``"label_set"``
        (of its labels; None: the model's), ``face_instances`` (``H x W`` face ids, 0 = none) and
        ``instances.gt_face_ids`` (each box's id there, 0 = unknown) for ``other_faces``.

        Returns ``(crops, labels, batch_idx)``: ``N x 3 x h x w`` normalised RGB, ``N x h x w`` long
        labels (in their input's label set, flipped crops' left/right swapped), image indices.
        """
        images = ImageList.from_tensors(  # padded with 0, the mean colour
            [normalize_image(x["image"], self.pixel_mean, self.pixel_std, self.input_format) for x in batched_inputs],
            0, pad_value=0.0)
        label_maps, instance_maps, boxes, face_ids, batch_idx = [], [], [], [], []
        for i, x in enumerate(batched_inputs):
            h, w = images.image_sizes[i]
            instance_maps.append(x["face_instances"] if "face_instances" in x else torch.zeros((h, w), dtype=torch.long))
            if "sem_seg" not in x:  # no labels: no crop from this image
                label_maps.append(torch.full((h, w), self.ignore_value, dtype=torch.long))
                continue
            label_maps.append(x["sem_seg"])
            if "instances" not in x or len(x["instances"]) == 0:
                continue
            b = x["instances"].gt_boxes.tensor.to(self.device, torch.float32)
            ids = (x["instances"].gt_face_ids.to(self.device) if x["instances"].has("gt_face_ids")
                   else torch.zeros(len(b), dtype=torch.long, device=self.device))
            if len(b) > self.max_faces_per_image:  # largest faces first
                area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
                top = area.argsort(descending=True)[: self.max_faces_per_image]
                b, ids = b[top], ids[top]
            boxes.append(b)
            face_ids.append(ids)
            batch_idx.append(torch.full((len(b),), i, dtype=torch.long, device=self.device))
        h, w = self.crop_size
        if not boxes:
            empty = torch.zeros((0,), dtype=torch.long, device=self.device)
            return images.tensor.new_zeros((0, 3, h, w)), empty.new_zeros((0, h, w)), empty
        boxes, face_ids, batch_idx = torch.cat(boxes), torch.cat(face_ids), torch.cat(batch_idx)
        aug = self.sample_augmentation(len(boxes), generator)
        affines = face_crop_affines(boxes, self.crop_size, self.aspect_ratio, self.box_expand, aug.scale,
                                    shift=aug.shift, rotation=aug.rotation, flip=aug.flip)
        crops = crop_images(images.tensor, batch_idx, affines, self.crop_size, antialias=True)  # 0 outside
        labels = self.crop_labels(self.label_batch(label_maps), batch_idx, affines, flip=aug.flip,
                                  label_sets=[batched_inputs[i].get("label_set") for i in batch_idx.tolist()])
        if self.other_faces == "background" and bool((face_ids > 0).any()):
            labels = self._other_faces_to_background(labels, instance_maps, batch_idx, affines, face_ids)
        return crops, labels, batch_idx

    def _other_faces_to_background(self, labels, instance_maps, batch_idx, affines, face_ids) -> torch.Tensor:
        """``labels`` with the pixels of other faces (face-instance maps cropped with the same
        affines, nearest) set to background, in the crops whose own face id is known (> 0): as
        the official QANet code, a crop's labels are its own face's."""
        maps = ImageList.from_tensors([m.to(self.device, torch.float32) for m in instance_maps], 0, pad_value=0.0).tensor
        inst = crop_images(maps[:, None], batch_idx, affines, self.crop_size, mode="nearest")[:, 0].round().long()
        other = (inst > 0) & (inst != face_ids[:, None, None]) & (face_ids[:, None, None] > 0)
        return labels.masked_fill(other, 0)


def add_training_crops_config(cfg) -> None:
    """The training crops' keys: MODEL.QANET.AUG, CROP_OUTSIDE_LABEL, CROP_OTHER_FACES, MAX_FACES_PER_IMAGE_TRAIN."""
    # Crop augmentation in training (on ground-truth boxes); see TrainingCropper.sample_augmentation.
    cfg.MODEL.QANET.AUG = CN()
    cfg.MODEL.QANET.AUG.ENABLED = True
    cfg.MODEL.QANET.AUG.SCALE_STD = 0.3  # box scale factor N(0,1)*std + 1 ...
    cfg.MODEL.QANET.AUG.SCALE_RANGE = (0.7, 1.3)  # ... clipped to this range
    cfg.MODEL.QANET.AUG.ROTATION_STD = 40.0  # degrees, N(0,1)*std ...
    cfg.MODEL.QANET.AUG.ROTATION_MAX = 80.0  # ... clipped to +-max
    cfg.MODEL.QANET.AUG.ROTATION_PROB = 0.6
    cfg.MODEL.QANET.AUG.FLIP_PROB = 0.5  # left/right labels swapped from the dataset's flip pairs
    # Box centre jitter, N(0,1)*std times the box size, clipped to +-2 std (0 = off; not in the
    # report): robustness to a weak detector's box errors.
    cfg.MODEL.QANET.AUG.SHIFT_STD = 0.0
    # Off-face crops: with this probability a crop is moved off its face (centre shifted by
    # U(OFF_FACE_SHIFT) box sizes, box scaled by U(OFF_FACE_SCALE)), labelled with what is there,
    # mostly background. At 0.15 they did not stop the real-face parser from labelling a coat in
    # such a box hair (MODEL_ZOO.md). 0 = off (no random draw).
    cfg.MODEL.QANET.AUG.OFF_FACE_PROB = 0.0
    cfg.MODEL.QANET.AUG.OFF_FACE_SHIFT = (0.5, 1.5)
    cfg.MODEL.QANET.AUG.OFF_FACE_SCALE = (1.0, 3.0)
    # Label of crop pixels outside the image: "background" (as the official QANet code) or
    # "ignore" (255: no loss there). The crop's image pixels there are the mean colour.
    cfg.MODEL.QANET.CROP_OUTSIDE_LABEL = "background"
    # Labels of OTHER faces' pixels in a face's crop, where the frame has a face-instance map:
    # "background" (as the official QANet code) or "keep".
    cfg.MODEL.QANET.CROP_OTHER_FACES = "background"
    # Faces parsed per frame in training (largest first; SAMPLE_UNIT "image"): bounds memory.
    cfg.MODEL.QANET.MAX_FACES_PER_IMAGE_TRAIN = 16
