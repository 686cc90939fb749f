"""QANetFaceParser: FCOS face detector + QANet parser on face crops, one detectron2 meta-architecture."""
from __future__ import annotations

import logging
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.structures import Boxes, ImageList, Instances
from detectron2.utils import events

from ..data.crops import (
    boxes_to_affines,
    crop_images,
    crop_labels,
    crop_windows,
    expand_box_to_aspect,
    paste_probs,
    scale_affines,
    scale_boxes,
)
from ..data.datasets.face_video import DatasetNotFoundError, dataset_label_set
from .detector import build_fcos_detector
from .qanet import (
    QANetParser,
    face_scores,
    iou_loss,
    lovasz_softmax_loss,
    paint_faces,
    parsing_ce_loss,
    parsing_iou_targets,
    pixel_scores,
)

__all__ = ["QANetFaceParser", "flip_permutation_from_metadata"]

logger = logging.getLogger(__name__)

TRAIN_MODES = ("joint", "detector", "parser")
TEST_BOXES = ("detector", "gt")


def flip_permutation_from_metadata(dataset_name: Optional[str], num_classes: int) -> np.ndarray:
    """Class permutation that swaps the dataset's left/right pairs (``flip_pairs`` metadata).

    Identity, with a warning, when the dataset is unknown, has no ``flip_pairs``, or its metadata
    cannot be read (e.g. a dataset whose classes come from files that are not there).
    """
    perm = np.arange(num_classes)
    if not dataset_name:
        logger.warning("No dataset in DATASETS.TRAIN/TEST: flipped crops keep their labels (no left/right pairs).")
        return perm
    try:
        label_set = dataset_label_set(dataset_name)
    except DatasetNotFoundError as err:  # datasets whose classes are read from their own files
        logger.warning(f"Metadata of {dataset_name!r} unavailable, flipped crops keep their labels: {err}")
        return perm
    classes = None if label_set is None else label_set.classes
    pairs = label_set.flip_pairs if label_set is not None and label_set.flip_pairs else None
    if classes is not None and len(classes) != num_classes:
        raise ValueError(
            f"MODEL.QANET.NUM_CLASSES={num_classes} but dataset {dataset_name!r} has {len(classes)} classes "
            f"({classes}); set MODEL.QANET.NUM_CLASSES {len(classes)}."
        )
    if pairs is None:
        logger.warning(f"Dataset {dataset_name!r} has no flip_pairs metadata: flipped crops keep their labels.")
        return perm
    for a, b in pairs:
        if not (0 <= a < num_classes and 0 <= b < num_classes):
            raise ValueError(f"flip pair {(a, b)} of {dataset_name!r} is outside 0..{num_classes - 1}")
        perm[a], perm[b] = b, a
    return perm


@META_ARCH_REGISTRY.register()
class QANetFaceParser(nn.Module):
    """Detect faces with FCOS, parse each face crop with QANet, paste the parsings back.

    Inputs follow detectron2 (see :class:`qanet_d2.data.mapper.FaceParsingDatasetMapper`):
    ``image`` (``3 x H' x W'`` uint8 in ``INPUT.FORMAT``, possibly resized), ``instances``
    (``gt_boxes`` in the ``image`` frame), ``sem_seg`` (``H' x W'``, training), ``height``/``width``
    (original size, the frame of all outputs).

    Training returns a dict of losses (detector, parser or both, by ``MODEL.QANET.TRAIN_MODE``).
    Inference returns, per image, ``sem_seg`` (``C x H x W`` scores, original frame) and
    ``instances`` with ``pred_boxes``, ``scores`` (quality score), ``pred_classes``,
    ``box_scores``, ``iou_scores``, ``pixel_scores``, ``parsing_probs`` (``N x C x h x w`` crop
    probabilities) and ``crop_affines`` (``N x 2 x 3``, crop pixel -> original image pixel;
    :func:`qanet_d2.data.crops.paste_probs` pastes them), sorted by decreasing score.
    """

    @configurable
    def __init__(
        self,
        *,
        detector: Optional[nn.Module],
        parser: QANetParser,
        num_classes: int,
        input_format: str = "BGR",
        parser_pixel_mean: Sequence[float] = (123.675, 116.28, 103.53),
        parser_pixel_std: Sequence[float] = (58.395, 57.12, 57.375),
        crop_size: Tuple[int, int] = (512, 384),
        aspect_ratio: float = 0.75,
        box_expand: float = 1.25,
        train_mode: str = "joint",
        test_boxes: str = "detector",
        flip_permutation: Optional[Sequence[int]] = None,
        aug_enabled: bool = True,
        aug_scale_std: float = 0.3,
        aug_scale_range: Tuple[float, float] = (0.7, 1.3),
        aug_rotation_std: float = 40.0,
        aug_rotation_max: float = 80.0,
        aug_rotation_prob: float = 0.6,
        aug_flip_prob: float = 0.5,
        aug_shift_std: float = 0.0,
        max_faces_per_image_train: int = 16,
        detector_loss_weight: float = 1.0,
        detector_input_scale: float = 1.0,
        ce_weight: float = 1.0,
        lovasz_weight: float = 1.0,
        iou_weight: float = 1.0,
        ignore_value: int = 255,
        score_weights: Sequence[float] = (1.0, 0.5, 3.0),
        pixel_score_thresh: float = 0.2,
        face_score_thresh: float = 0.3,
        max_faces_per_image: int = 100,
        paste_chunk: int = 8,
        parser_batch: int = 32,
        channels_last: bool = False,
    ):
        super().__init__()
        if train_mode not in TRAIN_MODES:
            raise ValueError(f"MODEL.QANET.TRAIN_MODE must be one of {TRAIN_MODES}; got {train_mode!r}")
        if test_boxes not in TEST_BOXES:
            raise ValueError(f"MODEL.QANET.TEST_BOXES must be one of {TEST_BOXES}; got {test_boxes!r}")
        if detector is None and (train_mode != "parser" or test_boxes != "gt"):
            raise ValueError(
                "A model without detector (MODEL.FCOS.ENABLED False) needs MODEL.QANET.TRAIN_MODE 'parser' "
                "and MODEL.QANET.TEST_BOXES 'gt'."
            )
        if input_format not in ("BGR", "RGB"):
            raise ValueError(f"INPUT.FORMAT must be BGR or RGB; got {input_format!r}")
        self.detector = detector
        self.parser = parser
        self.num_classes = int(num_classes)
        self.input_format = input_format
        self.register_buffer("parser_pixel_mean", torch.tensor(parser_pixel_mean, dtype=torch.float32).view(-1, 1, 1), False)
        self.register_buffer("parser_pixel_std", torch.tensor(parser_pixel_std, dtype=torch.float32).view(-1, 1, 1), False)
        perm = np.arange(num_classes) if flip_permutation is None else np.asarray(flip_permutation)
        if sorted(perm.tolist()) != list(range(num_classes)):
            raise ValueError(f"flip_permutation must be a permutation of 0..{num_classes - 1}; got {perm.tolist()}")
        # Derived from dataset metadata, hence not saved in checkpoints.
        self.register_buffer("flip_permutation", torch.as_tensor(perm, dtype=torch.long), False)
        self.crop_size = (int(crop_size[0]), int(crop_size[1]))
        self.aspect_ratio = float(aspect_ratio)
        self.box_expand = float(box_expand)
        self.train_mode = train_mode
        self.test_boxes = test_boxes
        self.aug_enabled = aug_enabled
        self.aug_scale_std = aug_scale_std
        self.aug_scale_range = tuple(aug_scale_range)
        self.aug_rotation_std = aug_rotation_std
        self.aug_rotation_max = aug_rotation_max
        self.aug_rotation_prob = aug_rotation_prob
        self.aug_flip_prob = aug_flip_prob
        self.aug_shift_std = aug_shift_std
        self.max_faces_per_image_train = int(max_faces_per_image_train)
        self.detector_loss_weight = detector_loss_weight
        if detector_input_scale <= 0:
            raise ValueError(f"MODEL.FCOS.INPUT_SCALE must be positive; got {detector_input_scale}")
        self.detector_input_scale = float(detector_input_scale)
        self.ce_weight = ce_weight
        self.lovasz_weight = lovasz_weight
        self.iou_weight = iou_weight
        self.ignore_value = int(ignore_value)
        self.score_weights = tuple(float(w) for w in score_weights)
        self.pixel_score_thresh = pixel_score_thresh
        self.face_score_thresh = face_score_thresh
        self.max_faces_per_image = int(max_faces_per_image)
        self.paste_chunk = int(paste_chunk)
        self.parser_batch = int(parser_batch)

        # A frozen part keeps its weights (and BN statistics) as loaded.
        if train_mode == "parser" and detector is not None:
            detector.requires_grad_(False)
        if train_mode == "detector":
            parser.requires_grad_(False)
        if channels_last:
            # 4-d weights in NHWC order: convolutions then run (and return) channels-last tensors.
            self.to(memory_format=torch.channels_last)
        self.train(self.training)

    @classmethod
    def from_config(cls, cfg):
        q = cfg.MODEL.QANET
        dataset = (list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST) + [None])[0]
        return {
            "detector": build_fcos_detector(cfg) if cfg.MODEL.FCOS.ENABLED else None,
            "parser": QANetParser(cfg),
            "num_classes": q.NUM_CLASSES,
            "input_format": cfg.INPUT.FORMAT,
            "parser_pixel_mean": q.PIXEL_MEAN,
            "parser_pixel_std": q.PIXEL_STD,
            "crop_size": q.INPUT_SIZE,
            "aspect_ratio": q.ASPECT_RATIO,
            "box_expand": q.BOX_EXPAND,
            "train_mode": q.TRAIN_MODE,
            "test_boxes": q.TEST_BOXES,
            "flip_permutation": flip_permutation_from_metadata(dataset, q.NUM_CLASSES),
            "aug_enabled": q.AUG.ENABLED,
            "aug_scale_std": q.AUG.SCALE_STD,
            "aug_scale_range": q.AUG.SCALE_RANGE,
            "aug_rotation_std": q.AUG.ROTATION_STD,
            "aug_rotation_max": q.AUG.ROTATION_MAX,
            "aug_rotation_prob": q.AUG.ROTATION_PROB,
            "aug_flip_prob": q.AUG.FLIP_PROB,
            "aug_shift_std": q.AUG.SHIFT_STD,
            "max_faces_per_image_train": q.MAX_FACES_PER_IMAGE_TRAIN,
            "detector_loss_weight": cfg.MODEL.FCOS.LOSS_WEIGHT,
            "detector_input_scale": cfg.MODEL.FCOS.INPUT_SCALE,
            "ce_weight": q.PARSING.CE_WEIGHT,
            "lovasz_weight": q.PARSING.LOVASZ_WEIGHT,
            "iou_weight": q.IOU.LOSS_WEIGHT,
            "ignore_value": q.PARSING.IGNORE_VALUE,
            "score_weights": q.INFERENCE.SCORE_WEIGHTS,
            "pixel_score_thresh": q.INFERENCE.PIXEL_SCORE_THRESH,
            "face_score_thresh": q.INFERENCE.FACE_SCORE_THRESH,
            "max_faces_per_image": q.INFERENCE.MAX_FACES_PER_IMAGE,
            "paste_chunk": q.INFERENCE.PASTE_CHUNK,
            "parser_batch": q.INFERENCE.PARSER_BATCH,
            "channels_last": cfg.MODEL.CHANNELS_LAST,
        }

    @property
    def device(self) -> torch.device:
        return self.parser_pixel_mean.device

    def train(self, mode: bool = True):
        super().train(mode)
        if self.train_mode == "parser" and self.detector is not None:
            self.detector.eval()  # frozen: BN/GN statistics as loaded
        return self

    # ------------------------------------------------------------------ common
    def parser_images(self, batched_inputs: List[Dict]) -> Tuple[torch.Tensor, List[Tuple[int, int]]]:
        """Normalised RGB images for the parser, padded with 0 (= the mean colour) into one
        ``B x 3 x H x W`` tensor, and the unpadded ``(height, width)`` of each."""
        images = []
        for x in batched_inputs:
            image = x["image"].to(self.device, torch.float32)
            if self.input_format == "BGR":
                image = image.flip(0)
            images.append((image - self.parser_pixel_mean) / self.parser_pixel_std)
        batch = ImageList.from_tensors(images, 0, pad_value=0.0)
        return batch.tensor, [tuple(s) for s in batch.image_sizes]

    def crop_regions(self, boxes: torch.Tensor, scale=1.0) -> torch.Tensor:
        """Face boxes -> crop regions: 3:4 (``ASPECT_RATIO``), x ``BOX_EXPAND``, x ``scale``."""
        regions = expand_box_to_aspect(boxes, self.aspect_ratio, self.box_expand)
        return regions if isinstance(scale, (int, float)) and scale == 1.0 else scale_boxes(regions, scale)

    def detector_inputs(self, batched_inputs: List[Dict]) -> List[Dict]:
        """The inputs as the detector sees them: resized by ``MODEL.FCOS.INPUT_SCALE`` (bilinear,
        antialiased), with ``instances.gt_boxes`` scaled along, if present."""
        if self.detector_input_scale == 1.0:
            return batched_inputs
        out = []
        for x in batched_inputs:
            image = x["image"].to(self.device, torch.float32)
            h, w = image.shape[-2:]
            nh, nw = max(1, int(round(h * self.detector_input_scale))), max(1, int(round(w * self.detector_input_scale)))
            image = F.interpolate(image[None], size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)[0]
            y = {"image": image, "height": nh, "width": nw}
            if "instances" in x:
                inst = Instances((nh, nw))
                boxes = x["instances"].gt_boxes.to(self.device).clone()
                boxes.scale(nw / w, nh / h)
                inst.gt_boxes = boxes
                inst.gt_classes = x["instances"].gt_classes.to(self.device)
                y["instances"] = inst
            out.append(y)
        return out

    def swap_left_right(self, probs: torch.Tensor) -> torch.Tensor:
        """Mirror ``N x C x h x w`` crop probabilities back: flip the width and swap the
        left/right class channels."""
        return probs.flip(-1)[:, self.flip_permutation]

    # ------------------------------------------------------------------ training
    def forward(self, batched_inputs: List[Dict]):
        if not self.training:
            return self.inference(batched_inputs)
        losses = {}
        if self.train_mode in ("joint", "detector"):
            det_losses = self.detector(self.detector_inputs(batched_inputs))
            losses.update({k: v * self.detector_loss_weight for k, v in det_losses.items()})
        if self.train_mode in ("joint", "parser"):
            losses.update(self.parser_losses(batched_inputs))
        return losses

    def sample_crop_augmentation(self, n: int):
        """Per-crop (scale, rotation in degrees, flip, centre shift as a fraction of the box
        size), drawn as in the report (the shift is an optional addition)."""
        device = self.device
        if not self.aug_enabled:
            return (torch.ones(n, device=device), torch.zeros(n, device=device),
                    torch.zeros(n, dtype=torch.bool, device=device), torch.zeros(n, 2, device=device))
        lo, hi = self.aug_scale_range
        scale = (torch.randn(n, device=device) * self.aug_scale_std + 1.0).clamp(lo, hi)
        rotation = (torch.randn(n, device=device) * self.aug_rotation_std).clamp(-self.aug_rotation_max, self.aug_rotation_max)
        rotation = torch.where(torch.rand(n, device=device) < self.aug_rotation_prob, rotation, torch.zeros_like(rotation))
        flip = torch.rand(n, device=device) < self.aug_flip_prob
        shift = torch.zeros(n, 2, device=device)
        if self.aug_shift_std > 0:
            shift = (torch.randn(n, 2, device=device) * self.aug_shift_std).clamp(-2 * self.aug_shift_std, 2 * self.aug_shift_std)
        return scale, rotation, flip, shift

    def training_crops(self, batched_inputs: List[Dict]):
        """Augmented ground-truth face crops of a batch: ``(crops, labels, batch_idx)``,
        ``N x 3 x h x w`` normalised RGB, ``N x h x w`` labels (left/right swapped on flipped crops)."""
        images, sizes = self.parser_images(batched_inputs)
        label_maps, boxes, batch_idx = [], [], []
        for i, x in enumerate(batched_inputs):
            if "sem_seg" in x:
                label_maps.append(x["sem_seg"].to(self.device))
            else:  # no labels: no parser loss from this image
                label_maps.append(torch.full(sizes[i], self.ignore_value, dtype=torch.long, device=self.device))
                continue
            if "instances" not in x or len(x["instances"]) == 0:
                continue
            b = x["instances"].gt_boxes.tensor.to(self.device, torch.float32)
            if len(b) > self.max_faces_per_image_train:  # largest faces first
                area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
                b = b[area.argsort(descending=True)[: self.max_faces_per_image_train]]
            boxes.append(b)
            batch_idx.append(torch.full((len(b),), i, dtype=torch.long, device=self.device))
        labels = ImageList.from_tensors(label_maps, 0, pad_value=self.ignore_value).tensor
        h, w = self.crop_size
        if not boxes:
            return images.new_zeros((0, 3, h, w)), labels.new_zeros((0, h, w)), labels.new_zeros((0,))
        boxes, batch_idx = torch.cat(boxes), torch.cat(batch_idx)
        scale, rotation, flip, shift = self.sample_crop_augmentation(len(boxes))
        size = boxes[:, 2:] - boxes[:, :2]
        boxes = boxes + (shift * size).repeat(1, 2)
        affines, _ = boxes_to_affines(self.crop_regions(boxes, scale), self.crop_size, rotation=rotation, flip=flip)
        crops = crop_images(images, batch_idx, affines, self.crop_size)
        crop_lab = crop_labels(labels, batch_idx, affines, self.crop_size, self.ignore_value)
        swap = flip[:, None, None] & (crop_lab != self.ignore_value)
        crop_lab = torch.where(swap, self.flip_permutation[crop_lab.clamp(max=self.num_classes - 1)], crop_lab)
        return crops, crop_lab, batch_idx

    def parser_losses(self, batched_inputs: List[Dict]) -> Dict[str, torch.Tensor]:
        crops, labels, _ = self.training_crops(batched_inputs)
        if len(crops) == 0:
            zero = sum(p.sum() for p in self.parser.parameters() if p.requires_grad) * 0.0
            return {"loss_parsing_ce": zero, "loss_parsing_lovasz": zero, "loss_iou": zero}
        logits, pred_iou = self.parser(crops)
        target_iou = parsing_iou_targets(logits.detach(), labels, self.ignore_value)
        if events._CURRENT_STORAGE_STACK:
            storage = events.get_event_storage()
            storage.put_scalar("qanet/crops_per_batch", float(len(crops)))
            storage.put_scalar("qanet/iou_target", float(target_iou.mean()))
        return {
            "loss_parsing_ce": self.ce_weight * parsing_ce_loss(logits, labels, self.ignore_value),
            "loss_parsing_lovasz": self.lovasz_weight * lovasz_softmax_loss(logits, labels, self.ignore_value),
            "loss_iou": self.iou_weight * iou_loss(pred_iou, target_iou),
        }

    # ------------------------------------------------------------------ inference
    def face_boxes(self, batched_inputs: List[Dict], image_sizes) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        """Per image, ``(boxes, box_scores)`` in the ``image`` frame: the detector's, or the
        inputs' ``instances.gt_boxes`` (score 1) with ``TEST_BOXES`` "gt"."""
        out = []
        if self.test_boxes == "gt":
            for x in batched_inputs:
                if "instances" not in x:
                    raise ValueError("MODEL.QANET.TEST_BOXES 'gt' needs 'instances' (gt_boxes) in the test inputs")
                b = x["instances"].gt_boxes.tensor.to(self.device, torch.float32)
                out.append((b, torch.ones(len(b), device=self.device)))
        else:
            det = self.detector
            images = det.preprocess_image(self.detector_inputs(batched_inputs))
            features = det.backbone(images.tensor)
            features = [features[f] for f in det.head_in_features]
            results = det.forward_inference(images, features, det.head(features))
            for r, size in zip(results, image_sizes):
                b = r.pred_boxes.to(self.device).clone()
                b.scale(size[1] / r.image_size[1], size[0] / r.image_size[0])  # back to the input frame
                b.clip(size)
                out.append((b.tensor, r.scores.to(self.device)))
        capped = []
        for (b, s), size in zip(out, image_sizes):
            keep = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
            b, s = b[keep], s[keep]
            if len(b) > self.max_faces_per_image:
                top = s.argsort(descending=True)[: self.max_faces_per_image]
                b, s = b[top], s[top]
            capped.append((b, s))
        return capped

    def parse_crops(self, crops: torch.Tensor, flips: Sequence[bool], parsers: Sequence[nn.Module]):
        """Parser probabilities and IoUs of ``crops`` averaged over ``parsers`` and the given
        flips (flipped views mirrored back with left/right channels swapped)."""
        probs, ious = 0.0, 0.0
        count = 0
        for parser in parsers:
            for flip in flips:
                logits, iou = parser(crops.flip(-1) if flip else crops)
                p = logits.softmax(dim=1)
                probs = probs + (self.swap_left_right(p) if flip else p)
                ious = ious + iou
                count += 1
        return probs / count, ious / count

    @torch.no_grad()
    def inference(
        self,
        batched_inputs: List[Dict],
        views: Sequence[Tuple[float, bool]] = ((1.0, False),),
        parsers: Optional[Sequence[nn.Module]] = None,
    ) -> List[Dict]:
        """Detect (or take given boxes), parse and paste back.

        Args:
            views: ``(box_scale, flip)`` pairs; views of one box scale share a crop and are
                averaged in the crop frame, different scales after pasting back.
            parsers: parsers whose probabilities are averaged (default: this model's).
        """
        parsers = [self.parser] if parsers is None else list(parsers)
        scales: Dict[float, List[bool]] = {}
        for s, f in views:
            scales.setdefault(float(s), [])
            if bool(f) not in scales[float(s)]:
                scales[float(s)].append(bool(f))
        images, image_sizes = self.parser_images(batched_inputs)
        dets = self.face_boxes(batched_inputs, image_sizes)
        boxes = torch.cat([b for b, _ in dets]) if dets else images.new_zeros((0, 4))
        box_scores = torch.cat([s for _, s in dets]) if dets else images.new_zeros((0,))
        batch_idx = torch.cat([torch.full((len(b),), i, dtype=torch.long, device=self.device) for i, (b, _) in enumerate(dets)])
        n = len(boxes)

        view_affines, view_probs = [], []
        iou_sum = boxes.new_zeros(n)
        pix_sum = boxes.new_zeros(n)
        for scale, flips in scales.items():
            affines, _ = boxes_to_affines(self.crop_regions(boxes, scale), self.crop_size)
            probs = images.new_zeros((n, self.num_classes) + self.crop_size)
            for start in range(0, n, self.parser_batch):
                sl = slice(start, start + self.parser_batch)
                crops = crop_images(images, batch_idx[sl], affines[sl], self.crop_size)
                p, iou = self.parse_crops(crops, flips, parsers)
                probs[sl] = p
                iou_sum[sl] += iou.clamp(0.0, 1.0)
                pix_sum[sl] += pixel_scores(p, self.pixel_score_thresh)
            view_affines.append(affines)
            view_probs.append(probs)
        iou_scores = iou_sum / len(scales)
        pix_scores = pix_sum / len(scales)
        scores = face_scores(box_scores, iou_scores, pix_scores, self.score_weights)
        base = list(scales).index(1.0) if 1.0 in scales else 0

        results = []
        for i, x in enumerate(batched_inputs):
            in_h, in_w = image_sizes[i]
            height, width = int(x.get("height", in_h)), int(x.get("width", in_w))
            sx, sy = width / in_w, height / in_h
            idx = (batch_idx == i).nonzero(as_tuple=True)[0]
            affines = [scale_affines(a[idx], sx, sy) for a in view_affines]
            sem_seg = self.paste_and_paint(
                [p[idx] for p in view_probs], affines, scores[idx], (height, width)
            )
            order = scores[idx].argsort(descending=True)
            sel = idx[order]
            inst = Instances((height, width))
            pred = boxes[sel].clone()
            pred[:, 0::2] *= sx
            pred[:, 1::2] *= sy
            inst.pred_boxes = Boxes(pred)
            inst.pred_boxes.clip((height, width))
            inst.scores = scores[sel]
            inst.pred_classes = torch.zeros(len(sel), dtype=torch.long, device=self.device)
            inst.box_scores = box_scores[sel]
            inst.iou_scores = iou_scores[sel]
            inst.pixel_scores = pix_scores[sel]
            inst.parsing_probs = view_probs[base][sel]
            inst.crop_affines = affines[base][order]
            results.append({"sem_seg": sem_seg, "instances": inst})
        return results

    def paste_and_paint(self, view_probs, view_affines, scores, image_size) -> torch.Tensor:
        """Paste the faces of one image (all views averaged in image coordinates) and paint them
        in ascending score order into a ``C x H x W`` map that starts as background (one-hot)."""
        height, width = image_size
        sem_seg = torch.zeros((self.num_classes, height, width), device=self.device)
        sem_seg[0] = 1.0
        n = len(scores)
        if n == 0:
            return sem_seg
        windows = None
        for a in view_affines:
            w = crop_windows(a, self.crop_size, (height, width))
            windows = w if windows is None else torch.cat([torch.minimum(windows[:, :2], w[:, :2]), torch.maximum(windows[:, 2:], w[:, 2:])], 1)
        painted = scores >= self.face_score_thresh
        order = [j for j in scores.argsort().tolist() if painted[j]]
        for start in range(0, len(order), self.paste_chunk):
            chunk = order[start : start + self.paste_chunk]
            total, count = None, None
            for probs, affines in zip(view_probs, view_affines):
                pasted = paste_probs(probs[chunk], affines[chunk], windows[chunk], chunk=self.paste_chunk)
                if total is None:
                    total = [p for p, _ in pasted]
                    count = [m.to(p.dtype) for p, m in pasted]
                else:
                    total = [t + p for t, (p, _) in zip(total, pasted)]
                    count = [c + m.to(p.dtype) for c, (p, m) in zip(count, pasted)]
            faces = [(t / c.clamp(min=1.0), c > 0) for t, c in zip(total, count)]
            paint_faces(sem_seg, faces, windows[chunk], scores[chunk], self.face_score_thresh)
        return sem_seg
