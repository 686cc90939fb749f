"""One model, many label sets: which label set a model predicts (``MODEL.QANET.LABEL_SET``, else
the first dataset's), and how each dataset's labels meet it in training (:func:`training_route`)
and in evaluation (:func:`prediction_conversion`).
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np

from .datasets.face_video import DatasetNotFoundError, dataset_label_set
from ..structures.label_sets import (LABEL_SETS, LabelSet, conversion_ids, conversion_lut, label_set_from_config,
                                     label_set_to_config)

__all__ = [
    "NoConversionError",
    "model_label_set",
    "fill_model_label_set",
    "model_label_set_source",
    "training_route",
    "prediction_conversion",
    "prediction_conversion_note",
    "same_label_set",
]

class NoConversionError(ValueError):
    """Two label sets have no class correspondence in the direction needed."""


def same_label_set(a: Optional[LabelSet], b: Optional[LabelSet]) -> bool:
    """Same name and same classes (None matches nothing)."""
    return a is not None and b is not None and a.name == b.name and a.classes == b.classes


def _label_set_or_none(dataset_name: str) -> Optional[LabelSet]:
    try:
        return dataset_label_set(dataset_name)
    except DatasetNotFoundError:  # classes read from files that are not there (SFP)
        return None


def model_label_set_source(cfg) -> str:
    """Where the model's label set comes from: ``"MODEL.QANET.LABEL_SET"``, ``"dataset '<name>'"``
    or ``""``."""
    if cfg.MODEL.QANET.LABEL_SET.NAME or len(cfg.MODEL.QANET.LABEL_SET.CLASSES):
        return "MODEL.QANET.LABEL_SET"
    names = list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST)
    return f"dataset '{names[0]}'" if names else ""


def model_label_set(cfg) -> Optional[LabelSet]:
    """The label set the model predicts: ``MODEL.QANET.LABEL_SET`` (its CLASSES or a registered
    NAME), else the set of the config's dataset that NAME names (e.g. ``"sfp"``), else (empty NAME)
    the first dataset's. None when it cannot be known (no dataset, or absent files); KeyError
    when NAME names no known set."""
    own = label_set_from_config(cfg)
    if own is not None:
        return own
    names = list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST)
    wanted = cfg.MODEL.QANET.LABEL_SET.NAME
    if not wanted:
        return _label_set_or_none(names[0]) if names else None
    for name in names:
        ls = _label_set_or_none(name)
        if ls is not None and ls.name == wanted:
            return ls
    raise KeyError(
        f"MODEL.QANET.LABEL_SET.NAME = {wanted!r}: not a registered label set ({', '.join(sorted(LABEL_SETS))}) "
        f"nor the label set of a dataset of DATASETS.TRAIN/TEST")


def fill_model_label_set(cfg) -> Optional[LabelSet]:
    """Write the model's label set (:func:`model_label_set`) into an unfrozen config's
    ``MODEL.QANET.LABEL_SET`` and return it (None, config unchanged, when it cannot be known)."""
    ls = model_label_set(cfg)
    if ls is not None:
        label_set_to_config(cfg, ls)
    return ls


def _has_conversion(src: LabelSet, dst: LabelSet) -> bool:
    try:
        conversion_lut(src, dst)
    except KeyError:
        return False
    return True


def training_route(model: LabelSet, data: LabelSet) -> str:
    """How a training dataset in label set ``data`` meets a model predicting ``model``: "same",
    "convert" (labels converted into the model's set, preferred) or "merge" (the model's
    probabilities merged into the dataset's coarser set). NoConversionError when neither converts."""
    if same_label_set(model, data):
        return "same"
    if _has_conversion(data, model):
        return "convert"
    if _has_conversion(model, data):
        return "merge"
    raise NoConversionError(
        f"no conversion between label set '{data.name}' ({list(data.classes)}) and the model's label set "
        f"'{model.name}' ({list(model.classes)}) in either direction")


def prediction_conversion(model: LabelSet, data: LabelSet) -> Optional[np.ndarray]:
    """``conversion_ids(model, data)`` (the ``data`` id of each predicted class, 255 for none), or
    None when both are the same set; NoConversionError when they do not convert."""
    if same_label_set(model, data):
        return None
    try:
        return conversion_ids(model, data)
    except KeyError as e:
        raise NoConversionError(
            f"predictions in label set '{model.name}' cannot be converted into label set '{data.name}': "
            f"{e.args[0] if e.args else e}") from None


def prediction_conversion_note(cfg, dataset_name: str) -> Optional[str]:
    """``"predictions converted from <model set> to <dataset set>"`` when the evaluation of
    ``dataset_name`` converts the model's predictions, else None."""
    model = model_label_set(cfg)
    data = _label_set_or_none(dataset_name)
    if model is None or data is None or same_label_set(model, data):
        return None
    return f"predictions converted from {model.name} to {data.name}"


def dataset_label_sets(names: Sequence[str]) -> Dict[str, Optional[LabelSet]]:
    """``{dataset name: its label set or None}`` (None: unknown, or files absent)."""
    return {n: _label_set_or_none(n) for n in names}


def label_sets_by_name(sets: Sequence[Optional[LabelSet]]) -> Dict[str, LabelSet]:
    """``{set name: set}`` of the given sets (None skipped)."""
    out: Dict[str, LabelSet] = {}
    for ls in sets:
        if ls is not None:
            out.setdefault(ls.name, ls)
    return out


def training_label_sets(cfg) -> List[LabelSet]:
    """The label sets of ``DATASETS.TRAIN`` that are known (files present), each once."""
    return list(label_sets_by_name(list(dataset_label_sets(cfg.DATASETS.TRAIN).values())).values())
