"""FASSEG in fine classes: the label set ``fasseg_fine`` and its conversions, the derivation of fine
labels from coarse labels and landmarks (qanet_d2.data.datasets.fasseg_fine) on hand-made label
maps, and the classifier initialisation of a fine model from a coarse one."""
import numpy as np
import pytest

from qanet_d2.data.datasets.fasseg_fine import derive_fine_labels
from qanet_d2.structures.label_sets import IGNORE_LABEL, convert_labels, get_label_set

FINE = get_label_set("fasseg_fine")
F = {n: FINE.class_id(n) for n in FINE.classes}
BG, SKIN, HAIR, EYES, NOSE, MOUTH = range(6)
H, W = 240, 200
# YuNet's order: the person's right eye (image left of a frontal face), left eye, nose tip,
# right mouth corner, left mouth corner; (x, y)
LANDMARKS = np.array([[70.0, 110.0], [130.0, 110.0], [100.0, 145.0], [78.0, 175.0], [122.0, 175.0]])


def _ellipse(mask_shape, cx, cy, rx, ry):
    ys, xs = np.mgrid[0:mask_shape[0], 0:mask_shape[1]] + 0.5
    return ((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2 <= 1.0


def frontal_face():
    """A frontal face in FASSEG's classes: scalp hair on top, two brows (hair) above two eyes, a
    nose, a closed mouth, a beard spot (hair) on the chin."""
    m = np.zeros((H, W), np.uint8)
    m[_ellipse(m.shape, 100, 130, 75, 100)] = SKIN
    m[:55, 30:170] = HAIR  # scalp hair
    for cx in (70, 130):
        m[_ellipse(m.shape, cx, 92, 16, 4)] = HAIR  # brows
        m[_ellipse(m.shape, cx, 110, 11, 5)] = EYES
    m[_ellipse(m.shape, 100, 138, 8, 14)] = NOSE
    m[_ellipse(m.shape, 100, 175, 24, 8)] = MOUTH
    m[_ellipse(m.shape, 100, 205, 8, 4)] = HAIR  # beard, below the mouth
    return m


def test_label_set_flip_pairs_and_conversion_to_fasseg():
    assert FINE.classes == ("background", "skin", "l_brow", "r_brow", "l_eye", "r_eye", "nose",
                            "u_lip", "mouth", "l_lip", "hair")
    assert set(FINE.flip_pairs) == {(F["l_brow"], F["r_brow"]), (F["l_eye"], F["r_eye"])}
    fine = np.arange(FINE.num_classes, dtype=np.uint8)
    assert convert_labels(fine, "fasseg_fine", "fasseg").tolist() == [
        BG, SKIN, HAIR, HAIR, EYES, EYES, NOSE, MOUTH, MOUTH, MOUTH, HAIR]
    # the synthetic set's ears and neck are skin, as in FASSEG; clothes and hats background
    syn = get_label_set("synthetic")
    lut = convert_labels(np.arange(syn.num_classes, dtype=np.uint8), "synthetic", "fasseg_fine")
    assert [FINE.classes[lut[syn.class_id(c)]] for c in ("l_ear", "neck", "eye_g", "cloth", "hat", "l_eye")] == [
        "skin", "skin", "skin", "background", "background", "l_eye"]


def test_eyes_and_brows_left_right_by_landmark():
    fine, counts = derive_fine_labels(frontal_face(), LANDMARKS)
    # the person's left = image right
    assert (fine[108:112, 124:136] == F["l_eye"]).all() and (fine[108:112, 64:76] == F["r_eye"]).all()
    assert (fine[91:93, 122:138] == F["l_brow"]).all() and (fine[91:93, 62:78] == F["r_brow"]).all()
    assert counts["eyes_ignored"] == 0 and counts["eyes_decided"] > 0
    # scalp hair and the beard (below the eyes) stay hair
    assert (fine[:55, 30:170] == F["hair"]).all() and (fine[203:207, 96:104] == F["hair"]).all()
    # the landmarks decide, not the image side: with the eye landmarks exchanged, so are the eyes
    swapped = LANDMARKS[[1, 0, 2, 4, 3]]
    fine2, _ = derive_fine_labels(frontal_face(), swapped)
    assert (fine2[108:112, 124:136] == F["r_eye"]).all() and (fine2[91:93, 122:138] == F["r_brow"]).all()


def test_mirrored_face_swaps_left_and_right():
    coarse = frontal_face()
    fine, _ = derive_fine_labels(coarse, LANDMARKS)
    mirrored_lm = LANDMARKS[[1, 0, 2, 4, 3]].copy()  # YuNet names the image-left eye "right" again
    mirrored_lm[:, 0] = W - mirrored_lm[:, 0]
    fine_m, _ = derive_fine_labels(coarse[:, ::-1], mirrored_lm)
    assert np.array_equal(fine_m, FINE.flip_lut()[fine[:, ::-1]])


def test_lips_split_along_the_mouth_corner_line():
    fine, counts = derive_fine_labels(frontal_face(), LANDMARKS)
    assert (fine[168:173, 90:110] == F["u_lip"]).all()
    assert (fine[177:182, 90:110] == F["l_lip"]).all()
    # at the line itself: undecided without a photo
    assert (fine[174:176, 95:105] == IGNORE_LABEL).all()
    assert counts["mouth_decided"] > 0.6 * (counts["mouth_decided"] + counts["mouth_ignored"])
    # a tilted head: the split follows the tilted corner line (left corner 10 px higher)
    tilted = LANDMARKS.copy()
    tilted[4, 1] -= 10
    fine_t, _ = derive_fine_labels(frontal_face(), tilted)
    assert fine_t[172, 120] == F["l_lip"] and fine[172, 120] == F["u_lip"]


def test_lips_meet_at_the_dark_seam_and_the_opening_is_inner_mouth():
    coarse = frontal_face()
    image = np.full((H, W, 3), 180, np.uint8)
    # lips meet 4 px above the corner line; an open mouth: a dark gap in the middle
    image[170:172, 76:124] = 90
    image[167:175, 92:108] = 20
    fine, _ = derive_fine_labels(coarse, LANDMARKS, image)
    assert (fine[168:173, 95:105] == F["mouth"]).all()
    assert (fine[168, 86:90] == F["u_lip"]).all()  # above the seam
    # between the seam and the corner line: lower lip (upper lip without the photo)
    assert (fine[172:180, 84:90] == F["l_lip"]).all()
    assert (derive_fine_labels(coarse, LANDMARKS)[0][172, 84:90] == F["u_lip"]).all()


def test_nothing_created_outside_the_coarse_class():
    rng = np.random.default_rng(0)
    for trial in range(20):
        coarse = rng.integers(0, 6, size=(60, 50)).astype(np.uint8)
        coarse[rng.random(coarse.shape) < 0.05] = IGNORE_LABEL
        lm = rng.uniform(0, 50, size=(5, 2))
        image = rng.integers(0, 255, size=(60, 50, 3)).astype(np.uint8)
        fine, _ = derive_fine_labels(coarse, lm, image if trial % 2 else None)
        decided = fine != IGNORE_LABEL
        assert np.array_equal(convert_labels(fine, "fasseg_fine", "fasseg")[decided], coarse[decided])
        # background, skin and nose are never refined away; ignore stays ignore
        keep = np.isin(coarse, (BG, SKIN, NOSE))
        assert decided[keep].all() and not decided[coarse == IGNORE_LABEL].any()


def test_without_landmarks_refined_classes_are_ignored():
    coarse = frontal_face()
    fine, counts = derive_fine_labels(coarse, None)
    assert (fine[np.isin(coarse, (EYES, HAIR, MOUTH))] == IGNORE_LABEL).all()
    assert (fine[coarse == SKIN] == F["skin"]).all() and counts["eyes_decided"] == 0


def test_hair_reaching_the_brow_band_is_ignored_there_not_called_brow():
    coarse = frontal_face()
    coarse[:96, 115:150] = HAIR  # a fringe from the scalp down over the left brow
    fine, _ = derive_fine_labels(coarse, LANDMARKS)
    assert not (fine == F["l_brow"]).any()
    assert (fine[88:95, 120:140] == IGNORE_LABEL).all()
    assert (fine[:40, 120:140] == F["hair"]).all()
    assert (fine[91:93, 62:78] == F["r_brow"]).all()


def test_classifier_from_coarser_keeps_the_merged_prediction():
    import torch

    from qanet_d2.structures.label_sets import conversion_ids
    from qanet_d2.modeling.qanet.parsing_branch import classifier_from_coarser

    torch.manual_seed(0)
    w, b = torch.randn(6, 16, 1, 1), torch.randn(6)
    ids = conversion_ids("fasseg_fine", "fasseg")
    fw, fb = classifier_from_coarser(w, b, ids.tolist())
    assert fw.shape == (11, 16, 1, 1) and fb.shape == (11,)
    x = torch.randn(3, 16, 5, 5)
    coarse_p = torch.nn.functional.conv2d(x, w, b).softmax(1)
    fine_p = torch.nn.functional.conv2d(x, fw, fb).softmax(1)
    merged = torch.zeros_like(coarse_p).index_add_(1, torch.as_tensor(ids), fine_p)
    assert torch.allclose(merged, coarse_p, atol=1e-6)
    with pytest.raises(ValueError, match="coarse parent"):
        classifier_from_coarser(w, b, [0, 1, 255])


def _load_tool(name):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "tools" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_init_fine_classifier_splits_the_shipped_coarse_parser():
    import torch

    from qanet_d2.model_zoo import shipped_model

    tool = _load_tool("init_fine_classifier")
    coarse = torch.load(shipped_model("real_faces")[1], weights_only=True)
    out = tool.split_checkpoint(coarse, "fasseg", "fasseg_fine")
    w, b = out["model"][tool.PREDICTOR + "weight"], out["model"][tool.PREDICTOR + "bias"]
    cw = coarse["model"][tool.PREDICTOR + "weight"]
    assert w.shape[0] == 11 and torch.equal(w[F["l_eye"]], cw[EYES]) and torch.equal(w[F["l_brow"]], cw[HAIR])
    assert out["trained_parts"] == coarse["trained_parts"]
    assert out["label_set"]["name"] == "fasseg_fine"  # the record names the classes it now predicts
    assert all(torch.equal(v, coarse["model"][k]) for k, v in out["model"].items()
               if not k.startswith(tool.PREDICTOR) and k != tool.FLIP)
    # a training checkpoint's flip permutation becomes the fine set's (l_eye <-> r_eye ...)
    coarse["model"][tool.FLIP] = torch.arange(6)
    flip = tool.split_checkpoint(coarse, "fasseg", "fasseg_fine")["model"][tool.FLIP]
    assert flip.tolist() == [0, 1, 3, 2, 5, 4, 6, 7, 8, 9, 10]
    with pytest.raises(ValueError, match="has 11 classes"):
        tool.split_checkpoint(out, "fasseg", "fasseg_fine")
