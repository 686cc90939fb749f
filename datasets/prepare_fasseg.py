#!/usr/bin/env python
"""Convert the FASSEG release into the project's format (label set "fasseg").

    python datasets/prepare_fasseg.py --src /data/FASSEG-repository   # -> datasets/fasseg/*.json
    python datasets/prepare_fasseg.py --src /data/FASSEG-repository --frontal-version V1

Expected input: <src>/V2/{Train,Test}_{RGB,Labels}/<n>.bmp|png (frontal; V1 likewise) and
<src>/V3/{Train,Test}_{RGB,labels}/<pose>/<name>.bmp|png (multipose). Writes
frontal_{train,test}.json and multipose_{train,test}.json for the splits present (datasets
fasseg_frontal_train, ...). See datasets/README.md.
"""
import argparse
import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--src", required=True, help="the FASSEG repository root (holding V2/, V3/) or its parent")
    p.add_argument("--dst", help="output root (default: $DETECTRON2_DATASETS/fasseg)")
    p.add_argument("--frontal-version", default="V2", choices=["V1", "V2"],
                   help="labels of the frontal splits: V2 = frontal02, high precision (default); "
                        "V1 = frontal01, as in the ICIP 2015 paper")
    p.add_argument("--mode", default="hardlink", choices=["hardlink", "copy", "symlink"],
                   help="how .png photos get into --dst (hardlink falls back to copy; .bmp "
                        "photos are re-encoded as .png)")
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from qanet_d2.data.datasets.face_video import datasets_root
    from qanet_d2.data.datasets.fasseg import convert_fasseg

    dst = args.dst or os.path.join(datasets_root(), "fasseg")
    try:
        out = convert_fasseg(args.src, dst, frontal_version=args.frontal_version, mode=args.mode,
                             workers=args.workers)
    except (OSError, ValueError, KeyError) as e:
        print(f"prepare_fasseg.py: error: {e}", file=sys.stderr)
        return 1
    for split, path in out.items():
        print(f"{split}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
