#!/usr/bin/env python
"""Face parsing demo on photos, folders, videos and the webcam (detectron2's demo, for faces).

    python demo/demo.py --config-file configs/quickstart/qanet_fcos_synth.yaml \\
        --input photo.jpg "shots/*.png" folder/ --output overlays/ \\
        --opts MODEL.WEIGHTS output/quickstart/model_final.pth
    # real photos, with the real-face model shipped in the repository (no training needed):
    python demo/demo.py --config-file configs/real_faces/qanet_fcos_fasseg_synth_composites.yaml \\
        --input photo.jpg --output parsed/ --opts MODEL.WEIGHTS models/qanet_fcos_real_faces_fasseg.pth
    python demo/demo.py --config-file ... --video-input clip.mp4 --output clip_parsed.mp4 --opts MODEL.WEIGHTS ...
    python demo/demo.py --config-file ... --input datasets/face_synth/images --sequence \\
        --save-labels pred_labels/ --opts MODEL.WEIGHTS ...   # then tools/evaluate_pngs.py

Overlays are drawn with detectron2's Visualizer: parts in the dataset's palette with class names,
face boxes labelled with their quality score. Outputs keep the layout of the inputs: a file found
in a folder given to ``--input`` is written at its path relative to that folder.

``--save-labels DIR`` writes each image's label map as a uint8 PNG (class id per pixel):
``DIR/<path relative to the input folder>.png`` for images (``DIR/<stem>.png`` for files given
directly; ``DIR/<video_id>/<frame>.png`` for a dataset's ``images/`` folder), and
``DIR/<video stem>/<frame index:05d>.png`` for ``--video-input``.

A file that cannot be read (missing, not an image, truncated) is reported with its name and
skipped; the demo then exits with status 1 after processing everything else.
"""
import argparse
import glob
import os
import sys
import time
from typing import List, Optional, Tuple

import cv2
import numpy as np
import tqdm

_DEMO_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(_DEMO_DIR))  # the repository's qanet_d2, also without installing it
sys.path.insert(0, _DEMO_DIR)

import qanet_d2  # noqa: E402,F401  (compat shims, registrations)
from detectron2.utils.logger import setup_logger  # noqa: E402
from predictor import VisualizationDemo  # noqa: E402
from qanet_d2 import add_qanet_config  # noqa: E402
from qanet_d2.data.io import ImageReadError, read_image_bgr  # noqa: E402
from qanet_d2.predictor import FaceParsingPredictor  # noqa: E402

WINDOW_NAME = "qanet_d2 face parsing"
_OVERLAY_EXTENSIONS = (".png", ".jpg", ".jpeg")
_VIDEO_CODECS = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".mkv": "mp4v", ".avi": "MJPG"}


def setup_cfg(args):
    from detectron2.config import get_cfg

    cfg = get_cfg()
    add_qanet_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    if args.confidence_threshold is not None:
        cfg.MODEL.QANET.INFERENCE.FACE_SCORE_THRESH = args.confidence_threshold
    if args.device:
        cfg.MODEL.DEVICE = args.device
    cfg.freeze()
    return cfg


def build_argument_parser():
    p = argparse.ArgumentParser(description="qanet_d2 face parsing demo")
    p.add_argument("--config-file", required=True, metavar="FILE", help="path to config file")
    p.add_argument("--webcam", action="store_true", help="take inputs from webcam")
    p.add_argument("--video-input", help="path to video file")
    p.add_argument(
        "--input",
        nargs="+",
        help="image files, glob patterns (quote them) or folders (searched recursively)",
    )
    p.add_argument(
        "--output",
        help="file or folder for the overlays (a folder when there are several inputs); "
        "a video file for --video-input. Without it, results are shown in a window.",
    )
    p.add_argument("--save-labels", metavar="DIR", help="also write the label map PNG of every image/frame here")
    p.add_argument(
        "--confidence-threshold",
        type=float,
        default=None,
        help="minimum score for a face to be painted (MODEL.QANET.INFERENCE.FACE_SCORE_THRESH: the quality "
        "score, or the box score with PAINT_ORDER box) and quality score to be boxed; default: the config's",
    )
    p.add_argument(
        "--temporal-window",
        type=int,
        default=None,
        help="frames over which each tracked face's probabilities and score are smoothed for --video-input, "
        "--webcam and --sequence (1 = no smoothing; default: the config's VIDEO.TEMPORAL_WINDOW, 5)",
    )
    p.add_argument(
        "--sequence",
        action="store_true",
        help="treat the images of each folder (sorted by name) as consecutive frames of one video "
        "and smooth them over time",
    )
    p.add_argument("--alpha", type=float, default=0.6, help="opacity of the part colours")
    p.add_argument(
        "--overlay",
        choices=("visualizer", "opencv"),
        default="visualizer",
        help="drawing of the overlay: detectron2's Visualizer (class names; a few hundred ms per frame) or "
        "OpenCV (colours and boxes; a few ms per frame: for real-time video and the webcam)",
    )
    p.add_argument(
        "--max-overlay-size",
        type=int,
        default=4096,
        help="overlays of larger images are drawn scaled down to this longer side (label PNGs keep the full size; 0 = never)",
    )
    p.add_argument("--device", default="", help="override MODEL.DEVICE (cpu, cuda)")
    p.add_argument("--opts", help="config KEY VALUE pairs", default=[], nargs=argparse.REMAINDER)
    return p


def _glob_root(pattern: str) -> str:
    """The folder part of a glob pattern before its first wildcard."""
    parts = []
    for part in pattern.split(os.sep):
        if glob.has_magic(part):
            break
        parts.append(part)
    root = os.sep.join(parts)
    if root == pattern:  # no wildcard: the file's folder
        root = os.path.dirname(pattern)
    return root or "."


def expand_inputs(specs: List[str]) -> Tuple[List[Tuple[str, str]], List[str]]:
    """Files named by ``--input`` as ``(path, path relative to its input root)``, and the
    specs that matched nothing. Folders are walked recursively (hidden entries skipped), in
    sorted order; globs are expanded (``**`` included)."""
    found: List[Tuple[str, str]] = []
    missing: List[str] = []
    seen = set()

    def add(path, root):
        key = os.path.abspath(path)
        if key not in seen:
            seen.add(key)
            found.append((path, os.path.relpath(path, root)))

    for spec in specs:
        spec = os.path.expanduser(spec)
        if os.path.isdir(spec):
            for dirpath, dirnames, filenames in os.walk(spec):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                for name in sorted(filenames):
                    if not name.startswith("."):
                        add(os.path.join(dirpath, name), spec)
        elif os.path.isfile(spec):
            add(spec, os.path.dirname(spec) or ".")
        elif glob.has_magic(spec):
            matches = sorted(p for p in glob.glob(spec, recursive=True) if os.path.isfile(p))
            if not matches:
                missing.append(spec)
            root = _glob_root(spec)
            for path in matches:
                add(path, root)
        else:
            missing.append(spec)
    return found, missing


def output_is_folder(output: str, several: bool) -> bool:
    """``--output`` names a folder when there are several inputs, when it is an existing
    folder or ends with a separator, or when it has no file extension."""
    return several or os.path.isdir(output) or output.endswith(os.sep) or not os.path.splitext(output)[1]


def overlay_path(output: str, rel: str, several: bool) -> str:
    """Where the overlay of the input at relative path ``rel`` goes."""
    if not output_is_folder(output, several):
        return output
    stem, ext = os.path.splitext(rel)
    if ext.lower() not in _OVERLAY_EXTENSIONS:
        ext = ".png"
    return os.path.join(output, stem + ext)


def label_path(label_dir: str, rel: str) -> str:
    """``<label_dir>/<rel without extension>.png``."""
    return os.path.join(label_dir, os.path.splitext(rel)[0] + ".png")


def write_image(path: str, image_bgr: np.ndarray) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if not cv2.imwrite(path, image_bgr):
        raise OSError(f"{path}: could not write the image (unsupported extension or unwritable folder)")


def overlay_bgr(vis, size_hw) -> np.ndarray:
    """The Visualizer's RGB drawing as BGR, exactly ``size_hw``."""
    image = cv2.cvtColor(vis.get_image(), cv2.COLOR_RGB2BGR)
    if image.shape[:2] != tuple(size_hw):  # matplotlib can round the canvas by a pixel
        image = cv2.resize(image, (size_hw[1], size_hw[0]), interpolation=cv2.INTER_LINEAR)
    return image


def report_error(message: str) -> None:
    """One line on stderr per failed input (kept apart from the progress bar)."""
    tqdm.tqdm.write(f"ERROR {message}", file=sys.stderr)


def run_images(demo: VisualizationDemo, args, logger) -> int:
    files, missing = expand_inputs(args.input)
    failures = 0
    for spec in missing:
        report_error(f"{spec}: no such file, folder or matching files")
        failures += 1
    several = len(files) > 1 or any(os.path.isdir(s) or glob.has_magic(s) for s in args.input)
    if args.output and several:
        os.makedirs(args.output, exist_ok=True)
    current_folder = None
    for path, rel in tqdm.tqdm(files, desc="images", unit="img", disable=not args.output):
        try:
            image = read_image_bgr(path)
        except ImageReadError as e:
            report_error(str(e))
            failures += 1
            continue
        if args.sequence and os.path.dirname(rel) != current_folder:
            current_folder = os.path.dirname(rel)
            demo.reset()
        start = time.perf_counter()
        try:
            result, vis = demo.run_on_image(image, sequence=args.sequence)
            if args.save_labels:
                write_image(label_path(args.save_labels, rel), result["labels"])
            overlay = overlay_bgr(vis, (vis.height, vis.width))  # the image's size unless --max-overlay-size
            if args.output:
                write_image(overlay_path(args.output, rel, several), overlay)
        except (OSError, RuntimeError, ValueError, cv2.error) as e:
            report_error(f"{path}: failed ({type(e).__name__}: {e})")
            failures += 1
            continue
        logger.info(
            f"{path}: {int((result['scores'] >= demo.confidence_threshold).sum())} faces in "
            f"{time.perf_counter() - start:.2f}s"
        )
        if not args.output:
            cv2.namedWindow(WINDOW_NAME, cv2.WINDOW_NORMAL)
            cv2.imshow(WINDOW_NAME, overlay)
            if cv2.waitKey(0) == 27:
                break  # esc to quit
    if failures:
        report_error(f"{failures} of {len(files) + len(missing)} inputs failed")
    return failures


def open_video_writer(path: str, fps: float, size_wh: Tuple[int, int]) -> cv2.VideoWriter:
    ext = os.path.splitext(path)[1].lower()
    codec = _VIDEO_CODECS.get(ext, "mp4v")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*codec), fps, size_wh, True)
    if not writer.isOpened():
        raise OSError(f"{path}: cannot open a video writer (codec {codec})")
    return writer


def run_video(demo: VisualizationDemo, args, logger) -> int:
    video = cv2.VideoCapture(args.video_input)
    if not os.path.isfile(args.video_input) or not video.isOpened():
        report_error(f"{args.video_input}: cannot open the video")
        return 1
    width = int(video.get(cv2.CAP_PROP_FRAME_WIDTH))
    height = int(video.get(cv2.CAP_PROP_FRAME_HEIGHT))
    fps = video.get(cv2.CAP_PROP_FPS)
    if not fps or not np.isfinite(fps) or fps <= 0:
        logger.warning(f"{args.video_input}: no frame rate in the file, writing 25 fps")
        fps = 25.0
    num_frames = int(video.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    stem = os.path.splitext(os.path.basename(args.video_input))[0]
    writer = None
    if args.output:
        out = args.output
        if os.path.isdir(out) or out.endswith(os.sep) or not os.path.splitext(out)[1]:
            out = os.path.join(out, stem + ".mp4")
        writer = open_video_writer(out, fps, (width, height))
    frames = 0
    try:
        for index, (frame, result, overlay) in enumerate(
            tqdm.tqdm(demo.run_on_video(video), total=num_frames, desc="frames", unit="frame")
        ):
            frames += 1
            if args.save_labels:
                write_image(os.path.join(args.save_labels, stem, f"{index:05d}.png"), result["labels"])
            if overlay.shape[:2] != (height, width):
                overlay = cv2.resize(overlay, (width, height))
            if writer is not None:
                writer.write(overlay)
            else:
                cv2.namedWindow(stem, cv2.WINDOW_NORMAL)
                cv2.imshow(stem, overlay)
                if cv2.waitKey(1) == 27:
                    break
    finally:
        video.release()
        if writer is not None:
            writer.release()
    if frames == 0:
        report_error(f"{args.video_input}: no frame could be decoded")
        return 1
    logger.info(f"{args.video_input}: {frames} frames at {fps:.2f} fps, {width}x{height}")
    return 0


def run_webcam(demo: VisualizationDemo, args, logger) -> int:
    cam = cv2.VideoCapture(0)
    if not cam.isOpened():
        logger.error("cannot open the webcam (device 0)")
        return 1
    writer = None
    try:
        for frame, result, overlay in tqdm.tqdm(demo.run_on_video(cam), desc="webcam", unit="frame"):
            if args.output:
                if writer is None:
                    writer = open_video_writer(args.output, 15.0, (overlay.shape[1], overlay.shape[0]))
                writer.write(overlay)
            else:
                cv2.namedWindow(WINDOW_NAME, cv2.WINDOW_NORMAL)
                cv2.imshow(WINDOW_NAME, overlay)
                if cv2.waitKey(1) == 27:
                    break
    finally:
        cam.release()
        if writer is not None:
            writer.release()
        cv2.destroyAllWindows()
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    args = build_argument_parser().parse_args(argv)
    setup_logger(name="fvcore")
    logger = setup_logger(name="qanet_d2.demo")
    logger.info("Arguments: " + str(args))
    if sum(bool(x) for x in (args.input, args.video_input, args.webcam)) != 1:
        logger.error("give exactly one of --input, --video-input, --webcam")
        return 2
    cfg = setup_cfg(args)
    demo = VisualizationDemo(
        cfg,
        FaceParsingPredictor(cfg),
        alpha=args.alpha,
        temporal_window=args.temporal_window,
        max_overlay_size=args.max_overlay_size,
        overlay=args.overlay,
    )
    try:
        if args.input:
            failures = run_images(demo, args, logger)
        elif args.video_input:
            failures = run_video(demo, args, logger)
        else:
            failures = run_webcam(demo, args, logger)
    except cv2.error as e:
        message = str(e).lower()
        if not args.output and ("imshow" in message or "highgui" in message or "gui" in message):
            logger.error("cannot open a window (OpenCV without GUI support): pass --output")
            return 2
        raise
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
