"""Checkpoints that survive being killed and reload without arbitrary unpickling.

:class:`QANetCheckpointer` is detectron2's DetectionCheckpointer with two changes:

* ``save`` writes to a temporary file in the same folder and renames it into place
  (``os.replace`` is atomic on POSIX), and updates ``last_checkpoint`` the same way, so a
  process killed at any moment leaves either the old or the new checkpoint, never a torn one.
  The saved dict contains only tensors and plain Python values (:func:`to_weights_only_safe`).
* ``_load_file`` uses ``torch.load(weights_only=True)``. A file that needs arbitrary
  unpickling (a pickled object, a Detectron1/Caffe2 ``.pkl``) is refused with a clear message.
"""
import logging
import os
import pickle
import tempfile

import torch
from detectron2.checkpoint import DetectionCheckpointer

from ..compat import to_weights_only_safe

logger = logging.getLogger(__name__)


class UnsafeCheckpointError(RuntimeError):
    """Raised for a checkpoint that ``torch.load(weights_only=True)`` refuses."""


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


def load_checkpoint_file(filename: str) -> dict:
    """``torch.load(filename, weights_only=True)`` on CPU with a readable error when refused."""
    if filename.endswith(".pkl"):
        raise UnsafeCheckpointError(
            f"{filename}: .pkl weights need arbitrary unpickling, which qanet_d2 does not do. "
            "Load them once in a trusted session and save the state dict with torch.save "
            "(tensors only) as a .pth file."
        )
    try:
        return torch.load(filename, map_location=torch.device("cpu"), weights_only=True)
    except pickle.UnpicklingError as e:
        raise UnsafeCheckpointError(
            f"{filename}: refused to load: the file contains objects other than tensors and plain "
            f"Python values, and loading them would run arbitrary code ({str(e).splitlines()[0]}). "
            "Re-save it with only tensors/numbers/strings/containers."
        ) from e
    except (RuntimeError, EOFError, OSError) as e:
        raise RuntimeError(f"{filename}: not a readable checkpoint ({type(e).__name__}: {e})") from e


class QANetCheckpointer(DetectionCheckpointer):
    """DetectionCheckpointer with atomic saves and weights-only loading (see module doc)."""

    def save(self, name: str, **kwargs) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        data = to_weights_only_safe(data)

        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        self.logger.info("Saving checkpoint to %s", save_file)
        _atomic_write(save_file, lambda f: torch.save(data, f))
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        path = os.path.join(self.save_dir, "last_checkpoint")
        _atomic_write(path, lambda f: f.write(last_filename_basename.encode()))

    def _load_file(self, filename: str) -> dict:
        loaded = load_checkpoint_file(filename)
        if "model" not in loaded:
            loaded = {"model": loaded}
        return loaded

    def resume_or_load(self, path: str, *, resume: bool = True) -> dict:
        # Same as detectron2's, but a torn/missing file named by last_checkpoint falls back
        # to the newest complete checkpoint in the folder instead of failing.
        if resume and self.has_checkpoint():
            path = self.get_checkpoint_file()
            if not os.path.isfile(path):
                logger.warning("last_checkpoint names %s, which does not exist", path)
                path = self._newest_checkpoint_file() or ""
            return self.load(path)
        return self.load(path, checkpointables=[])

    def _newest_checkpoint_file(self):
        if not self.save_dir or not os.path.isdir(self.save_dir):
            return None
        files = [
            os.path.join(self.save_dir, f)
            for f in os.listdir(self.save_dir)
            if f.endswith(".pth") and not f.startswith(".tmp-")
        ]
        return max(files, key=os.path.getmtime) if files else None


