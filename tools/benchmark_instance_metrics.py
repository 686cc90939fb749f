#!/usr/bin/env python
"""Cost per frame of the instance-level parsing metrics (APp, APvol, PCP) in an evaluation, and
their values for a model.

    python tools/benchmark_instance_metrics.py                       # random-weight instant model
    python tools/benchmark_instance_metrics.py --config-file configs/quickstart/qanet_fcos_synth.yaml \\
        --dataset face_synth_val MODEL.WEIGHTS output/quickstart/model_final.pth

Runs the model over the dataset once (batch 1, ``no_grad``) and times, per frame, the model,
``FaceParsingEvaluator.process`` (J/F, mIoU), and ``InstanceParsingEvaluator.process`` split
into its two parts: pasting each face's probabilities onto its window
(:func:`~qanet_d2.evaluation.faces_from_output`) and the part IoUs + matching; then prints the
evaluators' results. Wall-clock and CPU milliseconds per frame (CPU time stays steady when other
jobs share the machine). Without ``MODEL.WEIGHTS`` the model keeps its random initialisation
(seeded), which only shows that everything runs.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import qanet_d2  # noqa: E402,F401
import torch  # noqa: E402
from detectron2.modeling import build_model  # noqa: E402

from qanet_d2.config import get_qanet_cfg  # noqa: E402
from qanet_d2.engine import QANetCheckpointer, QANetTrainer  # noqa: E402
from qanet_d2.evaluation import FaceParsingEvaluator, InstanceParsingEvaluator, faces_from_output  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIG = os.path.join(REPO, "configs", "quick_schedules", "qanet_fcos_synth_instant_test.yaml")


class _Timer:
    def __init__(self):
        self.wall = self.cpu = 0.0

    def __enter__(self):
        self._w, self._c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall += time.perf_counter() - self._w
        self.cpu += time.process_time() - self._c


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config-file", default=DEFAULT_CONFIG)
    ap.add_argument("--dataset", default="face_synth_tiny_val")
    ap.add_argument("--threads", type=int, default=1, help="torch / OpenCV threads (1 = one core)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random initialisation")
    ap.add_argument("opts", nargs=argparse.REMAINDER, help="config KEY VALUE pairs")
    args = ap.parse_args(argv)

    import cv2

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    torch.manual_seed(args.seed)
    cfg = get_qanet_cfg()
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.DATASETS.TEST = (args.dataset,)
    cfg.freeze()
    model = build_model(cfg).eval()
    if cfg.MODEL.WEIGHTS:
        QANetCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    loader = QANetTrainer.build_test_loader(cfg, args.dataset)
    parsing_ev = FaceParsingEvaluator(args.dataset, distributed=False, absent_class=cfg.TEST.FACE_PARSING.ABSENT_CLASS,
                                      bound_th=cfg.TEST.FACE_PARSING.BOUND_TH)
    paste = _Timer()

    def timed_faces(output):
        with paste:
            return faces_from_output(output)

    instance_ev = InstanceParsingEvaluator(args.dataset, distributed=False, faces_fn=timed_faces)
    parsing_ev.reset()
    instance_ev.reset()
    t_model, t_parsing, t_instance = _Timer(), _Timer(), _Timer()
    frames = faces = 0
    for inputs in loader:
        with t_model, torch.no_grad():
            outputs = model(inputs)
        with t_parsing:
            parsing_ev.process(inputs, outputs)
        with t_instance:
            instance_ev.process(inputs, outputs)
        frames += len(inputs)
        faces += sum(len(o["instances"]) for o in outputs)
    parsing = parsing_ev.evaluate()["face_parsing"]
    instance = instance_ev.evaluate().get("instance_parsing", {})

    weights = cfg.MODEL.WEIGHTS or f"random initialisation (seed {args.seed})"
    print(f"{args.dataset}: {frames} frames, {faces} predicted faces; {os.path.relpath(args.config_file, REPO)}, "
          f"{weights}; {args.threads} thread(s)")
    rows = [
        ("model (detect, parse, paste the semantic map)", t_model),
        ("FaceParsingEvaluator.process (J/F, mIoU)", t_parsing),
        ("InstanceParsingEvaluator.process, all", t_instance),
        ("  of which: paste each face on its window", paste),
    ]
    print(f"{'per frame':48}  {'wall ms':>8}  {'CPU ms':>8}")
    for label, t in rows:
        print(f"{label:48}  {1000 * t.wall / frames:8.2f}  {1000 * t.cpu / frames:8.2f}")
    rest = (t_instance.wall - paste.wall, t_instance.cpu - paste.cpu)
    print(f"{'  of which: part IoUs and matching':48}  {1000 * rest[0] / frames:8.2f}  {1000 * rest[1] / frames:8.2f}")
    print("J&F {J&F:.2f}  J&F(skip) {J&F(skip):.2f}  J&F(one) {J&F(one):.2f}  mIoU {mIoU:.2f}".format(**parsing))
    if instance:
        print("ranked by quality score: APp50 {APp50:.2f}  APvol {APvol:.2f}  PCP50 {PCP50:.2f}".format(**instance))
        print("ranked by box score:     APp50 {:.2f}  APvol {:.2f}  PCP50 {:.2f}".format(
            instance["APp50-box"], instance["APvol-box"], instance["PCP50-box"]))
        print(f"ground-truth faces {instance['num_gt_faces']}, predicted faces {instance['num_pred_faces']}")
    else:
        print("no instance metrics: the dataset has no per-face ground truth")


if __name__ == "__main__":
    main()
