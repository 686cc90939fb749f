#!/usr/bin/env python
"""Export the QANet parser (face crop in -> class probabilities and predicted IoU out).

    python tools/export.py --config-file configs/quickstart/qanet_fcos_synth.yaml \\
        --output exported/ --opts MODEL.WEIGHTS output/quickstart/model_final.pth

writes into ``--output``:

* ``parser.ts``   TorchScript (``torch.jit.trace``), loadable with ``torch.jit.load`` alone;
* ``parser.onnx`` ONNX (opset 17, dynamic batch), when the ``onnx`` package is installed;
* ``parser.json`` the pre/post-processing contract (crop size, box expansion, normalisation,
  class names, flip pairs, scoring) that a runtime without detectron2 needs;

and checks both against the eager PyTorch parser (maximum absolute difference of probabilities
and IoU, printed; the tool fails above ``--tolerance``, 1e-4 by default). The exported module
is the model's own :class:`~qanet_d2.modeling.qanet.QANetParser` (backbone, neck, parsing
and IoU branches) followed by a softmax and the IoU clamp of the model's scoring; see
``docs/export.md`` for the full contract and :func:`crop_faces_numpy` /
:func:`paint_faces_numpy` below for a reference pre/post-processing in NumPy + OpenCV.

Contract in short: input ``crops`` float32 ``N x 3 x H x W`` (``MODEL.QANET.INPUT_SIZE``),
RGB, ``(pixel - PIXEL_MEAN) / PIXEL_STD`` (``--raw-input``: 0..255 RGB, normalised inside);
outputs ``probs`` ``N x C x H x W`` (softmax over C) and ``iou`` ``N`` in [0, 1].
"""
import argparse
import json
import logging
import os
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import qanet_d2  # noqa: E402,F401  (compat shims, registrations)
from qanet_d2 import add_qanet_config  # noqa: E402

logger = logging.getLogger("qanet_d2.export")

__all__ = [
    "ParserForExport",
    "build_parser_for_export",
    "export_contract",
    "export_torchscript",
    "export_onnx",
    "parity",
    "crop_faces_numpy",
    "paint_faces_numpy",
]


class ParserForExport(nn.Module):
    """The model's parser with the model's inference post-processing of its outputs.

    ``forward(crops)``: ``crops`` ``N x 3 x H x W`` float32 RGB, normalised by the parser's mean
    and std (or 0..255 when ``raw_input``) -> ``(probs, iou)``: ``N x C x H x W`` softmax
    probabilities and ``N`` predicted IoU clamped to [0, 1] (as the model's face score uses it).
    """

    def __init__(self, parser: nn.Module, pixel_mean: Sequence[float], pixel_std: Sequence[float], raw_input: bool = False):
        super().__init__()
        self.parser = parser
        self.raw_input = bool(raw_input)
        self.register_buffer("pixel_mean", torch.tensor(list(pixel_mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("pixel_std", torch.tensor(list(pixel_std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, crops: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        if self.raw_input:
            crops = (crops - self.pixel_mean) / self.pixel_std
        logits, iou = self.parser(crops)
        return logits.softmax(dim=1), iou.clamp(0.0, 1.0)


def build_parser_for_export(cfg, raw_input: bool = False) -> Tuple[ParserForExport, nn.Module]:
    """Build the model of ``cfg`` (weights from ``MODEL.WEIGHTS`` and the part checkpoints), return the export module on
    CPU in eval mode and the full model."""
    from detectron2.modeling import build_model
    from qanet_d2.engine.checkpoint import load_model_weights

    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg).eval()
    load_model_weights(cfg, model)  # warns when no checkpoint gives the parser
    q = cfg.MODEL.QANET
    module = ParserForExport(model.parser, q.PIXEL_MEAN, q.PIXEL_STD, raw_input=raw_input).eval()
    return module, model


def export_contract(cfg, model, raw_input: bool = False) -> Dict:
    """The pre/post-processing contract of the exported parser as a JSON-able dict."""
    from qanet_d2.predictor import metadata_field

    from detectron2.data import MetadataCatalog

    q = cfg.MODEL.QANET
    names = list(cfg.DATASETS.TEST) + list(cfg.DATASETS.TRAIN)
    meta = MetadataCatalog.get(names[0]) if names else None
    classes = metadata_field(meta, "stuff_classes") if meta is not None else None
    if classes is None or len(classes) != q.NUM_CLASSES:
        classes = [f"class_{i}" for i in range(q.NUM_CLASSES)]
    perm = model.cropper.flip_permutation.tolist()
    flip_pairs = sorted({tuple(sorted((a, b))) for a, b in enumerate(perm) if a != b})
    return {
        "format_version": 1,
        "input": {
            "name": "crops",
            "shape": ["N", 3, int(q.INPUT_SIZE[0]), int(q.INPUT_SIZE[1])],
            "dtype": "float32",
            "channel_order": "RGB",
            "normalisation": "none (0..255 RGB)" if raw_input else "(pixel - pixel_mean) / pixel_std",
            "pixel_mean": [float(v) for v in q.PIXEL_MEAN],
            "pixel_std": [float(v) for v in q.PIXEL_STD],
            "outside_image_value": "pixel_mean (0 after normalisation)",
        },
        "crop": {
            "size_hw": [int(q.INPUT_SIZE[0]), int(q.INPUT_SIZE[1])],
            "aspect_ratio_w_over_h": float(q.ASPECT_RATIO),
            "box_expand": float(q.BOX_EXPAND),
            "interpolation": "bilinear",
            "pixel_convention": "pixel (i, j) covers [j, j+1) x [i, i+1); XYXY_ABS boxes",
            "detector_input": {"min_size_test": int(cfg.INPUT.MIN_SIZE_TEST), "max_size_test": int(cfg.INPUT.MAX_SIZE_TEST)},
        },
        "outputs": {
            "probs": {"shape": ["N", int(q.NUM_CLASSES), int(q.INPUT_SIZE[0]), int(q.INPUT_SIZE[1])], "meaning": "softmax class probabilities per crop pixel"},
            "iou": {"shape": ["N"], "meaning": "predicted mean IoU of the crop's parsing, clamped to [0, 1]"},
        },
        "classes": list(classes),
        "flip_pairs": [list(p) for p in flip_pairs],
        "scoring": {
            "pixel_score_thresh": float(q.INFERENCE.PIXEL_SCORE_THRESH),
            "score_weights_box_iou_pixel": [float(w) for w in q.INFERENCE.SCORE_WEIGHTS],
            "face_score_thresh": float(q.INFERENCE.FACE_SCORE_THRESH),
            # the score that orders and thresholds painting: "box" (the detector's) or "quality"
            "paint_order": str(q.INFERENCE.PAINT_ORDER),
            # pixels of the pixel score: "image" (pasted probabilities inside the face box) or "crop"
            "pixel_score_region": str(q.INFERENCE.PIXEL_SCORE_REGION),
        },
    }


def export_torchscript(module: nn.Module, example: torch.Tensor, path: str) -> str:
    """Trace ``module`` on ``example`` and save it (batch size stays free)."""
    with torch.no_grad():
        traced = torch.jit.trace(module, example, check_trace=False)
    traced.save(path)
    return path


def export_onnx(module: nn.Module, example: torch.Tensor, path: str, opset: int = 17) -> str:
    """Export with the TorchScript-based ONNX exporter (``dynamo=False``), dynamic batch."""
    kwargs = dict(
        input_names=["crops"],
        output_names=["probs", "iou"],
        dynamic_axes={"crops": {0: "N"}, "probs": {0: "N"}, "iou": {0: "N"}},
        opset_version=int(opset),
    )
    with torch.no_grad():
        try:
            torch.onnx.export(module, (example,), path, dynamo=False, **kwargs)
        except TypeError:  # torch without the dynamo argument
            torch.onnx.export(module, (example,), path, **kwargs)
    import onnx

    onnx.checker.check_model(onnx.load(path))
    return path


def parity(module: nn.Module, inputs: Sequence[torch.Tensor], torchscript: Optional[str] = None, onnx_path: Optional[str] = None) -> Dict[str, float]:
    """Maximum absolute differences of probabilities and IoU between the eager module and each
    exported file, over ``inputs`` (batches of crops, possibly of different batch sizes)."""
    diffs: Dict[str, float] = {}
    runners = {}
    if torchscript:
        loaded = torch.jit.load(torchscript)
        runners["torchscript"] = lambda x: [t.numpy() for t in loaded(x)]
    if onnx_path:
        import onnxruntime as ort

        session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
        runners["onnx"] = lambda x: session.run(["probs", "iou"], {"crops": x.numpy()})
    with torch.no_grad():
        for x in inputs:
            ref = [t.numpy() for t in module(x)]
            for name, run in runners.items():
                out = run(x)
                for key, r, o in zip(("probs", "iou"), ref, out):
                    if r.shape != o.shape:
                        raise AssertionError(f"{name} {key}: shape {o.shape} != eager {r.shape}")
                    d = float(np.abs(r - o).max()) if r.size else 0.0
                    diffs[f"{name}_{key}"] = max(diffs.get(f"{name}_{key}", 0.0), d)
    return diffs


# ---------------------------------------------------------------------------- reference pre/post-processing
def _crop_to_image_affines(boxes: np.ndarray, contract: Dict) -> np.ndarray:
    """``N x 2 x 3`` crop -> image affines (continuous pixel coordinates) of face boxes:
    centre kept, shorter side grown to the crop's aspect ratio, both sides x box_expand."""
    h, w = contract["crop"]["size_hw"]
    aspect, expand = contract["crop"]["aspect_ratio_w_over_h"], contract["crop"]["box_expand"]
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    bw = np.maximum(boxes[:, 2] - boxes[:, 0], 1e-3)
    bh = np.maximum(boxes[:, 3] - boxes[:, 1], 1e-3)
    bw, bh = np.maximum(bw, bh * aspect) * expand, np.maximum(bh, bw / aspect) * expand
    sx, sy = bw / w, bh / h
    affines = np.zeros((len(boxes), 2, 3))
    affines[:, 0, 0], affines[:, 0, 2] = sx, cx - sx * w / 2
    affines[:, 1, 1], affines[:, 1, 2] = sy, cy - sy * h / 2
    return affines


def _to_opencv_convention(affine: np.ndarray) -> np.ndarray:
    """A continuous-coordinate affine (pixel centres at +0.5) as OpenCV's (centres at integers)."""
    a = np.array(affine, dtype=np.float64)
    a[:, 2] = a[:, :2] @ np.array([0.5, 0.5]) + a[:, 2] - 0.5
    return a


def crop_faces_numpy(image_rgb: np.ndarray, boxes: np.ndarray, contract: Dict) -> Tuple[np.ndarray, np.ndarray]:
    """Parser input for face boxes of an RGB image, with NumPy and OpenCV only.

    Args:
        image_rgb: ``H x W x 3`` uint8 RGB (the frame the boxes refer to).
        boxes: ``N x 4`` XYXY_ABS face boxes.
        contract: the exported ``parser.json``.

    Returns:
        ``(crops, affines)``: ``N x 3 x h x w`` float32 normalised crops and their ``N x 2 x 3``
        crop -> image affines (continuous pixel coordinates, for :func:`paint_faces_numpy`).
    """
    import cv2

    h, w = contract["crop"]["size_hw"]
    mean = np.asarray(contract["input"]["pixel_mean"], np.float32)
    std = np.asarray(contract["input"]["pixel_std"], np.float32)
    affines = _crop_to_image_affines(boxes, contract)
    image = image_rgb.astype(np.float32)
    crops = np.zeros((len(affines), 3, h, w), np.float32)
    for i, a in enumerate(affines):
        crop = cv2.warpAffine(
            image, _to_opencv_convention(a), (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_CONSTANT, borderValue=tuple(float(v) for v in mean),
        )
        crops[i] = ((crop - mean) / std).transpose(2, 0, 1)
    if contract["input"]["normalisation"].startswith("none"):
        crops = crops * std[:, None, None] + mean[:, None, None]
    return crops, affines


def paint_faces_numpy(probs: np.ndarray, affines: np.ndarray, scores: np.ndarray, image_size: Sequence[int], contract: Dict) -> np.ndarray:
    """Image label map from parser outputs, with NumPy and OpenCV only.

    Faces with ``score >= face_score_thresh`` are pasted (bilinear) in ascending score order;
    each writes its foreground (argmax != 0 where the max probability >= 1 / C) inside its crop.
    ``scores`` are the paint scores of ``contract["scoring"]["paint_order"]``: the detector's
    box scores ("box") or the face scores of :func:`face_scores_numpy` ("quality").

    Returns:
        ``H x W`` uint8 label map.
    """
    import cv2

    height, width = int(image_size[0]), int(image_size[1])
    labels = np.zeros((height, width), np.uint8)
    thresh = contract["scoring"]["face_score_thresh"]
    num_classes = probs.shape[1]
    for i in np.argsort(np.asarray(scores), kind="stable"):
        if scores[i] < thresh:
            continue
        m = _to_opencv_convention(affines[i])
        pasted = np.stack([
            cv2.warpAffine(probs[i, c], m, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            for c in range(num_classes)
        ])
        ones = np.ones(probs.shape[2:], np.float32)
        inside = cv2.warpAffine(ones, m, (width, height), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0) > 0
        top, lab = pasted.max(axis=0), pasted.argmax(axis=0)
        fg = inside & (lab != 0) & (top >= 1.0 / num_classes)
        labels[fg] = lab[fg]
    return labels


def face_scores_numpy(probs: np.ndarray, iou: np.ndarray, box_scores: np.ndarray, contract: Dict) -> np.ndarray:
    """Face quality scores from parser outputs and detector scores (the model's formula), with
    the pixel score over the crop pixels (``pixel_score_region`` "crop"; the model's "image"
    region, the pasted probabilities inside the face box, differs for faces at the image border)."""
    s = contract["scoring"]
    top = probs.max(axis=1).reshape(len(probs), -1)
    keep = top >= s["pixel_score_thresh"]
    pixel = (top * keep).sum(1) / np.maximum(keep.sum(1), 1)
    a, b, c = s["score_weights_box_iou_pixel"]
    eps = 1e-6
    logs = a * np.log(np.clip(box_scores, eps, 1)) + b * np.log(np.clip(iou, eps, 1)) + c * np.log(np.clip(pixel, eps, 1))
    return np.exp(logs / (a + b + c))


# ---------------------------------------------------------------------------- command line
def get_parser():
    p = argparse.ArgumentParser(description="Export the QANet parser to TorchScript and ONNX")
    p.add_argument("--config-file", required=True, metavar="FILE")
    p.add_argument("--output", required=True, help="output folder")
    p.add_argument("--format", nargs="+", default=["torchscript", "onnx"], choices=["torchscript", "onnx"])
    p.add_argument("--raw-input", action="store_true", help="the exported module normalises 0..255 RGB crops itself")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--batch", type=int, default=2, help="batch size of the example used for tracing")
    p.add_argument("--tolerance", type=float, default=1e-4, help="maximum absolute difference to eager mode")
    p.add_argument("--opts", default=[], nargs=argparse.REMAINDER, help="config KEY VALUE pairs")
    return p


def setup_cfg(args):
    from detectron2.config import get_cfg

    cfg = get_cfg()
    add_qanet_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.freeze()
    return cfg


def main(argv: Optional[List[str]] = None) -> Dict[str, float]:
    from detectron2.utils.logger import setup_logger

    args = get_parser().parse_args(argv)
    setup_logger(name="qanet_d2")
    cfg = setup_cfg(args)
    os.makedirs(args.output, exist_ok=True)
    module, model = build_parser_for_export(cfg, raw_input=args.raw_input)
    h, w = cfg.MODEL.QANET.INPUT_SIZE
    gen = torch.Generator().manual_seed(0)

    def example(n):
        x = torch.randn(n, 3, h, w, generator=gen)
        return x * torch.tensor(cfg.MODEL.QANET.PIXEL_STD).view(1, 3, 1, 1) + torch.tensor(cfg.MODEL.QANET.PIXEL_MEAN).view(1, 3, 1, 1) if args.raw_input else x

    trace_input = example(max(1, args.batch))
    paths = {}
    if "torchscript" in args.format:
        start = time.perf_counter()
        paths["torchscript"] = export_torchscript(module, trace_input, os.path.join(args.output, "parser.ts"))
        logger.info(f"TorchScript: {paths['torchscript']} ({time.perf_counter() - start:.1f}s)")
    if "onnx" in args.format:
        try:
            import onnx  # noqa: F401
        except ImportError:
            logger.warning("the onnx package is not installed: skipping the ONNX export (pip install onnx onnxruntime)")
        else:
            start = time.perf_counter()
            paths["onnx"] = export_onnx(module, trace_input, os.path.join(args.output, "parser.onnx"), args.opset)
            logger.info(f"ONNX: {paths['onnx']} ({time.perf_counter() - start:.1f}s)")
    contract = export_contract(cfg, model, raw_input=args.raw_input)
    with open(os.path.join(args.output, "parser.json"), "w") as f:
        json.dump(contract, f, indent=2)

    onnx_path = paths.get("onnx")
    if onnx_path:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            logger.warning("onnxruntime is not installed: the ONNX file is not checked against eager mode")
            onnx_path = None
    diffs = parity(module, [example(1), example(3)], paths.get("torchscript"), onnx_path)
    for key, value in diffs.items():
        print(f"parity {key}: max |exported - eager| = {value:.3g}")
    worst = max(diffs.values(), default=0.0)
    if worst > args.tolerance:
        raise SystemExit(f"exported parser differs from eager mode by {worst:.3g} > {args.tolerance}")
    return diffs


if __name__ == "__main__":
    main()
