#!/usr/bin/env python
"""Parse photos with an exported pipeline (``tools/export.py``), without torch.

    python tools/onnx_infer.py --export exported/ --input photo.jpg [more.jpg ...] --output parsed/

writes per image ``<name>_labels.png`` (the uint8 label map: pixel value = class id of
``metadata.json: classes``) and ``<name>_overlay.png`` (the photo with the coloured label map
blended in and the face boxes drawn), and prints each face's box and scores. Uses only NumPy,
OpenCV and ONNX Runtime (:mod:`onnx_runtime`).
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

import cv2
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from onnx_runtime import FaceParsingRuntime, colorize  # noqa: E402


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


def get_argument_parser():
    p = argparse.ArgumentParser(description="Face parsing with an ONNX export (NumPy + OpenCV + ONNX Runtime)")
    p.add_argument("--export", required=True, help="folder written by tools/export.py")
    p.add_argument("--input", required=True, nargs="+", help="image files")
    p.add_argument("--output", required=True, help="output folder for the label and overlay PNGs")
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0: its default)")
    return p


def main(argv: Optional[List[str]] = None) -> List[str]:
    args = get_argument_parser().parse_args(argv)
    runtime = FaceParsingRuntime(args.export, threads=args.threads)
    os.makedirs(args.output, exist_ok=True)
    written = []
    for path in args.input:
        image = cv2.imread(path, cv2.IMREAD_COLOR)
        if image is None:
            raise SystemExit(f"{path}: not a readable image file")
        result = runtime(image)
        stem = os.path.splitext(os.path.basename(path))[0]
        label_path = os.path.join(args.output, f"{stem}_labels.png")
        overlay_path = os.path.join(args.output, f"{stem}_overlay.png")
        cv2.imwrite(label_path, result["labels"])
        cv2.imwrite(overlay_path, overlay(image, result, runtime.colors))
        written += [label_path, overlay_path]
        print(f"{path}: {len(result['boxes'])} face(s) -> {label_path}, {overlay_path}")
        for box, score, box_score, iou in zip(result["boxes"], result["scores"], result["box_scores"], result["iou_scores"]):
            print(f"  box [{', '.join(f'{v:.1f}' for v in box)}] score {score:.3f} (detector {box_score:.3f}, IoU {iou:.3f})")
    return written


if __name__ == "__main__":
    main()
