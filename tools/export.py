#!/usr/bin/env python
"""Export the face-parsing pipeline to ONNX: the face detector (FCOS or YuNet) and the QANet parser.

    python tools/export.py --config-file configs/quickstart/qanet_fcos_synth.yaml \\
        --output exported/ MODEL.WEIGHTS output/quickstart/model_final.pth

writes ``detector.onnx``, ``parser.onnx`` and ``metadata.json`` (what the runtime needs besides
the graphs) into ``--output``; their inputs and outputs are described in ``docs/export.md``. Each
graph is made by ``torch.onnx.export(..., dynamo=True)`` (needs ``onnxscript``) or, where that is
missing or fails, by TorchScript tracing (``--exporter`` chooses), and checked against eager
PyTorch in ONNX Runtime (fails above ``--tolerance``). ``--check-image`` then compares the torch
predictor and the ONNX runtime (:mod:`qanet_d2.runtime`) on photos.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import sys
import time
import warnings
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from qanet_d2 import get_qanet_cfg  # noqa: E402  (also the compat shims, registrations)
from qanet_d2.data.mixed_label_sets import fill_model_label_set  # noqa: E402

logger = logging.getLogger("qanet_d2.export")

EXPORTERS = ("auto", "dynamo", "torchscript")
METADATA_FILE = "metadata.json"
METADATA_VERSION = 3


class DetectorForExport(nn.Module):
    """FCOS backbone + head: the preprocessed batch -> the per-level class logits, then box
    distances, then centerness logits (``3 x L`` tensors)."""

    def __init__(self, fcos: nn.Module):
        super().__init__()
        self.backbone = fcos.backbone
        self.head = fcos.head
        self.in_features = list(fcos.head_in_features)

    def forward(self, images: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        features = self.backbone(images)
        logits, deltas, centerness = self.head([features[f] for f in self.in_features])
        return tuple(logits) + tuple(deltas) + tuple(centerness)


class YuNetForExport(nn.Module):
    """YuNet's network: the BGR float batch (0-255) -> ``cls``, ``obj``, ``bbox``, ``kps`` per
    stride 8, 16, 32 (the authors' ONNX layout)."""

    def __init__(self, yunet_detector: nn.Module):
        super().__init__()
        self.net = yunet_detector.net

    def forward(self, images: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        out = self.net(images)
        return tuple(t for kind in ("cls", "obj", "bbox", "kps") for t in out[kind])


class ParserForExport(nn.Module):
    """The parser and the softmax of its logits: normalised crops -> ``(probs, raw iou)``."""

    def __init__(self, parser: nn.Module):
        super().__init__()
        self.parser = parser

    def forward(self, crops: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        logits, iou = self.parser(crops)
        return logits.softmax(dim=1), iou


def build_model_for_export(cfg) -> nn.Module:
    """The eval-mode model of ``cfg`` on CPU with its weights loaded."""
    from detectron2.modeling import build_model
    from qanet_d2.engine.checkpoint import load_model_weights

    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.CHANNELS_LAST = False  # the graph is the same; tracing contiguous weights keeps it plain
    model = build_model(cfg).eval()
    load_model_weights(cfg, model)
    return model


def export_metadata(cfg, model) -> Dict:
    """The config fields and model constants the runtime reads, as a JSON-able dict."""
    from detectron2.data import MetadataCatalog
    from qanet_d2.modeling.postprocessing import SCORE_EPS
    from qanet_d2.modeling.test_time_augmentation import tta_views_from_config
    from qanet_d2.predictor import metadata_field

    if len(cfg.TEST.ENSEMBLE.WEIGHTS):
        raise ValueError("TEST.ENSEMBLE.WEIGHTS: the export holds one parser; export without an ensemble")
    q, pp = cfg.MODEL.QANET, model.postprocessor
    names = list(cfg.DATASETS.TEST) + list(cfg.DATASETS.TRAIN)
    meta = MetadataCatalog.get(names[0]) if names else None
    ls = model.label_set  # the model's classes; a model without a label set: the dataset's
    classes = list(ls.classes) if ls is not None else metadata_field(meta, "stuff_classes") if meta is not None else None
    colors = [list(c) for c in ls.palette] if ls is not None else metadata_field(meta, "stuff_colors") if meta is not None else None
    if classes is None or len(classes) != q.NUM_CLASSES:
        classes = [f"class_{i}" for i in range(q.NUM_CLASSES)]
    if colors is None or len(colors) != q.NUM_CLASSES:
        rng = np.random.RandomState(0)
        colors = [[0, 0, 0]] + rng.randint(0, 256, (q.NUM_CLASSES - 1, 3)).tolist()
    fcos = model.detector
    detector = None
    if fcos is not None and type(fcos).__name__ == "YuNetFaceDetector":
        detector = {
            "type": "YuNet",
            "file": "detector.onnx",
            "strides": [8, 16, 32],
            "scales": list(fcos.scales),
            "max_size": int(fcos.max_size),
            "score_thresh": float(fcos.score_thresh),
            "topk_candidates": int(fcos.topk_candidates),
            "nms_thresh": float(fcos.nms_thresh),
            "max_detections_per_image": int(fcos.max_detections),
            "outputs": [f"{kind}_{s}" for kind in ("cls", "obj", "bbox", "kps") for s in (8, 16, 32)],
        }
    elif fcos is not None:
        strides = [int(s) for s in fcos.anchor_generator.strides]
        detector = {
            "type": "FCOS",
            "file": "detector.onnx",
            "input_scale": float(model.detector_input_scale_test),  # MODEL.FCOS.INPUT_SCALE_TEST (or INPUT_SCALE)
            "pixel_mean": [float(v) for v in fcos.pixel_mean.flatten()],
            "pixel_std": [float(v) for v in fcos.pixel_std.flatten()],
            "size_divisibility": int(fcos.backbone.size_divisibility),
            "levels": list(fcos.head_in_features),
            "strides": strides,
            "anchor_offset": float(fcos.anchor_generator.offset),
            "num_classes": int(fcos.num_classes),
            "score_thresh": float(fcos.test_score_thresh),
            "topk_candidates": int(fcos.test_topk_candidates),
            "nms_thresh": float(fcos.test_nms_thresh),
            "max_detections_per_image": int(fcos.max_detections_per_image),
            "box_normalized_by_stride": bool(fcos.box2box_transform.normalize_by_size),
            "outputs": {kind: [f"{kind}_{f}" for f in fcos.head_in_features] for kind in ("cls", "box", "ctr")},
        }
    return {
        "format_version": METADATA_VERSION,
        "input": {
            "format": cfg.INPUT.FORMAT,
            "min_size_test": int(cfg.INPUT.MIN_SIZE_TEST),
            "max_size_test": int(cfg.INPUT.MAX_SIZE_TEST),
        },
        "detector": detector,
        # face box + landmarks -> head box (MODEL.QANET.DETECTOR.BOX_ADAPTER, 4 x 11), or None
        "box_adapter": model.box_adapter.weights.tolist() if model.box_adapter is not None else None,
        "parser": {
            "file": "parser.onnx",
            "crop_size": [int(s) for s in model.cropper.crop_size],
            "aspect_ratio": float(model.cropper.aspect_ratio),
            "box_expand": float(model.cropper.box_expand),
            "pixel_mean": [float(v) for v in model.cropper.pixel_mean.flatten()],
            "pixel_std": [float(v) for v in model.cropper.pixel_std.flatten()],
            "max_parsed_faces": int(model.max_parsed_faces),
            "batch": int(model.parser_batch),
            "views": [[float(s), bool(f)] for s, f in tta_views_from_config(cfg)],
            "flip_permutation": [int(v) for v in model.parser.flip_permutation.tolist()],
        },
        "postprocessing": {
            "num_classes": int(pp.num_classes),
            "score_weights": list(pp.score_weights),
            "score_eps": float(SCORE_EPS),
            "pixel_score_thresh": pp.pixel_score_thresh,
            "pixel_score_region": pp.pixel_score_region,
            "quality_score_thresh": pp.quality_score_thresh,
            "box_score_thresh": pp.box_score_thresh,
            "paint_order": pp.paint_order,
        },
        "classes": list(classes),
        "colors": [[int(c) for c in col] for col in colors],
    }


def export_onnx(module: nn.Module, example: torch.Tensor, path: str, input_name: str, output_names: Sequence[str],
                dynamic_dims: Dict[int, str], exporter: str = "auto", opset: int = 18) -> str:
    """Export ``module`` (one tensor input) to ``path``; returns the exporter that made the file,
    "dynamo" or "torchscript" ("auto": dynamo, falling back to tracing).

    ``dynamic_dims``: input dimension -> name, e.g. ``{0: "N"}``; the outputs' dimensions follow.
    """
    import onnx

    if exporter not in EXPORTERS:
        raise ValueError(f"--exporter must be one of {EXPORTERS}; got {exporter!r}")

    def run(**kwargs):
        with torch.no_grad(), warnings.catch_warnings():  # the exporters' deprecation and tracer notes
            for category in (DeprecationWarning, FutureWarning, torch.jit.TracerWarning):
                warnings.simplefilter("ignore", category)
            torch.onnx.export(module, (example,), path, input_names=[input_name], output_names=list(output_names),
                              opset_version=int(opset), **kwargs)
        onnx.checker.check_model(onnx.load(path))

    tried = []
    if exporter != "torchscript" and importlib.util.find_spec("onnxscript") is None:
        if exporter == "dynamo":
            raise RuntimeError("the dynamo ONNX exporter needs the onnxscript package (pip install onnxscript)")
        tried.append("dynamo: onnxscript is not installed")
    elif exporter != "torchscript":
        dims = {axis: torch.export.Dim(name, min=1) for axis, name in dynamic_dims.items()}
        try:
            run(dynamo=True, dynamic_shapes=(dims,), verbose=False, optimize=True)
            return "dynamo"
        except Exception as e:  # noqa: BLE001  (any failure of the preferred path falls back)
            if exporter == "dynamo":
                raise
            tried.append(f"dynamo: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    run(dynamo=False, dynamic_axes={input_name: dict(dynamic_dims)})
    if tried:
        logger.info(f"{os.path.basename(path)}: TorchScript-tracing exporter ({'; '.join(tried)})")
    return "torchscript"


def onnx_parity(module: nn.Module, path: str, inputs: Sequence[torch.Tensor], output_names: Sequence[str]) -> float:
    """Maximum absolute difference between the eager ``module`` and the ONNX file over ``inputs``."""
    import onnxruntime as ort

    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    worst = 0.0
    with torch.no_grad():
        for x in inputs:
            ref = module(x)
            out = session.run(list(output_names), {input_name: x.numpy()})
            for name, r, o in zip(output_names, ref, out):
                r = r.numpy()
                if r.shape != o.shape:
                    raise AssertionError(f"{os.path.basename(path)} {name}: shape {o.shape} != eager {r.shape}")
                if r.size:
                    worst = max(worst, float(np.abs(r - o).max()))
    return worst


def export_pipeline(cfg, output: str, exporter: str = "auto", opset: int = 18, tolerance: float = 1e-3) -> Dict:
    """Export the detector and the parser of ``cfg`` into ``output`` and write the metadata.
    Returns the metadata (with ``exporter`` and the ONNX-vs-eager ``parity`` filled in)."""
    os.makedirs(output, exist_ok=True)
    model = build_model_for_export(cfg)
    meta = export_metadata(cfg, model)
    gen = torch.Generator().manual_seed(0)
    exporters, parity = {}, {}

    def export_part(key, module, example, input_name, names, dims, checks):
        path = os.path.join(output, meta[key]["file"])
        start = time.perf_counter()
        exporters[key] = export_onnx(module, example, path, input_name, names, dims, exporter, opset)
        logger.info(f"{key}.onnx ({exporters[key]} exporter, {time.perf_counter() - start:.1f}s)")
        parity[key] = onnx_parity(module, path, checks, names)

    h, w = model.cropper.crop_size
    export_part("parser", ParserForExport(model.parser).eval(), torch.randn(2, 3, h, w, generator=gen), "crops",
                ["probs", "iou"], {0: "N"}, [torch.randn(n, 3, h, w, generator=gen) for n in (1, 3)])
    if model.detector is not None and meta["detector"]["type"] == "YuNet":
        example = torch.rand(1, 3, 64, 96, generator=gen) * 255
        checks = [torch.rand(1, 3, 96, 64, generator=gen) * 255, torch.rand(2, 3, 32, 32, generator=gen) * 255]
        export_part("detector", YuNetForExport(model.detector).eval(), example, "images", meta["detector"]["outputs"],
                    {0: "B", 2: "H", 3: "W"}, checks)
    elif model.detector is not None:
        names = [n for kind in ("cls", "box", "ctr") for n in meta["detector"]["outputs"][kind]]
        div = max(32, meta["detector"]["size_divisibility"])
        example = torch.randn(1, 3, 2 * div, 3 * div, generator=gen)
        checks = [torch.randn(1, 3, 3 * div, 2 * div, generator=gen), torch.randn(2, 3, div, div, generator=gen)]
        export_part("detector", DetectorForExport(model.detector).eval(), example, "images", names,
                    {0: "B", 2: "H", 3: "W"}, checks)

    meta["exporter"] = {**exporters, "opset": int(opset), "torch": torch.__version__}
    meta["parity"] = {k: float(v) for k, v in parity.items()}
    with open(os.path.join(output, METADATA_FILE), "w") as f:
        json.dump(meta, f, indent=2)
    for key, value in parity.items():
        print(f"{key}.onnx ({exporters[key]} exporter): max |onnxruntime - eager| = {value:.3g}")
    worst = max(parity.values())
    if worst > tolerance:
        raise SystemExit(f"an exported graph differs from eager mode by {worst:.3g} > --tolerance {tolerance}")
    return meta


# ---------------------------------------------------------------------------- pipeline parity
def pipeline_parity(predictor, runtime, image_bgr: np.ndarray) -> Dict:
    """Compare the torch pipeline (``FaceParsingPredictor``) and the ONNX runtime on one BGR image.

    ``max_box_diff``: pixels, the largest coordinate difference between a face and the nearest
    face of the other pipeline, both ways (inf when the counts differ); ``max_score_diff``: the
    quality scores of those nearest faces; ``painted_pixels``: the torch label map's non-background
    fraction.
    """
    ref = predictor(image_bgr)
    out = runtime(image_bgr)
    n_ref, n_out = len(ref["boxes"]), len(out["boxes"])
    box_diff = score_diff = float("inf")
    if n_ref == n_out:
        box_diff = score_diff = 0.0
        if n_ref:
            # faces matched by position (scores that tie to 1e-6 may sort either way)
            diff = np.abs(ref["boxes"][:, None, :] - out["boxes"][None, :, :]).max(axis=2)
            match = diff.argmin(axis=1)
            box_diff = float(max(diff.min(axis=1).max(), diff.min(axis=0).max()))
            score_diff = float(np.abs(ref["scores"] - out["scores"][match]).max())
    return {
        "pixel_agreement": float((ref["labels"] == out["labels"]).mean()),
        "differing_pixels": int((ref["labels"] != out["labels"]).sum()),
        "faces_torch": n_ref,
        "faces_onnx": n_out,
        "max_box_diff": box_diff,
        "max_score_diff": score_diff,
        "painted_pixels": float((ref["labels"] != 0).mean()),
    }


def _median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def check_images(cfg, output: str, paths: Sequence[str], repeats: int = 3, threads: int = 1) -> List[Dict]:
    """Print :func:`pipeline_parity` and the median time per image of both pipelines for ``paths``
    (image files, or "astronaut" for scikit-image's portrait)."""
    from qanet_d2.runtime import FaceParsingRuntime
    from qanet_d2 import FaceParsingPredictor
    from qanet_d2.data.io import read_image_bgr

    torch.set_num_threads(int(threads))
    predictor = FaceParsingPredictor(cfg)
    runtime = FaceParsingRuntime(output, threads=int(threads))
    rows = []
    for p in paths:
        if p == "astronaut":
            from skimage.data import astronaut

            image = np.ascontiguousarray(astronaut()[:, :, ::-1])
        else:
            image = read_image_bgr(p)
        row = {"image": p, **pipeline_parity(predictor, runtime, image)}
        with torch.no_grad():
            row["torch_s"] = _median_seconds(lambda: predictor(image), repeats)
        row["onnx_s"] = _median_seconds(lambda: runtime(image), repeats)
        rows.append(row)
        print(
            f"{p}: {row['pixel_agreement'] * 100:.3f} % equal pixels ({row['differing_pixels']} differ; {row['painted_pixels'] * 100:.1f} % painted), "
            f"faces torch {row['faces_torch']} / onnx {row['faces_onnx']}, max box diff {row['max_box_diff']:.3g} px, "
            f"max score diff {row['max_score_diff']:.3g}; torch {row['torch_s'] * 1000:.0f} ms, onnxruntime {row['onnx_s'] * 1000:.0f} ms"
        )
    return rows


# ---------------------------------------------------------------------------- command line
def get_argument_parser():
    p = argparse.ArgumentParser(description="Export the face detector and parser to ONNX (see docs/export.md)")
    p.add_argument("--config-file", required=True, metavar="FILE")
    p.add_argument("--output", required=True, help="output folder (detector.onnx, parser.onnx, metadata.json)")
    p.add_argument("--exporter", default="auto", choices=EXPORTERS,
                   help="auto: torch.export-based (dynamo) exporter when onnxscript is installed, else TorchScript tracing")
    p.add_argument("--opset", type=int, default=18)
    p.add_argument("--tolerance", type=float, default=1e-3, help="maximum absolute difference of a graph to eager mode")
    p.add_argument("--check-image", action="append", default=None, metavar="IMAGE",
                   help="after exporting, compare the torch and ONNX pipelines on this image (repeatable; "
                   "'astronaut': scikit-image's portrait)")
    p.add_argument("--repeats", type=int, default=3, help="timing repeats per image for --check-image")
    p.add_argument("--threads", type=int, default=1, help="CPU threads of each pipeline for --check-image")
    p.add_argument("opts", default=[], nargs="*", help="config KEY VALUE pairs (anywhere on the command line)")
    p.add_argument("--opts", dest="extra_opts", default=[], nargs="*", help=argparse.SUPPRESS)  # the former spelling
    return p


def parse_args(argv: Optional[List[str]] = None):
    """Command-line arguments; config KEY VALUE pairs may come before or after the options."""
    return get_argument_parser().parse_intermixed_args(argv)


def setup_cfg(args):
    cfg = get_qanet_cfg()
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(list(args.opts) + list(getattr(args, "extra_opts", [])))
    cfg.MODEL.DEVICE = "cpu"
    fill_model_label_set(cfg)  # the label set of the config's dataset, when the config does not name one
    cfg.freeze()
    return cfg


def main(argv: Optional[List[str]] = None) -> Dict:
    from detectron2.utils.logger import setup_logger

    args = parse_args(argv)
    setup_logger(name="qanet_d2")
    cfg = setup_cfg(args)
    meta = export_pipeline(cfg, args.output, args.exporter, args.opset, args.tolerance)
    if args.check_image:
        meta["check"] = check_images(cfg, args.output, args.check_image, args.repeats, args.threads)
    return meta


if __name__ == "__main__":
    main()
