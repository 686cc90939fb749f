#!/usr/bin/env python
"""Frames per second of video face parsing (the demo's ``--video-input`` / ``--webcam`` path),
stage by stage, for clips with 1 and 4 faces.

    python tools/benchmark_video.py --config-file configs/realtime/qanet_fcos_synth_realtime.yaml \\
        --opts MODEL.WEIGHTS output/realtime/model_final.pth VIDEO.DETECT_EVERY 1

Clips: synthetic videos whose every frame shows exactly N moving faces, run frame by frame
through :class:`qanet_d2.video.VideoPredictor` as ``demo/demo.py`` runs it (decoding and drawing
not timed). With ``--boxes gt`` the detector runs on detection frames, but the clip's known boxes
are parsed and every face is painted. Stages are timed by the post-processing's ``StageTimes``;
"other" is the rest of the frame's time. See docs/tools.md.
"""
import argparse
import json
import os
import statistics
import sys
import time
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import qanet_d2  # noqa: E402,F401  (compat shims, registrations)
from benchmark import machine_description, markdown_table, setup_cfg  # noqa: E402

STAGES = ("resize", "detector", "crop", "parser", "rescale", "score", "smooth", "paint", "face_labels")


def synthetic_clip(num_faces: int, width: int = 640, height: int = 480, frames: int = 60,
                   seed: int = 0) -> Tuple[List[np.ndarray], List[np.ndarray]]:
    """BGR frames of a synthetic video with exactly ``num_faces`` (1-4) faces in every frame, and
    each frame's XYXY_ABS face boxes."""
    from qanet_d2.data.synthetic import MAX_FACES, SyntheticVideo

    if not 1 <= num_faces <= MAX_FACES:
        raise ValueError(f"--faces: the synthetic videos hold 1 to {MAX_FACES} faces, got {num_faces}")
    for k in range(2000):
        video = SyntheticVideo((seed, num_faces, k), width, height, frames)
        if any(len(video.render(t).boxes) != num_faces for t in (0, frames // 2, frames - 1)):
            continue
        rendered = [video.render(t) for t in range(frames)]
        if all(len(r.boxes) == num_faces for r in rendered):
            return [r.image for r in rendered], [np.asarray(r.boxes, np.float32) for r in rendered]
    raise RuntimeError(f"no synthetic {width}x{height} video with {num_faces} faces in every frame found")


def run_clip(video, frames: List[np.ndarray], boxes: Optional[List[np.ndarray]] = None) -> List[Dict[str, float]]:
    """Every frame through ``video`` (reset first): per frame the stage seconds, ``total`` and
    ``cpu``. ``boxes``: per frame, parsed instead of the detections (the detector still runs)."""
    from qanet_d2.modeling.postprocessing import StageTimes

    video.reset()
    model = video.predictor.model
    rows = []
    for t, frame in enumerate(frames):
        times = StageTimes(sync=model.device.type == "cuda")
        start, cpu_start = time.perf_counter(), time.process_time()
        if boxes is not None and video.is_detection_frame(t) and model.detector is not None:
            inputs, _ = video.predictor.model_inputs([frame])
            with torch.no_grad(), times("detector"):
                model.detect(inputs)
        video(frame, boxes=None if boxes is None else boxes[t], times=times)
        total, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        rows.append({**times.wall, "total": total, "cpu": cpu})
    return rows


def benchmark(cfg, faces: List[int], frames: int, width: int, height: int, gt_boxes: bool, warmup: int) -> List[Dict]:
    from qanet_d2.predictor import FaceParsingPredictor
    from qanet_d2.video import VideoPredictor

    video = VideoPredictor(cfg, FaceParsingPredictor(cfg))
    rows = []
    for n in faces:
        images, boxes = synthetic_clip(n, width, height, frames)
        known = boxes if gt_boxes else None
        for _ in range(max(0, warmup)):
            run_clip(video, images, known)
        load_before = os.getloadavg()[0]
        per_frame = run_clip(video, images, known)
        load_after = os.getloadavg()[0]
        totals = [r["total"] * 1000 for r in per_frame]
        median_ms = statistics.median(totals)
        cpu_ms = statistics.median(r["cpu"] * 1000 for r in per_frame)
        stage_ms = {s: 1000 * sum(r.get(s, 0.0) for r in per_frame) / len(per_frame) for s in STAGES}
        mean_ms = sum(totals) / len(totals)
        rows.append({
            "faces": n,
            "frames": len(per_frame),
            "fps_median": 1000.0 / median_ms,
            "fps_mean": 1000.0 / mean_ms,
            "ms_median": median_ms,
            "ms_p90": float(np.percentile(totals, 90)),
            "ms_mean": mean_ms,
            "cpu_ms_median": cpu_ms,
            **{f"{s}_ms": stage_ms[s] for s in STAGES},
            "other_ms": mean_ms - sum(stage_ms.values()),
            "load_before": load_before,
            "load_after": load_after,
        })
    return rows


def video_table(rows: List[Dict], title: str = "") -> str:
    head = ["faces", "frames/s (median)", "frames/s (mean)", "ms/frame median", "p90", *(f"{s} ms" for s in STAGES),
            "other ms", "CPU ms/frame median", "load avg (start/end)"]
    return markdown_table(head, [
        [r["faces"], *(f"{r[k]:.1f}" for k in ("fps_median", "fps_mean", "ms_median", "ms_p90")),
         *(f"{r[f'{s}_ms']:.1f}" for s in STAGES), f"{r['other_ms']:.1f}", f"{r['cpu_ms_median']:.1f}",
         f"{r['load_before']:.1f} / {r['load_after']:.1f}"] for r in rows], title)


def build_argument_parser():
    p = argparse.ArgumentParser(description="Frames per second of video face parsing, per stage, for 1 and 4 faces")
    p.add_argument("--config-file", required=True, metavar="FILE")
    p.add_argument("--faces", type=int, nargs="+", default=[1, 4], help="faces per frame (1-4)")
    p.add_argument("--frames", type=int, default=60, help="frames per clip (all timed)")
    p.add_argument("--warmup", type=int, default=1, help="untimed passes over each clip first")
    p.add_argument("--size", type=int, nargs=2, default=[640, 480], metavar=("W", "H"), help="frame size")
    p.add_argument("--threads", type=int, default=2, help="torch threads (0: torch's default)")
    p.add_argument("--boxes", choices=("detector", "gt"), default="detector", help="faces parsed on detection frames: the detector's, or the clip's known boxes (the detector still runs)")
    p.add_argument("--json", help="also write the rows here")
    p.add_argument("--opts", default=[], nargs=argparse.REMAINDER, help="config KEY VALUE pairs")
    return p


def main(argv: Optional[List[str]] = None) -> List[Dict]:
    from detectron2.utils.logger import setup_logger

    args = build_argument_parser().parse_args(argv)
    setup_logger(name="qanet_d2")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = setup_cfg(args.config_file, args.opts, paint_all=args.boxes == "gt")
    rows = benchmark(cfg, args.faces, args.frames, args.size[0], args.size[1], args.boxes == "gt", args.warmup)
    v, q = cfg.VIDEO, cfg.MODEL.QANET
    title = (
        f"{args.size[0]}x{args.size[1]}, {args.frames} frames, detector every {v.DETECT_EVERY} frame(s) "
        f"(track motion {v.TRACK_MOTION}), smoothing window {v.TEMPORAL_WINDOW} ({v.ALIGN}), "
        f"crop {q.INPUT_SIZE[0]}x{q.INPUT_SIZE[1]}, flip test {'on' if cfg.TEST.AUG.ENABLED else 'off'}, boxes: {args.boxes}"
    )
    print(f"config: {args.config_file} {' '.join(map(str, args.opts))}")
    print(f"machine: {machine_description()}")
    print(f"\n{video_table(rows, title)}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine_description(), "config": args.config_file, "opts": list(map(str, args.opts)), "rows": rows}, f, indent=2)
    return rows


if __name__ == "__main__":
    main()
