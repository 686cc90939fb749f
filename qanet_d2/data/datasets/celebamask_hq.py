"""CelebAMask-HQ (Lee et al., CVPR 2020) -> the common format; layout, splits (CelebA's
partition), part merging order and resolution in datasets/README.md ("CelebAMask-HQ").

Part masks are painted in the official order (label ids 1..18), a later part overwriting an
earlier one, as the dataset's own ``g_mask.py`` does; a missing part file means an absent part.
"""
from __future__ import annotations

import os
from collections import defaultdict
from functools import partial
from typing import Dict, Optional

import cv2
import numpy as np

from ...structures.label_sets import CELEBAMASK_HQ
from .common import convert_single_image, find_dataset_dir, parallel_map, write_image, write_split

__all__ = ["convert_celebamask_hq", "merge_celebamask_parts", "CELEBAMASK_PARTS"]

CELEBAMASK_PARTS = CELEBAMASK_HQ.classes[1:]
_PARTITION_TO_SPLIT = {0: "train", 1: "val", 2: "test"}


def merge_celebamask_parts(mask_dir: str, idx: int, size: int = 512) -> np.ndarray:
    """Merged ``size x size`` uint8 label map of image ``idx`` from its part PNGs under
    ``mask_dir`` (``CelebAMask-HQ-mask-anno``)."""
    label = np.zeros((size, size), np.uint8)
    folder = os.path.join(mask_dir, str(idx // 2000))
    for class_id, part in enumerate(CELEBAMASK_PARTS, start=1):
        path = os.path.join(folder, f"{idx:05d}_{part}.png")
        if not os.path.isfile(path):
            continue
        m = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
        if m is None:
            raise ValueError(f"{path}: cannot read CelebAMask-HQ part mask")
        if m.shape != (size, size):
            m = cv2.resize(m, (size, size), interpolation=cv2.INTER_NEAREST)
        label[m > 0] = class_id
    return label


def _read_mapping(path: str) -> Dict[int, str]:
    out = {}
    with open(path, "r", encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            parts = line.split()
            if not parts or not parts[0].isdigit():
                continue  # header
            if len(parts) < 3:
                raise ValueError(f"{path}:{line_no}: expected 'idx orig_idx orig_file'")
            out[int(parts[0])] = parts[2]
    if not out:
        raise ValueError(f"{path}: no 'idx orig_idx orig_file' rows")
    return out


def _read_partition(path: str) -> Dict[str, int]:
    out = {}
    with open(path, "r", encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            parts = line.split()
            if len(parts) != 2 or not parts[1].isdigit():
                if parts:
                    raise ValueError(f"{path}:{line_no}: expected '<file> <0|1|2>'")
                continue
            out[parts[0]] = int(parts[1])
    return out


def _convert_one(idx, base, dst, image_size, mode):
    src_img = os.path.join(base, "CelebA-HQ-img", f"{idx}.jpg")
    image = cv2.imread(src_img, cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(f"CelebA-HQ image missing or unreadable: {src_img}")
    label = merge_celebamask_parts(os.path.join(base, "CelebAMask-HQ-mask-anno"), idx, image_size)
    video_id = str(idx)
    if image.shape[:2] == (image_size, image_size):
        return convert_single_image(src_img, None, dst, video_id, CELEBAMASK_HQ, mode,
                                    label=label)
    resized = cv2.resize(image, (image_size, image_size), interpolation=cv2.INTER_AREA)
    tmp = os.path.join(dst, "images", video_id, "00000.jpg")
    write_image(tmp, resized, [cv2.IMWRITE_JPEG_QUALITY, 95])
    return convert_single_image(tmp, None, dst, video_id, CELEBAMASK_HQ, label=label,
                                image_in_place=True)


def convert_celebamask_hq(src: str, dst: str, partition_file: Optional[str] = None,
                          image_size: int = 512, mode: str = "hardlink", workers: int = 1
                          ) -> Dict[str, str]:
    """Convert CelebAMask-HQ at ``src`` into ``dst``: ``{split: json path}``. Images are resized
    to ``image_size`` (512: the masks' resolution; 1024: the originals, placed by ``mode``, and
    the masks upsampled)."""
    base = find_dataset_dir(src, "CelebA-HQ-img", ["CelebAMask-HQ"])
    mapping = _read_mapping(os.path.join(base, "CelebA-HQ-to-CelebA-mapping.txt"))
    partition_file = partition_file or os.path.join(base, "list_eval_partition.txt")
    if not os.path.isfile(partition_file):
        raise FileNotFoundError(
            f"CelebA partition file not found: {partition_file}. It comes with CelebA "
            f"(Eval/list_eval_partition.txt), not with CelebAMask-HQ; copy it there or pass "
            f"--partition-file")
    partition = _read_partition(partition_file)
    by_split = defaultdict(list)
    for idx, orig in sorted(mapping.items()):
        if orig not in partition:
            raise KeyError(f"{partition_file}: no partition for CelebA file {orig} (CelebA-HQ "
                           f"image {idx})")
        by_split[_PARTITION_TO_SPLIT[partition[orig]]].append(idx)
    out = {}
    for split in ("train", "val", "test"):
        if not by_split[split]:
            continue
        videos = parallel_map(partial(_convert_one, base=base, dst=dst, image_size=image_size,
                                      mode=mode),
                              by_split[split], workers)
        out[split] = write_split(dst, split, CELEBAMASK_HQ, videos, base)
    return out
