#!/usr/bin/env python
"""Convert the relabeled Helen release (helenstar_release) into the project's format.

    python datasets/prepare_helen.py --src /data/helenstar_release   # -> datasets/helen/{train,val,test}.json

Expected input: <src>/{train,test}/<name>_image.jpg + <name>_label.png. The release has no
validation split: --val-fraction (default 0.1) of train, chosen by a seeded permutation, becomes
val and leaves train; 0 writes no val.json. See datasets/README.md.
"""
import argparse
import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--src", required=True, help="the helenstar_release directory (or its parent)")
    p.add_argument("--dst", help="output root (default: $DETECTRON2_DATASETS/helen)")
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0, help="seed of the val selection")
    p.add_argument("--mode", default="hardlink", choices=["hardlink", "copy", "symlink"])
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from qanet_d2.data.datasets.face_video import datasets_root
    from qanet_d2.data.datasets.helen import convert_helen

    dst = args.dst or os.path.join(datasets_root(), "helen")
    try:
        out = convert_helen(args.src, dst, val_fraction=args.val_fraction, seed=args.seed,
                            mode=args.mode, workers=args.workers)
    except (OSError, ValueError, KeyError) as e:
        print(f"prepare_helen.py: error: {e}", file=sys.stderr)
        return 1
    for split, path in out.items():
        print(f"{split}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
