"""Shared pieces of the dataset converters (``prepare_*.py``)."""
from __future__ import annotations

import logging
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from typing import Callable, Iterable, List, Optional, Sequence, TypeVar

import cv2
import numpy as np

from ..io import check_label_values, check_map_size, image_size, read_label_map
from ...structures.label_sets import LabelSet
from ..video_format import (face_box_excluded_ids, make_frame_record, union_box_from_label_map,
                            write_face_video_json)

__all__ = ["LINK_MODES", "place_file", "write_image", "parallel_map", "convert_single_image",
           "write_split", "find_dataset_dir"]

logger = logging.getLogger(__name__)

LINK_MODES = ("copy", "hardlink", "symlink")
T = TypeVar("T")
R = TypeVar("R")


def place_file(src: str, dst: str, mode: str = "hardlink") -> None:
    """Put ``src`` at ``dst``: ``copy``, ``hardlink`` (falls back to a copy across file
    systems) or ``symlink`` (absolute target). An existing ``dst`` is replaced."""
    if mode not in LINK_MODES:
        raise ValueError(f"unknown file mode {mode!r}; choose from {LINK_MODES}")
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    if os.path.lexists(dst):
        os.remove(dst)
    if mode == "hardlink":
        try:
            os.link(src, dst)
            return
        except OSError:
            mode = "copy"
    if mode == "symlink":
        os.symlink(os.path.abspath(src), dst)
    else:
        shutil.copyfile(src, dst)


def write_image(path: str, image: np.ndarray, params: Sequence[int] = ()) -> None:
    """``cv2.imwrite`` into a new or existing folder; OSError naming ``path`` on failure."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if not cv2.imwrite(path, image, list(params)):
        raise OSError(f"cannot write {path}")


def parallel_map(fn: Callable[[T], R], items: Sequence[T], workers: int = 1) -> List[R]:
    """``[fn(x) for x in items]``, in processes when ``workers > 1`` (``fn`` must be a
    module-level function)."""
    if workers > 1 and len(items) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(fn, items, chunksize=max(1, len(items) // (workers * 8))))
    return [fn(x) for x in items]


def find_dataset_dir(src: str, marker: str, names: Iterable[str]) -> str:
    """``src`` if it contains ``marker``, else the first ``src/<name>`` that does; raises
    FileNotFoundError naming what was looked for."""
    candidates = [src] + [os.path.join(src, n) for n in names]
    for c in candidates:
        if os.path.exists(os.path.join(c, marker)):
            return c
    raise FileNotFoundError(
        f"cannot find '{marker}' in {', '.join(candidates)}; see datasets/README.md for the "
        f"expected layout")


def convert_single_image(image_file: str, label_file: Optional[str], dst_root: str,
                         video_id: str, label_set: LabelSet, mode: str = "hardlink",
                         label: Optional[np.ndarray] = None, image_in_place: bool = False,
                         face_box: Optional[Callable[[np.ndarray], Optional[List[float]]]] = None
                         ) -> dict:
    """Store one annotated image as a one-frame video ``video_id`` under ``dst_root``; returns its
    JSON video entry. The image goes to ``images/<video_id>/00000<ext>`` (``image_in_place``: it is
    there), the checked label map to ``labels/<video_id>/00000.png``. The face box is
    ``face_box(label)``, by default the box of all labelled pixels but neck/cloth/necklace."""
    h, w = image_size(image_file)
    ext = os.path.splitext(image_file)[1].lower() or ".jpg"
    img_rel = f"images/{video_id}/00000{ext}"
    if image_in_place:
        if os.path.abspath(image_file) != os.path.abspath(os.path.join(dst_root, img_rel)):
            raise ValueError(f"{image_file} is not at {os.path.join(dst_root, img_rel)}")
    else:
        place_file(image_file, os.path.join(dst_root, img_rel), mode)
    lab_rel, boxes = None, None
    if label_file is not None or label is not None:
        if label is None:
            label = read_label_map(label_file)
        name = label_file or f"label of {image_file}"
        check_map_size(label, (h, w), "label map", name, image_file)
        check_label_values(label, label_set.num_classes, name)
        lab_rel = f"labels/{video_id}/00000.png"
        dst_label = os.path.join(dst_root, lab_rel)
        if label_file is not None and label_file.lower().endswith(".png") and _is_plain_gray8_png(label_file):
            place_file(label_file, dst_label, mode)
        else:
            write_image(dst_label, label)
        box = face_box(label) if face_box else union_box_from_label_map(label, face_box_excluded_ids(label_set))
        boxes = [box] if box is not None else []
    return {"video_id": video_id,
            "frames": [make_frame_record(0, img_rel, h, w, lab_rel, boxes)]}


def _is_plain_gray8_png(path: str) -> bool:
    from PIL import Image

    with Image.open(path) as img:
        return img.format == "PNG" and img.mode == "L"


def write_split(dst_root: str, split: str, label_set: LabelSet, videos: List[dict],
                source: str, extra: Optional[dict] = None) -> str:
    """Write ``<dst_root>/<split>.json`` (videos sorted by id, ``extra`` top-level keys) and log
    a summary."""
    videos = sorted(videos, key=lambda v: v["video_id"])
    path = write_face_video_json(os.path.join(dst_root, f"{split}.json"), label_set, videos,
                                 extra={"source": os.path.abspath(source), **(extra or {})})
    n_frames = sum(len(v["frames"]) for v in videos)
    logger.info("Wrote %s: %d videos, %d frames", path, len(videos), n_frames)
    return path
