"""QANetFaceParser: a face detector (FCOS or YuNet) + QANet parser on face crops, one detectron2 meta-architecture."""
from __future__ import annotations

import logging
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.structures import Boxes, ImageList, Instances

from .detectors import HeadBoxAdapter, build_face_detector
from .face_cropper import FaceCropper
from .postprocessing import FacePostProcessor, StageTimes, profiler_range
from .qanet import QANetParser

__all__ = ["QANetFaceParser", "group_views", "TRAIN_MODES", "TEST_BOXES"]

logger = logging.getLogger(__name__)

TRAIN_MODES = ("joint", "detector", "parser")
TEST_BOXES = ("detector", "gt")


def group_views(views: Sequence[Tuple[float, bool]]) -> List[Tuple[float, List[bool]]]:
    """``(box_scale, flip)`` views grouped by box scale, in order of first appearance:
    ``[(scale, [flips...]), ...]``. Views of one scale share a crop."""
    scales: Dict[float, List[bool]] = {}
    for s, f in views:
        flips = scales.setdefault(float(s), [])
        if bool(f) not in flips:
            flips.append(bool(f))
    if not scales:
        raise ValueError("at least one (box_scale, flip) view is needed")
    return list(scales.items())


def _boxes_to_size(faces: Instances, size: Sequence[int]) -> Instances:
    """``faces`` (``pred_boxes``, optional ``scores`` and ``pred_keypoints``) with boxes and
    landmarks scaled to ``size`` ``(height, width)``."""
    (h, w), (nh, nw) = faces.image_size, (int(size[0]), int(size[1]))
    if (h, w) == (nh, nw):
        return faces
    boxes = Boxes(faces.pred_boxes.tensor.clone())
    boxes.scale(nw / w, nh / h)
    out = Instances((nh, nw), pred_boxes=boxes)
    if faces.has("scores"):
        out.scores = faces.scores
    if faces.has("pred_keypoints"):
        kp = faces.pred_keypoints.clone()
        kp[..., 0] *= nw / w
        kp[..., 1] *= nh / h
        out.pred_keypoints = kp
    return out


@META_ARCH_REGISTRY.register()
class QANetFaceParser(nn.Module):
    """Detect faces, parse each face crop with QANet, paste the parsings back.

    Parts: ``detector`` (``MODEL.QANET.DETECTOR.NAME``: FCOS or YuNet), ``box_adapter`` (face box
    and landmarks -> head box), ``cropper``, ``parser`` (with its losses) and ``postprocessor``.

    Inputs follow detectron2 (:class:`qanet_d2.data.mapper.FaceParsingDatasetMapper`): ``image``
    (``3 x H' x W'`` in ``INPUT.FORMAT``, possibly resized), ``instances`` (``gt_boxes``),
    ``height``/``width`` (the frame of all outputs) and, at inference, ``original_image`` (the
    unresized frame, where present the source of the parser's crops). Training returns the losses
    of ``MODEL.QANET.TRAIN_MODE``.
    """

    @configurable
    def __init__(
        self,
        *,
        detector: Optional[nn.Module],
        cropper: FaceCropper,
        parser: QANetParser,
        postprocessor: FacePostProcessor,
        box_adapter: Optional[HeadBoxAdapter] = None,
        train_mode: str = "joint",
        test_boxes: str = "detector",
        detector_loss_weight: float = 1.0,
        detector_input_scale: float = 1.0,
        detector_input_scale_test: float = 0.0,
        max_parsed_faces: int = 100,
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
                "A model without detector (MODEL.QANET.DETECTOR.NAME '') needs MODEL.QANET.TRAIN_MODE 'parser' "
                "and MODEL.QANET.TEST_BOXES 'gt'."
            )
        if detector_input_scale <= 0:
            raise ValueError(f"MODEL.FCOS.INPUT_SCALE must be positive; got {detector_input_scale}")
        if detector_input_scale_test < 0:
            raise ValueError(f"MODEL.FCOS.INPUT_SCALE_TEST must be positive (or 0: INPUT_SCALE); got {detector_input_scale_test}")
        if detector is not None and not getattr(detector, "trainable", True) and train_mode != "parser":
            raise ValueError(
                f"The face detector {type(detector).__name__} is pretrained and frozen: train the parser alone "
                f"(MODEL.QANET.TRAIN_MODE 'parser'); got {train_mode!r}"
            )
        if box_adapter is not None and not getattr(detector, "has_landmarks", False):
            raise ValueError(
                "MODEL.QANET.DETECTOR.BOX_ADAPTER needs a detector with landmarks (YuNet); "
                f"{type(detector).__name__ if detector is not None else 'no detector'} gives none"
            )
        self.detector = detector
        self.box_adapter = box_adapter
        self.cropper = cropper
        self.parser = parser
        self.postprocessor = postprocessor
        self.train_mode = train_mode
        self.test_boxes = test_boxes
        self.detector_loss_weight = float(detector_loss_weight)
        self.detector_input_scale = float(detector_input_scale)
        self.detector_input_scale_test = float(detector_input_scale_test or detector_input_scale)
        self.max_parsed_faces = int(max_parsed_faces)
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
        return {
            "detector": build_face_detector(cfg),
            "box_adapter": HeadBoxAdapter(q.DETECTOR.BOX_ADAPTER) if len(q.DETECTOR.BOX_ADAPTER) else None,
            "cropper": FaceCropper(cfg),
            "parser": QANetParser(cfg),
            "postprocessor": FacePostProcessor(cfg),
            "train_mode": q.TRAIN_MODE,
            "test_boxes": q.TEST_BOXES,
            "detector_loss_weight": cfg.MODEL.FCOS.LOSS_WEIGHT,
            # FCOS sees a resized copy of the input; other detectors size their input themselves
            "detector_input_scale": cfg.MODEL.FCOS.INPUT_SCALE if q.DETECTOR.NAME == "FCOS" else 1.0,
            "detector_input_scale_test": cfg.MODEL.FCOS.INPUT_SCALE_TEST if q.DETECTOR.NAME == "FCOS" else 0.0,
            "max_parsed_faces": q.INFERENCE.MAX_PARSED_FACES,
            "parser_batch": q.INFERENCE.PARSER_BATCH,
            "channels_last": cfg.MODEL.CHANNELS_LAST,
        }

    @property
    def device(self) -> torch.device:
        return self.cropper.device

    @property
    def num_classes(self) -> int:
        return self.cropper.num_classes

    @property
    def label_set(self):
        """The :class:`~qanet_d2.structures.label_sets.LabelSet` the parser predicts (or None)."""
        return self.parser.label_set

    def train(self, mode: bool = True):
        super().train(mode)
        if self.train_mode == "parser" and self.detector is not None:
            self.detector.eval()  # frozen: BN/GN statistics as loaded
        return self

    # ------------------------------------------------------------------ training
    def forward(self, batched_inputs: List[Dict]):
        if not self.training:
            return self.inference(batched_inputs)
        losses = {}
        if self.train_mode in ("joint", "detector"):
            det_losses = self.detector(self.detector_inputs(batched_inputs))
            losses.update({k: v * self.detector_loss_weight for k, v in det_losses.items()})
        if self.train_mode in ("joint", "parser"):
            crops, labels, batch_idx = self.cropper.training_crops(batched_inputs)
            if len(crops):
                logits, pred_iou = self.parser(crops)
            else:
                logits, pred_iou = crops.new_zeros((0, self.num_classes) + crops.shape[-2:]), crops.new_zeros(0)
            label_sets = [batched_inputs[i].get("label_set") for i in batch_idx.tolist()]  # None: the model's
            losses.update(self.parser.losses(logits, pred_iou, labels, label_sets))
        return losses

    def detector_inputs(self, batched_inputs: List[Dict], output_frame: bool = False) -> List[Dict]:
        """The inputs resized by ``MODEL.FCOS.INPUT_SCALE`` (``INPUT_SCALE_TEST`` in eval mode;
        antialiased bilinear), ``gt_boxes`` along. ``output_frame``: ``height``/``width`` of the
        model input, so that the detector returns its boxes in that frame."""
        out = []
        scale = self.detector_input_scale if self.training else self.detector_input_scale_test
        for x in batched_inputs:
            h, w = x["image"].shape[-2:]
            if scale == 1.0:
                image, nh, nw = x["image"], h, w
            else:
                image = x["image"].to(self.device, torch.float32)
                nh, nw = max(1, int(round(h * scale))), max(1, int(round(w * scale)))
                image = F.interpolate(image[None], size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)[0]
            y = {"image": image, "height": h if output_frame else nh, "width": w if output_frame else nw}
            if "instances" in x and not output_frame:
                inst = Instances((nh, nw))
                boxes = x["instances"].gt_boxes.to(self.device).clone()
                boxes.scale(nw / w, nh / h)
                inst.gt_boxes = boxes
                inst.gt_classes = x["instances"].gt_classes.to(self.device)
                y["instances"] = inst
            out.append(y)
        return out

    # ------------------------------------------------------------------ inference stages
    @torch.no_grad()
    def detect(self, batched_inputs: List[Dict]) -> List[Instances]:
        """Per input, Instances in the frame of its ``image`` with ``pred_boxes`` and ``scores`` (and
        ``N x 5 x 3`` ``pred_keypoints`` where the detector gives them): the detector's (head boxes
        with the box adapter), or ``gt_boxes`` with score 1 under ``MODEL.QANET.TEST_BOXES`` "gt"."""
        if self.test_boxes == "gt":
            faces = []
            for x in batched_inputs:
                if "instances" not in x:
                    raise ValueError("MODEL.QANET.TEST_BOXES 'gt' needs 'instances' (gt_boxes) in the test inputs")
                boxes = x["instances"].gt_boxes.tensor.to(self.device, torch.float32)
                faces.append(Instances(tuple(x["image"].shape[-2:]), pred_boxes=Boxes(boxes), scores=torch.ones(len(boxes), device=self.device)))
            return faces
        if self.detector.training:
            raise RuntimeError("detect() runs the detector's inference: call model.eval() first")
        inputs = self.detector_inputs(batched_inputs, output_frame=True)
        if getattr(self.detector, "sees_original_image", False):
            # a detector that sizes its own input (YuNet) sees the larger of the photo at its own
            # resolution and the model input (an enlarged small photo keeps its enlargement)
            for y, x in zip(inputs, batched_inputs):
                if "original_image" in x and x["original_image"][0].numel() > y["image"][0].numel():
                    y["image"] = x["original_image"]
        results = self.detector(inputs)
        faces = []
        for r in results:
            det = r["instances"]
            f = Instances(det.image_size, pred_boxes=det.pred_boxes, scores=det.scores)
            if det.has("pred_keypoints"):
                f.pred_keypoints = det.pred_keypoints
            if self.box_adapter is not None:
                f.pred_boxes = Boxes(self.box_adapter(det.pred_boxes.tensor, det.pred_keypoints))
            faces.append(f)
        return faces

    def crop_faces(self, images: ImageList, boxes: torch.Tensor, batch_idx: torch.Tensor, scale: float = 1.0) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(crops, affines)`` of ``N x 4`` face boxes (model-input frame) of the images
        ``batch_idx`` of the normalised batch ``images`` at box scale ``scale``."""
        affines = self.cropper.affines(boxes, scale)
        return self.cropper.crop_images(images.tensor, batch_idx, affines), affines

    def parse_crops(self, crops: torch.Tensor, flips: Sequence[bool], parsers: Sequence[nn.Module]) -> Tuple[torch.Tensor, torch.Tensor]:
        """Probabilities (``N x C x h x w``) and IoUs (``N``) of ``crops``, averaged over ``parsers``
        and ``flips`` (flipped views mirrored back)."""
        probs, ious = 0.0, 0.0
        count = 0
        for parser in parsers:
            for flip in flips:
                logits, iou = parser(crops.flip(-1) if flip else crops)
                p = logits.softmax(dim=1)
                probs = probs + (parser.flip_back(p) if flip else p)
                ious = ious + iou
                count += 1
        return probs / count, ious / count

    @torch.no_grad()
    def parse_faces(
        self,
        images: ImageList,
        faces: List[Instances],
        views: Sequence[Tuple[float, bool]] = ((1.0, False),),
        parsers: Optional[Sequence[nn.Module]] = None,
        times: Optional[StageTimes] = None,
    ) -> List[Instances]:
        """Crop and parse the faces of the normalised batch ``images``, ``PARSER_BATCH`` crops per call.

        ``faces``: per image, ``pred_boxes`` and optional ``scores`` (default 1); empty boxes are
        dropped, the ``MAX_PARSED_FACES`` best kept. ``views``: ``(box_scale, flip)`` pairs
        (:func:`group_views`). ``parsers``: averaged (default: this model's). Returns per image
        Instances with ``pred_boxes``, ``box_scores``, ``iou_scores`` (clamped, averaged over views),
        ``pred_classes`` (0), ``parsing_probs`` (``N x V x C x h x w``, V box scales), ``crop_affines``
        (``N x V x 2 x 3``) and any ``pred_keypoints``.
        """
        parsers = [self.parser] if parsers is None else list(parsers)
        stage = times if times is not None else profiler_range
        scales = group_views(views)
        kept = []
        for f in faces:
            b = f.pred_boxes.tensor.to(self.device, torch.float32)
            s = f.scores.to(self.device, torch.float32) if f.has("scores") else torch.ones(len(b), device=self.device)
            g = Instances(f.image_size, boxes=b, box_scores=s)
            if f.has("pred_keypoints"):
                g.pred_keypoints = f.pred_keypoints.to(self.device, torch.float32)
            g = g[(b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])]
            if len(g) > self.max_parsed_faces:
                g = g[g.box_scores.argsort(descending=True)[: self.max_parsed_faces]]
            kept.append(g)
        counts = [len(g) for g in kept]
        boxes = torch.cat([g.boxes for g in kept])
        batch_idx = torch.cat([torch.full((c,), i, dtype=torch.long, device=self.device) for i, c in enumerate(counts)])
        n, (h, w) = len(boxes), self.cropper.crop_size
        probs = images.tensor.new_zeros((n, len(scales), self.num_classes, h, w))
        affines = images.tensor.new_zeros((n, len(scales), 2, 3))
        iou_sum = boxes.new_zeros(n)
        for v, (scale, flips) in enumerate(scales):
            for start in range(0, n, self.parser_batch):
                sl = slice(start, start + self.parser_batch)
                with stage("crop"):
                    crops, affines[sl, v] = self.crop_faces(images, boxes[sl], batch_idx[sl], scale)
                with stage("parser"):
                    probs[sl, v], iou = self.parse_crops(crops, flips, parsers)
                    iou_sum[sl] += iou.clamp(0.0, 1.0)
        iou_scores = iou_sum / len(scales)
        results = []
        for size, g, parts in zip(images.image_sizes, kept, torch.arange(n, device=self.device).split(counts)):
            inst = Instances(tuple(size), pred_boxes=Boxes(g.boxes), box_scores=g.box_scores)
            inst.iou_scores = iou_scores[parts]
            inst.pred_classes = torch.zeros(len(g), dtype=torch.long, device=self.device)
            inst.parsing_probs = probs[parts]
            inst.crop_affines = affines[parts]
            if g.has("pred_keypoints"):
                inst.pred_keypoints = g.pred_keypoints
            results.append(inst)
        return results

    @torch.no_grad()
    def postprocess(
        self, faces: List[Instances], batched_inputs: List[Dict], class_scores: bool = False, times: Optional[StageTimes] = None
    ) -> List[Dict]:
        """Per image the :class:`FacePostProcessor` outputs in its ``height`` x ``width`` frame."""
        results = []
        for f, x in zip(faces, batched_inputs):
            in_h, in_w = f.image_size
            size = (int(x.get("height", in_h)), int(x.get("width", in_w)))
            results.append(self.postprocessor(f, size, class_scores=class_scores, times=times))
        return results

    @torch.no_grad()
    def inference(
        self,
        batched_inputs: List[Dict],
        face_boxes: Optional[List[Instances]] = None,
        do_postprocess: bool = True,
        *,
        views: Sequence[Tuple[float, bool]] = ((1.0, False),),
        parsers: Optional[Sequence[nn.Module]] = None,
        class_scores: bool = False,
        times: Optional[StageTimes] = None,
    ) -> List[Dict]:
        """Detect (or take ``face_boxes``: per image ``pred_boxes`` in the ``image`` frame and
        optional ``scores``), parse and paste back: per image the dict of
        :meth:`FacePostProcessor.__call__`.

        ``do_postprocess`` False: ``[{"instances": ...}]`` of :meth:`parse_faces` in the frame the
        faces were cropped from. ``views``/``parsers``: as :meth:`parse_faces`. ``class_scores``: also
        ``sem_seg``. ``times``: a :class:`StageTimes` of the stages.
        """
        assert not self.training, "inference needs model.eval()"
        # crops from the original_image where given (as the training crops); the detector sees the resized image
        stage = times if times is not None else profiler_range
        with stage("crop"):
            images = self.cropper.preprocess(batched_inputs, original=True)
        if face_boxes is None:
            with stage("detector"):
                face_boxes = self.detect(batched_inputs)
        elif len(face_boxes) != len(batched_inputs):
            raise ValueError(f"face_boxes: got {len(face_boxes)} Instances for {len(batched_inputs)} images")
        face_boxes = [_boxes_to_size(f, size) for f, size in zip(face_boxes, images.image_sizes)]
        faces = self.parse_faces(images, face_boxes, views, parsers, times)
        if not do_postprocess:
            return [{"instances": f} for f in faces]
        return self.postprocess(faces, batched_inputs, class_scores, times)
