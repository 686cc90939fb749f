#!/usr/bin/env python
"""Generate the synthetic face-parsing video dataset (label set "synthetic").

    python datasets/prepare_synthetic.py --preset quickstart        # -> datasets/face_synth
    python datasets/prepare_synthetic.py --preset tiny              # -> datasets/face_synth_tiny
    python datasets/prepare_synthetic.py --preset quickstart --frames 20 --root /data/fs --force

Idempotent: parameters are recorded in <root>/params.json and a dataset generated with the
same parameters is left as it is. Output: <root>/{images,labels}/<video>/<frame>, train.json,
val.json (format: datasets/README.md).
"""
import argparse
import logging
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def parse_size(text):
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be WIDTHxHEIGHT, e.g. 320x240, got {text!r}")
    return w, h


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="quickstart", choices=["quickstart", "default", "tiny"])
    p.add_argument("--root", help="output directory (default: $DETECTRON2_DATASETS/face_synth, "
                                  "or face_synth_tiny for --preset tiny)")
    p.add_argument("--num-train-videos", type=int)
    p.add_argument("--num-val-videos", type=int)
    p.add_argument("--frames", type=int, help="frames per video")
    p.add_argument("--size", type=parse_size, help="WIDTHxHEIGHT, e.g. 320x240")
    p.add_argument("--seed", type=int)
    p.add_argument("--force", action="store_true", help="replace a dataset generated with other parameters")
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                   help="processes (the output does not depend on it)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from qanet_d2.data.synthetic import (default_synthetic_root, generate_preset, preset_params,
                                         synthetic_dataset_present)

    root = os.path.abspath(args.root or default_synthetic_root(args.preset))
    overrides = dict(num_train_videos=args.num_train_videos, num_val_videos=args.num_val_videos,
                     frames=args.frames, size=args.size, seed=args.seed)
    params = preset_params(args.preset)
    params.update({k: v for k, v in overrides.items() if v is not None})
    present = synthetic_dataset_present(root, **params) and not args.force
    t = time.perf_counter()
    try:
        paths = generate_preset(args.preset, root=root, force=args.force, workers=args.workers, **overrides)
    except ValueError as e:
        print(f"prepare_synthetic.py: error: {e}", file=sys.stderr)
        return 2
    took = time.perf_counter() - t
    w, h = params["size"]
    print(f"{root}: {params['num_train_videos']} train + {params['num_val_videos']} val videos x "
          f"{params['frames']} frames of {w}x{h}, seed {params['seed']} "
          f"({'already present with these parameters' if present else 'generated in %.1f s' % took})")
    for k in ("train", "val", "params"):
        print(f"  {k}: {paths[k]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
