"""Label sets of the face parsing datasets: class names, palettes, left/right flip pairs and
conversions between sets.

A label map holds class ids (indices into :attr:`LabelSet.classes`); background is 0 and 255 means
"ignore" in every set. Left/right names keep their dataset's meaning: for CelebAMask-HQ and the
synthetic set ``l_`` is the *person's* left, the IMAGE RIGHT of a frontal face.
"""
from __future__ import annotations

import colorsys
import re
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

__all__ = [
    "IGNORE_LABEL", "LabelSet", "LABEL_SETS", "get_label_set", "register_label_set", "label_set_from_classes",
    "sfp_label_set", "derive_flip_pairs", "conversion_lut", "conversion_ids", "convert_labels", "colorize_labels",
    "make_palette", "CONVERSIONS", "label_set_from_config", "label_set_to_config",
]

IGNORE_LABEL = 255


@dataclass(frozen=True)
class LabelSet:
    """Classes of one dataset: ``name`` (key in :data:`LABEL_SETS`, the dataset JSON's
    ``"label_set"``), ``classes`` (index = id, 0 = background), ``palette`` (``(R, G, B)`` per
    class) and ``flip_pairs`` (``(id_a, id_b)`` exchanged by a horizontal flip)."""

    name: str
    classes: Tuple[str, ...]
    palette: Tuple[Tuple[int, int, int], ...]
    flip_pairs: Tuple[Tuple[int, int], ...] = ()

    def __post_init__(self):
        # tuples: hashable and comparable
        object.__setattr__(self, "classes", tuple(str(c) for c in self.classes))
        object.__setattr__(self, "palette", tuple(tuple(int(v) for v in c) for c in self.palette))
        object.__setattr__(self, "flip_pairs", tuple((int(a), int(b)) for a, b in self.flip_pairs))
        n = len(self.classes)
        if n < 2:
            raise ValueError(f"label set '{self.name}': needs background and at least one class")
        if n > IGNORE_LABEL:
            raise ValueError(f"label set '{self.name}': {n} classes do not fit below {IGNORE_LABEL}")
        if len(set(self.classes)) != n:
            raise ValueError(f"label set '{self.name}': duplicate class names in {self.classes}")
        if len(self.palette) != n or any(len(c) != 3 for c in self.palette):
            raise ValueError(f"label set '{self.name}': palette needs one (R, G, B) per class")
        seen = set()
        for a, b in self.flip_pairs:
            if not (0 < a < n and 0 < b < n) or a == b:
                raise ValueError(f"label set '{self.name}': invalid flip pair {(a, b)}")
            if a in seen or b in seen:
                raise ValueError(f"label set '{self.name}': class in two flip pairs {(a, b)}")
            seen.update((a, b))

    @property
    def num_classes(self) -> int:
        """Number of classes, background included."""
        return len(self.classes)

    def class_id(self, name: str) -> int:
        """Id of the class called ``name`` (ValueError if absent)."""
        try:
            return self.classes.index(name)
        except ValueError:
            raise ValueError(f"label set '{self.name}' has no class '{name}'") from None

    def flip_permutation(self) -> np.ndarray:
        """int64 ``perm`` swapping every flip pair, identity elsewhere: ``perm[label_map]`` for a
        mirrored map, ``probs[perm]`` for ``C x H x W`` probabilities."""
        perm = np.arange(self.num_classes, dtype=np.int64)
        for a, b in self.flip_pairs:
            perm[a], perm[b] = b, a
        return perm

    def flip_lut(self) -> np.ndarray:
        """256-entry uint8 lookup table of the flip permutation (ids outside the set unchanged)."""
        lut = np.arange(256, dtype=np.uint8)
        lut[: self.num_classes] = self.flip_permutation().astype(np.uint8)
        return lut

    def to_json(self) -> dict:
        """The set as plain values (``LabelSet(**ls.to_json()) == ls``), as checkpoints record it."""
        return {
            "name": self.name,
            "classes": list(self.classes),
            "palette": [list(c) for c in self.palette],
            "flip_pairs": [list(p) for p in self.flip_pairs],
        }


# ---------------------------------------------------------------------------- palettes
# Colours by canonical part name (_canonical), so that a part has one colour in every label set.
_BASE_COLORS: Dict[str, Tuple[int, int, int]] = {
    "background": (0, 0, 0), "skin": (204, 0, 0), "nose": (76, 153, 0), "eye_g": (204, 204, 0),
    "l_eye": (51, 51, 255), "r_eye": (204, 0, 204), "l_brow": (0, 255, 255), "r_brow": (255, 204, 204),
    "l_ear": (102, 51, 0), "r_ear": (255, 0, 0), "mouth": (102, 204, 0), "u_lip": (255, 255, 0),
    "l_lip": (0, 0, 153), "hair": (0, 0, 204), "hat": (255, 51, 153), "ear_r": (0, 204, 204),
    "neck_l": (0, 51, 0), "neck": (255, 153, 51), "cloth": (0, 204, 0),
}

_SYNONYMS = {
    "face": "skin", "face_skin": "skin",
    "left_eyebrow": "l_brow", "right_eyebrow": "r_brow", "left_brow": "l_brow", "right_brow": "r_brow",
    "left_eye": "l_eye", "right_eye": "r_eye", "left_ear": "l_ear", "right_ear": "r_ear",
    "upper_lip": "u_lip", "lower_lip": "l_lip", "inner_mouth": "mouth",
    "eyeglasses": "eye_g", "glasses": "eye_g", "earring": "ear_r", "necklace": "neck_l", "clothes": "cloth",
}


def _canonical(name: str) -> str:
    key = re.sub(r"[\s\-]+", "_", name.strip().lower())
    return _SYNONYMS.get(key, key)


def _extra_color(i: int) -> Tuple[int, int, int]:
    # golden-ratio hue walk: well separated colours
    h = (0.13 + i * 0.618033988749895) % 1.0
    s = 0.55 + 0.45 * ((i * 7) % 3) / 2.0
    v = 0.6 + 0.4 * ((i * 5) % 2)
    r, g, b = colorsys.hsv_to_rgb(h, s, v)
    return (int(round(r * 255)), int(round(g * 255)), int(round(b * 255)))


def make_palette(classes: Sequence[str]) -> Tuple[Tuple[int, int, int], ...]:
    """Distinct RGB colours for ``classes``: the part's colour when the name is known
    (``left_eye`` -> colour of ``l_eye``), otherwise a generated colour."""
    out: List[Tuple[int, int, int]] = []
    used = set()
    extra = 0
    for name in classes:
        color = _BASE_COLORS.get(_canonical(name))
        while color is None or color in used:
            color = _extra_color(extra)
            extra += 1
        used.add(color)
        out.append(color)
    return tuple(out)


# ---------------------------------------------------------------------------- flip pairs
_LR_PATTERNS = (
    # (left regex, right template): the person's-side prefixes/suffixes seen in face datasets.
    (re.compile(r"^l_(.+)$"), "r_{}"),
    (re.compile(r"^left_(.+)$"), "right_{}"),
    (re.compile(r"^left(.+)$"), "right{}"),
    (re.compile(r"^(.+)_l$"), "{}_r"),
    (re.compile(r"^(.+)_left$"), "{}_right"),
)


def derive_flip_pairs(classes: Sequence[str]) -> Tuple[Tuple[int, int], ...]:
    """``(left_id, right_id)`` flip pairs, sorted, from left/right class names (:data:`_LR_PATTERNS`,
    case-insensitive, spaces/dashes read as ``_``); a name without counterpart (``l_lip``, the lower
    lip) stays unpaired."""
    norm = [re.sub(r"[\s\-]+", "_", c.strip().lower()) for c in classes]
    index = {n: i for i, n in enumerate(norm)}
    pairs = []
    used = set()
    for i, n in enumerate(norm):
        if i == 0 or i in used:
            continue
        for pattern, right in _LR_PATTERNS:
            m = pattern.match(n)
            if not m:
                continue
            j = index.get(right.format(m.group(1)))
            if j is not None and j != i and j != 0 and j not in used:
                pairs.append((i, j))
                used.update((i, j))
                break
    return tuple(sorted(pairs))


# ---------------------------------------------------------------------------- the sets
LABEL_SETS: Dict[str, LabelSet] = {}


def register_label_set(label_set: LabelSet) -> LabelSet:
    """Add ``label_set`` to :data:`LABEL_SETS` (an identical re-registration is a no-op)."""
    old = LABEL_SETS.get(label_set.name)
    if old is not None and old != label_set:
        raise ValueError(
            f"label set '{label_set.name}' is already registered with different content:\n"
            f"  registered: {old.classes}\n  new:        {label_set.classes}"
        )
    LABEL_SETS[label_set.name] = label_set
    return label_set


def label_set_from_classes(name: str, classes: Sequence[str]) -> LabelSet:
    """A :class:`LabelSet` whose palette comes from :func:`make_palette` and whose flip pairs
    come from :func:`derive_flip_pairs` (left/right names). ``classes[0]`` must be background."""
    classes = tuple(str(c) for c in classes)
    return LabelSet(name, classes, make_palette(classes), derive_flip_pairs(classes))


def sfp_label_set(classes: Sequence[str]) -> LabelSet:
    """Label set of the short-video face parsing (SFP) data, from the class names in its files."""
    return label_set_from_classes("sfp", classes)


def _by_name(name: str, classes: Sequence[str]) -> LabelSet:
    # flip pairs from the names: the eyes, brows and ears (l_lip, the lower lip, has no pair)
    return register_label_set(label_set_from_classes(name, classes))


SYNTHETIC = _by_name(
    "synthetic",
    ("background", "skin", "nose", "eye_g", "l_eye", "r_eye", "l_brow", "r_brow", "l_ear",
     "r_ear", "mouth", "u_lip", "l_lip", "hair", "hat", "neck", "cloth"),
)

CELEBAMASK_HQ = _by_name(
    "celebamask_hq",
    ("background", "skin", "nose", "eye_g", "l_eye", "r_eye", "l_brow", "r_brow", "l_ear",
     "r_ear", "mouth", "u_lip", "l_lip", "hair", "hat", "ear_r", "neck_l", "neck", "cloth"),
)

_LAPA_CLASSES = ("background", "skin", "left_eyebrow", "right_eyebrow", "left_eye", "right_eye",
                 "nose", "upper_lip", "inner_mouth", "lower_lip", "hair")
LAPA = _by_name("lapa", _LAPA_CLASSES)
HELEN = _by_name("helen", _LAPA_CLASSES)

# FASSEG (Khan et al., ICIP 2015 / ICME 2017): skin includes neck and ears, hair the eyebrows, one
# class for both eyes, mouth = lips + inner mouth. The palette is the dataset's label colours
# (qanet_d2.data.datasets.fasseg reads them back into ids).
FASSEG = register_label_set(LabelSet(
    "fasseg",
    ("background", "skin", "hair", "eyes", "nose", "mouth"),
    ((255, 0, 0), (255, 255, 0), (127, 0, 0), (0, 0, 255), (0, 255, 255), (0, 255, 0)),
))


def label_set_from_config(cfg) -> Optional[LabelSet]:
    """The label set of ``cfg.MODEL.QANET.LABEL_SET``: from its CLASSES (COLORS, else
    :func:`make_palette`; FLIP_PAIRS) when given, else the registered set NAME, else None."""
    node = cfg.MODEL.QANET.LABEL_SET
    if len(node.CLASSES):
        classes = tuple(str(c) for c in node.CLASSES)
        colors = tuple(tuple(c) for c in node.COLORS) if len(node.COLORS) else make_palette(classes)
        return LabelSet(node.NAME or "custom", classes, colors, tuple(tuple(p) for p in node.FLIP_PAIRS))
    return LABEL_SETS.get(node.NAME) if node.NAME else None


def label_set_to_config(cfg, label_set: LabelSet) -> None:
    """Write ``label_set`` into ``cfg.MODEL.QANET.LABEL_SET`` (NAME, CLASSES, COLORS, FLIP_PAIRS)."""
    node = cfg.MODEL.QANET.LABEL_SET
    node.NAME = label_set.name
    node.CLASSES = list(label_set.classes)
    node.COLORS = [list(c) for c in label_set.palette]
    node.FLIP_PAIRS = [list(p) for p in label_set.flip_pairs]


def get_label_set(name: str, classes: Optional[Sequence[str]] = None) -> LabelSet:
    """The label set called ``name``; ``classes`` (a dataset JSON's) are checked against a registered
    set, or build an unregistered one (``"sfp"``) with :func:`label_set_from_classes`."""
    ls = LABEL_SETS.get(name)
    if ls is None:
        if classes is None:
            raise KeyError(f"unknown label set '{name}' and no class list to build it from; "
                           f"known sets: {sorted(LABEL_SETS)}")
        return label_set_from_classes(name, classes)
    if classes is not None and tuple(classes) != ls.classes:
        raise ValueError(f"classes {list(classes)} do not match label set '{name}' {list(ls.classes)}")
    return ls


# ---------------------------------------------------------------------------- conversions
# (src, dst) -> {src class name: dst class name, or None for "ignore" (255)}. Classes not listed
# map to the dst class of the same name when there is one, else to background.
# CelebAMask-HQ -> LaPa/Helen: LaPa's "left" is read as the IMAGE left (the person's right), as
# FaRL/facer name LaPa ids 2..5 'rb', 'lb', 're', 'le' (not verified against the LaPa data: change
# the four eye/brow lines if your copy says otherwise). Glasses (what lies under a frame is
# unknown) and ears (undocumented whether skin or background) are ignored; hat, necklace, neck and
# cloth lie outside the face there.
_CELEB_TO_LAPA = {
    "l_eye": "right_eye", "r_eye": "left_eye", "l_brow": "right_eyebrow", "r_brow": "left_eyebrow",
    "mouth": "inner_mouth", "u_lip": "upper_lip", "l_lip": "lower_lip",
    "eye_g": None, "l_ear": None, "r_ear": None, "ear_r": None,
    "hat": "background", "neck_l": "background", "neck": "background", "cloth": "background",
}

CONVERSIONS: Dict[Tuple[str, str], Dict[str, Optional[str]]] = {
    # Synthetic classes are a subset of CelebAMask-HQ's: ids by name.
    ("synthetic", "celebamask_hq"): {c: c for c in SYNTHETIC.classes},
    ("synthetic", "lapa"): {c: _CELEB_TO_LAPA.get(c, c) for c in SYNTHETIC.classes},
    ("synthetic", "helen"): {c: _CELEB_TO_LAPA.get(c, c) for c in SYNTHETIC.classes},
    ("celebamask_hq", "lapa"): dict(_CELEB_TO_LAPA),
    ("celebamask_hq", "helen"): dict(_CELEB_TO_LAPA),
    # CelebAMask-HQ -> synthetic: the two classes the synthetic set lacks.
    ("celebamask_hq", "synthetic"): {"ear_r": None, "neck_l": "background"},
    # Same classes in the same order.
    ("lapa", "helen"): {c: c for c in LAPA.classes},
    ("helen", "lapa"): {c: c for c in HELEN.classes},
}

# Any fine set -> FASSEG, by canonical part name, as FASSEG's labels show: brows are hair; ears and
# neck are skin; glasses are skin (FASSEG labels them as transparent, e.g. V3 personne01152+0+90,
# and the fine sets paint eyes and brows over eye_g, so its pixels left lie on skin); an earring is
# the ear's skin (V2 test image 7); a necklace (neck or clothes?) is ignored; hat and clothes are
# background.
_TO_FASSEG: Dict[str, Optional[str]] = {
    "background": "background", "skin": "skin", "nose": "nose", "hair": "hair", "eye_g": "skin",
    "l_eye": "eyes", "r_eye": "eyes", "l_brow": "hair", "r_brow": "hair", "l_ear": "skin", "r_ear": "skin",
    "mouth": "mouth", "u_lip": "mouth", "l_lip": "mouth",
    "hat": "background", "ear_r": "skin", "neck_l": None, "neck": "skin", "cloth": "background",
    # single-class names of coarser sets
    "eye": "eyes", "eyes": "eyes", "brow": "hair", "brows": "hair", "eyebrow": "hair", "eyebrows": "hair",
    "lip": "mouth", "lips": "mouth", "ear": "skin", "ears": "skin",
}

# Destination sets reachable from any set whose class names are known part names (SFP's class
# list is read from its files): {dst set: {canonical src name: dst name or None}}.
_BY_PART_NAME: Dict[str, Dict[str, Optional[str]]] = {"fasseg": _TO_FASSEG}


def _mapping_by_part_name(src: LabelSet, dst: LabelSet) -> Dict[str, Optional[str]]:
    table = _BY_PART_NAME[dst.name]
    unknown = [c for c in src.classes if _canonical(c) not in table]
    if unknown:
        raise KeyError(
            f"no conversion from label set '{src.name}' to '{dst.name}': classes {unknown} are "
            f"not known part names ({sorted(table)}); pass an explicit mapping")
    return {c: table[_canonical(c)] for c in src.classes}


for _src in (SYNTHETIC, CELEBAMASK_HQ, LAPA, HELEN):
    CONVERSIONS[(_src.name, FASSEG.name)] = _mapping_by_part_name(_src, FASSEG)

# FASSEG in fine classes: LaPa's eleven classes under CelebAMask-HQ's names ("mouth" is the inner
# mouth). Skin keeps FASSEG's meaning (ears and neck included), as the labels derived from FASSEG's
# (datasets/derive_fasseg_fine.py); parts only drawn data has are folded as FASSEG folds them.
FASSEG_FINE = _by_name(
    "fasseg_fine",
    ("background", "skin", "l_brow", "r_brow", "l_eye", "r_eye", "nose", "u_lip", "mouth",
     "l_lip", "hair"),
)
_TO_FASSEG_FINE: Dict[str, Optional[str]] = {
    "eye_g": "skin", "l_ear": "skin", "r_ear": "skin", "ear_r": "skin", "neck": "skin",
    "neck_l": None, "hat": "background", "cloth": "background",
}
CONVERSIONS[(FASSEG_FINE.name, FASSEG.name)] = _mapping_by_part_name(FASSEG_FINE, FASSEG)
for _src in (SYNTHETIC, CELEBAMASK_HQ):
    CONVERSIONS[(_src.name, FASSEG_FINE.name)] = {
        c: _TO_FASSEG_FINE.get(c, c) for c in _src.classes}
# LaPa/Helen read "left" as the image left (see _CELEB_TO_LAPA).
CONVERSIONS[(FASSEG_FINE.name, LAPA.name)] = {c: _CELEB_TO_LAPA.get(c, c) for c in FASSEG_FINE.classes}
CONVERSIONS[(FASSEG_FINE.name, HELEN.name)] = dict(CONVERSIONS[(FASSEG_FINE.name, LAPA.name)])


def _resolve(label_set) -> LabelSet:
    return label_set if isinstance(label_set, LabelSet) else get_label_set(label_set)


def conversion_lut(src, dst, mapping: Optional[Mapping[str, Optional[str]]] = None) -> np.ndarray:
    """256-entry uint8 lookup table from ids of ``src`` to ids of ``dst`` (names or LabelSets).

    ``mapping`` (src name -> dst name, None = ignore) defaults to :data:`CONVERSIONS`, else by part
    name into ``fasseg``, else by class name when every src class exists in dst. 255 and ids
    outside ``src`` map to 255.
    """
    src, dst = _resolve(src), _resolve(dst)
    if mapping is None:
        if src.name == dst.name and src.classes == dst.classes:
            mapping = {c: c for c in src.classes}
        elif (src.name, dst.name) in CONVERSIONS:
            mapping = CONVERSIONS[(src.name, dst.name)]
        elif dst.name in _BY_PART_NAME and LABEL_SETS.get(dst.name) == dst:
            mapping = _mapping_by_part_name(src, dst)
        else:
            missing = [c for c in src.classes if c not in dst.classes]
            if missing:
                raise KeyError(f"no conversion from label set '{src.name}' to '{dst.name}': classes "
                               f"{missing} have no counterpart; pass an explicit mapping")
            mapping = {}
    unknown = [k for k in mapping if k not in src.classes]
    if unknown:
        raise KeyError(f"conversion {src.name}->{dst.name}: {unknown} not in '{src.name}'")
    lut = np.full(256, IGNORE_LABEL, dtype=np.uint8)
    for i, name in enumerate(src.classes):
        target = mapping[name] if name in mapping else (name if name in dst.classes else "background")
        lut[i] = IGNORE_LABEL if target is None else dst.class_id(target)
    return lut


def conversion_ids(src, dst, mapping: Optional[Mapping[str, Optional[str]]] = None) -> np.ndarray:
    """int64 ``ids[k]``: the ``dst`` id of ``src`` class ``k`` (255: no counterpart), i.e.
    ``conversion_lut(src, dst, mapping)[:src.num_classes]``; how losses merge a fine model's
    probabilities into a coarser set."""
    src = _resolve(src)
    return conversion_lut(src, dst, mapping)[: src.num_classes].astype(np.int64)


def convert_labels(label_map: np.ndarray, src, dst,
                   mapping: Optional[Mapping[str, Optional[str]]] = None) -> np.ndarray:
    """A label map (any shape, integer dtype) of ``src`` as a uint8 map of ``dst``
    (:func:`conversion_lut`; ids outside ``src`` become 255)."""
    label_map = np.asarray(label_map)
    if not np.issubdtype(label_map.dtype, np.integer):
        raise TypeError(f"label map must be an integer array, got {label_map.dtype}")
    # lut[IGNORE_LABEL] is IGNORE_LABEL: ids outside [0, 255] read it
    ids = np.where((label_map >= 0) & (label_map < 256), label_map, IGNORE_LABEL).astype(np.int64)
    return conversion_lut(src, dst, mapping)[ids]


def colorize_labels(label_map: np.ndarray, label_set, ignore_color=(255, 255, 255)) -> np.ndarray:
    """``H x W x 3`` uint8 RGB image of a label map with the set's palette (255 -> ignore_color,
    other unknown ids -> black)."""
    ls = _resolve(label_set)
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[: ls.num_classes] = ls.palette
    lut[IGNORE_LABEL] = ignore_color
    return lut[np.asarray(label_map).astype(np.int64).clip(0, 255)]
