"""Real photos without people as scene backgrounds (``photo_backgrounds``), so that real clutter
is learned as background. The photos are read from the installed scikit-image and matplotlib,
never copied; :data:`BACKGROUND_PHOTOS` lists them with origin and licence. Photos of people
(:data:`PEOPLE_PHOTOS`) are the held-out real-photo checks, never backgrounds. A background is
an axis-aligned crop of the frame's aspect (30-100% of the largest), flipped half of the time,
resized, with a linear colour jitter; alpha is put over a plain ``matte``.
"""
from __future__ import annotations

import functools
import importlib.util
import logging
import math
import os
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np

from ..io import DataReadError

__all__ = ["BackgroundPhoto", "BACKGROUND_PHOTOS", "PEOPLE_PHOTOS", "PhotoCrop",
           "available_background_photos", "read_background_photo", "sample_photo_background",
           "render_photo_background", "PHOTO_BACKGROUND_VERSION"]

logger = logging.getLogger(__name__)

PHOTO_BACKGROUND_VERSION = 1
MIN_CROP_FRACTION = 0.3  # smallest crop side, as a share of the largest crop of that aspect


@dataclass(frozen=True)
class BackgroundPhoto:
    """A photo in an installed package, ``path`` relative to its data directory (:func:`photo_path`)."""

    name: str
    package: str
    path: str
    origin: str
    licence: str


_SK = "skimage"
_MPL = "matplotlib"
_SK_UNSTATED = "none stated in skimage.data; distributed with scikit-image (BSD-3-Clause)"

#: The background photos: no people, no faces (a cat's face is a negative here).
BACKGROUND_PHOTOS: Tuple[BackgroundPhoto, ...] = (
    BackgroundPhoto("coffee", _SK, "coffee.png", "a cup of coffee, photo by Rachel Michetti", "CC0"),
    BackgroundPhoto("chelsea", _SK, "chelsea.png", "Chelsea the cat, photo by Stefan van der Walt", "CC0"),
    BackgroundPhoto("rocket", _SK, "rocket.jpg", "DSCOVR launch on Falcon 9, SpaceX", "public domain"),
    BackgroundPhoto("motorcycle_left", _SK, "motorcycle_left.png",
                    "Middlebury 2014 stereo benchmark (Scharstein et al.), left view", _SK_UNSTATED),
    BackgroundPhoto("motorcycle_right", _SK, "motorcycle_right.png",
                    "Middlebury 2014 stereo benchmark (Scharstein et al.), right view", _SK_UNSTATED),
    BackgroundPhoto("brick", _SK, "brick.png", "CC0Textures Bricks25", "CC0"),
    BackgroundPhoto("grass", _SK, "grass.png", "CC0Textures Grass", "CC0"),
    BackgroundPhoto("gravel", _SK, "gravel.png", "CC0Textures Gravel04", "CC0"),
    BackgroundPhoto("hubble_deep_field", _SK, "hubble_deep_field.jpg", "Hubble eXtreme Deep Field, NASA (HubbleSite)",
                    "public domain"),
    BackgroundPhoto("ihc", _SK, "ihc.png", "immunohistochemistry of colonic glands, CMMI",
                    "no known copyright restrictions"),
    BackgroundPhoto("retina", _SK, "retina.jpg", "fundus photograph, Mikael Häggström (Wikimedia Commons)", "CC0"),
    BackgroundPhoto("coins", _SK, "coins.png", "Greek coins from Pompeii, Brooklyn Museum",
                    "no known copyright restrictions"),
    BackgroundPhoto("clock", _SK, "clock_motion.png", "motion-blurred wall clock, photo by Stefan van der Walt",
                    "public domain"),
    BackgroundPhoto("horse", _SK, "horse.png", "horse silhouette, Andreas Preuss", "CC0"),
    BackgroundPhoto("moon", _SK, "moon.png", "surface of the moon", _SK_UNSTATED),
    BackgroundPhoto("page", _SK, "page.png", "scanned page of printed text", _SK_UNSTATED),
    BackgroundPhoto("text", _SK, "text.png", "grey-level text (Wikipedia File:Corner.png)", "public domain"),
    BackgroundPhoto("color", _SK, "color.png", "colour wheel", _SK_UNSTATED),
    BackgroundPhoto("logo", _SK, "logo.png", "scikit-image logo", _SK_UNSTATED),
    BackgroundPhoto("present", _MPL, "Minduka_Present_Blue_Pack.png",
                    "present icon by Minduka (Wikimedia Commons), matplotlib sample data", "public domain"),
    BackgroundPhoto("matplotlib_logo", _MPL, "logo2.png", "matplotlib logo, matplotlib sample data",
                    "matplotlib licence (PSF-based)"),
)

#: Files of the same packages that show people: never backgrounds (held-out real-photo checks).
PEOPLE_PHOTOS: Tuple[str, ...] = ("astronaut.png", "camera.png", "lfw_subset.npy", "grace_hopper.jpg")


def photo_path(photo: BackgroundPhoto) -> Optional[str]:
    """Absolute path of ``photo`` in its installed package (found without importing it), None if
    absent."""
    spec = importlib.util.find_spec(photo.package)
    if spec is None or not spec.submodule_search_locations:
        return None
    data = "data" if photo.package == _SK else os.path.join("mpl-data", "sample_data")
    path = os.path.join(list(spec.submodule_search_locations)[0], data, photo.path)
    return path if os.path.isfile(path) else None


def available_background_photos(names: Optional[Sequence[str]] = None) -> List[Tuple[str, str]]:
    """``[(name, absolute path)]`` of the installed background photos (of ``names`` if given), in
    :data:`BACKGROUND_PHOTOS` order; missing ones are left out with a warning. KeyError /
    FileNotFoundError: an unknown name / none of the photos is installed."""
    known = [p.name for p in BACKGROUND_PHOTOS]
    unknown = [n for n in names or () if n not in known]
    if unknown:
        raise KeyError(f"unknown background photo(s) {unknown}; choose from {sorted(known)}")
    out, missing = [], []
    for p in BACKGROUND_PHOTOS:
        if names is not None and p.name not in names:
            continue
        path = photo_path(p)
        if path is None:
            missing.append(f"{p.package}: {p.path}")
        else:
            out.append((p.name, path))
    if missing:
        logger.warning("background photos not installed, not used: %s", ", ".join(missing))
    if not out:
        raise FileNotFoundError(
            f"no background photo is installed (looked for {', '.join(missing)}); install "
            f"scikit-image and matplotlib (requirements/requirements.txt)")
    return out


@functools.lru_cache(maxsize=32)
def read_background_photo(path: str) -> Tuple[np.ndarray, np.ndarray]:
    """``(bgr, alpha)``: the photo as H x W x 3 BGR uint8 (grey photos repeated into three
    channels) and its alpha as H x W float32 0..1 (1 without an alpha channel). Cached per process."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            rgba = np.asarray(img.convert("RGBA"))
    except (OSError, UnidentifiedImageError) as e:
        raise DataReadError(f"{path}: cannot read background photo: {e}") from e
    return np.ascontiguousarray(rgba[..., 2::-1]), rgba[..., 3].astype(np.float32) / 255.0


@dataclass(frozen=True)
class PhotoCrop:
    """A photo background: ``box`` = ``(x0, y0, x1, y1)`` the crop in photo pixels, ``flip``
    (horizontal, after cropping), ``matte`` (BGR under transparent pixels), output BGR =
    ``clip(round(color_matrix @ bgr + color_offset))``."""

    name: str
    path: str
    box: Tuple[int, int, int, int]
    flip: bool
    matte: Tuple[float, float, float]
    color_matrix: Tuple[Tuple[float, float, float], ...]
    color_offset: Tuple[float, float, float]


_LUMA_BGR = np.array([0.114, 0.587, 0.299])


def sample_photo_background(rng: np.random.Generator, photos: Sequence[Tuple[str, str]],
                            width: int, height: int) -> PhotoCrop:
    """Draw a :class:`PhotoCrop` of ``width x height`` from ``photos`` (``[(name, path)]``)."""
    name, path = photos[int(rng.integers(len(photos)))]
    bgr, _ = read_background_photo(path)
    ph, pw = bgr.shape[:2]
    aspect = width / height
    cw_max = min(float(pw), ph * aspect)
    frac = math.exp(rng.uniform(math.log(MIN_CROP_FRACTION), 0.0))
    cw = max(2, min(pw, int(round(cw_max * frac))))
    ch = max(2, min(ph, int(round(cw / aspect))))
    x0 = int(rng.integers(0, pw - cw + 1))
    y0 = int(rng.integers(0, ph - ch + 1))
    flip = bool(rng.uniform() < 0.5)
    matte = tuple(float(v) for v in rng.uniform(0, 255, 3))
    # colour jitter: saturation towards the luma, contrast about the mean, gain per channel
    sat = rng.uniform(0.6, 1.3)
    contrast = rng.uniform(0.75, 1.25)
    gain = rng.uniform(0.75, 1.2) * rng.uniform(0.92, 1.08, 3)
    s = sat * np.eye(3) + (1 - sat) * np.tile(_LUMA_BGR, (3, 1))
    x1, y1 = x0 + cw, y0 + ch
    mean = bgr[y0:y1, x0:x1].reshape(-1, 3).astype(np.float64).mean(0)
    m = (gain[:, None] * contrast) * s
    b = gain * (1 - contrast) * (s @ mean)
    return PhotoCrop(name, path, (x0, y0, x1, y1), flip, matte,
                     tuple(tuple(float(v) for v in row) for row in m),
                     tuple(float(v) for v in b))


def render_photo_background(crop: PhotoCrop, width: int, height: int) -> np.ndarray:
    """The background of ``crop`` (:class:`PhotoCrop`) as ``height x width x 3`` BGR uint8."""
    bgr, alpha = read_background_photo(crop.path)
    x0, y0, x1, y1 = crop.box
    a = alpha[y0:y1, x0:x1, None]
    img = bgr[y0:y1, x0:x1].astype(np.float32) * a + np.array(crop.matte, np.float32) * (1 - a)
    if crop.flip:
        img = img[:, ::-1]
    shrink = width < img.shape[1] or height < img.shape[0]
    img = cv2.resize(np.ascontiguousarray(img), (int(width), int(height)),
                     interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    out = img @ np.array(crop.color_matrix, np.float32).T + np.array(crop.color_offset, np.float32)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)
