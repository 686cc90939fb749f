#!/usr/bin/env python
"""Generate a synthetic face-parsing video dataset: cartoon people (label set "synthetic") or
real labelled faces from registered datasets composited into the same scenes (the faces'
label set).

    python datasets/prepare_synthetic.py --preset quickstart        # -> datasets/face_synth
    python datasets/prepare_synthetic.py --preset tiny              # -> datasets/face_synth_tiny
    python datasets/prepare_synthetic.py --preset quickstart --frames 20 --root /data/fs --force
    python datasets/prepare_synthetic.py --preset composite_fasseg  # -> datasets/face_composite_fasseg
    python datasets/prepare_synthetic.py --preset composite_fasseg_photos  # faces over real photos
    python datasets/prepare_synthetic.py --face-source lapa_train --root /data/lapa_scenes

Idempotent: parameters are recorded in <root>/params.json and a dataset generated with the
same parameters is left as it is. Output: <root>/{images,labels,instances}/<video>/<frame>
and one JSON per split (format: datasets/README.md).
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
    from qanet_d2.data.synthetic import PRESETS

    p.add_argument("--preset", default="quickstart", choices=sorted(PRESETS))
    p.add_argument("--root", help="output directory (default: $DETECTRON2_DATASETS/face_synth, "
                                  "face_synth_tiny for --preset tiny, face_<preset> for the "
                                  "composite presets)")
    p.add_argument("--face-source", type=lambda t: [n for n in t.split(",") if n],
                   help="comma-separated registered datasets whose labelled faces are placed in "
                        "the scenes instead of cartoon people, in every split (needs --root "
                        "unless --preset is a composite preset)")
    p.add_argument("--photo-backgrounds", type=float, metavar="SHARE",
                   help="share (0..1) of the videos whose background is a crop of a real photo "
                        "without people (scikit-image's and matplotlib's sample photos) "
                        "instead of the generator's textures")
    p.add_argument("--num-train-videos", type=int)
    p.add_argument("--num-val-videos", type=int)
    p.add_argument("--num-test-videos", type=int)
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

    params = preset_params(args.preset)
    if args.face_source is not None and not args.root and "face_source" not in params:
        p.error(f"--face-source needs --root (preset '{args.preset}' writes cartoon people to "
                f"{default_synthetic_root(args.preset)})")
    root = os.path.abspath(args.root or default_synthetic_root(args.preset))
    overrides = dict(num_train_videos=args.num_train_videos, num_val_videos=args.num_val_videos,
                     num_test_videos=args.num_test_videos, frames=args.frames, size=args.size,
                     seed=args.seed, face_source=args.face_source,
                     photo_backgrounds=args.photo_backgrounds)
    params.update({k: v for k, v in overrides.items() if v is not None})
    t = time.perf_counter()
    try:
        present = synthetic_dataset_present(root, **params) and not args.force
        paths = generate_preset(args.preset, root=root, force=args.force, workers=args.workers, **overrides)
    except (ValueError, KeyError, FileNotFoundError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"prepare_synthetic.py: error: {msg}", file=sys.stderr)
        return 2
    took = time.perf_counter() - t
    w, h = params["size"]
    splits = [k for k in paths if k not in ("root", "params")]
    counts = {"train": params["num_train_videos"], "val": params["num_val_videos"],
              "test": params.get("num_test_videos", 0)}
    faces = "real faces" if params.get("face_source") else "cartoon people"
    if params.get("photo_backgrounds"):
        faces += f", {100 * params['photo_backgrounds']:.0f} % over real photos"
    print(f"{root}: {' + '.join(f'{counts[s]} {s}' for s in splits)} videos x "
          f"{params['frames']} frames of {w}x{h} ({faces}), seed {params['seed']} "
          f"({'already present with these parameters' if present else 'generated in %.1f s' % took})")
    for k in splits + ["params"]:
        print(f"  {k}: {paths[k]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
