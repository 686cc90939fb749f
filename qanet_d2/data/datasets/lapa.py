"""LaPa (Liu et al., AAAI 2020) -> the common format (layout in datasets/README.md, "LaPa"):
each image becomes a one-frame video ``<name>`` of ``<dst>/{train,val,test}.json``."""
from __future__ import annotations

import glob
import os
from functools import partial
from typing import Dict, Sequence

from ...structures.label_sets import LAPA
from .common import convert_single_image, find_dataset_dir, parallel_map, write_split

__all__ = ["convert_lapa", "LAPA_SPLITS"]

LAPA_SPLITS = ("train", "val", "test")
_IMAGE_EXTS = (".jpg", ".jpeg", ".png")


def _convert_one(item, dst, mode):
    image_file, label_file = item
    stem = os.path.splitext(os.path.basename(image_file))[0]
    return convert_single_image(image_file, label_file, dst, stem, LAPA, mode)


def convert_lapa(src: str, dst: str, splits: Sequence[str] = LAPA_SPLITS,
                 mode: str = "hardlink", workers: int = 1) -> Dict[str, str]:
    """Convert the LaPa release at ``src`` into ``dst``: ``{split: json path}``. FileNotFoundError
    names a missing split directory or label."""
    base = find_dataset_dir(src, os.path.join(splits[0], "images"), ["LaPa"])
    out = {}
    for split in splits:
        img_dir = os.path.join(base, split, "images")
        lab_dir = os.path.join(base, split, "labels")
        if not os.path.isdir(img_dir):
            raise FileNotFoundError(f"LaPa split directory not found: {img_dir}")
        images = sorted(p for p in glob.glob(os.path.join(img_dir, "*"))
                        if p.lower().endswith(_IMAGE_EXTS))
        if not images:
            raise FileNotFoundError(f"no images in {img_dir}")
        items = []
        for p in images:
            stem = os.path.splitext(os.path.basename(p))[0]
            lab = os.path.join(lab_dir, stem + ".png")
            if not os.path.isfile(lab):
                raise FileNotFoundError(f"LaPa label missing for {p}: expected {lab}")
            items.append((p, lab))
        videos = parallel_map(partial(_convert_one, dst=dst, mode=mode), items, workers)
        out[split] = write_split(dst, split, LAPA, videos, base)
    return out
