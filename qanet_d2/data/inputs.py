"""Inputs and outputs of the command-line tools: which files to parse, how to read them (with
:func:`read_image`, the one image reader of the project), where their results go.

``tools/onnx_infer.py`` (no torch) loads this file by path, so it imports only the standard
library, NumPy and Pillow at module level (OpenCV and PyAV where a function needs them).
"""
from __future__ import annotations

import contextlib
import difflib
import fractions
import glob
import itertools
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageOps

__all__ = ["IMAGE_EXTENSIONS", "VIDEO_EXTENSIONS", "OVERLAY_EXTENSIONS", "DataReadError", "ImageReadError",
           "ImageNotFoundError", "ImageTooThinError", "InputFile", "InputSet", "collect_inputs", "assign_output_keys",
           "existing_outputs", "closest", "read_image", "read_image_bgr", "as_uint8_image", "to_bgr_uint8",
           "open_image", "resized_size", "check_parsable_size", "VideoWriter", "h264_available"]

logger = logging.getLogger(__name__)

# Files taken from folders and glob patterns, by extension (case-insensitive).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm", ".pbm", ".pnm")
VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".mkv", ".avi", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".ts", ".3gp")
# Overlays keep these extensions of their input; other images get a PNG overlay.
OVERLAY_EXTENSIONS = (".png", ".jpg", ".jpeg")


# ---------------------------------------------------------------------------- errors
class DataReadError(ValueError):
    """A frame or label file cannot be decoded or has invalid content; the message names it."""


class ImageReadError(DataReadError, OSError):
    """An image file cannot be read or decoded; the message names the file."""


class ImageNotFoundError(ImageReadError, FileNotFoundError):
    """An image file does not exist; the message names it."""


class ImageTooThinError(DataReadError):
    """An image whose shorter side would be resized below what the model can parse."""


# ---------------------------------------------------------------------------- finding inputs
@dataclass
class InputFile:
    """One input: its ``path``, its path ``rel`` relative to the folder or glob root it was found
    under (its name for a file given directly) and its ``kind`` ("image" or "video")."""

    path: str
    rel: str
    kind: str


@dataclass
class InputSet:
    files: List[InputFile] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)  # specs that name nothing
    skipped: List[str] = field(default_factory=list)  # files of folders/globs that are neither images nor videos


def file_kind(path: str) -> Optional[str]:
    """"image" or "video" by the file's extension, else None."""
    ext = os.path.splitext(path)[1].lower()
    return "image" if ext in IMAGE_EXTENSIONS else "video" if ext in VIDEO_EXTENSIONS else None


def collect_inputs(specs: Sequence[str], kinds: Sequence[str] = ("image", "video")) -> InputSet:
    """The files named by ``specs`` (files, folders, glob patterns; ``~`` expanded), each once.
    Folders are walked recursively in sorted order (hidden entries skipped), globs expanded
    (``**`` included); from both, other than image and video extensions are ``skipped``, as are
    kinds not in ``kinds``. A file named directly is taken as an image unless it is a video."""
    result = InputSet()
    seen = set()

    def add(path: str, root: str, direct: bool) -> None:
        key = os.path.abspath(path)
        if key in seen:
            return
        seen.add(key)
        kind = file_kind(path) or ("image" if direct else None)
        if kind not in kinds:
            result.skipped.append(path)
            return
        result.files.append(InputFile(path, os.path.relpath(path, root), kind))

    for spec in specs:
        spec = os.path.expanduser(str(spec))
        if os.path.isdir(spec):
            for dirpath, dirnames, filenames in os.walk(spec):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                for name in sorted(filenames):
                    if not name.startswith("."):
                        add(os.path.join(dirpath, name), spec, False)
        elif os.path.isfile(spec):
            add(spec, os.path.dirname(spec) or ".", True)
        elif glob.has_magic(spec):
            matches = sorted(p for p in glob.glob(spec, recursive=True) if os.path.isfile(p))
            if not matches:
                result.missing.append(spec)
            # relative paths from the folders before the first wildcard
            root = os.sep.join(itertools.takewhile(lambda part: not glob.has_magic(part), spec.split(os.sep))) or "."
            for path in matches:
                add(path, root, False)
        else:
            result.missing.append(spec)
    return result


# ---------------------------------------------------------------------------- output names
def assign_output_keys(rels: Sequence[str], reserved: Iterable[str] = (), suffixes: Sequence[str] = ("",)) -> List[str]:
    """One output key per input (its relative path without extension) such that no two inputs share
    an output file ``key + suffix`` (``suffixes``: output file endings) nor write a ``reserved`` name,
    case-insensitively: colliding keys keep their extension (``person_jpg``), then are numbered (``_2``)."""
    def names(key: str) -> set:
        return {os.path.normcase(key + s).lower() for s in suffixes}

    def reserved_clash(key: str) -> bool:
        return any(os.path.basename(name) in reserved for name in names(key))

    reserved = {os.path.normcase(r).lower() for r in reserved}
    keys = [os.path.splitext(r)[0] for r in rels]
    owners = Counter(name for key in keys for name in names(key))
    for i, (key, rel) in enumerate(zip(keys, rels)):
        ext = os.path.splitext(rel)[1]
        if ext and (reserved_clash(key) or any(owners[name] > 1 for name in names(key))):
            keys[i] = f"{key}_{ext[1:].lower()}"
    taken = set()
    for i, key in enumerate(keys):  # what still collides: numbered, first come first served
        n = 2
        while names(key) & taken or reserved_clash(key):
            key = f"{keys[i]}_{n}"
            n += 1
        keys[i] = key
        taken |= names(key)
    return keys


def existing_outputs(paths: Iterable[str]) -> List[str]:
    """The paths that already exist (files the run would overwrite)."""
    return [p for p in paths if os.path.lexists(p)]


def closest(word: str, candidates: Iterable[str]) -> Optional[str]:
    """The candidate most similar to ``word`` (for "did you mean" hints), or None."""
    candidates = list(candidates)
    by_upper = {c.upper(): c for c in reversed(candidates)}  # the first candidate of an upper-case name
    matches = difflib.get_close_matches(word, candidates, n=1, cutoff=0.5) or [
        by_upper[m] for m in difflib.get_close_matches(word.upper(), list(by_upper), n=1, cutoff=0.5)]
    return matches[0] if matches else None


# ---------------------------------------------------------------------------- images
_WARNED = set()


def _warn_once(key: str, message: str) -> None:
    if key not in _WARNED:
        _WARNED.add(key)
        logger.warning(message)


def open_image(path: str, what: str = "image", error=ImageReadError, not_found=ImageNotFoundError) -> Image.Image:
    """A decoded Pillow image; missing, unreadable, truncated or corrupt files raise ``error`` /
    ``not_found`` with a message that names ``path``."""
    if not os.path.isfile(path):
        raise not_found(f"{what} not found: {path}")
    try:
        with open(path, "rb") as f:
            img = Image.open(f)
            img.load()  # decode now: truncated/corrupt files fail here, not later
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise error(f"{path}: cannot decode {what}: {e}") from e
    return img


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    """One channel plane or ``H x W x 3`` of any supported dtype -> uint8 (see :mod:`qanet_d2.data.io`)."""
    kind, size = arr.dtype.kind, arr.dtype.itemsize
    if kind == "u" and size == 1:
        return arr
    if kind == "b":
        return arr.astype(np.uint8) * np.uint8(255)
    if kind in "ui":
        if size == 1:  # int8
            return np.clip(arr, 0, 127).astype(np.uint8)
        if kind == "u" and size == 2:
            wide = arr.astype(np.uint32)
        else:
            top = int(arr.max())
            if 0 < top <= 255:
                _warn_once("int", f"{arr.dtype} image with values up to {top} read as 16-bit intensities "
                           "(x / 257, nearly black); pass 8-bit intensities as uint8")
            wide = np.clip(arr, 0, 65535).astype(np.int64)
        return ((wide + 128) // 257).astype(np.uint8)  # == round(x / 257) for integers
    if kind == "f":
        arr = np.nan_to_num(arr.astype(np.float32, copy=False), nan=0.0, posinf=255.0, neginf=0.0)
        top = float(arr.max())
        if 0 < top <= 1:
            _warn_once("float", f"{arr.dtype} image with values in [0, 1] read as 0..255 intensities "
                       "(nearly black); multiply a [0, 1] image by 255")
        return np.rint(np.clip(arr, 0, 255)).astype(np.uint8)
    raise ValueError(f"unsupported image dtype {arr.dtype}")


def as_uint8_image(image: np.ndarray, channel_order: str = "BGR", format: str = "BGR") -> np.ndarray:
    """Any common image array (``H x W``, ``H x W x 1..4``; dtypes of :mod:`qanet_d2.data.io`) in
    ``channel_order`` -> ``H x W x 3`` uint8 in ``format`` ("BGR" or "RGB"); a contiguous uint8
    input in ``format`` is returned as is. ValueError for other shapes and dtypes, empty images."""
    for name, value in (("channel_order", channel_order), ("format", format)):
        if str(value).upper() not in ("BGR", "RGB"):
            raise ValueError(f"{name} must be 'BGR' or 'RGB', got {value!r}")
    channel_order, format = channel_order.upper(), format.upper()
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[2] in (1, 2):
        arr = arr[:, :, 0]  # gray (+ alpha)
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise ValueError(f"expected an H x W image with 1 to 4 channels, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"empty image of shape {arr.shape}")
    if arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[:, :, :3]  # alpha dropped
    arr = _to_uint8(arr)
    if arr.ndim == 2:
        return np.repeat(arr[:, :, None], 3, axis=2)
    if channel_order != format:
        arr = arr[:, :, ::-1]
    return np.ascontiguousarray(arr)


def to_bgr_uint8(image: np.ndarray, channel_order: str = "BGR") -> np.ndarray:
    """:func:`as_uint8_image` to BGR: what the predictor does to the arrays it is given."""
    return as_uint8_image(image, channel_order, "BGR")


# Pillow modes whose pixels go to as_uint8_image as they are (gray, gray + alpha, RGB, RGBA,
# 1-bit, 32-bit int and float); other modes are converted by Pillow first.
_ARRAY_MODES = ("1", "L", "LA", "RGB", "RGBA", "I", "F")


def read_image(path: str, format: str = "BGR") -> np.ndarray:
    """Read an image file as a uint8 ``H x W x 3`` array in ``format`` ("BGR" or "RGB"), EXIF
    orientation applied; conversions in :mod:`qanet_d2.data.io`. ImageNotFoundError /
    ImageReadError name ``path``."""
    if format not in ("BGR", "RGB"):
        raise ValueError(f"unsupported image format {format!r} (use 'BGR' or 'RGB')")
    img = open_image(path)
    with contextlib.suppress(Exception):  # malformed EXIF: detectron2 ignores it too
        ImageOps.exif_transpose(img, in_place=True)  # no copy of the (usual) upright image
    mode = img.mode
    try:
        if mode in _ARRAY_MODES or mode.startswith("I;16"):
            arr = np.asarray(img)
        elif mode in ("P", "PA", "La", "RGBa"):
            # palette colours; transparency (if any) becomes alpha, which is then dropped
            arr = np.asarray(img.convert("LA" if mode == "La" else "RGBA"))
        else:  # CMYK, YCbCr, LAB, HSV, RGBX, ...
            arr = np.asarray(img.convert("RGB"))
        return as_uint8_image(arr, "RGB", format)
    except ValueError as e:
        raise ImageReadError(f"{path}: cannot convert image of mode {mode}: {e}") from e


def read_image_bgr(path: str) -> np.ndarray:
    """``read_image(path, "BGR")``: the reader of the demo, the ONNX tool and the predictor's users."""
    return read_image(path, "BGR")


def resized_size(height: int, width: int, min_size: int, max_size: int) -> Tuple[int, int]:
    """``(height, width)`` after detectron2's ``ResizeShortestEdge`` (shorter side to
    ``min_size``, longer at most ``max_size``; rounded as it rounds)."""
    scale = min_size / min(height, width)
    h, w = height * scale, width * scale
    if max(h, w) > max_size > 0:
        scale = max_size / max(h, w)
        h, w = h * scale, w * scale
    return int(h + 0.5), int(w + 0.5)


# Shortest side, after the model's resize, that the tools accept: below it the detector's
# feature maps have no row (or column) to find a face in.
MIN_RESIZED_SIDE = 8


def check_parsable_size(shape: Sequence[int], path: str, min_size: int, max_size: int) -> None:
    """Raise :class:`ImageTooThinError` naming ``path`` and its size when the model's resize
    (``min_size`` / ``max_size``, the config's ``INPUT.MIN_SIZE_TEST`` / ``MAX_SIZE_TEST``)
    would make its shorter side less than ``MIN_RESIZED_SIDE`` pixels."""
    height, width = int(shape[0]), int(shape[1])
    h, w = resized_size(height, width, min_size, max_size)
    if min(h, w) < MIN_RESIZED_SIDE:
        raise ImageTooThinError(
            f"{path}: image of {width}x{height} pixels (width x height) is too thin to parse: resized to at most "
            f"{max_size} pixels a side its shorter side would be {min(h, w)} pixels "
            f"(at least {MIN_RESIZED_SIDE} needed)")


# ---------------------------------------------------------------------------- video writing
def h264_available() -> bool:
    """Whether PyAV is installed with an H.264 encoder."""
    try:
        import av
    except ImportError:
        return False
    return "libx264" in av.codecs_available or "h264" in av.codecs_available


_AV_CONTAINERS = (".mp4", ".m4v", ".mov", ".mkv")
# Audio codecs that MP4/MOV/MKV carry as they are; others are re-encoded to AAC.
_COPY_AUDIO = {".mp4": ("aac", "mp3", "alac", "opus", "ac3", "eac3", "flac"), ".m4v": ("aac", "mp3", "alac", "ac3", "eac3"),
               ".mov": ("aac", "mp3", "alac", "ac3", "pcm_s16le", "pcm_s24le"), ".mkv": None}


class VideoWriter:
    """Writes BGR frames of one size to ``path``: ``.mp4``, ``.m4v``, ``.mov``, ``.mkv`` as H.264
    through PyAV (odd sizes padded by one edge pixel) with the audio of ``audio_from`` (re-encoded
    to AAC where the container cannot hold its codec), else OpenCV's ``mp4v`` (``codec`` says which;
    no audio); ``.avi`` as MJPG through OpenCV."""

    def __init__(self, path: str, fps: float, size_wh: Tuple[int, int], audio_from: Optional[str] = None):
        self.path = path
        self.size_wh = (int(size_wh[0]), int(size_wh[1]))
        self.frames = 0
        self.audio_copied = False
        self._av = self._cv = self._audio_in = None
        ext = os.path.splitext(path)[1].lower()
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        if ext in _AV_CONTAINERS and h264_available():
            self._open_av(ext, float(fps), audio_from)
        elif ext in _AV_CONTAINERS + (".avi",):
            import cv2

            self.codec = "MJPG" if ext == ".avi" else "mp4v"
            self._cv = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*self.codec), float(fps), self.size_wh, True)
            if not self._cv.isOpened():
                raise OSError(f"{path}: cannot open a video writer (codec {self.codec})")
        else:
            raise OSError(f"{path}: unsupported video extension {ext or '(none)'}; use .mp4, .mov, .mkv or .avi")

    def _open_av(self, ext: str, fps: float, audio_from: Optional[str]) -> None:
        import av

        self.codec = "h264"
        self._av = av.open(self.path, mode="w")
        rate = fractions.Fraction(fps).limit_denominator(1001)
        encoder = "libx264" if "libx264" in av.codecs_available else "h264"
        stream = self._stream = self._av.add_stream(encoder, rate=rate)
        width, height = self.size_wh
        stream.width, stream.height = width + width % 2, height + height % 2
        stream.pix_fmt = "yuv420p"
        stream.time_base = 1 / rate
        if encoder == "libx264":
            stream.options = {"crf": "20", "preset": "veryfast"}
        if not audio_from:
            return
        try:
            source = av.open(audio_from)
        except (av.error.FFmpegError, OSError):
            return
        audio = next(iter(source.streams.audio), None)
        if audio is None or audio.codec_context is None:
            source.close()
            return
        allowed = _COPY_AUDIO[ext]
        self._audio_transcode = allowed is not None and audio.codec_context.name not in allowed
        self._audio_out = (self._av.add_stream("aac", rate=audio.codec_context.sample_rate or 44100)
                           if self._audio_transcode else self._av.add_stream_from_template(audio))
        self._audio_in, self._audio_source = audio, source

    def write(self, frame_bgr: np.ndarray) -> None:
        height, width = frame_bgr.shape[:2]
        if (width, height) != self.size_wh:
            raise ValueError(f"{self.path}: frame of {width}x{height}, the video is {self.size_wh[0]}x{self.size_wh[1]}")
        if self._cv is not None:
            self._cv.write(frame_bgr)
        else:
            import av

            pad_w, pad_h = self._stream.width - width, self._stream.height - height
            if pad_w or pad_h:
                frame_bgr = np.pad(frame_bgr, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame_bgr), format="bgr24")
            frame.pts = self.frames
            self._av.mux(self._stream.encode(frame))
        self.frames += 1

    def _copy_audio(self) -> None:
        source, audio = self._audio_source, self._audio_in
        try:
            if not self._audio_transcode:
                for packet in source.demux(audio):
                    if packet.dts is not None:
                        packet.stream = self._audio_out
                        self._av.mux(packet)
            else:
                for frame in source.decode(audio):
                    frame.pts = None
                    self._av.mux(self._audio_out.encode(frame))
                self._av.mux(self._audio_out.encode())
            self.audio_copied = True
        finally:
            source.close()

    def close(self) -> None:
        if self._cv is not None:
            self._cv.release()
            self._cv = None
        elif self._av is not None:
            self._av.mux(self._stream.encode())
            if self._audio_in is not None:
                self._copy_audio()
            self._av.close()
            self._av = None
