"""FaceCropper: face boxes -> the parser's normalised input crops at test time (``MODEL.QANET``
geometry, :mod:`qanet_d2.layers.crops`). Training crops are cut in the data loader
(:class:`qanet_d2.data.training_crops.TrainingCropper`, same geometry); the model gathers them.
"""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import torch
from torch import nn

from detectron2.config import configurable
from detectron2.structures import ImageList

from ..layers.crops import crop_images, face_crop_affines, normalize_image

__all__ = ["FaceCropper"]


class FaceCropper(nn.Module):
    """Crops faces for the parser at test time, and gathers the training crops of a batch.
    No weights; its normalisation buffers are not saved in checkpoints."""

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
    ):
        super().__init__()
        if input_format not in ("BGR", "RGB"):
            raise ValueError(f"INPUT.FORMAT must be BGR or RGB; got {input_format!r}")
        self.crop_size = (int(crop_size[0]), int(crop_size[1]))
        self.num_classes = int(num_classes)
        self.aspect_ratio = float(aspect_ratio)
        self.box_expand = float(box_expand)
        self.input_format = input_format
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(-1, 1, 1), False)

    @classmethod
    def from_config(cls, cfg):
        q = cfg.MODEL.QANET
        return {
            "crop_size": q.INPUT_SIZE,
            "num_classes": q.NUM_CLASSES,
            "aspect_ratio": q.ASPECT_RATIO,
            "box_expand": q.BOX_EXPAND,
            "pixel_mean": q.PIXEL_MEAN,
            "pixel_std": q.PIXEL_STD,
            "input_format": cfg.INPUT.FORMAT,
        }

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    # ------------------------------------------------------------------ geometry
    def preprocess(self, batched_inputs: List[Dict], original: bool = False) -> ImageList:
        """The inputs' ``image`` (or with ``original`` their ``original_image`` where given) as
        normalised RGB, padded with 0 (the mean colour) into one batch."""
        images = []
        for x in batched_inputs:
            image = (x.get("original_image", x["image"]) if original else x["image"]).to(self.device)
            images.append(normalize_image(image, self.pixel_mean, self.pixel_std, self.input_format))
        if len(images) == 1:  # nothing to pad (video frames): no copy into a batch tensor
            return ImageList(images[0][None], [tuple(images[0].shape[-2:])])
        return ImageList.from_tensors(images, 0, pad_value=0.0)

    def affines(self, boxes: torch.Tensor, scale=1.0) -> torch.Tensor:
        """Crop -> image affines of ``N x 4`` face boxes at box scale ``scale``."""
        return face_crop_affines(boxes, self.crop_size, self.aspect_ratio, self.box_expand, scale)

    def crop_images(self, images: torch.Tensor, batch_idx: torch.Tensor, affines: torch.Tensor) -> torch.Tensor:
        """``N x 3 x h x w`` anti-aliased bilinear crops (0 outside the images)."""
        return crop_images(images, batch_idx, affines, self.crop_size, antialias=True)

    # ------------------------------------------------------------------ training crops
    def training_crops(self, batched_inputs: List[Dict]) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The inputs' ``face_crops`` and ``face_crop_sem_seg`` (cut by the data loader) as one batch:
        ``(crops, labels, batch_idx)``, ``batch_idx`` the input of each crop."""
        missing = [i for i, x in enumerate(batched_inputs) if "face_crops" not in x]
        if missing:
            raise ValueError(
                f"training inputs {missing} have no 'face_crops': the parser's training crops are cut by the "
                "data loader (FaceParsingDatasetMapper / FaceInstanceDatasetMapper, or TrainingCropper.training_crops)")
        crops = torch.cat([x["face_crops"] for x in batched_inputs]).to(self.device, self.pixel_mean.dtype)
        labels = torch.cat([x["face_crop_sem_seg"] for x in batched_inputs]).to(self.device, torch.long)
        counts = torch.tensor([len(x["face_crops"]) for x in batched_inputs], device=self.device)
        return crops, labels, torch.arange(len(batched_inputs), device=self.device).repeat_interleave(counts)
