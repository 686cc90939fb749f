"""Checkpoints that survive being killed, load without running code, and never replace a
part of the model with random weights.

:class:`QANetCheckpointer` is detectron2's DetectionCheckpointer with these changes:

* ``save`` writes a temporary file and renames it into place, as does ``last_checkpoint``; the
  file holds only plain values (:func:`to_weights_only_safe`), ``"trained_parts"`` (which of
  ``detector`` / ``parser`` hold trained weights) and ``"label_set"``.
* Loading runs no code; a checkpoint lacking weights of the parts it loads, or of another label
  set than the model's, fails naming them. A model built without a label set takes the checkpoint's.
* ``MODEL.WEIGHTS`` loads only the parts the checkpoint records as trained (all without a
  record); ``resume`` loads the whole state, as detectron2 does.
* With ``cfg``, a run that is not resumed is assembled (:meth:`QANetCheckpointer.assemble`).
"""
import glob
import logging
import os
import tempfile
from typing import Dict, Iterable, List, Optional, Set

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.checkpoint.c2_model_loading import align_and_update_state_dicts
from torch import nn

from ..compat import to_weights_only_safe
from .imagenet import load_imagenet_weights
from ..weights_io import (LABEL_SET_BUFFER, apply_label_set_record, is_bookkeeping, load_checkpoint_file,
                          load_part_weights, state_problems)

__all__ = ["MODEL_PARTS", "QANetCheckpointer", "load_model_part", "load_model_weights", "model_parts"]

logger = logging.getLogger(__name__)

# The parts of a QANetFaceParser, each a submodule whose state-dict keys start with "<part>.".
MODEL_PARTS = ("detector", "parser")


def _zoo_pkl_to_checkpoint(data, filename: str) -> dict:
    """A dict read from a ``.pkl`` in the layout of DetectionCheckpointer._load_file: detectron2
    model-zoo files keep theirs; Caffe2/Detectron1 blobs get ``matching_heuristics``."""
    if not isinstance(data, dict):
        raise RuntimeError(f"{filename}: a .pkl weights file must hold a dict; found {type(data).__name__}")
    if "model" in data and "__author__" in data:
        logger.info(f"Reading a file from '{data['__author__']}'")
        return data
    if "blobs" in data:  # Detectron1 detection models; ImageNet models are flat dicts of blobs
        data = data["blobs"]
    data = {k: v for k, v in data.items() if not k.endswith("_momentum")}
    return {"model": data, "__author__": "Caffe2", "matching_heuristics": True}


# ---------------------------------------------------------------------- model parts
def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)) else model


def model_parts(model: nn.Module) -> Dict[str, nn.Module]:
    """``{part name: submodule}`` for the :data:`MODEL_PARTS` that ``model`` has (not None)."""
    model = _unwrap(model)
    return {p: getattr(model, p) for p in MODEL_PARTS if isinstance(getattr(model, p, None), nn.Module)}


def _part_of(key: str, parts: Iterable[str]) -> Optional[str]:
    return next((p for p in parts if key.startswith(p + ".")), None)


def load_model_part(model: nn.Module, part: str, path: str) -> str:
    """:func:`load_part_weights` into ``model.<part>``."""
    parts = model_parts(model)
    if part not in parts:
        raise ValueError(f"cannot load {part} weights from {path}: the model has no {part}")
    return load_part_weights(parts[part], part, path)


# ---------------------------------------------------------------------- writing files
def _atomic_write(path: str, write_fn) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-" + os.path.basename(path) + "-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# ---------------------------------------------------------------------- checkpointer
class QANetCheckpointer(DetectionCheckpointer):
    """DetectionCheckpointer with atomic saves, safe loading, trained-part records and model
    assembly (see module doc). ``cfg`` enables the assembly; ``imagenet_init`` (training)
    initialises the backbones no checkpoint provides from ImageNet weights."""

    def __init__(self, model, save_dir: str = "", *, cfg=None, imagenet_init: bool = False, save_to_disk=None, **checkpointables):
        super().__init__(model, save_dir, save_to_disk=save_to_disk, **checkpointables)
        self.cfg = cfg
        self.imagenet_init = bool(imagenet_init)
        # Parts whose weights were loaded from a checkpoint that trained them.
        self.loaded_trained_parts: Set[str] = set()
        # Where each part's weights came from, for the log: {"detector": "a.pth", ...}.
        self.part_sources: Dict[str, str] = {}
        self._whole_state = False
        self._loading_path = ""

    # -------------------------------------------------------------- trained parts
    def trained_parts(self) -> List[str]:
        """Parts with trainable parameters in this run or loaded trained from a checkpoint (a part
        frozen at its ImageNet or random initialisation is not trained)."""
        parts = model_parts(self.model)
        trained = {p for p, m in parts.items() if any(q.requires_grad for q in m.parameters())}
        return sorted((trained | self.loaded_trained_parts) & set(parts))

    # -------------------------------------------------------------- save
    def save(self, name: str, **kwargs) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict(), **{k: obj.state_dict() for k, obj in self.checkpointables.items()}}
        data.update(kwargs)
        if model_parts(self.model):
            data["trained_parts"] = self.trained_parts()
        label_set = getattr(_unwrap(self.model), "label_set", None)
        if label_set is not None:
            data["label_set"] = label_set.to_json()
        data = to_weights_only_safe(data)

        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        self.logger.info("Saving checkpoint to %s", save_file)
        _atomic_write(save_file, lambda f: torch.save(data, f))
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        path = os.path.join(self.save_dir, "last_checkpoint")
        _atomic_write(path, lambda f: f.write(last_filename_basename.encode()))

    # -------------------------------------------------------------- load
    def _load_file(self, filename: str) -> dict:
        loaded = load_checkpoint_file(filename)
        if filename.endswith(".pkl"):
            return _zoo_pkl_to_checkpoint(loaded, filename)
        if not isinstance(loaded, dict) or "model" not in loaded:
            loaded = {"model": loaded}
        return loaded

    def load(self, path: str, checkpointables=None) -> dict:
        self._loading_path = path
        return super().load(path, checkpointables)

    def _load_model(self, checkpoint):
        heuristic = checkpoint.get("matching_heuristics", False)
        if heuristic:
            # detectron2's name matching (Caffe2 renaming for .pkl blobs), done here so that the
            # parts can be told apart by their keys before loading.
            self._convert_ndarray_to_tensor(checkpoint["model"])
            checkpoint["model"] = align_and_update_state_dicts(
                self.model.state_dict(), checkpoint["model"], c2_conversion=checkpoint.get("__author__", None) == "Caffe2"
            )
            checkpoint["matching_heuristics"] = False
        parts = model_parts(self.model)
        state = checkpoint["model"]
        present = {p for p in parts if any(k.startswith(p + ".") for k in state)}
        recorded = checkpoint.get("trained_parts", None)
        if self._whole_state or recorded is None:
            selected = present
            # A native checkpoint without a record is a trained model; name-matched (.pkl) weights
            # are ImageNet/model-zoo initialisations.
            trained = set(recorded) if recorded is not None else (set() if heuristic else set(present))
        else:
            selected = present & set(recorded)
            trained = set(selected)
        skipped = set(parts) - selected
        if "parser" in selected:
            record = checkpoint.get("label_set")
            apply_label_set_record(parts["parser"], record, self._loading_path)
            key = "parser." + LABEL_SET_BUFFER
            own = _unwrap(self.model).state_dict()
            if key in own and (record is None or key not in state):
                state[key] = own[key].clone()
        own = {k: v for k, v in _unwrap(self.model).state_dict().items() if _part_of(k, skipped) is None}
        # BatchNorm's batch counters of layers frozen in this model (FrozenBatchNorm2d has none)
        # are not weights: dropped, not reported as unused keys
        checkpoint["model"] = {k: v for k, v in state.items()
                               if _part_of(k, skipped) is None and (k in own or not is_bookkeeping(k))}
        if not heuristic:  # every weight of the parts it loads must come from the file, with its shape
            problems = state_problems(own, {k: v for k, v in checkpoint["model"].items() if k in own})
            if problems:
                raise RuntimeError(f"{self._loading_path}: the checkpoint does not fill the model: " + "; ".join(problems))
        incompatible = super()._load_model(checkpoint)
        incompatible.missing_keys[:] = [k for k in incompatible.missing_keys if _part_of(k, skipped) is None]
        path = self._loading_path
        for p in sorted(selected):
            self.part_sources[p] = path
            logger.info(f"{p} <- {path}")
        for p in sorted(skipped & present):
            logger.info(f"{p}: not loaded from {path}, which records trained_parts {list(recorded)}; it keeps its initialisation")
        self.loaded_trained_parts = (self.loaded_trained_parts - selected) | (trained & selected)
        return incompatible

    def resume_or_load(self, path: str, *, resume: bool = True) -> dict:
        """Resume the whole state of the last checkpoint in ``save_dir``, as detectron2 does, or
        assemble the model from ``path`` (with ``cfg``: see :meth:`assemble`). Returns the
        checkpoint's extra data."""
        if resume and self.has_checkpoint():
            path = self.get_checkpoint_file()
            if not os.path.isfile(path):
                # A torn/missing file named by last_checkpoint: the newest complete checkpoint.
                logger.warning("last_checkpoint names %s, which does not exist", path)
                files = glob.glob(os.path.join(glob.escape(self.save_dir), "*.pth"))  # "*" skips unfinished ".tmp-"
                path = max(files, key=os.path.getmtime) if files else ""
            self._whole_state = True
            try:
                return self.load(path)
            finally:
                self._whole_state = False
        if self.cfg is None:
            return self.load(path, checkpointables=[])
        return self.assemble(path)

    def assemble(self, weights: str = "") -> dict:
        """``weights`` (trained parts only), then ``MODEL.QANET.DETECTOR_WEIGHTS`` /
        ``PARSER_WEIGHTS``, then (with ``imagenet_init``) the ImageNet weights of the parts no
        checkpoint provided. Logs one line per part."""
        cfg = self.cfg
        parts = model_parts(self.model)
        part_files = {"detector": cfg.MODEL.QANET.DETECTOR_WEIGHTS, "parser": cfg.MODEL.QANET.PARSER_WEIGHTS}
        for p, f in part_files.items():
            if f and p not in parts:
                raise ValueError(f"MODEL.QANET.{p.upper()}_WEIGHTS = {f!r}, but the model has no {p}")
        self.part_sources = {}
        extra = self.load(weights, checkpointables=[]) if weights else {}
        for p, f in part_files.items():
            if f:
                load_model_part(self.model, p, f)
                self.part_sources[p] = f"{f} (MODEL.QANET.{p.upper()}_WEIGHTS)"
                self.loaded_trained_parts.add(p)
        for p in sorted(set(parts) - set(self.part_sources)):
            built_with = getattr(parts[p], "weights_source", "")
            if built_with:  # a pretrained part (YuNet) that loaded its released weights when built
                self.part_sources[p] = f"{built_with} (loaded when the model was built)"
                continue
            source = load_imagenet_weights(cfg, self.model, p) if self.imagenet_init else None
            self.part_sources[p] = source or "random initialisation"
            if source is None:
                (logger.info if self.imagenet_init else logger.warning)(
                    f"{p}: random initialisation (no checkpoint gives it"
                    + (", and no ImageNet weights are configured for its backbone)" if self.imagenet_init else ")")
                )
        for p in sorted(self.part_sources):
            logger.info(f"Model weights: {p} <- {self.part_sources[p]}")
        return extra


def load_model_weights(cfg, model: nn.Module) -> Dict[str, str]:
    """Load the weights of a model for inference: ``MODEL.WEIGHTS`` (trained parts) and
    ``MODEL.QANET.DETECTOR_WEIGHTS`` / ``PARSER_WEIGHTS``; no ImageNet initialisation. Returns
    ``{part: source}``."""
    checkpointer = QANetCheckpointer(model, cfg=cfg)
    checkpointer.resume_or_load(cfg.MODEL.WEIGHTS, resume=False)
    return dict(checkpointer.part_sources)
