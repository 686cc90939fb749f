"""One-pass validation of face-parsing datasets (used by ``tools/check_dataset.py``): files
decode with the JSON's size, label values, face indices and boxes are valid, image ids are unique
and the flip pairs agree with the label set.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Iterable, List, Optional, Sequence

import numpy as np
from detectron2.structures import BoxMode

from .io import illegal_label_values, read_image, read_instance_map, read_label_map
from ..structures.label_sets import IGNORE_LABEL, LabelSet, derive_flip_pairs

__all__ = ["Problem", "CheckReport", "check_label_set", "check_records", "check_dataset",
           "check_json"]

# Boxes may exceed the image by this much (pixels) before they count as "outside".
BOX_TOLERANCE = 0.01


@dataclass(frozen=True)
class Problem:
    """One problem: ``file`` is the file concerned (or the dataset name), ``message`` what is
    wrong with it."""

    dataset: str
    file: str
    message: str

    def __str__(self) -> str:
        return f"[{self.dataset}] {self.file}: {self.message}"


@dataclass
class CheckReport:
    dataset: str
    num_frames: int = 0
    problems: List[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def check_label_set(label_set: LabelSet, flip_pairs: Optional[Iterable] = None,
                    dataset: str = "", where: str = "") -> List[Problem]:
    """Flip pairs (``flip_pairs``, e.g. the metadata's, default the set's own) must equal the
    label set's, form an involution, and pair names that are left/right counterparts; classes
    named as left/right counterparts must be paired."""
    where = where or f"label set '{label_set.name}'"
    probs = []
    n = label_set.num_classes
    pairs = [tuple(int(v) for v in p) for p in (label_set.flip_pairs if flip_pairs is None
                                               else flip_pairs)]
    if sorted(pairs) != sorted(label_set.flip_pairs):
        probs.append(Problem(dataset, where, f"flip pairs {pairs} differ from the label set's "
                                             f"{list(label_set.flip_pairs)}"))
    perm = np.arange(n)
    for a, b in pairs:
        if not (0 <= a < n and 0 <= b < n) or a == b:
            probs.append(Problem(dataset, where, f"invalid flip pair {(a, b)} for {n} classes"))
            continue
        perm[a], perm[b] = b, a
    if not (perm[perm] == np.arange(n)).all():
        probs.append(Problem(dataset, where, f"flip pairs {pairs} are not a set of swaps"))
    derived = set(derive_flip_pairs(label_set.classes))
    norm = {tuple(sorted(p)) for p in pairs}
    for a, b in sorted(derived):
        if (a, b) not in norm:
            probs.append(Problem(
                dataset, where, f"classes '{label_set.classes[a]}' ({a}) and "
                f"'{label_set.classes[b]}' ({b}) are named as a left/right pair but are not a "
                f"flip pair"))
    for a, b in sorted(norm):
        if (a, b) not in derived and 0 <= a < n and 0 <= b < n:
            probs.append(Problem(
                dataset, where, f"flip pair ({a}, {b}) = ('{label_set.classes[a]}', "
                f"'{label_set.classes[b]}') does not pair left/right names"))
    return probs


def _check_record(d: dict, label_set: LabelSet, dataset: str) -> List[Problem]:
    probs = []
    img_file = d["file_name"]
    exp = (d.get("height"), d.get("width"))

    def add(file, msg):
        probs.append(Problem(dataset, file, msg))

    def read(reader, path, file_what, map_what):
        try:
            return reader(path)
        except FileNotFoundError:
            add(path, f"{file_what} is missing")
        except Exception as e:  # noqa: BLE001 - every failure is reported, not raised
            add(path, f"{map_what} cannot be read: {e}")
        return None

    image = read(read_image, img_file, "image file", "image")  # full decode: catches truncated files
    size = None if image is None else image.shape[:2]
    if size is not None and tuple(size) != exp:
        add(img_file, f"image is {size[1]}x{size[0]} (WxH) but the JSON says {exp[1]}x{exp[0]}")
    ref = tuple(size) if size is not None else exp

    label_file = d.get("sem_seg_file_name")
    label = read(read_label_map, label_file, "label file", "label map") if label_file else None
    if label is not None:
        if label.shape != ref:
            add(label_file, f"label map is {label.shape[1]}x{label.shape[0]} (WxH) but its "
                            f"image {img_file} is {ref[1]}x{ref[0]}")
        bad = illegal_label_values(label, label_set.num_classes)
        if bad.size:
            add(label_file, f"illegal label values {bad.tolist()} (label set "
                            f"'{label_set.name}' has ids 0..{label_set.num_classes - 1}, "
                            f"ignore = {IGNORE_LABEL})")

    inst_file = d.get("instance_file_name")
    inst = read(read_instance_map, inst_file, "face-instance file", "face-instance map") if inst_file else None
    if inst is not None:
        n_faces = len(d.get("annotations", []))
        if inst.shape != ref:
            add(inst_file, f"face-instance map is {inst.shape[1]}x{inst.shape[0]} (WxH) but its "
                           f"image {img_file} is {ref[1]}x{ref[0]}")
        elif inst.size and int(inst.max()) > n_faces:
            add(inst_file, f"face index {int(inst.max())} but the frame has {n_faces} face box(es)")

    h, w = ref
    for k, ann in enumerate(d.get("annotations", [])):
        box = np.asarray(ann.get("bbox", []), dtype=np.float64)
        where = f"face box {k} {box.tolist()}"
        if box.shape != (4,) or not np.isfinite(box).all():
            add(img_file, f"{where} is not 4 finite numbers")
            continue
        x0, y0, x1, y1 = BoxMode.convert(box.tolist(), ann.get("bbox_mode", BoxMode.XYXY_ABS), BoxMode.XYXY_ABS)
        if x1 <= x0 or y1 <= y0:
            add(img_file, f"{where} is empty or inverted")
        t = BOX_TOLERANCE
        if x0 < -t or y0 < -t or x1 > w + t or y1 > h + t:
            add(img_file, f"{where} is outside the {w}x{h} image")
    return probs


def check_records(records: Sequence[dict], label_set: LabelSet, dataset: str = "",
                  workers: int = 1) -> List[Problem]:
    """Problems of loaded dataset dicts (see the module docstring), in record order."""
    probs: List[Problem] = []
    seen = {}
    for d in records:
        iid = d.get("image_id")
        if iid in seen:
            probs.append(Problem(dataset, d["file_name"], f"duplicate image_id '{iid}' (also "
                                                          f"{seen[iid]})"))
        seen[iid] = d["file_name"]
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for r in pool.map(lambda r: _check_record(r, label_set, dataset), records):
            probs.extend(r)
    return probs


def _load_failed(report: CheckReport, where: str, error: Exception) -> CheckReport:
    msg = str(error)
    report.problems.append(Problem(report.dataset, where, msg if where in msg else f"cannot load: {msg}"))
    return report


def check_dataset(name: str, workers: int = 1) -> CheckReport:
    """Validate the registered dataset ``name`` in one pass; never raises for data problems."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from .datasets.face_video import get_dataset_label_set

    report = CheckReport(name)
    if name not in DatasetCatalog.list():
        report.problems.append(Problem(name, name, "dataset is not registered"))
        return report
    meta = MetadataCatalog.get(name)
    where = meta.get("json_file", name)
    try:
        ls = get_dataset_label_set(name)
        flip_pairs = meta.get("flip_pairs")
    except Exception as e:  # noqa: BLE001
        report.problems.append(Problem(name, where, f"label set unavailable: {e}"))
        return report
    report.problems += check_label_set(ls, flip_pairs, name, where=f"{where} (metadata)")
    try:
        records = DatasetCatalog.get(name)
    except Exception as e:  # noqa: BLE001
        return _load_failed(report, where, e)
    report.num_frames = len(records)
    report.problems += check_records(records, ls, name, workers)
    return report


def check_json(json_file: str, dataset_root: Optional[str] = None, workers: int = 1) -> CheckReport:
    """Validate a split JSON that is not registered (root defaults to its directory)."""
    from .video_format import load_face_video_json, read_face_video_json, resolve_json_label_set

    root = dataset_root or os.path.dirname(os.path.abspath(json_file))
    report = CheckReport(json_file)
    try:
        data = read_face_video_json(json_file)
        ls = resolve_json_label_set(data, json_file)
        records = load_face_video_json(json_file, root)
    except Exception as e:  # noqa: BLE001
        return _load_failed(report, json_file, e)
    report.problems += check_label_set(ls, dataset=json_file)
    report.num_frames = len(records)
    report.problems += check_records(records, ls, json_file, workers)
    return report
