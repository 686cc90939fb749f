#!/usr/bin/env python
"""Convert the LaPa release into the project's format (label set "lapa").

    python datasets/prepare_lapa.py --src /data/LaPa            # -> datasets/lapa/{train,val,test}.json

Expected input: <src>/{train,val,test}/{images/*.jpg,labels/*.png} (<src> may also be the
parent of LaPa/). See datasets/README.md.
"""
import argparse
import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--src", required=True, help="the LaPa directory (or its parent)")
    p.add_argument("--dst", help="output root (default: $DETECTRON2_DATASETS/lapa)")
    p.add_argument("--mode", default="hardlink", choices=["hardlink", "copy", "symlink"],
                   help="how files get into --dst (hardlink falls back to copy)")
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from qanet_d2.data.datasets.face_video import datasets_root
    from qanet_d2.data.datasets.lapa import convert_lapa

    dst = args.dst or os.path.join(datasets_root(), "lapa")
    try:
        out = convert_lapa(args.src, dst, mode=args.mode, workers=args.workers)
    except (OSError, ValueError, KeyError) as e:
        print(f"prepare_lapa.py: error: {e}", file=sys.stderr)
        return 1
    for split, path in out.items():
        print(f"{split}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
