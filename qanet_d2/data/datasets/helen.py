"""Helen, relabeled (Lin et al., CVPR 2019) -> the common format (layout in datasets/README.md,
"Helen"). The release has no validation split: ``val_fraction`` of the train images, picked by
a seeded permutation of the sorted names, form ``val`` and leave ``train``.
"""
from __future__ import annotations

import glob
import os
from functools import partial
from typing import Dict

import numpy as np

from ...structures.label_sets import HELEN
from .common import convert_single_image, find_dataset_dir, parallel_map, write_split

__all__ = ["convert_helen"]


def _convert_one(item, dst, mode):
    name, image_file, label_file = item
    return convert_single_image(image_file, label_file, dst, name, HELEN, mode)


def _pairs(split_dir: str):
    items = []
    for p in sorted(glob.glob(os.path.join(split_dir, "*_image.*"))):
        name = os.path.basename(p).rsplit("_image.", 1)[0]
        lab = os.path.join(split_dir, f"{name}_label.png")
        if not os.path.isfile(lab):
            raise FileNotFoundError(f"Helen label missing for {p}: expected {lab}")
        items.append((name, p, lab))
    if not items:
        raise FileNotFoundError(f"no '*_image.jpg' files in {split_dir}")
    return items


def convert_helen(src: str, dst: str, val_fraction: float = 0.1, seed: int = 0,
                  mode: str = "hardlink", workers: int = 1) -> Dict[str, str]:
    """Convert the relabeled Helen release at ``src`` into ``dst``; returns ``{split: json}``
    for train, val (unless ``val_fraction`` is 0) and test."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    base = find_dataset_dir(src, "train", ["helenstar_release"])
    train = _pairs(os.path.join(base, "train"))
    test = _pairs(os.path.join(base, "test"))
    n_val = int(round(len(train) * val_fraction))
    perm = np.random.default_rng(seed).permutation(len(train))
    val_idx = set(perm[:n_val].tolist())
    splits = {"train": [t for i, t in enumerate(train) if i not in val_idx],
              "val": [t for i, t in enumerate(train) if i in val_idx],
              "test": test}
    out = {}
    for split, items in splits.items():
        if split == "val" and n_val == 0:
            continue
        videos = parallel_map(partial(_convert_one, dst=dst, mode=mode), items, workers)
        out[split] = write_split(dst, split, HELEN, videos, base)
    return out
