#!/usr/bin/env python
"""Convert CelebAMask-HQ into the project's format (label set "celebamask_hq").

    python datasets/prepare_celebamask_hq.py --src /data/CelebAMask-HQ \
        [--partition-file /data/CelebA/Eval/list_eval_partition.txt]   # -> datasets/celebamask_hq

Merges the per-part masks into one label PNG per image, splits by the CelebA partition
(0/1/2 -> train/val/test) and resizes the 1024x1024 images to --image-size (default 512, the
masks' resolution). See datasets/README.md.
"""
import argparse
import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--src", required=True, help="the CelebAMask-HQ directory (or its parent)")
    p.add_argument("--dst", help="output root (default: $DETECTRON2_DATASETS/celebamask_hq)")
    p.add_argument("--partition-file", help="CelebA's list_eval_partition.txt (default: <src>/list_eval_partition.txt)")
    p.add_argument("--image-size", type=int, default=512, choices=[512, 1024],
                   help="512: images downsized to the masks; 1024: original images, masks upsampled (nearest)")
    p.add_argument("--mode", default="hardlink", choices=["hardlink", "copy", "symlink"],
                   help="how original images get into --dst when --image-size 1024")
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from qanet_d2.data.datasets.celebamask_hq import convert_celebamask_hq
    from qanet_d2.data.datasets.face_video import datasets_root

    dst = args.dst or os.path.join(datasets_root(), "celebamask_hq")
    try:
        out = convert_celebamask_hq(args.src, dst, partition_file=args.partition_file,
                                    image_size=args.image_size, mode=args.mode, workers=args.workers)
    except (OSError, ValueError, KeyError) as e:
        print(f"prepare_celebamask_hq.py: error: {e}", file=sys.stderr)
        return 1
    for split, path in out.items():
        print(f"{split}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
