#!/usr/bin/env python
"""Parse the faces in photos, folders, videos and the webcam (detectron2's demo, for faces).

Without ``--config-file`` the shipped model is used; outputs and options in ``docs/tools.md`` and
``--help``. A file that cannot be read or parsed is reported with its name and skipped (exit status 1).
"""
import argparse
import importlib.util
import os
import sys
import time
from typing import Dict, Iterator, List, Optional, Sequence

_DEMO_DIR = os.path.dirname(os.path.abspath(__file__))
_REPO = os.path.dirname(_DEMO_DIR)
sys.path.insert(0, _REPO)  # the repository's qanet_d2, also without installing it
sys.path.insert(0, _DEMO_DIR)


def _load_light(relative_path: str, name: str):
    """A standard-library (+ NumPy) module of qanet_d2 loaded by path, without importing the
    package (whose ``__init__`` imports torch): ``--help`` and argument errors stay fast."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, os.path.join(_REPO, relative_path))
    module = sys.modules[name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


model_zoo = _load_light("qanet_d2/model_zoo.py", "_qanet_d2_model_zoo")

WINDOW_NAME = "qanet_d2 face parsing"
EXIT_FAILED, EXIT_USAGE = 1, 2
LEGEND_FILE = "labels.json"

EXAMPLES = """examples:
  # photos, folders and quoted globs with the shipped model: overlays, label PNGs + legend, faces as JSON
  python demo/demo.py --input photo.jpg albums/ "holiday/*.png" --output parsed/ --save-labels --save-json
  # a video: H.264 MP4 with the input's frame rate, size and audio
  python demo/demo.py --video-input clip.mp4 --output clip_parsed.mp4
  # your own trained model
  python demo/demo.py --config-file configs/quickstart/qanet_fcos_synth.yaml \\
      --input photo.jpg --output parsed/ --opts MODEL.WEIGHTS output/quickstart/model_final.pth
"""


# ---------------------------------------------------------------------------- arguments
def _config_value(config_file: str, keys: Sequence[str]):
    """A value of a yacs config file, following ``_BASE_`` (fvcore's YAML loader; no torch)."""
    from fvcore.common.config import CfgNode

    node = CfgNode.load_yaml_with_base(config_file)
    for key in keys:
        node = node.get(key) if isinstance(node, dict) else None
    return node


def shipped_model_classes() -> Optional[List[str]]:
    """Class names of the shipped model (its config's label set), without torch; None where that
    cannot be told without building the model."""
    try:
        name = _config_value(model_zoo.shipped_model()[0], ["MODEL", "QANET", "LABEL_SET", "NAME"])
        label_sets = _load_light("qanet_d2/structures/label_sets.py", "_qanet_d2_label_sets")
        return list(label_sets.get_label_set(name).classes) if name else None
    except Exception:  # --help must answer whatever the config holds
        return None


def build_argument_parser():
    import textwrap

    config, weights = model_zoo.shipped_model()
    classes = shipped_model_classes()
    class_text = ", ".join(f"{i} {n}" for i, n in enumerate(classes)) if classes else "those of its config's label set"
    description = textwrap.fill(
        "Parse every face in photos and videos into parts. Without --config-file it runs the shipped model "
        f"'{model_zoo.DEFAULT_MODEL}' ({os.path.relpath(config, _REPO)} with {os.path.relpath(weights, _REPO)}); "
        f"its classes (label id, name): {class_text}.")
    p = argparse.ArgumentParser(description=description, epilog=EXAMPLES,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", metavar="FILE",
                   help="model config; default: the shipped model's, with its weights (other configs: "
                   "MODEL.WEIGHTS in --opts)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--webcam", action="store_true", help="take inputs from webcam")
    source.add_argument("--video-input", help="path to video file")
    source.add_argument("--input", nargs="+",
                        help="image or video files, glob patterns (quote them) or folders (searched recursively; "
                        "files that are neither images nor videos by their extension are skipped and listed)")
    p.add_argument("--output",
                   help="file or folder for the overlays (a folder when there are several inputs); "
                   "a video file for --video-input. Without it, results are shown in a window.")
    p.add_argument("--save-labels", nargs="?", const="", metavar="DIR",
                   help="also write each image's label map as a palette PNG (pixel value = class id) and a legend "
                   "labels.json per folder: next to the overlays as <name>_labels.png, or as DIR/<name>.png (video "
                   "frames: DIR/<name>/<frame:05d>.png, the layout of tools/evaluate_pngs.py)")
    p.add_argument("--save-json", nargs="?", const="", metavar="DIR",
                   help="also write <name>.json per image (next to the overlays, or in DIR): the class names and the "
                   "painted faces with box, scores, landmarks when the detector gives them, and mask in COCO RLE")
    p.add_argument("--json-class-masks", action="store_true", help="with --save-json: each face's mask per class too")
    p.add_argument("--overwrite", action="store_true", help="replace output files that already exist")
    p.add_argument("--random-weights", action="store_true", help="run a config without weights (for pipeline tests)")
    p.add_argument("--confidence-threshold", type=float,
                   help="minimum score for a face to be painted, boxed and saved: the quality score when the config's "
                   "MODEL.QANET.INFERENCE.PAINT_ORDER is 'quality' (the shipped model's; sets QUALITY_SCORE_THRESH), "
                   "else the detector's box score (sets BOX_SCORE_THRESH). Default: the config's")
    p.add_argument("--temporal-window", type=int,
                   help="frames over which each tracked face is smoothed for --video-input, --webcam and --sequence "
                   "(1 = no smoothing; default: the config's VIDEO.TEMPORAL_WINDOW, 5)")
    p.add_argument("--sequence", action="store_true",
                   help="the images of each folder (sorted by name) are consecutive frames of one video: smooth them")
    p.add_argument("--alpha", type=float, default=0.6, help="opacity of the part colours")
    p.add_argument("--overlay", choices=("visualizer", "opencv"), default="visualizer",
                   help="drawing of the overlay: detectron2's Visualizer (class names; a few hundred ms per frame) "
                   "or OpenCV (colours and boxes; a few ms per frame: for real-time video and the webcam)")
    p.add_argument("--max-overlay-size", type=int, default=4096,
                   help="overlays of larger images are drawn scaled down to this longer side (label PNGs keep the "
                   "full size; 0 = never)")
    p.add_argument("--device", default="", help="override MODEL.DEVICE (cpu, cuda)")
    p.add_argument("--opts", help="config KEY VALUE pairs", default=[], nargs=argparse.REMAINDER)
    return p


# ---------------------------------------------------------------------------- errors
class UsageError(Exception):
    """A problem with the command line or the model (one line, exit status 2)."""


def report_error(message: str) -> None:
    """One line on stderr per problem (kept apart from the progress bar)."""
    import tqdm

    tqdm.tqdm.write(f"ERROR {message}", file=sys.stderr)


def _config_keys(cfg, prefix: str = "") -> Iterator[str]:
    for k, v in cfg.items():
        yield from _config_keys(v, f"{prefix}{k}.") if isinstance(v, dict) else [prefix + k]


def _config_error(cfg, where: str, e: Exception) -> UsageError:
    """One line for a yacs error: the unknown key and the closest valid one, or the bad value."""
    import re

    from qanet_d2.data.inputs import closest

    message = str(e.args[0]) if e.args else str(e)
    match = re.search(r"Non-existent (?:config )?key:\s*(\S+)", message)
    if not match:
        return UsageError(f"{where}: {message}")
    hint = closest(match.group(1), list(_config_keys(cfg)))
    return UsageError(f"{where}: unknown config key {match.group(1)}" + (f"; did you mean {hint}?" if hint else ""))


def setup_cfg(args):
    """The frozen config of ``args``; :class:`UsageError` for a missing config file, unknown keys,
    bad values and missing weights."""
    from qanet_d2 import get_qanet_cfg

    shipped_config, shipped_weights = model_zoo.shipped_model()
    config_file = args.config_file or shipped_config
    if not os.path.isfile(config_file):
        raise UsageError(f"--config-file {config_file}: no such file")
    cfg = get_qanet_cfg()
    try:
        cfg.merge_from_file(config_file)
    except (KeyError, ValueError, AssertionError) as e:
        raise _config_error(cfg, config_file, e) from None
    except Exception as e:  # YAML syntax, unreadable _BASE_, ...
        raise UsageError(f"{config_file}: cannot read the config ({type(e).__name__}: {e})".replace("\n", " ")) from None
    if not args.config_file:
        cfg.MODEL.WEIGHTS = shipped_weights
    try:
        cfg.merge_from_list(args.opts)
    except (KeyError, ValueError, AssertionError) as e:
        raise _config_error(cfg, "--opts", e) from None
    if args.confidence_threshold is not None:
        inference = cfg.MODEL.QANET.INFERENCE
        key = "QUALITY_SCORE_THRESH" if inference.PAINT_ORDER == "quality" else "BOX_SCORE_THRESH"
        inference[key] = args.confidence_threshold
    if args.device:
        cfg.MODEL.DEVICE = args.device
    q = cfg.MODEL.QANET
    weights = {"MODEL.WEIGHTS": cfg.MODEL.WEIGHTS, "MODEL.QANET.DETECTOR_WEIGHTS": q.DETECTOR_WEIGHTS,
               "MODEL.QANET.PARSER_WEIGHTS": q.PARSER_WEIGHTS}
    for key, path in weights.items():
        if path and "://" not in path and not os.path.isfile(path):
            raise UsageError(f"{key} {path}: no such file")
    if not any(weights.values()) and not args.random_weights:
        raise UsageError(
            f"{config_file} gives no weights: pass --opts MODEL.WEIGHTS <checkpoint.pth>, leave out --config-file "
            "for the shipped model, or pass --random-weights to run an untrained model")
    cfg.freeze()
    return cfg


# ---------------------------------------------------------------------------- outputs
# What an output name may be followed by, for collision checks between the inputs of a run.
_OUTPUT_SUFFIXES = (".png", ".jpg", ".jpeg", ".mp4", "_labels.png", "_labels", ".json")


def output_is_folder(output: str, several: bool) -> bool:
    """Whether ``--output`` names a folder: several inputs, an existing folder, a trailing separator, no extension."""
    return several or os.path.isdir(output) or output.endswith(os.sep) or not os.path.splitext(output)[1]


class OutputPlan:
    """Where every output of one input goes (layout in docs/tools.md)."""

    def __init__(self, args, key: str, rel: str, kind: str, folder: bool):
        from qanet_d2.data.inputs import OVERLAY_EXTENSIONS

        ext = os.path.splitext(rel)[1].lower()
        overlay_ext = ".mp4" if kind == "video" else ext if ext in OVERLAY_EXTENSIONS else ".png"
        if args.output and not folder:  # one input written to the file named by --output
            self.overlay, base = args.output, os.path.splitext(args.output)[0]
        elif args.output:
            self.overlay, base = os.path.join(args.output, key + overlay_ext), os.path.join(args.output, key)
        else:
            self.overlay = base = None
        png = "" if kind == "video" else ".png"  # video label PNGs: a folder of frames
        self.labels = self.json = self.legend = None
        if args.save_labels is not None:
            self.labels = os.path.join(args.save_labels, key + png) if args.save_labels else base + "_labels" + png
            self.legend = os.path.join(self.labels if kind == "video" else os.path.dirname(self.labels), LEGEND_FILE)
        if args.save_json is not None:
            self.json = os.path.join(args.save_json, key + ".json") if args.save_json else base + ".json"


def plan_outputs(args, files) -> Optional[List[OutputPlan]]:
    """Output plans of ``files``; None, reported, when some of their paths exist already and
    ``--overwrite`` is not given."""
    from qanet_d2.data.inputs import assign_output_keys, existing_outputs

    several = len(files) > 1 or any(os.path.isdir(s) or "*" in s or "?" in s for s in (args.input or []))
    folder = bool(args.output) and output_is_folder(args.output, several)
    keys = assign_output_keys([f.rel for f in files], reserved=[LEGEND_FILE], suffixes=_OUTPUT_SUFFIXES)
    plans = [OutputPlan(args, key, f.rel, f.kind, folder) for key, f in zip(keys, files)]
    paths = [p for plan in plans for p in (plan.overlay, plan.labels, plan.json) if p]
    existing = existing_outputs(paths + sorted({plan.legend for plan in plans if plan.legend}))
    if existing and not args.overwrite:
        refuse_existing(existing)
        return None
    return plans


def write_image(path: str, image_bgr) -> None:
    import cv2

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if not cv2.imwrite(path, image_bgr):
        raise OSError(f"{path}: could not write the image (unsupported extension or unwritable folder)")


def write_label_png(path: str, labels, colors) -> None:
    """A palette PNG: pixel values are the class ids, the palette the classes' RGB colours."""
    import numpy as np
    from PIL import Image

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    image = Image.fromarray(np.ascontiguousarray(labels, dtype=np.uint8), mode="P")
    palette = np.zeros((256, 3), np.uint8)
    palette[: len(colors)] = np.asarray(colors, np.uint8)
    image.putpalette(palette.ravel().tolist())
    image.save(path)


def write_json(path: str, record: Dict) -> None:
    import json

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(record, f, indent=1)


def faces_record(result: Dict, demo, class_masks: bool) -> List[Dict]:
    """The painted faces of a result, best first: box, scores, landmarks where the detector gives
    them, and each face's mask (the label-map pixels it painted) in COCO RLE."""
    import numpy as np
    from pycocotools import mask as mask_util

    inst, labels = result["instances"], result["labels"]
    order = demo.predictor.postprocessor.order(inst) if len(inst) else []
    owner = np.full(labels.shape, -1, np.int32)
    for i in order:  # in painting order: the face painted last owns a pixel
        x0, y0, x1, y1 = result["face_labels"][i]["window"]
        owner[y0:y1, x0:x1][result["face_labels"][i]["labels"] != 0] = i

    def rle(mask) -> Dict:
        code = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
        return {"size": [int(s) for s in code["size"]], "counts": code["counts"].decode("ascii")}

    def r4(value) -> float:
        return round(float(value), 4)

    keypoints = inst.pred_keypoints.cpu().numpy() if inst.has("pred_keypoints") else None
    faces = []
    for i in sorted(order):  # instances are sorted best first
        mask = owner == i
        face = {"box": [r4(v) for v in inst.pred_boxes.tensor[i]], "box_score": r4(inst.box_scores[i]),
                "quality_score": r4(inst.scores[i])}
        face.update({key[:-1]: r4(getattr(inst, key)[i]) for key in ("iou_scores", "pixel_scores") if inst.has(key)})
        if keypoints is not None:
            face["landmarks"] = [[r4(v) for v in point] for point in keypoints[i]]
        face.update(area=int(mask.sum()), mask=rle(mask))
        if class_masks:
            face["class_masks"] = {demo.predictor.class_names[c]: rle(mask & (labels == c))
                                   for c in np.unique(labels[mask]).tolist() if c != 0}
        faces.append(face)
    return faces


def json_header(demo, path: str, size_hw) -> Dict:
    return {"file": path, "height": int(size_hw[0]), "width": int(size_hw[1]),
            "classes": list(demo.predictor.class_names), "score": demo.score_name, "score_threshold": demo.confidence_threshold,
            "mask_format": "COCO RLE (pycocotools), column-major, in the original image's frame"}


# ---------------------------------------------------------------------------- runs
def show(overlay, wait_ms: int) -> bool:
    """Show ``overlay`` in the demo's window; True when Esc is pressed."""
    import cv2

    cv2.namedWindow(WINDOW_NAME, cv2.WINDOW_NORMAL)
    cv2.imshow(WINDOW_NAME, overlay)
    return cv2.waitKey(wait_ms) == 27


def refuse_existing(existing: List[str]) -> None:
    more = f" (and {len(existing) - 1} more outputs of this run)" if len(existing) > 1 else ""
    report_error(f"{existing[0]} already exists{more}: pass --overwrite to replace, or choose another --output")


def run_images(demo, args, logger) -> int:
    import cv2
    import tqdm

    from qanet_d2.data.inputs import DataReadError, check_parsable_size, collect_inputs, read_image_bgr

    inputs = collect_inputs(args.input)
    for spec in inputs.missing:
        report_error(f"{spec}: no such file, folder or matching files")
    failures = len(inputs.missing)
    skipped = inputs.skipped
    if skipped:
        shown = ", ".join(skipped[:10]) + (f" and {len(skipped) - 10} more" if len(skipped) > 10 else "")
        tqdm.tqdm.write(f"skipped {len(skipped)} files that are not images or videos (by extension): {shown}",
                        file=sys.stderr)
    if not inputs.files:
        report_error(f"no image or video files in {' '.join(map(str, args.input))}"
                     + (f" ({len(skipped)} other files skipped)" if skipped else ""))
        return failures + 1
    plans = plan_outputs(args, inputs.files)
    if plans is None:
        return failures + 1
    if args.output and output_is_folder(args.output, len(plans) > 1):
        os.makedirs(args.output, exist_ok=True)
    legends = set()
    current_folder = None
    cfg = demo.predictor.cfg
    images = [(f, p) for f, p in zip(inputs.files, plans) if f.kind == "image"]
    for file, plan in tqdm.tqdm(images, desc="images", unit="img", disable=not args.output or not images):
        path = file.path
        try:
            image = read_image_bgr(path)
            check_parsable_size(image.shape, path, cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)
            if args.sequence and os.path.dirname(file.rel) != current_folder:
                current_folder = os.path.dirname(file.rel)
                demo.video.reset()
            start = time.perf_counter()
            result, overlay = demo.run_on_image(image, sequence=args.sequence)
            if plan.labels:
                write_label_png(plan.labels, result["labels"], demo.colors)
                if plan.legend not in legends:
                    write_json(plan.legend, {"classes": demo.legend})
                    legends.add(plan.legend)
            if plan.json:
                faces = faces_record(result, demo, args.json_class_masks)
                write_json(plan.json, {**json_header(demo, path, image.shape[:2]), "faces": faces})
            if plan.overlay:
                write_image(plan.overlay, overlay)
        except (OSError, RuntimeError, ValueError, cv2.error) as e:  # DataReadError: a ValueError naming the file
            report_error(str(e) if isinstance(e, DataReadError) else f"{path}: failed ({type(e).__name__}: {e})")
            failures += 1
            continue
        logger.info(f"{path}: {int(result['painted'].sum())} faces in {time.perf_counter() - start:.2f}s")
        if not args.output and show(overlay, 0):
            break
    for file, plan in zip(inputs.files, plans):
        if file.kind == "video":
            failures += run_one_video(demo, args, logger, file.path, plan)
    if failures:
        report_error(f"{failures} of {len(inputs.files) + len(inputs.missing)} inputs failed")
    return failures


def run_one_video(demo, args, logger, path: str, plan: OutputPlan) -> int:
    """Parse one video file; 1 when it cannot be opened or ends before its announced frame count."""
    import cv2
    import tqdm

    from qanet_d2.data.inputs import VideoWriter

    video = cv2.VideoCapture(path)
    if not os.path.isfile(path) or not video.isOpened():
        report_error(f"{path}: cannot open the video")
        return 1
    width, height = int(video.get(cv2.CAP_PROP_FRAME_WIDTH)), int(video.get(cv2.CAP_PROP_FRAME_HEIGHT))
    fps = video.get(cv2.CAP_PROP_FPS)
    if not 0 < fps < float("inf"):  # also NaN
        logger.info(f"{path}: no frame rate in the file, writing 25 fps")
        fps = 25.0
    announced = int(video.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    writer, frames, records = None, 0, []
    if plan.labels:
        write_json(plan.legend, {"classes": demo.legend})
    try:
        if plan.overlay:
            writer = VideoWriter(plan.overlay, fps, (width, height), audio_from=path)
        progress = tqdm.tqdm(demo.run_on_video(video), total=announced, desc="frames", unit="frame",
                             disable=not args.output)
        for index, (result, overlay) in enumerate(progress):
            frames += 1
            if plan.labels:
                write_label_png(os.path.join(plan.labels, f"{index:05d}.png"), result["labels"], demo.colors)
            if plan.json:
                records.append({"frame": index, "faces": faces_record(result, demo, args.json_class_masks)})
            if overlay.shape[:2] != (height, width):
                overlay = cv2.resize(overlay, (width, height))
            if writer is not None:
                writer.write(overlay)
            elif show(overlay, 1):
                break
    except (OSError, RuntimeError, ValueError) as e:
        report_error(f"{path}: failed at frame {frames} ({type(e).__name__}: {e})")
        return 1
    finally:
        video.release()
        if writer is not None:
            writer.close()
    if plan.json:
        write_json(plan.json, {**json_header(demo, path, (height, width)), "fps": fps, "frames": records})
    if frames == 0:
        report_error(f"{path}: no frame could be decoded")
        return 1
    written = f"{frames} frames written to {plan.overlay}" if plan.overlay else f"{frames} frames shown"
    if announced and frames < announced and (writer is not None or plan.labels or plan.json):
        report_error(f"{path}: the video ended after {frames} of its {announced} frames (truncated or damaged file); {written}")
        return 1
    codec = f", {writer.codec}" + (" with the input's audio" if writer.audio_copied else "") if writer is not None else ""
    logger.info(f"{path}: {frames} frames at {fps:.2f} fps, {width}x{height}{codec}")
    return 0


def run_video(demo, args, logger) -> int:
    from qanet_d2.data.inputs import InputFile

    path = args.video_input
    if not os.path.isfile(path):
        report_error(f"{path}: no such video file")
        return 1
    plans = plan_outputs(args, [InputFile(path, os.path.basename(path), "video")])
    return 1 if plans is None else run_one_video(demo, args, logger, path, plans[0])


def run_webcam(demo, args, logger) -> int:
    import cv2
    import tqdm

    from qanet_d2.data.inputs import VideoWriter

    cam = cv2.VideoCapture(0)
    if not cam.isOpened():
        report_error("cannot open the webcam (device 0)")
        return 1
    if args.output and os.path.exists(args.output) and not args.overwrite:
        refuse_existing([args.output])
        return 1
    writer = None
    try:
        for result, overlay in tqdm.tqdm(demo.run_on_video(cam), desc="webcam", unit="frame"):
            if args.output:
                if writer is None:
                    writer = VideoWriter(args.output, 15.0, (overlay.shape[1], overlay.shape[0]))
                writer.write(overlay)
            elif show(overlay, 1):
                break
    finally:
        cam.release()
        if writer is not None:
            writer.close()
        cv2.destroyAllWindows()
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_argument_parser()
    args = parser.parse_args(None if argv is None else [str(a) for a in argv])
    if (args.save_labels == "" or args.save_json == "") and not args.output:
        parser.error("--save-labels / --save-json without a folder write next to the overlays: pass --output "
                     "(or give them a folder)")

    import cv2

    import qanet_d2  # noqa: F401  (compat shims, registrations)
    from detectron2.utils.logger import setup_logger
    from predictor import VisualizationDemo
    from qanet_d2.predictor import FaceParsingPredictor

    setup_logger(name="fvcore")
    logger = setup_logger(name="qanet_d2.demo")
    try:
        cfg = setup_cfg(args)
        try:
            model = FaceParsingPredictor(cfg)
        except (OSError, RuntimeError, KeyError, ValueError, EOFError) as e:
            raise UsageError(f"cannot load the model of {args.config_file or 'the shipped model'} "
                             f"(MODEL.WEIGHTS {cfg.MODEL.WEIGHTS or '(none)'}): {type(e).__name__}: {e}".replace("\n", " ")) from None
    except UsageError as e:
        print(f"ERROR {e}", file=sys.stderr)
        return EXIT_USAGE
    demo = VisualizationDemo(cfg, model, alpha=args.alpha, temporal_window=args.temporal_window,
                             max_overlay_size=args.max_overlay_size, overlay=args.overlay)
    run = run_images if args.input else run_video if args.video_input else run_webcam
    try:
        failures = run(demo, args, logger)
    except cv2.error as e:
        message = str(e).lower()
        if not args.output and ("imshow" in message or "gui" in message):
            print("ERROR cannot open a window (OpenCV without GUI support): pass --output", file=sys.stderr)
            return EXIT_USAGE
        raise
    return EXIT_FAILED if failures else 0


if __name__ == "__main__":
    sys.exit(main())
