"""YuNet: a small face detector pretrained on WIDER FACE (libfacedetection.train, Apache-2.0).

The network is written here from the authors' config and code; it loads the released mmdet
state dicts (``models/yunet/yunet_{n,s}.pth``) strictly and matches the authors' ONNX export
(``tests/test_detectors.py``). Two variants:

* ``n``: model1 16->64, one shared DP unit per head level (77,890 parameters);
* ``s``: model1 16->32, model2 32->64, no shared head unit (54,608 parameters).

Input: the image as BGR float 0-255 (no mean/std), padded with zeros to a multiple of 32.
Outputs per level (strides 8, 16, 32), in the authors' ONNX layout ``N x cells x k`` with the
cells in row-major order of the level's grid: ``cls`` and ``obj`` (sigmoid), ``bbox`` (4) and
``kps`` (10) raw. :func:`decode_yunet` turns them into boxes, landmarks and scores.
"""
from __future__ import annotations

import os
from typing import Dict, List, Sequence, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from detectron2.config import configurable
from detectron2.structures import Boxes, Instances

from ...weights_io import load_state_strictly
from .build import register_face_detector

__all__ = [
    "YuNet", "YuNetFaceDetector", "DPUnit", "YUNET_STRIDES", "YUNET_VARIANTS", "decode_yunet", "grid_priors",
    "load_yunet_state_dict",
]

YUNET_STRIDES = (8, 16, 32)
# variant -> (channels (in, out) of model1 ... model5, shared head units per level)
YUNET_VARIANTS: Dict[str, Tuple[Tuple[Tuple[int, int], ...], int]] = {
    "n": (((16, 64), (64, 64), (64, 64), (64, 64), (64, 64)), 1),
    "s": (((16, 32), (32, 64), (64, 64), (64, 64), (64, 64)), 0),
}


class DPUnit(nn.Module):
    """1x1 conv ``c_in -> c_out`` (bias), 3x3 depthwise conv (bias), then BN + ReLU if ``bn_relu``."""

    def __init__(self, c_in: int, c_out: int, bn_relu: bool = True):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 1, bias=True)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, groups=c_out, bias=True)
        self.bn_relu = bn_relu
        if bn_relu:
            self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x):
        x = self.conv2(self.conv1(x))
        return F.relu(self.bn(x)) if self.bn_relu else x


class _Stem(nn.Module):  # model0
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, stride=2, padding=1, bias=True)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = DPUnit(16, 16)

    def forward(self, x):
        return self.conv2(F.relu(self.bn1(self.conv1(x))))


class _Block(nn.Module):  # model1 ... model5
    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv1 = DPUnit(c_in, c_in)
        self.conv2 = DPUnit(c_in, c_out)

    def forward(self, x):
        return self.conv2(self.conv1(x))


class _Backbone(nn.Module):
    def __init__(self, channels: Sequence[Tuple[int, int]]):
        super().__init__()
        self.model0 = _Stem()
        for i, (c_in, c_out) in enumerate(channels, start=1):
            self.add_module(f"model{i}", _Block(c_in, c_out))

    def forward(self, x) -> List[torch.Tensor]:
        x = F.max_pool2d(self.model0(x), 2)
        x = F.max_pool2d(self.model2(self.model1(x)), 2)
        c3 = self.model3(x)
        c4 = self.model4(F.max_pool2d(c3, 2))
        c5 = self.model5(F.max_pool2d(c4, 2))
        return [c3, c4, c5]


class _Neck(nn.Module):
    def __init__(self, channels: int = 64, levels: int = 3):
        super().__init__()
        self.lateral_convs = nn.ModuleList(DPUnit(channels, channels) for _ in range(levels))

    def forward(self, feats: List[torch.Tensor]) -> List[torch.Tensor]:
        feats = list(feats)
        for i in range(len(feats) - 1, 0, -1):  # coarsest level first
            feats[i] = self.lateral_convs[i](feats[i])
            feats[i - 1] = feats[i - 1] + F.interpolate(feats[i], scale_factor=2.0, mode="nearest")
        feats[0] = self.lateral_convs[0](feats[0])
        return feats


class _Head(nn.Module):
    def __init__(self, channels: int = 64, levels: int = 3, shared_units: int = 1):
        super().__init__()
        self.multi_level_share_convs = nn.ModuleList(
            nn.Sequential(*[DPUnit(channels, channels) for _ in range(shared_units)]) for _ in range(levels)
        ) if shared_units else None
        for name, k in (("cls", 1), ("bbox", 4), ("obj", 1), ("kps", 10)):
            setattr(self, f"multi_level_{name}", nn.ModuleList(DPUnit(channels, k, bn_relu=False) for _ in range(levels)))

    def forward(self, feats: List[torch.Tensor]) -> Dict[str, List[torch.Tensor]]:
        out: Dict[str, List[torch.Tensor]] = {"cls": [], "obj": [], "bbox": [], "kps": []}
        for i, f in enumerate(feats):
            if self.multi_level_share_convs is not None:
                f = self.multi_level_share_convs[i](f)
            for name in out:
                y = getattr(self, f"multi_level_{name}")[i](f)
                y = y.flatten(2).transpose(1, 2)  # N x C x H x W -> N x (H*W) x C, row-major cells
                out[name].append(y.sigmoid() if name in ("cls", "obj") else y)
        return out


class YuNet(nn.Module):
    """YuNet network (variant ``n`` or ``s``): ``forward(x)`` with ``x`` an ``N x 3 x H x W``
    BGR float image (0-255, ``H`` and ``W`` multiples of 32) returns ``{"cls", "obj", "bbox",
    "kps"}``, each a list over strides 8, 16, 32 of ``N x (H/s * W/s) x k`` tensors."""

    def __init__(self, variant: str = "n"):
        super().__init__()
        if variant not in YUNET_VARIANTS:
            raise ValueError(f"YuNet variant must be one of {sorted(YUNET_VARIANTS)}; got {variant!r}")
        channels, shared = YUNET_VARIANTS[variant]
        self.variant = variant
        self.backbone = _Backbone(channels)
        self.neck = _Neck()
        self.bbox_head = _Head(shared_units=shared)

    def forward(self, x: torch.Tensor) -> Dict[str, List[torch.Tensor]]:
        if x.shape[-1] % 32 or x.shape[-2] % 32:
            raise ValueError(f"YuNet input sides must be multiples of 32; got {tuple(x.shape[-2:])}")
        return self.bbox_head(self.neck(self.backbone(x)))


def load_yunet_state_dict(model: YuNet, state_dict: Dict[str, torch.Tensor], source: str = "state dict") -> None:
    """Load the released weights strictly (:func:`~qanet_d2.weights_io.load_state_strictly`): a
    missing, unexpected or wrongly shaped key raises RuntimeError naming the key and ``source``."""
    load_state_strictly(model, state_dict, source, target=f"YuNet-{model.variant}")


def grid_priors(height: int, width: int, strides: Sequence[int] = YUNET_STRIDES, device=None) -> List[torch.Tensor]:
    """Per stride ``s`` the ``(H/s * W/s) x 2`` priors ``(x*s, y*s)`` of the padded input's cells,
    row-major (mmdet's ``MlvlPointGenerator`` with offset 0)."""
    priors = []
    for s in strides:
        ys, xs = torch.meshgrid(
            torch.arange(height // s, device=device, dtype=torch.float32),
            torch.arange(width // s, device=device, dtype=torch.float32),
            indexing="ij",
        )
        priors.append(torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=1) * s)
    return priors


def decode_yunet(outputs: Dict[str, List[torch.Tensor]], height: int, width: int, strides: Sequence[int] = YUNET_STRIDES):
    """Raw outputs of an ``N x 3 x height x width`` input -> ``(boxes N x M x 4 XYXY_ABS,
    landmarks N x M x 5 x 2, scores N x M)`` over all cells of all levels (M cells).

    Box centre = prior + ``bbox[:2] * s``, size = ``exp(bbox[2:]) * s``; landmark k = prior +
    ``kps[2k:2k+2] * s``; score = ``cls * obj`` (both already sigmoided)."""
    priors = grid_priors(height, width, strides, device=outputs["bbox"][0].device)
    boxes, kps, scores = [], [], []
    for i, s in enumerate(strides):
        p = priors[i][None]  # 1 x M x 2
        b = outputs["bbox"][i].float()
        centre = p + b[..., :2] * s
        size = b[..., 2:].exp() * s
        boxes.append(torch.cat([centre - size / 2, centre + size / 2], dim=-1))
        k = outputs["kps"][i].float().unflatten(-1, (5, 2))
        kps.append(p[:, :, None, :] + k * s)
        scores.append((outputs["cls"][i] * outputs["obj"][i]).float()[..., 0])
    return torch.cat(boxes, 1), torch.cat(kps, 1), torch.cat(scores, 1)


# ---------------------------------------------------------------------------- the detector part
def resolve_weights_path(path: str) -> str:
    """``path`` as given if it exists, else relative to the repository root."""
    if not path or os.path.isabs(path) or os.path.exists(path):
        return path
    from ...model_zoo import REPO_ROOT

    candidate = os.path.join(REPO_ROOT, path)
    return candidate if os.path.exists(candidate) else path


@register_face_detector("YuNet", pretrained=True)
class YuNetFaceDetector(nn.Module):
    """YuNet as a face detector of ``QANetFaceParser`` (the protocol of
    :mod:`qanet_d2.modeling.detectors.build`; ``MODEL.YUNET``): pretrained, frozen, eval-only.

    Each image is resized (antialiased) by each of ``scales``, its longer side at most
    ``max_size``, converted to BGR float 0-255, padded with zeros to multiples of 32;
    boxes and landmarks of all sizes are mapped to the ``height`` x ``width`` frame, merged by NMS
    (``nms_thresh``), kept from ``score_thresh`` (at most ``max_detections``).
    """

    trainable = False
    has_landmarks = True  # pred_keypoints: eyes, nose tip, mouth corners
    # At inference it runs on the input's original_image (the frame before the model's resize)
    # where that is larger than the model input, so that a small face in a large photo keeps
    # its pixels; its outputs are still in the height x width frame it is given.
    sees_original_image = True

    @configurable
    def __init__(
        self,
        *,
        variant: str = "n",
        weights: str = "",
        input_format: str = "BGR",
        score_thresh: float = 0.5,
        nms_thresh: float = 0.45,
        topk_candidates: int = 1000,
        max_detections: int = 100,
        max_size: int = 1920,
        scales: Sequence[float] = (1.0,),
    ):
        super().__init__()
        if input_format not in ("BGR", "RGB"):
            raise ValueError(f"INPUT.FORMAT must be BGR or RGB for YuNet; got {input_format!r}")
        self.net = YuNet(variant)
        self.weights_source = ""
        if weights:
            path = resolve_weights_path(weights)
            if not os.path.isfile(path):
                raise FileNotFoundError(f"MODEL.YUNET.WEIGHTS: {weights}: no such file (YuNet's released weights, models/yunet/)")
            state = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(state, dict) and "state_dict" in state:
                state = state["state_dict"]
            load_yunet_state_dict(self.net, state, source=path)
            self.weights_source = path
        self.requires_grad_(False)
        self.input_format = input_format
        self.score_thresh = float(score_thresh)
        self.nms_thresh = float(nms_thresh)
        self.topk_candidates = int(topk_candidates)
        self.max_detections = int(max_detections)
        self.max_size = int(max_size)
        self.scales = tuple(float(f) for f in scales)
        if not self.scales or min(self.scales) <= 0:
            raise ValueError(f"MODEL.YUNET.SCALES_TEST must be positive factors; got {scales}")
        super().train(False)

    @classmethod
    def from_config(cls, cfg):
        y = cfg.MODEL.YUNET
        return {
            "variant": y.VARIANT,
            "weights": y.WEIGHTS,
            "input_format": cfg.INPUT.FORMAT,
            "score_thresh": y.SCORE_THRESH_TEST,
            "nms_thresh": y.NMS_THRESH_TEST,
            "topk_candidates": y.TOPK_CANDIDATES_TEST,
            "max_detections": cfg.TEST.DETECTIONS_PER_IMAGE,
            "max_size": y.MAX_SIZE_TEST,
            "scales": y.SCALES_TEST,
        }

    def train(self, mode: bool = True):
        return super().train(False)  # frozen: batch norms always in eval mode

    def sizes(self, height: int, width: int) -> List[Tuple[int, int]]:
        """The ``(h, w)`` sizes the detector runs at for an image of ``height`` x ``width``: the
        image times each of ``scales``, the longer side capped at ``max_size``, without repeats."""
        long_side = max(height, width)
        out: List[Tuple[int, int]] = []
        for f in self.scales:
            s = f if not self.max_size else min(f, self.max_size / long_side)
            size = (max(1, int(round(height * s))), max(1, int(round(width * s))))
            if size not in out:
                out.append(size)
        return out

    @torch.no_grad()
    def detect_image(self, image: torch.Tensor, out_size: Tuple[int, int]) -> Instances:
        """Detections of one ``3 x H x W`` image (``INPUT.FORMAT``) in the ``out_size`` frame."""
        from torchvision.ops import batched_nms

        device = next(self.net.parameters()).device
        x = image.to(device, torch.float32)
        if self.input_format == "RGB":
            x = x.flip(0)
        h, w = x.shape[-2:]
        out_h, out_w = out_size
        boxes, kps, scores = [], [], []
        for sh, sw in self.sizes(h, w):
            xi = x if (sh, sw) == (h, w) else F.interpolate(x[None], size=(sh, sw), mode="bilinear", align_corners=False, antialias=True)[0]
            ph, pw = -(-sh // 32) * 32, -(-sw // 32) * 32
            xi = F.pad(xi, (0, pw - sw, 0, ph - sh))[None]
            b, k, s = decode_yunet(self.net(xi), ph, pw)
            b, k, s = b[0], k[0], s[0]
            keep = s >= self.score_thresh
            b, k, s = b[keep], k[keep], s[keep]
            if len(s) > self.topk_candidates:
                top = s.topk(self.topk_candidates).indices
                b, k, s = b[top], k[top], s[top]
            fx, fy = out_w / sw, out_h / sh
            b = b * b.new_tensor([fx, fy, fx, fy])
            k = k * k.new_tensor([fx, fy])
            boxes.append(b)
            kps.append(k)
            scores.append(s)
        boxes, kps, scores = torch.cat(boxes), torch.cat(kps), torch.cat(scores)
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, out_w)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, out_h)
        keep = batched_nms(boxes, scores, torch.zeros_like(scores, dtype=torch.long), self.nms_thresh)[: self.max_detections]
        kp = torch.cat([kps[keep], scores[keep][:, None, None].expand(-1, 5, 1)], dim=2)
        return Instances((out_h, out_w), pred_boxes=Boxes(boxes[keep]), scores=scores[keep], pred_keypoints=kp)

    def forward(self, batched_inputs: List[Dict]) -> List[Dict]:
        if self.training:
            raise RuntimeError("YuNet is a frozen pretrained detector: train the parser (MODEL.QANET.TRAIN_MODE 'parser')")
        results = []
        for x in batched_inputs:
            h, w = x["image"].shape[-2:]
            size = (int(x.get("height", h)), int(x.get("width", w)))
            results.append({"instances": self.detect_image(x["image"], size)})
        return results
