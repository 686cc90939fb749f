#!/usr/bin/env python
"""Convert short-video face parsing (SFP) challenge data into the project's format.

    python datasets/prepare_sfp.py --src /data/sfp [--classes-file /data/sfp/categories.json]
                                                              # -> datasets/sfp/{train,val,test}.json

Assumed input (datasets/README.md has the details and the accepted variants):
<src>/<split>/images/<video_id>/<frame>.jpg, <src>/<split>/labels/<video_id>/<frame>.png and a
JSON file listing the categories. The class list is read from that file, never assumed.
"""
import argparse
import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--src", required=True, help="directory holding the split folders")
    p.add_argument("--dst", help="output root (default: $DETECTRON2_DATASETS/sfp)")
    p.add_argument("--classes-file", help="JSON with the category list (default: searched in --src)")
    p.add_argument("--splits", nargs="+", default=["train", "val", "test"])
    p.add_argument("--mode", default="hardlink", choices=["hardlink", "copy", "symlink"])
    p.add_argument("--min-box-area", type=int, default=16, help="smallest face component kept as a box (pixels)")
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from qanet_d2.data.datasets.face_video import datasets_root
    from qanet_d2.data.datasets.sfp import convert_sfp

    dst = args.dst or os.path.join(datasets_root(), "sfp")
    try:
        out = convert_sfp(args.src, dst, splits=args.splits, classes_file=args.classes_file,
                          mode=args.mode, min_box_area=args.min_box_area, workers=args.workers)
    except (OSError, ValueError, KeyError) as e:
        print(f"prepare_sfp.py: error: {e}", file=sys.stderr)
        return 1
    for split, path in out.items():
        print(f"{split}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
