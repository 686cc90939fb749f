#!/usr/bin/env python
"""Parse photos with an exported pipeline (``tools/export.py``), without torch.

    python tools/onnx_infer.py --export exported/ --input photo.jpg albums/ "shots/*.png" --output parsed/

Inputs are taken, read and named as ``demo/demo.py`` does (``qanet_d2/data/inputs.py``). Writes
per image ``<name>_labels.png`` (palette PNG of class ids; legend ``labels.json`` per folder) and
``<name>_overlay.png``, and prints each face's box and scores. Uses only NumPy, Pillow, OpenCV and
ONNX Runtime.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from typing import List, Optional

import cv2
import numpy as np

_PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "qanet_d2")


def _load_light(relative_path: str, name: str):
    """A module of qanet_d2 loaded by path: the package's ``__init__`` imports torch."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, os.path.join(_PACKAGE, relative_path))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


inputs = _load_light("data/inputs.py", "_qanet_d2_inputs")
runtime = _load_light("runtime.py", "_qanet_d2_runtime")
ExportError, FaceParsingRuntime, colorize = runtime.ExportError, runtime.FaceParsingRuntime, runtime.colorize
LEGEND_FILE = "labels.json"
_SUFFIXES = ("_labels.png", "_overlay.png")


def overlay(image_bgr: np.ndarray, result, colors, alpha: float = 0.5) -> np.ndarray:
    """The photo with the coloured label map blended in (painted pixels only) and face boxes."""
    color = colorize(result["labels"], colors)
    out = image_bgr.copy()
    painted = result["labels"] != 0
    out[painted] = (image_bgr[painted] * (1 - alpha) + color[painted] * alpha).astype(np.uint8)
    for box, score in zip(result["boxes"], result["scores"]):
        x0, y0, x1, y1 = (int(round(float(v))) for v in box)
        cv2.rectangle(out, (x0, y0), (x1, y1), (0, 255, 0), 1)
        cv2.putText(out, f"{score:.2f}", (x0, max(10, y0 - 3)), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 255, 0), 1)
    return out


def write_label_png(path: str, labels: np.ndarray, colors) -> None:
    """A palette PNG: pixel values are the class ids, the palette the classes' RGB colours."""
    from PIL import Image

    image = Image.fromarray(np.ascontiguousarray(labels, dtype=np.uint8), mode="P")
    palette = np.zeros((256, 3), np.uint8)
    palette[: len(colors)] = np.asarray(colors, np.uint8)
    image.putpalette(palette.ravel().tolist())
    image.save(path)


def get_argument_parser():
    p = argparse.ArgumentParser(description="Face parsing with an ONNX export (NumPy + OpenCV + ONNX Runtime)")
    p.add_argument("--export", required=True, help="folder written by tools/export.py")
    p.add_argument("--input", required=True, nargs="+", help="image files, folders (searched recursively) or quoted glob patterns")
    p.add_argument("--output", required=True, help="output folder for the label and overlay PNGs")
    p.add_argument("--overwrite", action="store_true", help="replace output files that already exist")
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0: its default)")
    return p


def error(message: str) -> None:
    print(f"ERROR {message}", file=sys.stderr)


def main(argv: Optional[List[str]] = None) -> int:
    """Exit status: 0 when every input was parsed, 1 when some failed (each reported), 2 when
    nothing could run (export folder, no inputs, outputs that exist)."""
    args = get_argument_parser().parse_args(None if argv is None else [str(a) for a in argv])
    try:
        runtime = FaceParsingRuntime(args.export, threads=args.threads)
    except (ExportError, OSError) as e:
        error(f"--export {args.export}: {e}")
        return 2
    found = inputs.collect_inputs(args.input, kinds=("image",))
    failures = 0
    for spec in found.missing:
        error(f"{spec}: no such file, folder or matching files")
        failures += 1
    if found.skipped:
        print(f"skipped {len(found.skipped)} files that are not images (by extension): {', '.join(found.skipped)}")
    if not found.files:
        error(f"no image files in {' '.join(args.input)}")
        return 2
    keys = inputs.assign_output_keys([f.rel for f in found.files], reserved=[LEGEND_FILE], suffixes=_SUFFIXES)
    planned = [(f, os.path.join(args.output, k + _SUFFIXES[0]), os.path.join(args.output, k + _SUFFIXES[1])) for f, k in zip(found.files, keys)]
    legends = sorted({os.path.join(os.path.dirname(p[1]), LEGEND_FILE) for p in planned})
    existing = inputs.existing_outputs([p for _, a, b in planned for p in (a, b)] + legends)
    if existing and not args.overwrite:
        more = f" (and {len(existing) - 1} more outputs of this run)" if len(existing) > 1 else ""
        error(f"{existing[0]} already exists{more}: pass --overwrite to replace, or choose another --output")
        return 2
    size = runtime.meta["input"]
    colors = [[int(v) for v in c] for c in runtime.colors]
    legend = {"classes": [{"id": i, "name": n, "color": colors[i]} for i, n in enumerate(runtime.meta["classes"])]}
    written_legends = set()
    for file, label_path, overlay_path in planned:
        try:
            image = inputs.read_image_bgr(file.path)
            inputs.check_parsable_size(image.shape, file.path, size["min_size_test"], size["max_size_test"])
            result = runtime(image)
            os.makedirs(os.path.dirname(label_path), exist_ok=True)
            write_label_png(label_path, result["labels"], colors)
            if not cv2.imwrite(overlay_path, overlay(image, result, runtime.colors)):
                raise OSError(f"{overlay_path}: could not write the image")
        except (inputs.DataReadError, OSError, ValueError, cv2.error) as e:
            error(str(e) if isinstance(e, inputs.DataReadError) else f"{file.path}: failed ({type(e).__name__}: {e})")
            failures += 1
            continue
        legend_path = os.path.join(os.path.dirname(label_path), LEGEND_FILE)
        if legend_path not in written_legends:
            with open(legend_path, "w") as f:
                json.dump(legend, f, indent=1)
            written_legends.add(legend_path)
        print(f"{file.path}: {len(result['boxes'])} face(s) -> {label_path}, {overlay_path}")
        for box, score, box_score, iou in zip(result["boxes"], result["scores"], result["box_scores"], result["iou_scores"]):
            print(f"  box [{', '.join(f'{v:.1f}' for v in box)}] score {score:.3f} (detector {box_score:.3f}, IoU {iou:.3f})")
    if failures:
        error(f"{failures} of {len(found.files) + len(found.missing)} inputs failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
