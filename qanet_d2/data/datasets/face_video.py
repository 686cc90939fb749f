"""Registration of face-video datasets (:mod:`qanet_d2.data.video_format`) in detectron2's
``DatasetCatalog`` and ``MetadataCatalog``. Paths are resolved when used, not when registered; a
dataset whose classes come from its own files (SFP) reads its class metadata lazily.
"""
from __future__ import annotations

import functools
import json
import logging
import os
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple, Union

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.catalog import Metadata

from ...structures.label_sets import IGNORE_LABEL, LABEL_SETS, LabelSet, get_label_set, make_palette, register_label_set
from ..video_format import DatasetFormatError, load_face_video_json

__all__ = [
    "DatasetNotFoundError",
    "FaceVideoMetadata",
    "register_face_video_dataset",
    "dataset_label_set",
    "get_dataset_label_set",
    "label_set_metadata",
    "datasets_root",
    "set_synthetic_auto_generate",
]

logger = logging.getLogger(__name__)

PathLike = Union[str, Callable[[], str]]


class DatasetNotFoundError(FileNotFoundError):
    """A registered dataset's files are missing; the message says where they were expected and
    how to prepare them."""


def datasets_root() -> str:
    """``$DETECTRON2_DATASETS`` (default ``datasets``), read now, user-expanded, absolute
    (relative to the current directory)."""
    return os.path.abspath(os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets")))


@dataclass
class _Spec:
    name: str
    json_file: Callable[[], str]
    dataset_root: Callable[[], str]
    label_set: str  # the name the JSON must declare
    classes_from_json: bool  # label set built from the JSON's "classes" (SFP)
    prepare_hint: str
    generate: Optional[Callable[[str], object]] = None  # makes the dataset at a root
    single_face: bool = False  # one face per image (its per-face ground truth is implied)

    def paths(self) -> Tuple[str, str]:
        return os.path.abspath(self.json_file()), os.path.abspath(self.dataset_root())


_SPECS: Dict[str, _Spec] = {}
_AUTO_GENERATE = [True]


def set_synthetic_auto_generate(enabled: bool) -> None:
    """Whether loading a generated dataset whose JSON is missing generates it (the default) or
    raises (``cfg.DATASETS.SYNTHETIC.AUTO_GENERATE``)."""
    _AUTO_GENERATE[0] = bool(enabled)


def _as_path_fn(p: PathLike) -> Callable[[], str]:
    if callable(p):
        return p
    p = os.fspath(p)
    return lambda: os.path.expanduser(p)


@functools.lru_cache(maxsize=None)
def _read_classes(json_file: str, mtime: float) -> Optional[List[str]]:
    """The ``"classes"`` list of a split JSON (cached by modification time ``mtime``); None if absent."""
    try:
        with open(json_file, "r", encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise DatasetFormatError(f"{json_file}: cannot read the class list: {e}") from e
    classes = data.get("classes") if isinstance(data, dict) else None
    return list(classes) if classes is not None else None


def _spec_label_set(spec: _Spec) -> LabelSet:
    if not spec.classes_from_json:
        return get_label_set(spec.label_set)
    json_file, root = spec.paths()
    candidates = [json_file] + [os.path.join(root, f"{s}.json") for s in ("train", "val", "test")]
    for path in candidates:
        if os.path.isfile(path):
            classes = _read_classes(path, os.path.getmtime(path))
            if classes is None:
                raise DatasetFormatError(
                    f"{path}: no 'classes' list; dataset '{spec.name}' takes its class names "
                    f"from it (label set '{spec.label_set}')")
            return get_label_set(spec.label_set, classes)
    raise DatasetNotFoundError(
        f"dataset '{spec.name}' not found: {json_file} does not exist (dataset root {root}; "
        f"DETECTRON2_DATASETS={os.getenv('DETECTRON2_DATASETS', '<unset, ./datasets>')}). Its "
        f"classes are read from the dataset's own files, so its metadata (stuff_classes, "
        f"flip_pairs, ...) exists only once the dataset is prepared: {spec.prepare_hint}")


def label_set_metadata(label_set: LabelSet) -> Dict[str, list]:
    """detectron2's metadata fields of a label set: ``stuff_classes`` (names), ``stuff_colors``
    (``[R, G, B]`` per class) and ``flip_pairs`` (``(id_a, id_b)`` tuples)."""
    return {
        "stuff_classes": list(label_set.classes),
        "stuff_colors": [list(c) for c in label_set.palette],
        "flip_pairs": [tuple(p) for p in label_set.flip_pairs],
    }


class FaceVideoMetadata(Metadata):
    """detectron2 ``Metadata`` whose path fields and, for datasets whose classes come from their
    own files, class fields are computed on access; values set explicitly take precedence."""

    _LAZY_PATHS = ("json_file", "dataset_root", "image_root")
    _LAZY_CLASSES = ("stuff_classes", "stuff_colors", "flip_pairs")

    def _lazy(self, key):
        spec = _SPECS.get(self.__dict__.get("name"))
        if spec is None:
            raise AttributeError(key)
        if key in self._LAZY_PATHS:
            json_file, root = spec.paths()
            return json_file if key == "json_file" else root
        return label_set_metadata(_spec_label_set(spec))[key]

    def __getattr__(self, key):
        if not key.startswith("__") and key in self._LAZY_PATHS + self._LAZY_CLASSES:
            try:
                return self._lazy(key)
            except AttributeError:
                pass
        return super().__getattr__(key)

    def __setattr__(self, key, val):
        if key in self._LAZY_PATHS + self._LAZY_CLASSES and key not in self.__dict__:
            try:
                old = self._lazy(key)
            except (AttributeError, DatasetNotFoundError):
                object.__setattr__(self, key, val)
                return
            assert old == val, (
                f"Attribute '{key}' in the metadata of '{self.name}' cannot be set to a "
                f"different value!\n{old} != {val}")
            return
        super().__setattr__(key, val)

    def as_dict(self):
        d = super().as_dict()
        for key in self._LAZY_PATHS + self._LAZY_CLASSES:
            if key not in d:
                try:
                    d[key] = self._lazy(key)
                except (AttributeError, DatasetNotFoundError):
                    pass
        return d


def _load(name: str):
    spec = _SPECS[name]
    json_file, root = spec.paths()
    if not os.path.isfile(json_file):
        if spec.generate is not None and _AUTO_GENERATE[0]:
            logger.warning("Dataset '%s': %s not found; generating it in %s", name, json_file, root)
            spec.generate(root)
        if not os.path.isfile(json_file):
            raise DatasetNotFoundError(
                f"dataset '{name}': {json_file} not found (dataset root {root}; "
                f"DETECTRON2_DATASETS="
                f"{os.getenv('DETECTRON2_DATASETS', '<unset, ./datasets>')}). {spec.prepare_hint}")
    return load_face_video_json(json_file, root, dataset_name=name, label_set=spec.label_set)


def register_face_video_dataset(name: str, json_file: PathLike, dataset_root: PathLike,
                                label_set: Union[str, LabelSet],
                                generate: Optional[Callable[[str], object]] = None,
                                prepare_hint: str = "", single_face: bool = False) -> None:
    """Register a dataset in the format of :mod:`qanet_d2.data.video_format`.

    Args:
        json_file, dataset_root: paths (resolved when the dataset is loaded) or zero-argument callables.
        label_set: a registered set's name, a :class:`LabelSet` (registered if new), or an
            unregistered name (``"sfp"``): the classes are then the JSON's ``"classes"``.
        generate: ``generate(root)`` that creates the dataset when its JSON is missing.
        prepare_hint: appended to "not found" errors.
        single_face: every image shows one face (all its foreground pixels are that face's).
    """
    if isinstance(label_set, LabelSet):
        register_label_set(label_set)
        ls_name = label_set.name
    elif isinstance(label_set, str) and label_set:
        ls_name = label_set
    else:
        raise TypeError(f"register_face_video_dataset('{name}'): label_set must be a LabelSet or "
                        f"a label set name, got {label_set!r}")
    if name in _SPECS or name in DatasetCatalog.list():
        raise AssertionError(f"dataset '{name}' is already registered")
    _SPECS[name] = _Spec(name=name, json_file=_as_path_fn(json_file), dataset_root=_as_path_fn(dataset_root),
                         label_set=ls_name, classes_from_json=ls_name not in LABEL_SETS,
                         prepare_hint=prepare_hint or "See datasets/README.md.", generate=generate,
                         single_face=bool(single_face))
    DatasetCatalog.register(name, lambda: _load(name))
    meta = FaceVideoMetadata(name=name)
    # replace a plain Metadata that someone may have created with MetadataCatalog.get(name)
    old = MetadataCatalog.get(name)
    MetadataCatalog[name] = meta
    for k, v in old.as_dict().items():
        if k != "name":
            setattr(meta, k, v)
    meta.set(label_set=ls_name, ignore_label=IGNORE_LABEL, thing_classes=["face"],
             evaluator_type="face_parsing", single_face=bool(single_face))
    if ls_name in LABEL_SETS:
        meta.set(**label_set_metadata(get_label_set(ls_name)))


def dataset_label_set(dataset_name: Optional[str]) -> Optional[LabelSet]:
    """The label set of a registered dataset's metadata, or None when the dataset is unknown or has
    no ``stuff_classes``. DatasetNotFoundError when its classes are read from its own files (SFP)
    and those are absent."""
    if not dataset_name or dataset_name not in MetadataCatalog.list():
        return None
    meta = MetadataCatalog.get(dataset_name)
    spec = _SPECS.get(dataset_name)
    if spec is not None and "stuff_classes" not in meta.__dict__:
        return _spec_label_set(spec)
    classes = meta.get("stuff_classes")
    if classes is None:
        return None
    name = meta.get("label_set", dataset_name)
    if name in LABEL_SETS:
        return get_label_set(name, classes)
    colors = meta.get("stuff_colors") or make_palette(classes)
    return LabelSet(name, classes, [tuple(c) for c in colors], [tuple(p) for p in meta.get("flip_pairs", None) or ()])


def get_dataset_label_set(dataset_name: str) -> LabelSet:
    """:func:`dataset_label_set`, raising KeyError for a dataset without a face-parsing label
    set."""
    ls = dataset_label_set(dataset_name)
    if ls is None:
        raise KeyError(f"dataset '{dataset_name}' has no face-parsing label set in its metadata")
    return ls
