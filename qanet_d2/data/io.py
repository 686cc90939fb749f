"""Reading frames and label maps with errors that name the file.

Images (implemented in :mod:`qanet_d2.data.inputs`, which the torch-free tools load too):
:func:`read_image` decodes a file with Pillow, applies its EXIF orientation (as detectron2's
``read_image``) and hands the pixels to :func:`as_uint8_image` (which the predictor applies to
the arrays it is given): always ``H x W x 3`` uint8 in "BGR" or "RGB". Rules, decided by the dtype
(or Pillow mode), never by the pixel values:

* ``uint8``: as is; ``bool`` (mode ``1``): False -> 0, True -> 255; ``int8``: clipped to 0..127.
* ``uint16`` (modes ``I;16*``) and every other integer dtype of 2 bytes or more (``int32`` /
  mode ``I``, ...): 16-bit intensities, clipped to 0..65535, then ``round(x / 257)``.
* floating point (mode ``F``): 0..255 intensities, as detectron2's images are: rounded and
  clipped, NaN -> 0. An image scaled to [0, 1] reads almost black (a warning says so once);
  unlike a "max <= 1 means [0, 1]" guess, this never turns a dark 0..255 image bright.
* channels: grayscale is replicated to three channels; alpha (modes ``LA``, ``RGBA``, ``PA``,
  ``P`` with transparency) is dropped without compositing; palette images give their colours;
  ``CMYK``, ``YCbCr``, ``LAB``, ``HSV`` are converted to RGB by Pillow (no ICC profile); colour
  files with 16 bits per channel are reduced to their high byte by Pillow.
"""
from __future__ import annotations

import logging
import os
from typing import Tuple

import numpy as np
from PIL import Image

from .inputs import (  # noqa: F401  (the image reader lives with the tools' input handling)
    DataReadError,
    ImageNotFoundError,
    ImageReadError,
    ImageTooThinError,
    as_uint8_image,
    open_image,
    read_image,
    read_image_bgr,
    to_bgr_uint8,
)
from ..structures.label_sets import IGNORE_LABEL

__all__ = [
    "DataReadError",
    "ImageReadError",
    "ImageNotFoundError",
    "ImageTooThinError",
    "read_image",
    "read_image_bgr",
    "as_uint8_image",
    "to_bgr_uint8",
    "read_label_map",
    "read_instance_map",
    "image_size",
    "illegal_label_values",
    "check_label_values",
    "check_map_size",
]

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------- label maps
def read_label_map(path: str) -> np.ndarray:
    """Read a label PNG as ``H x W`` uint8 class ids: palette PNGs give their indices, 16-bit ones
    must hold values < 256, colour ones three equal channels. FileNotFoundError /
    :class:`DataReadError` name ``path``."""
    img = open_image(path, "label map", DataReadError, FileNotFoundError)
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
    img = open_image(path, "face-instance map", DataReadError, FileNotFoundError)
    if img.mode in ("L", "P") or img.mode.startswith("I;16") or img.mode == "I":
        arr = np.asarray(img).astype(np.int32)
        if arr.ndim == 2 and (arr.size == 0 or arr.min() >= 0):
            return np.ascontiguousarray(arr)
    raise DataReadError(
        f"{path}: face-instance map must be a single-channel 8- or 16-bit image of face indices, got "
        f"mode {img.mode} with shape {np.asarray(img).shape}")


def image_size(path: str) -> Tuple[int, int]:
    """``(height, width)`` of an image after EXIF orientation, reading only the header.
    Raises :class:`ImageNotFoundError` / :class:`ImageReadError` naming ``path``."""
    if not os.path.isfile(path):
        raise ImageNotFoundError(f"image not found: {path}")
    try:
        with Image.open(path) as img:
            w, h = img.size
            try:
                orientation = img.getexif().get(0x0112, 1)
            except Exception:  # malformed EXIF: detectron2 ignores it too
                orientation = 1
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageReadError(f"{path}: cannot read image header: {e}") from e
    if orientation in (5, 6, 7, 8):  # rotated by 90 degrees
        w, h = h, w
    return int(h), int(w)


def illegal_label_values(label: np.ndarray, num_classes: int) -> np.ndarray:
    """Sorted values of ``label`` (uint8) that are neither a class id (< num_classes) nor 255."""
    bad = np.flatnonzero(np.bincount(np.asarray(label, dtype=np.uint8).ravel(), minlength=256))
    return bad[(bad >= num_classes) & (bad != IGNORE_LABEL)]


def check_label_values(label: np.ndarray, num_classes: int, path: str) -> None:
    """Raise :class:`DataReadError` naming ``path`` and the offending values if ``label``
    holds values outside ``0..num_classes-1`` other than 255."""
    bad = illegal_label_values(label, num_classes)
    if bad.size:
        raise DataReadError(
            f"{path}: label values {bad.tolist()} are outside the label set's ids "
            f"0..{num_classes - 1} and are not the ignore value {IGNORE_LABEL}")


def check_map_size(array: np.ndarray, size: Tuple[int, int], what: str, path: str, image_file: str) -> None:
    """Raise :class:`DataReadError` naming both files when the ``what`` (e.g. "label map") at
    ``path`` is not the ``(height, width)`` of its image."""
    if array.shape[:2] != tuple(size):
        raise DataReadError(f"{what} {path} is {array.shape[1]}x{array.shape[0]} (WxH) but its "
                            f"image {image_file} is {size[1]}x{size[0]}")
