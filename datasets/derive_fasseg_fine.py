#!/usr/bin/env python
"""Derive fine labels (label set "fasseg_fine": left/right eyes and brows, upper/lower lip, inner
mouth) for the prepared FASSEG splits from their coarse labels and the five landmarks of the
shipped YuNet (models/yunet/yunet_n.pth). Re-runnable; writes only under --dst:

    python datasets/derive_fasseg_fine.py            # datasets/fasseg -> datasets/fasseg_fine
    python datasets/derive_fasseg_fine.py --src datasets/fasseg --dst datasets/fasseg_fine

Output: <dst>/<split>.json (datasets fasseg_fine_<split>; the photos are read from --src) and
<dst>/labels/. The rules (what each coarse class becomes, what is left undecided = 255) are in
qanet_d2/data/datasets/fasseg_fine.py; the summary printed at the end says how much of each
refined class was decided. See datasets/README.md.
"""
import argparse
import json
import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None):
    from qanet_d2.data.datasets.fasseg_fine import FASSEG_FINE_SPLITS

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--src", help="prepared FASSEG (default: $DETECTRON2_DATASETS/fasseg)")
    p.add_argument("--dst", help="output root (default: $DETECTRON2_DATASETS/fasseg_fine)")
    p.add_argument("--splits", nargs="+", default=list(FASSEG_FINE_SPLITS), choices=FASSEG_FINE_SPLITS)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from qanet_d2.data.datasets.face_video import datasets_root
    from qanet_d2.data.datasets.fasseg_fine import derive_fasseg_fine, _summary

    src = args.src or os.path.join(datasets_root(), "fasseg")
    dst = args.dst or os.path.join(datasets_root(), "fasseg_fine")
    if not os.path.isdir(src):
        p.error(f"--src {src}: no such directory (prepare FASSEG first: python datasets/prepare_fasseg.py --src <dir>)")
    os.chdir(Path(__file__).resolve().parents[1])  # YuNet's weights path is relative to the repository
    stats = derive_fasseg_fine(os.path.abspath(src), os.path.abspath(dst), args.splits)
    if not stats:
        p.error(f"{src}: none of the splits {args.splits} is prepared")
    for split, c in stats.items():
        print(f"{split}: {_summary(c)}")
    with open(os.path.join(dst, "derivation_stats.json"), "w") as f:
        json.dump(stats, f, indent=1)


if __name__ == "__main__":
    main()
