"""Short-video face parsing (SFP, the CVPR 2021 PIC challenge data) -> the common format.

Reads the tolerant layout of datasets/README.md ("SFP"); face boxes come from face-instance maps,
else per-frame JSON boxes, else one box per label-map component (counted in each split JSON's
``"face_source"``). The output JSONs carry ``"label_set": "sfp"`` and the ``"classes"`` list.
"""
from __future__ import annotations

import glob
import json
import os
import re
from collections import Counter
from functools import partial
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..io import DataReadError, check_label_values, check_map_size, image_size
from ...structures.label_sets import LabelSet, sfp_label_set
from ..video_format import _foreground, boxes_from_label_map, face_box_excluded_ids, make_frame_record
from .common import parallel_map, place_file, write_image, write_split

__all__ = ["convert_sfp", "read_class_list", "find_class_list", "faces_from_instance_map", "faces_from_json"]

IMAGE_DIRS = ("images", "image", "imgs", "frames", "JPEGImages")
LABEL_DIRS = ("labels", "label", "masks", "annotations", "Annotations", "parsing",
              "SegmentationClass")
INSTANCE_DIRS = ("instances", "instance", "Instances", "instance_masks", "human_ids")
JSON_DIRS = ("json", "jsons")
_FACE_LIST_KEYS = ("faces", "instances", "annotations", "objects", "shapes")
CLASS_FILES = ("classes", "categories", "label_info", "class_info", "labels", "meta")
_LIST_KEYS = ("categories", "classes", "labels", "label_names", "class_names")
_IMAGE_EXTS = (".jpg", ".jpeg", ".png")


def _natural_key(name: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _parse_classes(obj) -> Optional[Tuple[List[str], Optional[List[Tuple[int, int, int]]]]]:
    """(names, colours or None) from one of the accepted structures, or None."""
    if isinstance(obj, dict):
        for key in _LIST_KEYS:
            if key in obj:
                return _parse_classes(obj[key])
        if obj and all(isinstance(k, str) and k.isdigit() and isinstance(v, str)
                       for k, v in obj.items()):
            return _from_ids({int(k): v for k, v in obj.items()}, None)
        if obj and all(isinstance(v, int) and not isinstance(v, bool) for v in obj.values()):
            return _from_ids({v: k for k, v in obj.items()}, None)
        return None
    if isinstance(obj, list) and obj:
        if all(isinstance(c, str) for c in obj):
            return list(obj), None
        if all(isinstance(c, dict) and "name" in c for c in obj):
            ids = [c.get("id", i) for i, c in enumerate(obj)]
            names = {int(i): str(c["name"]) for i, c in zip(ids, obj)}
            colors = None
            if all(("color" in c or "colour" in c) for c in obj):
                colors = {int(i): tuple(int(v) for v in c.get("color", c.get("colour")))[:3]
                          for i, c in zip(ids, obj)}
            return _from_ids(names, colors)
    return None


def _from_ids(names: Dict[int, str], colors: Optional[Dict[int, tuple]]):
    ids = sorted(names)
    start = ids[0]
    if ids != list(range(start, start + len(ids))) or start not in (0, 1):
        raise ValueError(f"class ids must be contiguous from 0 (or 1), got {ids}")
    out = [names[i] for i in ids]
    cols = [colors[i] for i in ids] if colors else None
    if start == 1:
        out = ["background"] + out
        cols = [(0, 0, 0)] + cols if cols else None
    return out, cols


def read_class_list(path: str) -> Tuple[List[str], Optional[List[Tuple[int, int, int]]]]:
    """Class names (index = id) and, if given, their label colours, from a JSON file in one of
    the accepted structures. Raises ValueError naming the file."""
    try:
        with open(path, "r", encoding="utf-8") as f:
            obj = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: cannot read the class list: {e}") from e
    try:
        parsed = _parse_classes(obj)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from e
    if parsed is None:
        raise ValueError(f"{path}: no class list found (accepted: a list of names, a list of "
                         f"{{'id','name'}} objects, or one under {list(_LIST_KEYS)})")
    return parsed


def find_class_list(src: str) -> str:
    """Path of the JSON holding the class list under ``src``: the first of :data:`CLASS_FILES`,
    then any top-level ``*.json``, that holds one."""
    named = [p for p in (os.path.join(src, stem + ".json") for stem in CLASS_FILES) if os.path.isfile(p)]
    tried = list(dict.fromkeys(named + sorted(glob.glob(os.path.join(src, "*.json")))))
    for p in tried:
        try:
            read_class_list(p)
            return p
        except ValueError:
            pass
    raise FileNotFoundError(
        f"no class list found in {src} (tried {tried or 'no JSON files'}); pass the file "
        f"that defines the SFP categories with --classes-file")


def _first_dir(base: str, names: Sequence[str]) -> Optional[str]:
    return next((os.path.join(base, n) for n in names if os.path.isdir(os.path.join(base, n))), None)


def _read_sfp_label(path: str, colors) -> np.ndarray:
    from PIL import Image

    from ..io import read_label_map

    try:
        return read_label_map(path)
    except DataReadError:
        if colors is None:
            raise
    with Image.open(path) as img:
        rgb = np.asarray(img.convert("RGB"))
    code = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    lut = {(r << 16) | (g << 8) | b: i for i, (r, g, b) in enumerate(colors)}
    values, inverse = np.unique(code, return_inverse=True)
    unknown = [f"#{v:06x}" for v in values if int(v) not in lut]
    if unknown:
        raise DataReadError(f"{path}: colours {unknown[:10]} are not in the class list")
    return np.array([lut[int(v)] for v in values], np.uint8)[inverse.reshape(code.shape)]


def faces_from_instance_map(label: np.ndarray, instances: np.ndarray, excluded, min_box_area: int = 16):
    """``(boxes, instance map)`` from a release's face-instance map: per positive id the box of its
    pixels outside ``excluded`` (at least ``min_box_area``), by decreasing area, renumbered
    ``k + 1`` (uint16 above 255 faces, else uint8)."""
    face_px = _foreground(label, excluded)
    faces = []
    for fid in np.unique(instances[instances > 0]).tolist():
        own = (instances == fid) & face_px
        area = int(own.sum())
        if area < min_box_area:
            continue
        rows, cols = np.flatnonzero(own.any(axis=1)), np.flatnonzero(own.any(axis=0))
        faces.append((area, fid, [float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)]))
    faces.sort(key=lambda f: -f[0])
    out = np.zeros(instances.shape, np.uint16 if len(faces) > 255 else np.uint8)
    for k, (_, fid, _) in enumerate(faces):
        out[instances == fid] = k + 1
    return [b for _, _, b in faces], out


def faces_from_json(path: str, height: int, width: int) -> Optional[List[List[float]]]:
    """Face boxes (XYXY, clipped to the frame) of a per-frame JSON of the release, or None when it
    holds no face list. Raises ValueError naming the file."""
    try:
        with open(path, "r", encoding="utf-8") as f:
            obj = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: cannot read per-frame faces: {e}") from e
    faces = obj if isinstance(obj, list) else next((obj[k] for k in _FACE_LIST_KEYS if isinstance(obj, dict) and k in obj), None)
    if not isinstance(faces, list) or not all(isinstance(f, dict) and "bbox" in f for f in faces):
        return None
    boxes = []
    for f in faces:
        x0, y0, a, b = (float(v) for v in f["bbox"])
        x1, y1 = (x0 + a, y0 + b) if str(f.get("bbox_mode", "xyxy")).lower() == "xywh" else (a, b)
        x0, x1 = min(max(x0, 0.0), width), min(max(x1, 0.0), width)
        y0, y1 = min(max(y0, 0.0), height), min(max(y1, 0.0), height)
        if x1 > x0 and y1 > y0:
            boxes.append([x0, y0, x1, y1])
    return boxes


def _convert_video(item, dst, label_set, colors, mode, min_box_area):
    from ..io import read_instance_map

    video_id, frames = item  # frames: [(image_file, label_file or None, instance file or None, json or None)]
    excluded = face_box_excluded_ids(label_set)
    records = []
    for t, (img_file, lab_file, inst_file, json_file) in enumerate(frames):
        h, w = image_size(img_file)
        img_rel = f"images/{video_id}/{os.path.basename(img_file)}"
        place_file(img_file, os.path.join(dst, img_rel), mode)
        lab_rel, boxes = None, None
        if lab_file is not None:
            label = _read_sfp_label(lab_file, colors)
            check_map_size(label, (h, w), "label map", lab_file, img_file)
            check_label_values(label, label_set.num_classes, lab_file)
            stem = os.path.splitext(os.path.basename(img_file))[0]
            lab_rel = f"labels/{video_id}/{stem}.png"
            write_image(os.path.join(dst, lab_rel), label)
            inst_rel, source = None, "label-map components"
            if inst_file is not None:
                instances = read_instance_map(inst_file)
                check_map_size(instances, (h, w), "face-instance map", inst_file, img_file)
                boxes, instance_map = faces_from_instance_map(label, instances, excluded, min_box_area)
                inst_rel, source = f"instances/{video_id}/{stem}.png", "instance maps"
                write_image(os.path.join(dst, inst_rel), instance_map)
            elif json_file is not None and (boxes := faces_from_json(json_file, h, w)) is not None:
                source = "json"
            else:
                boxes = boxes_from_label_map(label, min_box_area, excluded)
            records.append((make_frame_record(t, img_rel, h, w, lab_rel, boxes, inst_rel), source))
        else:
            records.append((make_frame_record(t, img_rel, h, w, lab_rel, boxes), None))
    return {"video_id": video_id, "frames": [r for r, _ in records], "face_sources": [s for _, s in records if s]}


def convert_sfp(src: str, dst: str, splits: Sequence[str] = ("train", "val", "test"),
                classes_file: Optional[str] = None, mode: str = "hardlink",
                min_box_area: int = 16, workers: int = 1) -> Dict[str, str]:
    """Convert SFP data into ``dst``: ``{split: json}``. Missing split directories are skipped (one
    must exist); a split without a labels directory (test) is written without labels."""
    classes_file = classes_file or find_class_list(src)
    classes, colors = read_class_list(classes_file)
    label_set: LabelSet = sfp_label_set(classes)
    out = {}
    for split in splits:
        split_dir = os.path.join(src, split)
        if not os.path.isdir(split_dir):
            continue
        img_root = _first_dir(split_dir, IMAGE_DIRS)
        if img_root is None:
            raise FileNotFoundError(f"{split_dir}: no frame directory (looked for {IMAGE_DIRS})")
        lab_root = _first_dir(split_dir, LABEL_DIRS)
        inst_root = _first_dir(split_dir, INSTANCE_DIRS)
        json_root = _first_dir(split_dir, JSON_DIRS) or lab_root
        items = []
        for vdir in sorted(d for d in os.listdir(img_root) if os.path.isdir(os.path.join(img_root, d))):
            files = sorted((f for f in os.listdir(os.path.join(img_root, vdir))
                            if f.lower().endswith(_IMAGE_EXTS)), key=_natural_key)
            frames = []
            for f in files:
                img, stem = os.path.join(img_root, vdir, f), os.path.splitext(f)[0]
                lab = None if lab_root is None else os.path.join(lab_root, vdir, stem + ".png")
                if lab is not None and not os.path.isfile(lab):
                    raise FileNotFoundError(f"SFP label missing for {img}: expected {lab}")
                inst = os.path.join(inst_root, vdir, stem + ".png") if inst_root and lab else None
                js = os.path.join(json_root, vdir, stem + ".json") if json_root and lab else None
                frames.append((img, lab, inst if inst and os.path.isfile(inst) else None,
                               js if js and os.path.isfile(js) else None))
            if frames:
                items.append((vdir, frames))
        if not items:
            raise FileNotFoundError(f"{img_root}: no <video_id>/<frame> images")
        videos = parallel_map(partial(_convert_video, dst=dst, label_set=label_set,
                                      colors=colors, mode=mode, min_box_area=min_box_area),
                              items, workers)
        sources = dict(Counter(source for v in videos for source in v.pop("face_sources")))
        out[split] = write_split(dst, split, label_set, videos, src, extra={"face_source": sources} if sources else None)
    if not out:
        raise FileNotFoundError(f"no split directory ({', '.join(splits)}) found in {src}")
    return out
