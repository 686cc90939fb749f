#!/usr/bin/env python
"""Speed of the face parsing evaluation, on one CPU core: on synthetic 1080p label maps, or with a
model over a dataset (``--dataset``, the instance-level metrics included).

    python tools/benchmark_metrics.py                 # 1920x1080, 18 classes (17 foreground)
    python tools/benchmark_metrics.py --frames 50 --literal
    python tools/benchmark_metrics.py --dataset face_synth_val --config-file configs/quickstart/qanet_fcos_synth.yaml \
        MODEL.WEIGHTS output/quickstart/model_final.pth

Without ``--dataset``: ground truth of one or two blob faces with all foreground classes and
ignore pixels; predictions: the ground truth smoothly warped by a few pixels, plus wrong-class
specks. Times ``score_frame``, ``FaceParsingEvaluator.process_label_map`` (label map or PNGs in)
and ``summarize`` of a 2,653-frame split (SFP validation), whose time is estimated from CPU time
(steady on a shared machine). ``--literal`` also times the textbook DAVIS F.

With ``--dataset``: the model of ``--config-file`` (default: the instant config, seeded random
weights without ``MODEL.WEIGHTS``) over the dataset, timing per frame the model and both
evaluators' ``process``; then the evaluators' results.
"""
import argparse
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import qanet_d2  # noqa: E402,F401
import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from detectron2.data import MetadataCatalog  # noqa: E402

from qanet_d2.data.io import read_label_map  # noqa: E402
from qanet_d2.evaluation import FaceParsingEvaluator, boundary_radius, davis_disk, score_frame, seg_to_boundary, summarize  # noqa: E402

SPLIT_FRAMES = 2653
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIG = os.path.join(REPO, "configs", "quick_schedules", "qanet_fcos_synth_instant_test.yaml")


def _ellipse(label, cx, cy, s, c, dx, dy, ax, ay, angle=0.0):
    cv2.ellipse(label, (int(cx + dx * s), int(cy + dy * s)), (max(1, int(ax * s)), max(1, int(ay * s))),
                angle, 0, 360, int(c), -1)


def draw_face(label, cx, cy, s, rng):
    """Paint one blob face of scale ``s`` pixels (about half the face height) into ``label``."""
    e = lambda c, *a: _ellipse(label, cx, cy, s, c, *a)  # noqa: E731
    e(16, 0, 1.25, 1.2, 0.55)  # cloth
    e(15, 0, 0.8, 0.32, 0.45)  # neck
    e(13, 0, -0.15, 0.88, 0.98)  # hair
    e(1, 0, 0.05, 0.62, 0.8)  # skin
    e(8, -0.63, 0.05, 0.08, 0.17)  # ears
    e(9, 0.63, 0.05, 0.08, 0.17)
    e(17, 0.66, 0.25, 0.03, 0.05)  # earring
    if rng.random() < 0.6:
        e(14, 0, -0.88, 0.72, 0.25)  # hat
    e(6, -0.25, -0.26, 0.15, 0.04, 5)  # brows
    e(7, 0.25, -0.26, 0.15, 0.04, -5)
    e(3, -0.25, -0.12, 0.17, 0.09)  # glasses
    e(3, 0.25, -0.12, 0.17, 0.09)
    e(4, -0.25, -0.12, 0.1, 0.045)  # eyes
    e(5, 0.25, -0.12, 0.1, 0.045)
    e(2, 0, 0.1, 0.08, 0.17)  # nose
    e(11, 0, 0.38, 0.2, 0.04)  # upper lip
    e(12, 0, 0.47, 0.2, 0.05)  # lower lip
    e(10, 0, 0.42, 0.16, 0.025)  # mouth


def _warp(label, rng, amplitude, grid=24):
    h, w = label.shape
    dx, dy = (cv2.resize(rng.standard_normal((h // grid, w // grid)).astype(np.float32), (w, h),
                         interpolation=cv2.INTER_CUBIC) for _ in range(2))
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return cv2.remap(label, xs + dx * amplitude, ys + dy * amplitude, cv2.INTER_NEAREST, borderMode=cv2.BORDER_REPLICATE)


def make_frame(rng, height, width, num_classes):
    """(ground truth, prediction) uint8 label maps; ground truth has 255 = ignore pixels."""
    gt = np.zeros((height, width), np.uint8)
    for _ in range(int(rng.integers(1, 3))):
        s = height * rng.uniform(0.18, 0.32)
        draw_face(gt, rng.uniform(0.2, 0.8) * width, rng.uniform(0.35, 0.6) * height, s, rng)
    gt = _warp(gt, rng, 6.0, grid=16)  # irregular, not elliptic, boundaries
    np.minimum(gt, num_classes - 1, out=gt)
    pred = _warp(gt, rng, 3.0)
    specks = rng.random(gt.shape) < 2e-4
    pred[specks] = rng.integers(0, num_classes, int(specks.sum()))
    gt[: height // 100] = 255  # a band of ignore pixels
    return gt, pred


def literal_f(pred, gt, c, radius):
    """Textbook DAVIS F for one class: full-image boundary maps, disk dilation."""
    pb, gb = seg_to_boundary(pred == c), seg_to_boundary(gt == c)
    disk = davis_disk(radius)
    pd, gd = cv2.dilate(pb.view(np.uint8), disk), cv2.dilate(gb.view(np.uint8), disk)
    n_p, n_g = pb.sum(), gb.sum()
    if n_p == 0 or n_g == 0:
        return float(n_p == n_g)
    p, r = (pb & (gd > 0)).sum() / n_p, (gb & (pd > 0)).sum() / n_g
    return 0.0 if p + r == 0 else 2 * p * r / (p + r)


def timed(fn, items):
    """(wall seconds, CPU seconds) per item."""
    wall, cpu = time.perf_counter(), time.process_time()
    for item in items:
        fn(item)
    return (time.perf_counter() - wall) / len(items), (time.process_time() - cpu) / len(items)


def benchmark_dataset(args):
    """Per-frame cost of the model and both evaluators over ``args.dataset``, and their results."""
    from detectron2.modeling import build_model

    from qanet_d2.config import get_qanet_cfg
    from qanet_d2.engine import QANetCheckpointer, QANetTrainer
    from qanet_d2.evaluation import InstanceParsingEvaluator
    from qanet_d2.modeling.postprocessing import StageTimes

    torch.manual_seed(args.seed)
    cfg = get_qanet_cfg()
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.DATASETS.TEST = (args.dataset,)
    cfg.freeze()
    model = build_model(cfg).eval()
    if cfg.MODEL.WEIGHTS:
        QANetCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    parsing_ev = FaceParsingEvaluator(args.dataset, distributed=False, absent_class=cfg.TEST.FACE_PARSING.ABSENT_CLASS,
                                      bound_th=cfg.TEST.FACE_PARSING.BOUND_TH)
    instance_ev = InstanceParsingEvaluator(args.dataset, distributed=False)
    times = StageTimes()
    frames = faces = 0
    for inputs in QANetTrainer.build_test_loader(cfg, args.dataset):
        with times("model"), torch.no_grad():
            outputs = model.inference(inputs, times=times)
        with times("parsing_evaluator"):
            parsing_ev.process(inputs, outputs)
        with times("instance_evaluator"):
            instance_ev.process(inputs, outputs)
        frames += len(inputs)
        faces += sum(len(o["instances"]) for o in outputs)
    parsing = parsing_ev.evaluate()["face_parsing"]
    instance = instance_ev.evaluate().get("instance_parsing", {})

    weights = cfg.MODEL.WEIGHTS or f"random initialisation (seed {args.seed})"
    print(f"{args.dataset}: {frames} frames, {faces} predicted faces; {os.path.relpath(args.config_file, REPO)}, "
          f"{weights}; {args.threads} thread(s)")
    print(f"{'per frame':48}  {'wall ms':>8}  {'CPU ms':>8}")
    for key, label in (("model", "model (detect, parse, post-process)"), ("face_labels", "  of which: each face's labels on its window"),
                       ("parsing_evaluator", "FaceParsingEvaluator.process (J/F, mIoU)"),
                       ("instance_evaluator", "InstanceParsingEvaluator.process (part IoUs, matching)")):
        print(f"{label:48}  {1000 * times.wall.get(key, 0.0) / frames:8.2f}  {1000 * times.cpu.get(key, 0.0) / frames:8.2f}")
    print("J&F {J&F:.2f}  J&F(skip) {J&F(skip):.2f}  J&F(one) {J&F(one):.2f}  mIoU {mIoU:.2f}".format(**parsing))
    if instance:
        print("ranked by quality score: APp50 {APp50:.2f}  APvol {APvol:.2f}  PCP50 {PCP50:.2f}".format(**instance))
        print("ranked by box score:     APp50 {:.2f}  APvol {:.2f}  PCP50 {:.2f}".format(
            instance["APp50-box"], instance["APvol-box"], instance["PCP50-box"]))
        print(f"ground-truth faces {instance['num_gt_faces']}, predicted faces {instance['num_pred_faces']}")
    else:
        print("no instance metrics: the dataset has no per-face ground truth")
    return {"face_parsing": parsing, "instance_parsing": instance, "frames": frames}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=30)
    ap.add_argument("--height", type=int, default=1080)
    ap.add_argument("--width", type=int, default=1920)
    ap.add_argument("--classes", type=int, default=18, help="number of classes, background included")
    ap.add_argument("--threads", type=int, default=1, help="OpenCV / torch threads (1 = one core)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--literal", action="store_true", help="also time the textbook DAVIS computation on one frame")
    ap.add_argument("--dataset", help="run a model over this registered dataset instead of synthetic label maps")
    ap.add_argument("--config-file", default=DEFAULT_CONFIG, help="the model's config (with --dataset)")
    ap.add_argument("opts", nargs=argparse.REMAINDER, help="config KEY VALUE pairs (with --dataset)")
    args = ap.parse_args(argv)

    cv2.setNumThreads(args.threads)
    torch.set_num_threads(args.threads)
    if args.dataset:
        return benchmark_dataset(args)
    rng = np.random.default_rng(args.seed)
    C, H, W = args.classes, args.height, args.width
    print(f"{args.frames} frames {W}x{H}, {C} classes ({C - 1} foreground), {args.threads} thread(s); "
          f"contour tolerance {boundary_radius(0.008, (H, W)):.0f} px")

    frames = [make_frame(rng, H, W, C) for _ in range(args.frames)]
    tmp = tempfile.mkdtemp(prefix="qanet_bench_")
    name = f"_benchmark_metrics_{os.getpid()}"
    MetadataCatalog.get(name).set(stuff_classes=[f"class{i}" for i in range(C)], ignore_label=255)
    inputs = []
    for i, (gt, pred) in enumerate(frames):
        gt_file, pred_file = os.path.join(tmp, f"gt_{i}.png"), os.path.join(tmp, f"pred_{i}.png")
        cv2.imwrite(gt_file, gt)
        cv2.imwrite(pred_file, pred)
        inputs.append({"file_name": f"frame_{i}.jpg", "sem_seg_file_name": gt_file, "pred_file": pred_file,
                       "video_id": f"v{i // 20}", "frame_index": i % 20, "height": H, "width": W})

    ev = FaceParsingEvaluator(name, distributed=False)
    rows = [
        ("J/F (score_frame)", timed(lambda f: score_frame(f[1], f[0], C), frames)),
        ("evaluator, label map in (GT PNG decode + J/F)",
         timed(lambda k: ev.process_label_map(inputs[k], frames[k][1]), range(len(frames)))),
        ("evaluate_pngs.py (2 PNG decodes + J/F)",
         timed(lambda k: ev.process_label_map(inputs[k], read_label_map(inputs[k]["pred_file"])), range(len(frames)))),
    ]

    records = [dict(r, video_id=f"v{i // 20}", frame_index=i % 20)
               for i, r in enumerate(ev._records[j % len(ev._records)] for j in range(SPLIT_FRAMES))]
    summarize_s = timed(lambda _: summarize(records, ev._confusion, ev.class_names), [None])

    if args.literal:
        gt, pred = frames[0]
        radius = boundary_radius(0.008, gt.shape)
        rows.append(("textbook DAVIS F (cv2.dilate per class)",
                     timed(lambda _: [literal_f(pred, gt, c, radius) for c in range(1, C)], [None])))

    width = max(len(r[0]) for r in rows)
    print(f"{'':{width}}  {'wall ms':>8}  {'CPU ms':>8}  {'frames/s':>8}  {SPLIT_FRAMES} frames")
    for label, (wall, cpu) in rows:
        print(f"{label:{width}}  {wall * 1000:8.1f}  {cpu * 1000:8.1f}  {1 / cpu:8.1f}  "
              f"{(cpu * SPLIT_FRAMES + summarize_s[1]) / 60:6.1f} min")
    print(f"{'final aggregation (summarize) of ' + str(SPLIT_FRAMES) + ' frames':{width}}  "
          f"{summarize_s[0] * 1000:8.0f}  {summarize_s[1] * 1000:8.0f}")
    print("frames/s and the split time are from CPU time (one core's work; includes the aggregation).")
    shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
