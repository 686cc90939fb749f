"""The shipped real-face model in fine classes (qanet_d2.model_zoo "real_faces_fine": YuNet + box
adapter + a parser predicting label set "fasseg_fine"): it loads from the repository alone with
its label set and puts the parts of a real photo in their places, the person's left eye and brow
on the image right; a mirrored photo swaps left and right."""
from pathlib import Path

import numpy as np
import pytest

from qanet_d2.structures.label_sets import get_label_set
from qanet_d2.model_zoo import shipped_model

FINE = get_label_set("fasseg_fine")
C = {n: FINE.class_id(n) for n in FINE.classes}


@pytest.fixture(scope="module")
def predictor():
    from qanet_d2 import FaceParsingPredictor, get_qanet_cfg

    config, weights = shipped_model("real_faces_fine")
    cfg = get_qanet_cfg()
    cfg.merge_from_file(config)
    cfg.MODEL.WEIGHTS = weights
    cfg.MODEL.DEVICE = "cpu"
    cfg.freeze()
    return FaceParsingPredictor(cfg)


def _centre(mask):
    ys, xs = np.nonzero(mask)
    assert len(xs) > 0
    return np.array([xs.mean(), ys.mean()])


def test_file_is_small_half_precision_parser_in_fine_classes():
    import torch

    weights = Path(shipped_model("real_faces_fine")[1])
    assert weights.stat().st_size < 20 * 1024 * 1024
    state = torch.load(weights, weights_only=True)
    assert state["trained_parts"] == ["parser"]
    w = state["model"]["parser.parsing_branch.predictor.weight"]
    assert w.dtype == torch.float16 and w.shape[0] == FINE.num_classes == 11


def test_model_predicts_its_label_set(predictor):
    from qanet_d2.data.mixed_label_sets import model_label_set

    assert model_label_set(predictor.cfg) == FINE
    # the built model owns it, flip pairs included (the file was written before checkpoints
    # recorded their label set: the config's set is used)
    model = predictor.model
    assert model.label_set == FINE
    assert model.parser.flip_permutation.tolist() == [0, 1, 3, 2, 5, 4, 6, 7, 8, 9, 10]


def _parse(predictor, image_rgb):
    out = predictor(np.ascontiguousarray(image_rgb[:, :, ::-1]))
    assert len(out["boxes"]) == 1, out["boxes"]
    return np.asarray(out["labels"]), out["instances"].pred_keypoints[0, :, :2].numpy()


def test_astronaut_parts_in_place_left_eye_on_the_image_right(predictor):
    """scikit-image's astronaut (public domain): each eye next to YuNet's landmark of that eye
    (landmark 1: the person's left eye, image right), brows above the eyes, upper lip above the
    lower lip, everything inside her head."""
    from skimage.data import astronaut

    labels, kps = _parse(predictor, astronaut())
    l_eye, r_eye = _centre(labels == C["l_eye"]), _centre(labels == C["r_eye"])
    assert kps[1, 0] > kps[0, 0]  # the person's left eye is on the image right
    assert np.linalg.norm(l_eye - kps[1]) < 12 and np.linalg.norm(r_eye - kps[0]) < 12, (l_eye, r_eye, kps)
    # her head, hair top to chin, by hand (XYXY 155, 12, 300, 190): nothing labelled 30 px beyond it
    ys, xs = np.nonzero(labels)
    assert xs.min() >= 125 and xs.max() < 330 and ys.max() < 220
    # brows (few pixels here: hers are thin and partly under the fringe) only above their own eye
    for side in ("l", "r"):
        ys, xs = np.nonzero(labels == C[f"{side}_brow"])
        eye = _centre(labels == C[f"{side}_eye"])
        assert ((ys < eye[1]) & (ys > eye[1] - 40) & (np.abs(xs - eye[0]) < 30)).all(), side
    assert _centre(labels == C["u_lip"])[1] < _centre(labels == C["l_lip"])[1]
    # the eye classes are not mixed: each eye is almost all one class
    for cls, k in (("l_eye", 1), ("r_eye", 0)):
        x, y = kps[k].round().astype(int)
        box = labels[y - 10:y + 10, x - 15:x + 15]
        eye_px = np.isin(box, (C["l_eye"], C["r_eye"]))
        assert (box[eye_px] == C[cls]).mean() > 0.9, cls


def test_mirrored_astronaut_swaps_left_and_right(predictor):
    from skimage.data import astronaut

    labels, _ = _parse(predictor, astronaut())
    labels_m, _ = _parse(predictor, astronaut()[:, ::-1])
    w = labels.shape[1]
    for a, b in (("l_eye", "r_eye"), ("r_eye", "l_eye")):
        ca, cb = _centre(labels_m == C[a]), _centre(labels == C[b])
        assert abs(ca[0] - (w - 1 - cb[0])) < 6 and abs(ca[1] - cb[1]) < 6, (a, ca, b, cb)
    assert _centre(labels_m == C["l_eye"])[0] > _centre(labels_m == C["r_eye"])[0]
