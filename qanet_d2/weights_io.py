"""Reading weights files without running code from them (:func:`load_checkpoint_file`), the one
strict loader (:func:`load_state_strictly`: model parts, the checkpointer, ImageNet weights, YuNet)
and the check of a checkpoint's label set (:func:`apply_label_set_record`).
"""
import collections
import logging
import os
import pickle
import warnings
from typing import Dict, List, Optional, Sequence, Type

import torch
from torch import nn

from .structures.label_sets import LabelSet

__all__ = [
    "LABEL_SET_BUFFER", "UnsafeCheckpointError", "apply_label_set_record", "download_cache_path", "format_keys",
    "load_checkpoint_file", "load_part_weights", "load_pickle_safely", "load_state_strictly", "resolve_local_path",
    "state_problems",
]

logger = logging.getLogger(__name__)


class UnsafeCheckpointError(RuntimeError):
    """Raised for a checkpoint that could only be read by running code it names."""


# ---------------------------------------------------------------------- reading files
def _safe_pickle_globals() -> Dict[tuple, object]:
    """The globals that pickles of numpy arrays and plain containers need (Python 2 and 3, numpy 1
    and 2 module names), and nothing else."""
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
    """An Unpickler that refuses any global but :func:`_safe_pickle_globals` before calling it."""

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
    """Unpickle ``filename`` (numpy arrays, numbers, strings, bytes, containers only), else
    :class:`UnsafeCheckpointError`."""
    with open(filename, "rb") as f:
        try:
            return _ArraysOnlyUnpickler(f, filename).load()
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as e:
            raise RuntimeError(f"{filename}: not a readable .pkl weights file ({type(e).__name__}: {e})") from e


def _http_url(path: str) -> str:
    from detectron2.utils.file_io import Detectron2Handler

    if path.startswith(Detectron2Handler.PREFIX):
        return Detectron2Handler.S3_DETECTRON2_PREFIX + path[len(Detectron2Handler.PREFIX):]
    return path


def download_cache_path(url: str) -> str:
    """Where detectron2's PathManager keeps its download of ``url``: ``$FVCORE_CACHE`` (default
    ``~/.torch/iopath_cache``) + the URL's path."""
    from urllib.parse import urlparse

    from iopath.common.file_io import get_cache_dir

    return os.path.join(get_cache_dir(), urlparse(_http_url(url)).path.lstrip("/"))


def resolve_local_path(path: str) -> str:
    """A local file for ``path``: the path, or a URL's copy in detectron2's download cache,
    downloaded if missing (FileNotFoundError saying where to put it when that fails)."""
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
    """Read a weights file (or URL) without running code from it: ``.pkl`` with
    :func:`load_pickle_safely`, ``.safetensors`` with safetensors, else ``torch.load(weights_only=True)``.
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


def is_bookkeeping(key: str) -> bool:
    # BatchNorm's batch counter is not a weight; files and modules differ in having it.
    return key.endswith("num_batches_tracked")


def format_keys(keys: List[str], limit: int = 40) -> str:
    """``keys`` sorted and comma-separated, the first ``limit`` of them."""
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


# The parser's flip permutation: a file without a label-set record does not set it.
LABEL_SET_BUFFER = "flip_permutation"


def apply_label_set_record(parser: nn.Module, record: Optional[dict], path: str) -> None:
    """RuntimeError naming both when a checkpoint's label-set record differs from the parser's
    (name, classes or flip pairs); a parser without a label set takes the record's."""
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


def state_problems(own: Dict[str, torch.Tensor], state: Dict[str, torch.Tensor],
                   unused_prefixes: Sequence[str] = ()) -> List[str]:
    """One line per problem keeping ``state`` from filling ``own`` exactly: missing keys,
    unexpected keys (but ``unused_prefixes``), shapes that differ; empty when it fits."""
    own = {k: v for k, v in own.items() if not is_bookkeeping(k)}
    unexpected = [k for k in state if k not in own and not is_bookkeeping(k) and not k.startswith(tuple(unused_prefixes))]
    missing = [k for k in own if k not in state]
    wrong_shape = [f"{k} {tuple(torch.as_tensor(state[k]).shape)} vs {tuple(own[k].shape)}"
                   for k in own if k in state and torch.as_tensor(state[k]).shape != own[k].shape]
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): {format_keys(missing)}")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {format_keys(unexpected)}")
    if wrong_shape:
        problems.append(f"shapes differ (file vs model): {format_keys(wrong_shape)}")
    return problems


def load_state_strictly(module: nn.Module, state: Dict[str, torch.Tensor], source: str, *,
                        unused_prefixes: Sequence[str] = (), what: str = "weights", target: str = "the model",
                        error: Type[Exception] = RuntimeError) -> List[str]:
    """Load ``state`` into ``module`` strictly (keys under ``unused_prefixes`` may be left over),
    else ``error`` naming ``source`` and the keys (:func:`state_problems`). Returns the unused keys."""
    own = module.state_dict()
    problems = state_problems(own, state, unused_prefixes)
    if problems:
        raise error(f"{source}: the {what} do not match {target}: " + "; ".join(problems))
    module.load_state_dict({k: torch.as_tensor(v) for k, v in state.items() if k in own}, strict=False)
    return [k for k in state if k not in own and not is_bookkeeping(k)]


def load_part_weights(module: nn.Module, part: str, path: str) -> str:
    """Load the ``part`` ("detector" or "parser") of the checkpoint ``path`` (``<part>.*`` keys, or a
    bare state dict of the part) into ``module`` strictly. A checkpoint whose ``"trained_parts"``
    lacks ``part`` is refused (initial weights). Returns ``path``."""
    data = load_checkpoint_file(path)
    trained = data.get("trained_parts") if isinstance(data, dict) else None
    if trained is not None and part not in trained:
        raise RuntimeError(
            f"{path}: its {part} was not trained (the checkpoint records trained_parts {list(trained)}); "
            f"loading it would replace the {part} with initial weights. Give a checkpoint whose {part} was trained."
        )
    state = data.get("model", data) if isinstance(data, dict) else data
    if not isinstance(state, dict):
        raise RuntimeError(
            f"{path}: expected a state dict (or a checkpoint with a 'model' entry); found {type(state).__name__}")
    prefix = part + "."
    if any(k.startswith(prefix) for k in state):
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    state = {k: torch.as_tensor(v) for k, v in state.items() if not is_bookkeeping(k)}
    own = module.state_dict()
    if part == "parser":
        record = data.get("label_set") if isinstance(data, dict) else None
        apply_label_set_record(module, record, path)
        if LABEL_SET_BUFFER in own and (record is None or LABEL_SET_BUFFER not in state):
            state[LABEL_SET_BUFFER] = own[LABEL_SET_BUFFER].clone()
    load_state_strictly(module, state, path, what=f"{part} weights", target=f"the configured {part}")
    return path
