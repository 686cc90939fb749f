import numpy as np
import pytest

import qanet_d2  # noqa: F401
from qanet_d2.structures.label_sets import (
    CONVERSIONS,
    IGNORE_LABEL,
    LABEL_SETS,
    LabelSet,
    colorize_labels,
    convert_labels,
    derive_flip_pairs,
    get_label_set,
    sfp_label_set,
)

SYNTHETIC = ["background", "skin", "nose", "eye_g", "l_eye", "r_eye", "l_brow", "r_brow", "l_ear", "r_ear",
             "mouth", "u_lip", "l_lip", "hair", "hat", "neck", "cloth"]
CELEB = ["background", "skin", "nose", "eye_g", "l_eye", "r_eye", "l_brow", "r_brow", "l_ear", "r_ear",
         "mouth", "u_lip", "l_lip", "hair", "hat", "ear_r", "neck_l", "neck", "cloth"]
LAPA = ["background", "skin", "left_eyebrow", "right_eyebrow", "left_eye", "right_eye", "nose", "upper_lip",
        "inner_mouth", "lower_lip", "hair"]


def test_contract_classes_and_flip_pairs():
    s = get_label_set("synthetic")
    assert list(s.classes) == SYNTHETIC and s.num_classes == 17
    assert s.flip_pairs == ((4, 5), (6, 7), (8, 9))
    assert list(get_label_set("celebamask_hq").classes) == CELEB
    assert get_label_set("celebamask_hq").flip_pairs == ((4, 5), (6, 7), (8, 9))
    for name in ("lapa", "helen"):
        ls = get_label_set(name)
        assert list(ls.classes) == LAPA and ls.flip_pairs == ((2, 3), (4, 5))
    assert set(LABEL_SETS) >= {"synthetic", "celebamask_hq", "lapa", "helen"}


@pytest.mark.parametrize("name", ["synthetic", "celebamask_hq", "lapa", "helen"])
def test_palettes_distinct_and_flip_pairs_match_names(name):
    ls = get_label_set(name)
    assert len(set(ls.palette)) == ls.num_classes
    assert ls.palette[0] == (0, 0, 0)
    assert all(0 <= v <= 255 for c in ls.palette for v in c)
    assert derive_flip_pairs(ls.classes) == ls.flip_pairs  # hard-coded pairs agree with the names


def test_flip_permutation_swaps_labels_and_channels():
    ls = get_label_set("synthetic")
    perm = ls.flip_permutation()
    assert perm.dtype == np.int64 and perm.tolist() == [0, 1, 2, 3, 5, 4, 7, 6, 9, 8, 10, 11, 12, 13, 14, 15, 16]
    assert (perm[perm] == np.arange(17)).all()
    label = np.array([[4, 5, 255], [8, 1, 9]], np.uint8)
    assert ls.flip_lut()[label].tolist() == [[5, 4, 255], [9, 1, 8]]
    probs = np.random.default_rng(0).random((17, 2, 3))
    flipped = probs[perm]
    assert np.array_equal(flipped[4], probs[5]) and np.array_equal(flipped[0], probs[0])


def test_sfp_label_set_derives_pairs_from_names():
    classes = ["background", "skin", "l_brow", "r_brow", "left eye", "right eye", "nose", "u_lip", "l_lip",
               "mouth", "hair", "Left_Ear", "Right_Ear", "neck", "cloth", "hat", "eye_g", "earring_l"]
    ls = sfp_label_set(classes)
    assert ls.name == "sfp" and ls.num_classes == 18
    # l_lip (lower lip) has no r_lip and earring_l no earring_r: both stay unpaired
    assert ls.flip_pairs == ((2, 3), (4, 5), (11, 12))
    assert len(set(ls.palette)) == 18
    # an unknown name resolves through the JSON's class list; a known one is checked against it
    assert get_label_set("sfp", classes) == ls
    with pytest.raises(KeyError, match="unknown label set 'sfp'"):
        get_label_set("sfp")
    with pytest.raises(ValueError, match="do not match label set 'lapa'"):
        get_label_set("lapa", LAPA[:-1])


def test_labelset_validation():
    with pytest.raises(ValueError, match="duplicate"):
        LabelSet("x", ("background", "a", "a"), ((0, 0, 0),) * 3)
    with pytest.raises(ValueError, match="invalid flip pair"):
        LabelSet("x", ("background", "a"), ((0, 0, 0), (1, 1, 1)), ((0, 1),))
    with pytest.raises(ValueError, match="palette"):
        LabelSet("x", ("background", "a"), ((0, 0, 0),))


def test_conversions():
    syn = np.arange(17, dtype=np.uint8).reshape(1, -1)
    syn = np.concatenate([syn, np.full((1, 17), 255, np.uint8)])
    # synthetic -> celebamask_hq: ids by name
    out = convert_labels(syn, "synthetic", "celebamask_hq")
    assert [CELEB[i] for i in out[0]] == SYNTHETIC
    assert (out[1] == IGNORE_LABEL).all()
    # celebamask_hq -> lapa: documented choices
    celeb = np.arange(19, dtype=np.uint8)
    lapa = convert_labels(celeb, "celebamask_hq", "lapa")
    expect = {"background": "background", "skin": "skin", "nose": "nose", "eye_g": None,
              "l_eye": "right_eye", "r_eye": "left_eye", "l_brow": "right_eyebrow", "r_brow": "left_eyebrow",
              "l_ear": None, "r_ear": None, "mouth": "inner_mouth", "u_lip": "upper_lip", "l_lip": "lower_lip",
              "hair": "hair", "hat": "background", "ear_r": None, "neck_l": "background", "neck": "background",
              "cloth": "background"}
    for i, name in enumerate(CELEB):
        target = expect[name]
        assert lapa[i] == (IGNORE_LABEL if target is None else LAPA.index(target)), name
    # synthetic -> lapa agrees with synthetic -> celeb -> lapa
    assert np.array_equal(convert_labels(syn, "synthetic", "lapa"),
                          convert_labels(convert_labels(syn, "synthetic", "celebamask_hq"), "celebamask_hq", "lapa"))
    # lapa <-> helen identity; ids outside the source set become 255
    x = np.array([0, 3, 10, 11, 200, 255], np.int64)
    assert convert_labels(x, "lapa", "helen").tolist() == [0, 3, 10, 255, 255, 255]
    assert convert_labels(x, "helen", "lapa").tolist() == [0, 3, 10, 255, 255, 255]
    # a pair of sets without a mapping and with unmatched names is refused
    with pytest.raises(KeyError, match="no conversion"):
        convert_labels(x, "lapa", "synthetic")
    with pytest.raises(TypeError):
        convert_labels(np.zeros(3, np.float32), "lapa", "helen")
    assert ("celebamask_hq", "lapa") in CONVERSIONS


def test_colorize():
    rgb = colorize_labels(np.array([[0, 4, 255]], np.uint8), "synthetic")
    assert rgb.shape == (1, 3, 3) and rgb.dtype == np.uint8
    assert tuple(rgb[0, 1]) == get_label_set("synthetic").palette[4]
    assert tuple(rgb[0, 2]) == (255, 255, 255)
