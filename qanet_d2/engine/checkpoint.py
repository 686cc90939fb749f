"""Checkpoints that survive being killed, load without running code, and never replace a
part of the model with random weights.

:class:`QANetCheckpointer` is detectron2's DetectionCheckpointer with these changes:

* ``save`` writes to a temporary file in the same folder and renames it into place
  (``os.replace`` is atomic on POSIX), and updates ``last_checkpoint`` the same way, so a
  process killed at any moment leaves either the old or the new checkpoint, never a torn one.
  The saved dict contains only tensors and plain Python values (:func:`to_weights_only_safe`)
  and a ``"trained_parts"`` entry: which of the model's parts (``detector``, ``parser``) hold
  trained weights (see :meth:`QANetCheckpointer.trained_parts`), and a ``"label_set"`` entry:
  the label set the model predicts (:meth:`~qanet_d2.structures.label_sets.LabelSet.to_json`).
* Loading a checkpoint whose label set differs from the model's (the config's
  ``MODEL.QANET.LABEL_SET``) fails naming both; a model built without one takes the
  checkpoint's. A checkpoint without the record (written before it existed) loads with the
  config's label set and flip permutation.
* Files are read by :func:`load_checkpoint_file`: ``torch.load(weights_only=True)`` for
  ``.pth``, safetensors for ``.safetensors``, and for ``.pkl`` (detectron2's model zoo, Caffe2
  and Detectron1 files) a restricted unpickler that builds only numpy arrays, numbers,
  strings, bytes and containers. Anything else is refused with a message naming the file.
* Loading ``MODEL.WEIGHTS`` loads only the parts that the checkpoint records as trained
  (checkpoints without ``"trained_parts"`` load whole); the other parts keep their weights.
  ``resume`` loads the whole state, as detectron2 does.
* With ``cfg`` given, :meth:`QANetCheckpointer.resume_or_load` assembles the model (when not
  resuming): ``MODEL.WEIGHTS``, then ``MODEL.QANET.DETECTOR_WEIGHTS`` and
  ``MODEL.QANET.PARSER_WEIGHTS`` (each loads only its part, strictly), then, when training
  starts (``imagenet_init=True``), the ImageNet weights of the backbones of the parts that no
  checkpoint provided (:mod:`qanet_d2.engine.imagenet`). One log line per part says where its
  weights came from.
"""
import collections
import logging
import os
import pickle
import tempfile
import warnings
from typing import Dict, Iterable, List, Optional, Set

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.checkpoint.c2_model_loading import align_and_update_state_dicts
from torch import nn

from ..compat import to_weights_only_safe
from ..structures.label_sets import LabelSet

__all__ = [
    "MODEL_PARTS",
    "QANetCheckpointer",
    "UnsafeCheckpointError",
    "load_checkpoint_file",
    "load_model_part",
    "load_model_weights",
    "load_part_weights",
    "load_pickle_safely",
    "model_parts",
    "download_cache_path",
    "resolve_local_path",
]

logger = logging.getLogger(__name__)

# The parts of a QANetFaceParser, each a submodule whose state-dict keys start with "<part>.".
MODEL_PARTS = ("detector", "parser")


class UnsafeCheckpointError(RuntimeError):
    """Raised for a checkpoint that could only be read by running code it names."""


# ---------------------------------------------------------------------- reading files
def _safe_pickle_globals() -> Dict[tuple, object]:
    """The globals that pickles of numpy arrays, numpy scalars and plain containers need
    (Python 2 and 3 pickles, numpy 1 and 2 module names), and nothing else."""
    import _codecs

    import numpy as np

    try:  # numpy >= 2 keeps the implementation in numpy._core; numpy.core warns on access
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray, numeric

    allowed = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _codecs.encode,  # bytes in protocol-2 pickles written by Python 3
        ("collections", "OrderedDict"): collections.OrderedDict,
    }
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(module, "_reconstruct")] = multiarray._reconstruct
        allowed[(module, "scalar")] = multiarray.scalar
    for module in ("numpy.core.numeric", "numpy._core.numeric"):
        if hasattr(numeric, "_frombuffer"):  # protocol-5 pickles of arrays
            allowed[(module, "_frombuffer")] = numeric._frombuffer
    for module in ("builtins", "__builtin__"):
        for name, value in (("set", set), ("frozenset", frozenset), ("bytearray", bytearray), ("complex", complex)):
            allowed[(module, name)] = value
    return allowed


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """An Unpickler whose ``find_class`` only returns :func:`_safe_pickle_globals`: a pickle
    that names any other callable (``os.system``, ``builtins.eval``, a class, ...) fails
    before anything of it is called."""

    def __init__(self, file, filename: str):
        super().__init__(file, encoding="latin1")  # Python 2 pickles (Caffe2/Detectron1 files)
        self._filename = filename
        self._allowed = _safe_pickle_globals()

    def find_class(self, module, name):
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise UnsafeCheckpointError(
                f"{self._filename}: refused to unpickle: it refers to '{module}.{name}', and a .pkl "
                "weights file may only hold numpy arrays, numbers, strings, bytes and containers "
                "(anything else could run code while loading). If you trust the file, convert it in a "
                "separate session to a state dict of tensors saved with torch.save (.pth)."
            ) from None

    def persistent_load(self, pid):
        raise UnsafeCheckpointError(
            f"{self._filename}: refused to unpickle: it uses persistent ids (e.g. a torch.save file "
            "renamed to .pkl); save tensors as .pth and load that instead."
        )


def load_pickle_safely(filename: str):
    """Unpickle ``filename`` accepting only numpy arrays/scalars, numbers, strings, bytes and
    containers (:class:`_ArraysOnlyUnpickler`); raises :class:`UnsafeCheckpointError` otherwise."""
    with open(filename, "rb") as f:
        try:
            return _ArraysOnlyUnpickler(f, filename).load()
        except UnsafeCheckpointError:
            raise
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as e:
            raise RuntimeError(f"{filename}: not a readable .pkl weights file ({type(e).__name__}: {e})") from e


def _http_url(path: str) -> str:
    from detectron2.utils.file_io import Detectron2Handler

    if path.startswith(Detectron2Handler.PREFIX):
        return Detectron2Handler.S3_DETECTRON2_PREFIX + path[len(Detectron2Handler.PREFIX):]
    return path


def download_cache_path(url: str) -> str:
    """Where detectron2's PathManager keeps its download of ``url`` (``detectron2://`` or
    ``http(s)://``): ``$FVCORE_CACHE`` (default ``~/.torch/iopath_cache``) + the URL's path.
    A file put there is used without network access."""
    from urllib.parse import urlparse

    from iopath.common.file_io import get_cache_dir

    return os.path.join(get_cache_dir(), urlparse(_http_url(url)).path.lstrip("/"))


def resolve_local_path(path: str) -> str:
    """A local file for ``path``: the path itself, or for a URL (``detectron2://``, ``https://``)
    the copy in detectron2's download cache (:func:`download_cache_path`), downloaded if missing.
    Raises FileNotFoundError saying where to put the file when that fails."""
    if os.path.isfile(path):
        return path
    if "://" not in path:
        raise FileNotFoundError(f"{path}: no such file")
    from detectron2.utils.file_io import PathManager

    try:
        local = PathManager.get_local_path(path)
    except OSError as e:
        raise FileNotFoundError(
            f"{path}: could not be downloaded ({type(e).__name__}: {e}). Without network access, download "
            f"{_http_url(path)} on a machine that has it and put the file at {download_cache_path(path)} "
            "(detectron2's download cache, $FVCORE_CACHE), or give its local path instead of the URL "
            "(docs/pretrained.md)."
        ) from e
    if not os.path.isfile(local):
        raise FileNotFoundError(f"{path}: resolved to {local}, which is not a file")
    return local


def load_checkpoint_file(filename: str):
    """Read a weights file without running code from it: ``.pkl`` with
    :func:`load_pickle_safely`, ``.safetensors`` with safetensors, anything else with
    ``torch.load(weights_only=True)`` on CPU. ``filename`` may be a URL (:func:`resolve_local_path`).
    Errors name the file."""
    local = resolve_local_path(filename)
    if local.endswith(".pkl"):
        return load_pickle_safely(local)
    if local.endswith(".safetensors"):
        from safetensors.torch import load_file

        try:
            return load_file(local, device="cpu")
        except Exception as e:  # safetensors raises its own error types
            raise RuntimeError(f"{filename}: not a readable safetensors file ({type(e).__name__}: {e})") from e
    try:
        with warnings.catch_warnings():
            # torch warns about a non-default pickle protocol before it refuses the file;
            # the refusal below says what is wrong and what to do.
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            return torch.load(local, map_location=torch.device("cpu"), weights_only=True)
    except pickle.UnpicklingError as e:
        raise UnsafeCheckpointError(
            f"{filename}: refused to load: the file contains objects other than tensors and plain "
            f"Python values, and loading them would run arbitrary code ({str(e).splitlines()[0]}). "
            "Re-save it with only tensors/numbers/strings/containers."
        ) from e
    except (RuntimeError, EOFError, OSError) as e:
        raise RuntimeError(f"{filename}: not a readable checkpoint ({type(e).__name__}: {e})") from e


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
def model_parts(model: nn.Module) -> Dict[str, nn.Module]:
    """``{part name: submodule}`` for the :data:`MODEL_PARTS` that ``model`` has (not None)."""
    if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        model = model.module
    return {p: getattr(model, p) for p in MODEL_PARTS if isinstance(getattr(model, p, None), nn.Module)}


def _part_of(key: str, parts: Iterable[str]) -> Optional[str]:
    for p in parts:
        if key.startswith(p + "."):
            return p
    return None


def _bookkeeping(key: str) -> bool:
    # BatchNorm's batch counter is not a weight; files and modules differ in having it.
    return key.endswith("num_batches_tracked")


def _list_keys(keys: List[str], limit: int = 40) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def _state_of(data, filename: str) -> Dict[str, torch.Tensor]:
    state = data.get("model", data) if isinstance(data, dict) else data
    if not isinstance(state, dict):
        raise RuntimeError(f"{filename}: expected a state dict (or a checkpoint with a 'model' entry); found {type(state).__name__}")
    return state


# The parser's flip permutation: saved with the weights and the label-set record. A file
# without the record (older ones, bare state dicts, a model built without a label set) does not
# set it: the model keeps the one of its configured label set.
_LABEL_SET_BUFFER = "flip_permutation"


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)) else model


def apply_label_set_record(parser: nn.Module, record: Optional[dict], path: str) -> None:
    """Check a checkpoint's label-set record against the parser's label set (the config's):
    RuntimeError naming both when they differ (name, classes or flip pairs); a parser built
    without a label set takes the record's. No record: nothing to check."""
    if record is None or not hasattr(parser, "set_label_set"):
        return
    theirs = LabelSet(**record)
    own = parser.label_set
    if own is None:
        parser.set_label_set(theirs)
        logger.info(f"Label set '{theirs.name}' ({theirs.num_classes} classes) from {path}")
    elif (own.name, own.classes, own.flip_pairs) != (theirs.name, theirs.classes, theirs.flip_pairs):
        raise RuntimeError(
            f"{path}: the checkpoint's label set '{theirs.name}' {list(theirs.classes)} (flip pairs "
            f"{list(theirs.flip_pairs)}) differs from the config's label set '{own.name}' {list(own.classes)} "
            f"(flip pairs {list(own.flip_pairs)}), MODEL.QANET.LABEL_SET; use a config of the checkpoint's label set")


def load_part_weights(module: nn.Module, part: str, path: str) -> str:
    """Load the ``part`` ("detector" or "parser") of the checkpoint ``path`` into ``module``,
    strictly: every key of ``module`` must be in the file and every ``<part>.*`` key of the file
    must be in ``module``, with equal shapes; otherwise RuntimeError naming the file and
    listing the keys. The file is a qanet_d2 checkpoint (keys ``<part>.*``; other parts are
    ignored) or a bare state dict of the part. A checkpoint whose ``"trained_parts"`` does not
    include ``part`` is refused (its ``part`` holds initial weights, not trained ones).
    Returns ``path``."""
    data = load_checkpoint_file(path)
    trained = data.get("trained_parts") if isinstance(data, dict) else None
    if trained is not None and part not in trained:
        raise RuntimeError(
            f"{path}: its {part} was not trained (the checkpoint records trained_parts {list(trained)}); "
            f"loading it would replace the {part} with initial weights. Give a checkpoint whose {part} was trained."
        )
    state = _state_of(data, path)
    prefix = part + "."
    if any(k.startswith(prefix) for k in state):
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    state = {k: torch.as_tensor(v) for k, v in state.items() if not _bookkeeping(k)}
    own = {k: v for k, v in module.state_dict().items() if not _bookkeeping(k)}
    if part == "parser":
        record = data.get("label_set") if isinstance(data, dict) else None
        apply_label_set_record(module, record, path)
        if _LABEL_SET_BUFFER in own and (record is None or _LABEL_SET_BUFFER not in state):
            state[_LABEL_SET_BUFFER] = own[_LABEL_SET_BUFFER].clone()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong_shape = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or wrong_shape:
        problems = []
        if missing:
            problems.append(f"missing keys ({len(missing)}): {_list_keys(missing)}")
        if unexpected:
            problems.append(f"unexpected keys ({len(unexpected)}): {_list_keys(unexpected)}")
        if wrong_shape:
            problems.append(f"shapes differ (file vs model): {_list_keys(wrong_shape)}")
        raise RuntimeError(f"{path}: the {part} weights do not match the configured {part}: " + "; ".join(problems))
    module.load_state_dict(state, strict=False)
    return path


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
    """DetectionCheckpointer with atomic saves, loading without unpickling code, trained-part
    records and model assembly (see module doc).

    Args:
        cfg: the config; needed for :meth:`resume_or_load` to apply ``MODEL.QANET.DETECTOR_WEIGHTS``
            / ``PARSER_WEIGHTS`` and the ImageNet initialisation.
        imagenet_init: when the model is not resumed, initialise the backbones of the parts that
            no checkpoint provides from their ImageNet weights (training); otherwise they keep
            the weights they were built with (inference).
    """

    def __init__(self, model, save_dir: str = "", *, cfg=None, imagenet_init: bool = False, save_to_disk=None, **checkpointables):
        super().__init__(model, save_dir, save_to_disk=save_to_disk, **checkpointables)
        self.cfg = cfg
        self.imagenet_init = bool(imagenet_init)
        # Parts whose current weights were trained in an earlier run (loaded from a checkpoint
        # that trained them); with the parts trained in this run they make "trained_parts".
        self.loaded_trained_parts: Set[str] = set()
        # Where each part's weights came from, for the log: {"detector": "a.pth", ...}.
        self.part_sources: Dict[str, str] = {}
        self._whole_state = False
        self._loading_path = ""

    # -------------------------------------------------------------- trained parts
    def trained_parts(self) -> List[str]:
        """Parts holding trained weights: those with trainable parameters in this run, and those
        loaded from checkpoints that had trained them. A part that is frozen at its ImageNet or
        random initialisation is not trained."""
        parts = model_parts(self.model)
        trained = {p for p, m in parts.items() if any(q.requires_grad for q in m.parameters())}
        return sorted((trained | self.loaded_trained_parts) & set(parts))

    # -------------------------------------------------------------- save
    def save(self, name: str, **kwargs) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
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
        if checkpoint.get("matching_heuristics", False):
            # detectron2's name matching (Caffe2 renaming for .pkl blobs), done here so that the
            # parts can be told apart by their keys before loading.
            self._convert_ndarray_to_tensor(checkpoint["model"])
            checkpoint["model"] = align_and_update_state_dicts(
                self.model.state_dict(), checkpoint["model"], c2_conversion=checkpoint.get("__author__", None) == "Caffe2"
            )
            checkpoint["matching_heuristics"] = False
            heuristic = True
        else:
            heuristic = False
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
            key = "parser." + _LABEL_SET_BUFFER
            own = _unwrap(self.model).state_dict()
            if key in own and (record is None or key not in state):
                state[key] = own[key].clone()
        if skipped:
            checkpoint["model"] = {k: v for k, v in state.items() if _part_of(k, skipped) is None}
        incompatible = super()._load_model(checkpoint)
        if skipped:
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
        """With ``resume`` and a checkpoint in ``save_dir``: load its whole state (model, optimizer,
        scheduler, iteration), as detectron2 does. Otherwise assemble the model from ``path``
        (``MODEL.WEIGHTS``) and, with ``cfg``, the part checkpoints and ImageNet weights
        (see module doc). Returns the extra data of the loaded checkpoint."""
        if resume and self.has_checkpoint():
            path = self.get_checkpoint_file()
            if not os.path.isfile(path):
                # A torn/missing file named by last_checkpoint: the newest complete checkpoint.
                logger.warning("last_checkpoint names %s, which does not exist", path)
                path = self._newest_checkpoint_file() or ""
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
        ``PARSER_WEIGHTS`` (each its part, strictly), then the ImageNet initialisation of the
        parts no checkpoint provided (with ``imagenet_init``). Logs one line per part."""
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
            source = None
            built_with = getattr(parts[p], "weights_source", "")
            if built_with:  # a pretrained part (YuNet) that loaded its released weights when built
                self.part_sources[p] = f"{built_with} (loaded when the model was built)"
                continue
            if self.imagenet_init:
                from .imagenet import load_imagenet_weights

                source = load_imagenet_weights(cfg, self.model, p)
            self.part_sources[p] = source or "random initialisation"
            if source is None:
                (logger.info if self.imagenet_init else logger.warning)(
                    f"{p}: random initialisation (no checkpoint gives it"
                    + (", and no ImageNet weights are configured for its backbone)" if self.imagenet_init else ")")
                )
        for p in sorted(self.part_sources):
            logger.info(f"Model weights: {p} <- {self.part_sources[p]}")
        return extra

    def _newest_checkpoint_file(self):
        if not self.save_dir or not os.path.isdir(self.save_dir):
            return None
        files = [
            os.path.join(self.save_dir, f)
            for f in os.listdir(self.save_dir)
            if f.endswith(".pth") and not f.startswith(".tmp-")
        ]
        return max(files, key=os.path.getmtime) if files else None


def load_model_weights(cfg, model: nn.Module) -> Dict[str, str]:
    """Load the weights of a model for inference: ``MODEL.WEIGHTS`` (trained parts) and
    ``MODEL.QANET.DETECTOR_WEIGHTS`` / ``PARSER_WEIGHTS``; no ImageNet initialisation. Returns
    ``{part: source}``."""
    checkpointer = QANetCheckpointer(model, cfg=cfg)
    checkpointer.resume_or_load(cfg.MODEL.WEIGHTS, resume=False)
    return dict(checkpointer.part_sources)
