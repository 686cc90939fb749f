#!/usr/bin/env python
"""Inference speed and memory of a face parsing model, stage by stage, for 1, 4 and 16 faces.

    python tools/benchmark.py --config-file configs/quickstart/qanet_fcos_synth.yaml
    python tools/benchmark.py --config-file ... --faces 1 4 --repeats 1 --compare-unbatched

Images: synthetic pictures with a grid of N faces; the model has random weights without
``MODEL.WEIGHTS`` (speed does not depend on them). The detector runs and is timed, but the
image's known N boxes are parsed and every face is painted. The stages of
:class:`qanet_d2.FaceParsingPredictor` are timed by the post-processing's ``StageTimes`` (wall
and CPU time; median over ``--repeats``), with the peak RSS per row (see docs/tools.md).
"""
import argparse
import json
import os
import platform
import statistics
import sys
from typing import Dict, List, Optional

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import qanet_d2  # noqa: E402,F401  (compat shims, registrations)
from qanet_d2 import get_qanet_cfg  # noqa: E402

STAGES = ("resize", "detector", "crop", "parser", "rescale", "score", "paint", "face_labels")


# ---------------------------------------------------------------------------- images
def _one_face_cell(seed: int, width: int, height: int):
    """A synthetic picture of one face filling a ``width x height`` cell, and its box."""
    from qanet_d2.data.synthetic import SyntheticVideo

    for k in range(200):
        frame = SyntheticVideo((seed, k), width, height, 1).render(0)
        if len(frame.boxes) == 1 and len(frame.poses) == 1:
            return frame.image, frame.boxes[0]
    raise RuntimeError("no one-face synthetic frame found")


def grid_image(num_faces: int, width: int = 1280, height: int = 960, seed: int = 0):
    """BGR image with ``num_faces`` (a square number) faces on a grid, and their XYXY_ABS boxes."""
    side = int(round(num_faces ** 0.5))
    if side * side != num_faces:
        raise ValueError(f"--faces must be square numbers (1, 4, 9, 16, ...), got {num_faces}")
    cell_w, cell_h = width // side, height // side
    image = np.zeros((height, width, 3), np.uint8)
    boxes = []
    for r in range(side):
        for c in range(side):
            cell, box = _one_face_cell(seed * 1000 + r * side + c, cell_w, cell_h)
            image[r * cell_h : (r + 1) * cell_h, c * cell_w : (c + 1) * cell_w] = cell
            boxes.append([box[0] + c * cell_w, box[1] + r * cell_h, box[2] + c * cell_w, box[3] + r * cell_h])
    return image, np.asarray(boxes, np.float32)


# ---------------------------------------------------------------------------- memory
def reset_peak_memory() -> None:
    """Reset the kernel's peak-RSS counter of this process (Linux ``clear_refs`` 5)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_memory_mb() -> float:
    """VmHWM (resettable), else the process's maximum RSS."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024.0
    except (OSError, StopIteration):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# ---------------------------------------------------------------------------- timing
def run_stages(predictor, image_bgr: np.ndarray, boxes: np.ndarray) -> Dict:
    """One image through the predictor, its stages timed, ``boxes`` parsed instead of the
    detections (the detector runs and is timed). Returns ``{"wall": {stage: s}, "cpu": {stage: s},
    "result": ...}``."""
    from qanet_d2.modeling.postprocessing import StageTimes

    times = StageTimes(sync=predictor.model.device.type == "cuda")
    if predictor.model.detector is not None:
        inputs, _ = predictor.model_inputs([image_bgr])
        with torch.no_grad(), times("detector"):
            predictor.model.detect(inputs)
    result = predictor.predict_batch([image_bgr], boxes=[boxes], times=times)[0]
    return {"wall": times.wall, "cpu": times.cpu, "result": result}


def benchmark(cfg, faces: List[int], repeats: int = 3, width: int = 1280, height: int = 960, warmup: int = 1) -> List[Dict]:
    from qanet_d2.predictor import FaceParsingPredictor

    predictor = FaceParsingPredictor(cfg)
    rows = []
    for n in faces:
        image, boxes = grid_image(n, width, height)
        for _ in range(max(0, warmup)):
            run_stages(predictor, image, boxes)
        reset_peak_memory()
        runs = [run_stages(predictor, image, boxes) for _ in range(max(1, repeats))]
        stage_ms = {s: 1000 * statistics.median(r["wall"].get(s, 0.0) for r in runs) for s in STAGES}
        cpu_ms = {s: 1000 * statistics.median(r["cpu"].get(s, 0.0) for r in runs) for s in STAGES}
        total = sum(stage_ms.values())
        rows.append({
            "faces": n,
            **{f"{s}_ms": stage_ms[s] for s in STAGES},
            "total_ms": total,
            "faces_per_s": 1000.0 * n / total,
            "ms_per_face": total / n,
            "parser_ms_per_face": stage_ms["parser"] / n,
            "paint_share": (stage_ms["paint"] + stage_ms["face_labels"]) / total,
            **{f"{s}_cpu_ms": cpu_ms[s] for s in STAGES},
            "total_cpu_ms": sum(cpu_ms.values()),
            "peak_rss_mb": peak_memory_mb(),
        })
    return rows


def machine_description() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), {device}"


def markdown_table(head: List[str], rows: List[List], title: str = "") -> str:
    """A Markdown table of ``head`` and ``rows`` (cells), under ``title`` in bold when given."""
    lines = ([f"**{title}**", ""] if title else []) + ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(map(str, r)) + " |" for r in rows])


def stage_table(rows: List[Dict], title: str = "") -> str:
    head = ["faces/image", *(f"{s} ms" for s in STAGES), "total ms", "faces/s", "ms/face", "parser ms/face", "peak RSS MB"]
    return markdown_table(head, [
        [r["faces"], *(f"{r[f'{s}_ms']:.1f}" for s in STAGES), f"{r['total_ms']:.1f}", f"{r['faces_per_s']:.2f}",
         f"{r['ms_per_face']:.1f}", f"{r['parser_ms_per_face']:.1f}", f"{r['peak_rss_mb']:.0f}"] for r in rows], title)


def cpu_table(rows: List[Dict]) -> str:
    """CPU time per stage, and the paste-back's (paint, face_labels) share of the wall time."""
    head = ["faces/image", *(f"{s} CPU ms" for s in STAGES), "total CPU ms", "paste-back share of wall time"]
    return markdown_table(head, [[r["faces"], *(f"{r[f'{s}_cpu_ms']:.1f}" for s in STAGES), f"{r['total_cpu_ms']:.1f}",
                                  f"{100 * r['paint_share']:.1f} %"] for r in rows])


def build_argument_parser():
    p = argparse.ArgumentParser(description="Per-stage inference time and memory for 1, 4 and 16 faces")
    p.add_argument("--config-file", required=True, metavar="FILE")
    p.add_argument("--faces", type=int, nargs="+", default=[1, 4, 16], help="faces per image (square numbers)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per row (median), after the warm-up")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs per row first")
    p.add_argument("--size", type=int, nargs=2, default=[1280, 960], metavar=("W", "H"), help="image size")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--compare-unbatched", action="store_true", help="also run with MODEL.QANET.INFERENCE.PARSER_BATCH 1")
    p.add_argument("--json", help="also write the rows here")
    p.add_argument("--opts", default=[], nargs=argparse.REMAINDER, help="config KEY VALUE pairs")
    return p


def setup_cfg(config_file: str, opts=(), paint_all: bool = True):
    """The frozen config of ``config_file`` with ``opts``; with ``paint_all`` every face is painted
    (both score thresholds 0, before ``opts``)."""
    cfg = get_qanet_cfg()
    cfg.merge_from_file(config_file)
    if paint_all:
        cfg.merge_from_list(["MODEL.QANET.INFERENCE.BOX_SCORE_THRESH", 0.0, "MODEL.QANET.INFERENCE.QUALITY_SCORE_THRESH", 0.0])
    cfg.merge_from_list(list(opts))
    cfg.freeze()
    return cfg


def main(argv: Optional[List[str]] = None) -> Dict[str, List[Dict]]:
    from qanet_d2.modeling.test_time_augmentation import tta_views_from_config

    args = build_argument_parser().parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    results = {}
    variants = [("batched", [])]
    if args.compare_unbatched:
        variants.append(("unbatched (PARSER_BATCH 1)", ["MODEL.QANET.INFERENCE.PARSER_BATCH", 1]))
    print(f"config: {args.config_file} {' '.join(map(str, args.opts))}")
    print(f"machine: {machine_description()}")
    for name, extra in variants:
        cfg = setup_cfg(args.config_file, list(args.opts) + list(extra))
        rows = benchmark(cfg, args.faces, args.repeats, args.size[0], args.size[1], args.warmup)
        results[name] = rows
        q = cfg.MODEL.QANET
        views = tta_views_from_config(cfg)
        title = (
            f"{name}: image {args.size[0]}x{args.size[1]}, detector input {cfg.INPUT.MIN_SIZE_TEST} (max {cfg.INPUT.MAX_SIZE_TEST}), "
            f"crop {q.INPUT_SIZE[0]}x{q.INPUT_SIZE[1]}, parser batch {q.INFERENCE.PARSER_BATCH}, "
            f"{len(views)} view(s) (box scale, flip): {views}"
        )
        print(f"\n{stage_table(rows, title)}\n\n{cpu_table(rows)}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine_description(), "config": args.config_file, "opts": list(map(str, args.opts)), "results": results}, f, indent=2)
    return results


if __name__ == "__main__":
    main()
