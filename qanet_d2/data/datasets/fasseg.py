"""FASSEG (Khan, Mauro, Migliorati, Leonardi; ICIP 2015, ICME 2017; no licence stated, research
use) -> the common format, label set ``"fasseg"`` (layout, splits, colour snapping and face boxes:
datasets/README.md, "FASSEG").

Face boxes (:func:`fasseg_face_box`) run from the hair top to the chin although FASSEG's skin
runs down the neck: the chin is extrapolated from the centroid rows of eyes, nose and mouth.
"""
from __future__ import annotations

import logging
import os
import re
from functools import partial
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
from PIL import Image

from ..io import DataReadError
from ...structures.label_sets import FASSEG
from .common import convert_single_image, parallel_map, write_image, write_split

__all__ = ["convert_fasseg", "snap_label_colors", "read_fasseg_label", "fasseg_face_box",
           "estimate_chin_row", "find_fasseg_root", "FASSEG_SPLITS", "FRONTAL_VERSIONS"]

logger = logging.getLogger(__name__)

FASSEG_SPLITS = ("frontal_train", "frontal_test", "multipose_train", "multipose_test")
# multipose_train split by person (``personne<NN>...`` file names): held-out people for per-pose numbers
MULTIPOSE_DEV_SPLITS = ("multipose_dev_train", "multipose_dev_val")
MULTIPOSE_DEV_VAL_PERSONS = ("06", "07")
_PERSON = re.compile(r"personne(\d\d)", re.IGNORECASE)


def multipose_person(stem: str) -> Optional[str]:
    """The two-digit person id of a FASSEG multipose file stem (``personne01140+0-90`` -> "01"),
    or None for a name without one."""
    m = _PERSON.search(stem)
    return m.group(1) if m else None
FRONTAL_VERSIONS = ("V1", "V2")
_IMAGE_EXTS = (".bmp", ".png")
_POSE_RE = re.compile(r"^[+-]?\d+$")

# Chin estimates (see the module docstring): chin row = row of base + factor * (base - ref).
CHIN_FROM_EYES_MOUTH = 0.6
CHIN_FROM_NOSE_MOUTH = 0.95
CHIN_FROM_EYES_NOSE = 3.3
MIN_PART_PIXELS = 10  # a part with fewer pixels (snapping specks) counts as absent
MIN_HEAD_FRACTION = 0.01  # head components smaller than this share of the head are specks

# the head classes are the ids _SKIN.._MOUTH
_SKIN, _EYES, _NOSE, _MOUTH = (FASSEG.class_id(c) for c in ("skin", "eyes", "nose", "mouth"))


# ---------------------------------------------------------------------------- labels
def snap_label_colors(rgb: np.ndarray, colors: Sequence[Sequence[int]] = FASSEG.palette,
                      clean_dist: float = 10.0, radius: int = 4) -> np.ndarray:
    """``H x W`` uint8 class ids of an anti-aliased ``H x W x 3`` uint8 RGB label image: each pixel
    gets the nearest class colour among the classes with a "clean" pixel (within ``clean_dist``
    of its colour) within ``radius`` pixels, among all when none has; plain nearest-colour
    snapping would turn the blend of skin and eyes into a ring of hair. Ties go to the lower id."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] < 3:
        raise ValueError(f"expected an H x W x 3 RGB image, got shape {rgb.shape}")
    cols = np.asarray(colors, dtype=np.int32).reshape(-1, 3)
    planes = [rgb[:, :, c].astype(np.int32) for c in range(3)]
    d2 = np.stack([sum((p - int(v)) ** 2 for p, v in zip(planes, col)) for col in cols])  # K x H x W
    out = d2.argmin(axis=0).astype(np.uint8)  # nearest class
    # class colours are far apart, so a clean pixel's class is its nearest colour
    clean = d2.min(axis=0) <= clean_dist * clean_dist
    ys, xs = np.nonzero(~clean)
    if ys.size == 0:
        return out
    kernel = np.ones((2 * radius + 1, 2 * radius + 1), np.uint8) if radius > 0 else None
    near = np.empty((ys.size, len(cols)), bool)
    for k in range(len(cols)):
        m = (clean & (out == k)).view(np.uint8)
        if kernel is not None:
            m = cv2.dilate(m, kernel)
        near[:, k] = m[ys, xs] > 0
    near |= ~near.any(axis=1, keepdims=True)
    dm = np.where(near, d2[:, ys, xs].T, np.iinfo(np.int32).max)
    out[ys, xs] = dm.argmin(axis=1)
    return out


def read_fasseg_label(path: str) -> np.ndarray:
    """``H x W`` uint8 ids (label set ``fasseg``) of a FASSEG colour label (``.bmp``/``.png``).
    Raises FileNotFoundError / :class:`DataReadError` naming ``path``."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"FASSEG label not found: {path}")
    try:
        with Image.open(path) as img:
            img.load()
            mode = img.mode
            rgb = np.asarray(img.convert("RGB"))
    except (OSError, SyntaxError, ValueError) as e:
        raise DataReadError(f"{path}: cannot decode FASSEG label: {e}") from e
    if mode not in ("RGB", "RGBA", "P"):
        raise DataReadError(f"{path}: FASSEG labels are colour images (class colours "
                            f"{list(FASSEG.palette)}), got mode {mode}")
    return snap_label_colors(rgb)


# ---------------------------------------------------------------------------- boxes
def _centroid_row(label: np.ndarray, class_id: int) -> Optional[float]:
    per_row = np.count_nonzero(label == class_id, axis=1)
    n = int(per_row.sum())
    if n < MIN_PART_PIXELS:
        return None
    return float(per_row @ np.arange(label.shape[0])) / n + 0.5


def estimate_chin_row(label: np.ndarray) -> Optional[float]:
    """Row coordinate (pixel edges, as box ``y``) of the chin of an upright face in a
    ``fasseg`` label map, from the eyes/nose/mouth centroids (module docstring); None if fewer
    than two of them are present."""
    e, n, m = (_centroid_row(label, c) for c in (_EYES, _NOSE, _MOUTH))
    if e is not None and m is not None:
        return m + CHIN_FROM_EYES_MOUTH * (m - e)
    if n is not None and m is not None:
        return m + CHIN_FROM_NOSE_MOUTH * (m - n)
    if e is not None and n is not None:
        return n + CHIN_FROM_EYES_NOSE * (n - e)
    return None


def fasseg_face_box(label: np.ndarray, name: str = "label map") -> Optional[List[float]]:
    """Face box ``[x0, y0, x1, y1]`` (XYXY_ABS, pixel edges) of the one face of a ``fasseg``
    label map (``H x W`` ids), hair top to chin (module docstring); None without any head
    pixel. ``name`` is used in the warning of the whole-head fallback."""
    label = np.asarray(label)
    if label.ndim != 2:
        raise ValueError(f"{name}: label map must be H x W, got shape {label.shape}")
    head = (label >= _SKIN) & (label <= _MOUTH)
    n, comp, stats, _ = cv2.connectedComponentsWithStats(head.view(np.uint8), connectivity=8)
    if n <= 1:
        return None
    areas = stats[1:, cv2.CC_STAT_AREA]
    keep = np.zeros(n, bool)
    keep[1:] = areas >= MIN_HEAD_FRACTION * areas.sum()
    head = keep[comp]
    rows = np.flatnonzero(head.any(axis=1))
    top, bottom = int(rows[0]), int(rows[-1]) + 1
    chin = estimate_chin_row(label)
    if chin is None:
        logger.warning("%s: fewer than two of eyes, nose and mouth; its face box spans the whole "
                       "head (neck included)", name)
    else:
        parts = np.flatnonzero(((label >= _EYES) & (label <= _MOUTH)).any(axis=1))
        bottom = max(int(np.clip(round(chin), parts[-1] + 1, label.shape[0])), top + 1)
    cols = np.flatnonzero(head[top:bottom].any(axis=0))
    return [float(cols[0]), float(top), float(cols[-1] + 1), float(bottom)]


# ---------------------------------------------------------------------------- release layout
def _child(parent: str, name: str) -> Optional[str]:
    """``parent/<name>`` matched case-insensitively (directories only), or None."""
    if not os.path.isdir(parent):
        return None
    for entry in sorted(os.listdir(parent)):
        if entry.lower() == name.lower() and os.path.isdir(os.path.join(parent, entry)):
            return os.path.join(parent, entry)
    return None


def find_fasseg_root(src: str) -> str:
    """The directory holding ``V1``/``V2``/``V3``: ``src`` or ``src/FASSEG-repository``
    (or ``src/FASSEG``); FileNotFoundError naming what was looked for."""
    candidates = [src] + [os.path.join(src, n) for n in ("FASSEG-repository", "FASSEG", "fasseg")]
    for c in candidates:
        if any(_child(c, v) for v in ("V1", "V2", "V3")):
            return c
    raise FileNotFoundError(
        f"cannot find FASSEG's V1, V2 or V3 folder in {', '.join(candidates)}; see "
        f"datasets/README.md for the expected layout")


def _images_by_stem(folder: str) -> Dict[str, str]:
    out: Dict[str, str] = {}
    for entry in sorted(os.listdir(folder)):
        path = os.path.join(folder, entry)
        stem, ext = os.path.splitext(entry)
        if entry.startswith(".") or ext.lower() not in _IMAGE_EXTS or not os.path.isfile(path):
            continue
        if stem in out and ext.lower() == ".png":  # both 1.bmp and 1.png: prefer the release's own file
            continue
        out[stem] = path
    return out


def _pair(img_dir: str, lab_dir: str, pose: int, unpaired: List[str]) -> List[tuple]:
    images, labels = _images_by_stem(img_dir), _images_by_stem(lab_dir)
    unpaired += [images[s] for s in images if s not in labels]
    unpaired += [labels[s] for s in labels if s not in images]
    return [(s, images[s], labels[s], pose) for s in sorted(images) if s in labels]


def _split_items(base: str, part: str, multipose: bool) -> Tuple[List[tuple], str]:
    """Items ``(stem, image, label, pose)`` of ``base/<part>_RGB`` + ``base/<part>_Labels``
    and a reason when there are none."""
    img_dir, lab_dir = _child(base, f"{part}_RGB"), _child(base, f"{part}_Labels")
    if img_dir is None or lab_dir is None:
        missing = os.path.join(base, f"{part}_RGB" if img_dir is None else f"{part}_Labels")
        return [], f"{missing} not found"
    unpaired: List[str] = []
    items: List[tuple] = []
    if multipose:
        poses = [d for d in sorted(os.listdir(img_dir))
                 if _POSE_RE.match(d) and os.path.isdir(os.path.join(img_dir, d))]
        for d in poses:
            lab_pose = _child(lab_dir, d)
            if lab_pose is None:
                unpaired += list(_images_by_stem(os.path.join(img_dir, d)).values())
                continue
            items += _pair(os.path.join(img_dir, d), lab_pose, int(d), unpaired)
    else:
        items = _pair(img_dir, lab_dir, 0, unpaired)
    if unpaired:
        logger.warning("FASSEG %s: %d file(s) without their image or label are left out, e.g. %s",
                       os.path.join(base, part), len(unpaired), ", ".join(sorted(unpaired)[:3]))
    if not items:
        return [], f"no image with a label in {img_dir} and {lab_dir}"
    return items, ""


def _convert_one(item, dst, split, mode):
    stem, image_file, label_file, pose = item
    video_id = f"{split}_{stem}"
    label = read_fasseg_label(label_file)
    in_place = False
    if not image_file.lower().endswith(".png"):  # BMP -> lossless PNG
        out = os.path.join(dst, "images", video_id, "00000.png")
        img = cv2.imread(image_file, cv2.IMREAD_COLOR)
        if img is None:
            raise DataReadError(f"{image_file}: cannot decode FASSEG image")
        write_image(out, img)
        image_file, in_place = out, True
    video = convert_single_image(image_file, label_file, dst, video_id, FASSEG, mode, label=label,
                                 image_in_place=in_place,
                                 face_box=partial(fasseg_face_box, name=label_file))
    video["frames"][0]["pose"] = int(pose)
    return video


def _write_dev_splits(dst: str, videos: List[dict], source: str) -> Dict[str, str]:
    """``multipose_dev_train`` / ``multipose_dev_val``: the multipose train videos by person."""
    val, train = [], []
    for video in videos:
        person = multipose_person(video["video_id"])
        if person is None:
            logger.warning("FASSEG dev splits not written: %s has no person id", video["video_id"])
            return {}
        (val if person in MULTIPOSE_DEV_VAL_PERSONS else train).append(video)
    if not val or not train:
        logger.warning("FASSEG dev splits not written: persons %s are %s of the multipose train "
                       "split", "/".join(MULTIPOSE_DEV_VAL_PERSONS), "all" if not train else "none")
        return {}
    return {"multipose_dev_train": write_split(dst, "multipose_dev_train", FASSEG, train, source),
            "multipose_dev_val": write_split(dst, "multipose_dev_val", FASSEG, val, source)}


def convert_fasseg(src: str, dst: str, frontal_version: str = "V2", mode: str = "hardlink",
                   workers: int = 1) -> Dict[str, str]:
    """Convert the FASSEG release at ``src`` into ``dst``: ``{split: json path}`` of the splits
    found (and the :data:`MULTIPOSE_DEV_SPLITS` with ``multipose_train``). ``frontal_version``:
    "V2" (high-precision labels) or "V1"; ``mode``: how ``.png`` photos get into ``dst`` (``.bmp``
    ones are re-encoded as PNG). FileNotFoundError when no split is found."""
    if frontal_version not in FRONTAL_VERSIONS:
        raise ValueError(f"frontal_version must be one of {FRONTAL_VERSIONS}, got "
                         f"{frontal_version!r}")
    root = find_fasseg_root(src)
    sources = {"frontal_train": (frontal_version, "Train", False),
               "frontal_test": (frontal_version, "Test", False),
               "multipose_train": ("V3", "Train", True),
               "multipose_test": ("V3", "Test", True)}
    out: Dict[str, str] = {}
    skipped = []
    for split, (version, part, multipose) in sources.items():
        base = _child(root, version)
        if base is None:
            items, why = [], f"{os.path.join(root, version)} not found"
        else:
            items, why = _split_items(base, part, multipose)
        if not items:
            logger.warning("FASSEG split '%s' not written (dataset fasseg_%s unavailable): %s",
                           split, split, why)
            skipped.append(f"{split}: {why}")
            continue
        videos = parallel_map(partial(_convert_one, dst=dst, split=split, mode=mode), items,
                              workers)
        out[split] = write_split(dst, split, FASSEG, videos, base)
        if split == "multipose_train":
            out.update(_write_dev_splits(dst, videos, base))
    if not out:
        raise FileNotFoundError("no FASSEG split found:\n  " + "\n  ".join(skipped))
    return out
