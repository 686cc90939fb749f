"""Reading frames and label maps with errors that name the file.

Images: decoded with Pillow, EXIF orientation applied (as detectron2's ``read_image``), and
always returned as 3-channel uint8 ``H x W x 3`` in the requested channel order:

* grayscale (L, LA, P, 1) and CMYK/YCbCr images are converted to RGB (gray replicated);
* RGBA / LA: the alpha channel is dropped (no compositing);
* 16-bit grayscale (Pillow modes ``I;16*``/``I``) is scaled by 255/65535 before conversion;
  Pillow itself reduces 16-bit-per-channel colour PNGs to 8 bits;
* 32-bit float (mode ``F``) is clipped to 0..255.

Label maps: single-channel class ids, returned as ``H x W`` uint8. Palette PNGs give their
palette *indices* (not colours); 16-bit PNGs are accepted if every value is < 256; a colour
image is accepted only if its three channels are identical.

Face-instance maps: single-channel face indices (0 = no face, k = the frame's k-th face box),
8- or 16-bit, returned as ``H x W`` int32.
"""
from __future__ import annotations

import os
from typing import Iterable, Tuple

import numpy as np
from PIL import Image

from .label_sets import IGNORE_LABEL

__all__ = [
    "DataReadError",
    "read_image",
    "read_label_map",
    "read_instance_map",
    "image_size",
    "illegal_label_values",
    "check_label_values",
]


class DataReadError(ValueError):
    """A frame or label file cannot be decoded or has invalid content; the message names it."""


def _open(path: str, what: str) -> Image.Image:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        with open(path, "rb") as f:
            img = Image.open(f)
            img.load()  # decode now: truncated/corrupt files fail here, not later
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise DataReadError(f"{path}: cannot decode {what}: {e}") from e
    return img


def _exif_transpose(img: Image.Image) -> Image.Image:
    from detectron2.data.detection_utils import _apply_exif_orientation

    return _apply_exif_orientation(img)


def read_image(path: str, format: str = "BGR") -> np.ndarray:
    """Read a frame as a uint8 ``H x W x 3`` array in ``format`` ("BGR" or "RGB"); see the
    module docstring for the conversions. Raises FileNotFoundError / :class:`DataReadError`
    naming ``path``."""
    if format not in ("BGR", "RGB"):
        raise ValueError(f"unsupported image format {format!r} (use 'BGR' or 'RGB')")
    img = _exif_transpose(_open(path, "image"))
    if img.mode in ("I", "F") or img.mode.startswith("I;16"):
        arr = np.asarray(img)
        if img.mode == "F":
            arr = np.clip(arr, 0, 255)
        else:
            arr = arr.astype(np.float64) * (255.0 / 65535.0)
        img = Image.fromarray(np.round(arr).astype(np.uint8), "L")
    if img.mode != "RGB":
        img = img.convert("RGB")
    arr = np.asarray(img)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise DataReadError(f"{path}: expected a 3-channel image after conversion, got {arr.shape}")
    if format == "BGR":
        arr = arr[:, :, ::-1]
    return np.ascontiguousarray(arr)


def read_label_map(path: str) -> np.ndarray:
    """Read a label PNG as ``H x W`` uint8 class ids. Raises FileNotFoundError /
    :class:`DataReadError` naming ``path``."""
    img = _open(path, "label map")
    arr = np.asarray(img)
    if img.mode in ("L", "P"):
        return np.ascontiguousarray(arr, dtype=np.uint8)
    if img.mode in ("I", "F") or img.mode.startswith("I;16") or img.mode == "1":
        if arr.size and (arr.min() < 0 or arr.max() > 255):
            raise DataReadError(
                f"{path}: label values must be 0..255, found {arr.min()}..{arr.max()} "
                f"(mode {img.mode})")
        return np.ascontiguousarray(arr, dtype=np.uint8)
    if arr.ndim == 3 and arr.shape[2] >= 3:
        rgb = arr[:, :, :3]
        if (rgb[:, :, 0] == rgb[:, :, 1]).all() and (rgb[:, :, 0] == rgb[:, :, 2]).all():
            return np.ascontiguousarray(rgb[:, :, 0], dtype=np.uint8)
    raise DataReadError(
        f"{path}: label map must be a single-channel image of class ids, got mode {img.mode} "
        f"with shape {arr.shape} (colour-coded labels must be converted first)")


def read_instance_map(path: str) -> np.ndarray:
    """Read a face-instance PNG (face index per pixel, 0 = no face; 8- or 16-bit single
    channel) as ``H x W`` int32. Raises FileNotFoundError / :class:`DataReadError` naming
    ``path``."""
    img = _open(path, "face-instance map")
    if img.mode in ("L", "P") or img.mode.startswith("I;16") or img.mode == "I":
        arr = np.asarray(img).astype(np.int32)
        if arr.ndim == 2 and (arr.size == 0 or arr.min() >= 0):
            return np.ascontiguousarray(arr)
    raise DataReadError(
        f"{path}: face-instance map must be a single-channel 8- or 16-bit image of face indices, got "
        f"mode {img.mode} with shape {np.asarray(img).shape}")


def image_size(path: str) -> Tuple[int, int]:
    """``(height, width)`` of an image after EXIF orientation, reading only the header.
    Raises FileNotFoundError / :class:`DataReadError` naming ``path``."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image not found: {path}")
    try:
        with Image.open(path) as img:
            w, h = img.size
            try:
                orientation = img.getexif().get(0x0112, 1)
            except Exception:  # malformed EXIF: detectron2 ignores it too
                orientation = 1
    except (OSError, SyntaxError, ValueError) as e:
        raise DataReadError(f"{path}: cannot read image header: {e}") from e
    if orientation in (5, 6, 7, 8):  # rotated by 90 degrees
        w, h = h, w
    return int(h), int(w)


def illegal_label_values(label: np.ndarray, num_classes: int,
                         ignore_label: int = IGNORE_LABEL) -> np.ndarray:
    """Sorted values of ``label`` (uint8) that are neither a class id (< num_classes) nor
    ``ignore_label``."""
    counts = np.bincount(np.asarray(label, dtype=np.uint8).ravel(), minlength=256)
    bad = np.flatnonzero(counts)
    return bad[(bad >= num_classes) & (bad != ignore_label)]


def check_label_values(label: np.ndarray, num_classes: int, path: str,
                       ignore_label: int = IGNORE_LABEL, class_names: Iterable[str] = ()) -> None:
    """Raise :class:`DataReadError` naming ``path`` and the offending values if ``label``
    holds values outside ``0..num_classes-1`` other than ``ignore_label``."""
    bad = illegal_label_values(label, num_classes, ignore_label)
    if bad.size:
        names = list(class_names)
        extra = f" ({names[0]}..{names[-1]})" if names else ""
        raise DataReadError(
            f"{path}: label values {bad.tolist()} are outside the label set's ids "
            f"0..{num_classes - 1}{extra} and are not the ignore value {ignore_label}")
