#!/usr/bin/env python
"""Inference speed and memory of a face parsing model, stage by stage, for 1, 4 and 16 faces.

    python tools/benchmark.py --config-file configs/quickstart/qanet_fcos_synth.yaml
    python tools/benchmark.py --config-file configs/celebamask_hq/qanet_hrnet_w48_512x384.yaml \\
        --faces 1 4 --repeats 1
    python tools/benchmark.py --config-file ... --compare-unbatched   # also PARSER_BATCH 1

Images: synthetic 1280 x 960 pictures holding a grid of 1, 4 or 16 synthetic faces
(``qanet_d2.data.synthetic``). The model is built from the config (``MODEL.WEIGHTS`` if given,
else random weights: speed does not depend on them). The detector runs on every image and is
timed, but the faces parsed are the image's known N face boxes rather than the detections, so
that every row parses exactly N faces whatever the weights.

Stages, timed with ``time.perf_counter`` around the model's own methods, in the order of
``QANetFaceParser.inference`` (with the config's flip test if ``TEST.AUG.ENABLED`` and
``TEST.AUG.FLIP``, which doubles the parser's work; other box scales are not benchmarked):

* detector: resize to ``INPUT.MIN_SIZE_TEST`` (and ``MODEL.FCOS.INPUT_SCALE``), FCOS backbone +
  head + box decoding and NMS (``QANetFaceParser.face_boxes``);
* crop: parser input normalisation, box -> 3:4 crop affines, ``grid_sample`` crops;
* parser: backbone + neck + parsing and IoU branches + softmax, ``PARSER_BATCH`` crops per call;
* scoring: pixel scores and face quality scores;
* paste: crop probabilities pasted back at the original size, faces painted by score, argmax.

Reports the median over ``--repeats`` runs after one warm-up, the total, faces per second,
milliseconds per face and the peak resident memory of the process during the N-face runs
(VmHWM, reset between rows where the kernel allows it). Prints a markdown table.
"""
import argparse
import json
import os
import platform
import statistics
import sys
import time
from typing import Dict, List, Optional

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import qanet_d2  # noqa: E402,F401  (compat shims, registrations)
from qanet_d2 import add_qanet_config  # noqa: E402

STAGES = ("detector", "crop", "parser", "scoring", "paste")


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
    """BGR ``height x width`` image with ``num_faces`` (a square number) faces on a grid, and the
    ``num_faces x 4`` XYXY_ABS face boxes."""
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
def _read_vm_hwm_kb() -> Optional[int]:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak_memory() -> bool:
    """Reset the kernel's peak-RSS counter of this process (Linux ``clear_refs`` 5)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_memory_mb() -> float:
    hwm = _read_vm_hwm_kb()
    if hwm is None:
        import resource

        hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return hwm / 1024.0


# ---------------------------------------------------------------------------- timing
class StageTimer:
    def __init__(self):
        self.times: Dict[str, float] = {}

    def __call__(self, name):
        timer = self

        class _Ctx:
            def __enter__(self):
                self.start = time.perf_counter()

            def __exit__(self, *exc):
                timer.times[name] = timer.times.get(name, 0.0) + time.perf_counter() - self.start

        return _Ctx()


@torch.no_grad()
def run_stages(model, aug, image_bgr: np.ndarray, boxes: np.ndarray, flips=(False,)) -> Dict[str, float]:
    """One image through the model's inference steps, timing each stage (seconds).

    Mirrors ``QANetFaceParser.inference`` for one box scale (``flips``: the crop views, e.g.
    ``(False, True)`` for the flip test); the parsed faces are ``boxes`` (original image
    coordinates) instead of the detections.
    """
    from qanet_d2.data.crops import boxes_to_affines, crop_images, scale_affines
    from qanet_d2.modeling.qanet.inference import face_scores, pixel_scores

    timer = StageTimer()
    height, width = image_bgr.shape[:2]
    with timer("detector"):
        image = image_bgr if model.input_format == "BGR" else image_bgr[:, :, ::-1]
        resized = aug.get_transform(image).apply_image(image)
        inputs = [{"image": torch.as_tensor(np.ascontiguousarray(resized.transpose(2, 0, 1))), "height": height, "width": width}]
        if model.detector is not None:
            saved, model.test_boxes = model.test_boxes, "detector"
            try:
                model.face_boxes(inputs, [resized.shape[:2]])
            finally:
                model.test_boxes = saved
    in_h, in_w = resized.shape[:2]
    sx, sy = width / in_w, height / in_h
    n = len(boxes)
    with timer("crop"):
        parser_images, _ = model.parser_images(inputs)
        b = torch.as_tensor(boxes, dtype=torch.float32, device=model.device).clone()
        b[:, 0::2] /= sx
        b[:, 1::2] /= sy
        affines, _ = boxes_to_affines(model.crop_regions(b), model.crop_size)
        batch_idx = torch.zeros(n, dtype=torch.long, device=model.device)
        crops = crop_images(parser_images, batch_idx, affines, model.crop_size)
    probs, ious = [], []
    with timer("parser"):
        for start in range(0, n, model.parser_batch):
            p, iou = model.parse_crops(crops[start : start + model.parser_batch], list(flips), [model.parser])
            probs.append(p)
            ious.append(iou)
        probs = torch.cat(probs) if probs else crops.new_zeros((0, model.num_classes) + model.crop_size)
        ious = torch.cat(ious) if ious else crops.new_zeros(0)
    with timer("scoring"):
        pix = pixel_scores(probs, model.pixel_score_thresh)
        scores = face_scores(torch.ones(n, device=model.device), ious.clamp(0, 1), pix, model.score_weights)
    with timer("paste"):
        affines = scale_affines(affines, sx, sy)
        # all faces painted, whatever their (random-weight) scores
        sem_seg = model.paste_and_paint([probs], [affines], torch.ones_like(scores) + scores * 1e-3, (height, width))
        sem_seg.argmax(dim=0)
    return timer.times


def benchmark(cfg, faces: List[int], repeats: int = 3, width: int = 1280, height: int = 960, warmup: int = 1) -> List[Dict]:
    import detectron2.data.transforms as T
    from detectron2.modeling import build_model
    from qanet_d2.engine.checkpoint import load_model_weights

    model = build_model(cfg).eval()
    load_model_weights(cfg, model)
    aug = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST] * 2, cfg.INPUT.MAX_SIZE_TEST)
    flips = (False, True) if cfg.TEST.AUG.ENABLED and cfg.TEST.AUG.FLIP else (False,)
    rows = []
    for n in faces:
        image, boxes = grid_image(n, width, height)
        for _ in range(max(0, warmup)):
            run_stages(model, aug, image, boxes, flips)
        reset_peak_memory()
        runs = [run_stages(model, aug, image, boxes, flips) for _ in range(max(1, repeats))]
        stage_ms = {s: 1000 * statistics.median(r.get(s, 0.0) for r in runs) for s in STAGES}
        total = sum(stage_ms.values())
        rows.append({
            "faces": n,
            **{f"{s}_ms": stage_ms[s] for s in STAGES},
            "total_ms": total,
            "faces_per_s": 1000.0 * n / total,
            "ms_per_face": total / n,
            "parser_ms_per_face": stage_ms["parser"] / n,
            "peak_rss_mb": peak_memory_mb(),
        })
    return rows


def machine_description() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        if names:
            cpu = names[0]
    except OSError:
        pass
    device = "CPU"
    if torch.cuda.is_available():
        device = torch.cuda.get_device_name(0)
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), {device}"


def markdown_table(rows: List[Dict], title: str = "") -> str:
    head = "| faces/image | " + " | ".join(f"{s} ms" for s in STAGES) + " | total ms | faces/s | ms/face | parser ms/face | peak RSS MB |"
    sep = "|" + "---|" * (len(STAGES) + 6)
    lines = ([f"**{title}**", ""] if title else []) + [head, sep]
    for r in rows:
        lines.append(
            f"| {r['faces']} | " + " | ".join(f"{r[f'{s}_ms']:.1f}" for s in STAGES)
            + f" | {r['total_ms']:.1f} | {r['faces_per_s']:.2f} | {r['ms_per_face']:.1f} | {r['parser_ms_per_face']:.1f} | {r['peak_rss_mb']:.0f} |"
        )
    return "\n".join(lines)


def get_parser():
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


def setup_cfg(args, extra=()):
    from detectron2.config import get_cfg

    cfg = get_cfg()
    add_qanet_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(list(args.opts) + list(extra))
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        cfg.MODEL.DEVICE = "cpu"
    cfg.freeze()
    return cfg


def main(argv: Optional[List[str]] = None) -> Dict[str, List[Dict]]:
    args = get_parser().parse_args(argv)
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
        cfg = setup_cfg(args, extra)
        rows = benchmark(cfg, args.faces, args.repeats, args.size[0], args.size[1], args.warmup)
        results[name] = rows
        q = cfg.MODEL.QANET
        title = (
            f"{name}: image {args.size[0]}x{args.size[1]}, detector input {cfg.INPUT.MIN_SIZE_TEST} (max {cfg.INPUT.MAX_SIZE_TEST}), "
            f"crop {q.INPUT_SIZE[0]}x{q.INPUT_SIZE[1]}, parser batch {q.INFERENCE.PARSER_BATCH}, "
            f"{'flip test (2 views)' if cfg.TEST.AUG.ENABLED and cfg.TEST.AUG.FLIP else 'single view'}"
        )
        print()
        print(markdown_table(rows, title))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine_description(), "config": args.config_file, "opts": list(map(str, args.opts)), "results": results}, f, indent=2)
    return results


if __name__ == "__main__":
    main()
