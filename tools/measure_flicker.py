#!/usr/bin/env python
"""Label flicker and J&F of video face parsing with and without temporal smoothing.

    python tools/measure_flicker.py --config-file configs/quickstart/qanet_fcos_synth.yaml \\
        --dataset face_synth_val --windows 1 3 5 --align box image \\
        --opts MODEL.WEIGHTS output/quickstart/model_final.pth

Every frame of ``--dataset`` is parsed once; each smoothing setting (window, alignment,
``--current-weights``; window 1: none) re-paints the frames from those outputs. Settings with
``--detect-every K`` > 1 run :class:`qanet_d2.video.VideoPredictor` (tracks between detections)
themselves. Reported per setting: flicker (:func:`qanet_d2.video.label_change_rate`, mean over
videos; the ground truth's own beside it) and J&F, J, F, mIoU.
"""
import argparse
import itertools
import json
import logging
import os
import sys
import time
from collections import OrderedDict, defaultdict
from typing import Dict, List, Optional

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from qanet_d2 import get_qanet_cfg  # noqa: E402  (also the compat shims, registrations)

logger = logging.getLogger("qanet_d2.measure_flicker")


def group_videos(dicts: List[Dict], max_videos: Optional[int] = None) -> "OrderedDict[str, List[Dict]]":
    """Dataset dicts grouped by ``video_id`` (in dataset order), frames sorted by ``frame_index``."""
    videos: "OrderedDict[str, List[Dict]]" = OrderedDict()
    for d in dicts:
        videos.setdefault(str(d.get("video_id", d.get("image_id", d["file_name"]))), []).append(d)
    for frames in videos.values():
        frames.sort(key=lambda d: int(d.get("frame_index", 0)))
    if max_videos:
        videos = OrderedDict(list(videos.items())[:max_videos])
    return videos


def measure(predictor, dataset_name: str, settings: List[Dict], max_videos: Optional[int] = None, absent_class: str = "skip", bound_th: float = 0.008) -> List[Dict]:
    """One row of flicker and J&F per ``setting`` ({"window", "align", "current_weight",
    "detect_every", "track_motion"}), and a "ground truth" row (flicker only)."""
    from detectron2.data import DatasetCatalog
    from qanet_d2.data.io import read_image, read_label_map
    from qanet_d2.evaluation import FaceParsingEvaluator
    from qanet_d2.video import VideoPredictor, label_change_rate

    videos = group_videos(DatasetCatalog.get(dataset_name), max_videos)
    settings = [{"current_weight": 0.7, "detect_every": 1, "track_motion": "velocity", **s} for s in settings]
    videos_smoothed = [VideoPredictor(predictor, **s) for s in settings]
    evaluators = [FaceParsingEvaluator(dataset_name, distributed=False, absent_class=absent_class, bound_th=bound_th)
                  for _ in settings]
    flicker = defaultdict(list)
    start = time.perf_counter()
    for video_id, frames in videos.items():
        images = [read_image(d["file_name"], "BGR") for d in frames]
        # One model run per frame serves every setting that detects on every frame.
        faces = [predictor.run_model(image) for image in images] if any(v.detect_every == 1 for v in videos_smoothed) else None
        gt = [read_label_map(d["sem_seg_file_name"]) for d in frames if d.get("sem_seg_file_name")]
        if len(gt) == len(frames):
            flicker["gt"].append(label_change_rate(gt))
        for k, (video, evaluator) in enumerate(zip(videos_smoothed, evaluators)):
            video.reset()
            labels = []
            for t, d in enumerate(frames):
                # Detection every k frames: the tracker decides what the model parses, so the
                # setting runs the model itself.
                result = video.process(faces[t]) if video.detect_every == 1 else video(images[t])
                labels.append(result["labels"])
                evaluator.process_label_map(d, result["labels"])
            flicker[k].append(label_change_rate(labels, ignore_label=None))
        logger.info(f"{video_id}: {len(frames)} frames ({time.perf_counter() - start:.0f}s)")
    rows = []
    for k, (setting, evaluator) in enumerate(zip(settings, evaluators)):
        res = evaluator.evaluate()["face_parsing"]
        cw = setting["current_weight"]
        name = "no smoothing" if setting["window"] == 1 else (
            f"window {setting['window']}, {setting['align']}-aligned, " + ("plain mean" if cw is None else f"current frame {cw:g}")
        )
        if setting["detect_every"] > 1:
            name += f", detector every {setting['detect_every']} frames ({setting['track_motion']} tracks)"
        rows.append({
            "setting": name,
            **setting,
            "flicker_pct": 100 * float(np.mean(flicker[k])),
            "J&F": float(res["J&F"]), "J": float(res["J"]), "F": float(res["F"]), "mIoU": float(res["mIoU"]),
        })
    if flicker["gt"]:
        rows.append({"setting": "ground truth", "window": None, "align": None, "current_weight": None, "flicker_pct": 100 * float(np.mean(flicker["gt"]))})
    logger.info(f"{len(videos)} videos, {sum(map(len, videos.values()))} frames in {time.perf_counter() - start:.0f}s")
    return rows


def markdown_table(rows: List[Dict]) -> str:
    lines = ["| setting | flicker % (pixels changing label per frame) | J&F | J | F | mIoU |", "|---|---|---|---|---|---|"]
    for r in rows:
        if "J&F" in r:
            lines.append(f"| {r['setting']} | {r['flicker_pct']:.3f} | {r['J&F']:.2f} | {r['J']:.2f} | {r['F']:.2f} | {r['mIoU']:.2f} |")
        else:
            lines.append(f"| {r['setting']} | {r['flicker_pct']:.3f} | | | | |")
    return "\n".join(lines)


def build_argument_parser():
    p = argparse.ArgumentParser(description="Flicker and J&F with and without temporal smoothing")
    p.add_argument("--config-file", required=True, metavar="FILE")
    p.add_argument("--dataset", default=None, help="registered video dataset (default: DATASETS.TEST[0])")
    p.add_argument("--windows", type=int, nargs="+", default=[1, 3, 5], help="smoothing windows in frames (1 = none)")
    p.add_argument("--align", nargs="+", default=["box", "image"], choices=["box", "image"])
    p.add_argument("--current-weights", nargs="+", default=["0.7", "none"],
                   help="weights of the current frame's probabilities ('none': plain mean over the window)")
    p.add_argument("--detect-every", type=int, nargs="+", default=[1],
                   help="run the detector every k frames, following the faces with the tracker in between "
                   "(VIDEO.DETECT_EVERY); each k is combined with every smoothing setting")
    p.add_argument("--track-motion", default=None, choices=["velocity", "still"], help="default: the config's VIDEO.TRACK_MOTION")
    p.add_argument("--max-videos", type=int, default=None)
    p.add_argument("--json", help="also write the rows here")
    p.add_argument("--opts", default=[], nargs=argparse.REMAINDER, help="config KEY VALUE pairs")
    return p


def main(argv: Optional[List[str]] = None) -> List[Dict]:
    from detectron2.utils.logger import setup_logger
    from qanet_d2.predictor import FaceParsingPredictor

    args = build_argument_parser().parse_args(argv)
    setup_logger(name="qanet_d2.measure_flicker")
    cfg = get_qanet_cfg()
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.freeze()
    dataset = args.dataset or cfg.DATASETS.TEST[0]
    weights = [None if str(v).lower() == "none" else float(v) for v in args.current_weights]
    smoothing = [{"window": int(w), "align": a, "current_weight": cw} for w in args.windows
                 for a, cw in ([("box", None)] if w == 1 else itertools.product(args.align, weights))]
    motion = args.track_motion or cfg.VIDEO.TRACK_MOTION
    settings = [{**s, "detect_every": int(k), "track_motion": motion} for k in args.detect_every for s in smoothing]
    predictor = FaceParsingPredictor(cfg)
    rows = measure(predictor, dataset, settings, args.max_videos, cfg.TEST.FACE_PARSING.ABSENT_CLASS, cfg.TEST.FACE_PARSING.BOUND_TH)
    print(f"\n{dataset}, {args.config_file} {' '.join(map(str, args.opts))}\n")
    print(markdown_table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return rows


if __name__ == "__main__":
    main()
