"""FASSEG: label set, conversions into it, colour snapping, face boxes and the converter (on
fixtures in the release's layout, and on the shared copy of the real data when present)."""
import json
import logging
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

import qanet_d2  # noqa: F401
from detectron2.data import DatasetCatalog, MetadataCatalog
from qanet_d2.data.datasets import convert_fasseg
from qanet_d2.data.datasets.fasseg import (MULTIPOSE_DEV_SPLITS, fasseg_face_box, multipose_person,
                                           snap_label_colors)
from qanet_d2.data.io import DataReadError
from qanet_d2.structures.label_sets import (IGNORE_LABEL, conversion_ids, conversion_lut, convert_labels,
                                      get_label_set, sfp_label_set)

from conftest import load_script

REPO = Path(__file__).resolve().parents[1]
# the shared copy of the real data: $FASSEG_DIR, or ../shared/data/fasseg next to the repository (or a worktree)
_CANDIDATES = [Path(os.environ["FASSEG_DIR"])] if os.environ.get("FASSEG_DIR") else []
_CANDIDATES += [REPO.parent / "shared" / "data" / "fasseg", REPO.parent.parent / "shared" / "data" / "fasseg"]
REAL = next((p for p in _CANDIDATES if (p / "V2").is_dir()), _CANDIDATES[0])

BG, SKIN, HAIR, EYES, NOSE, MOUTH = range(6)
COLORS = np.array([(255, 0, 0), (255, 255, 0), (127, 0, 0), (0, 0, 255), (0, 255, 255), (0, 255, 0)], np.float64)


# --------------------------------------------------------------------------- label set, conversions
def test_label_set(caplog):
    from qanet_d2.data import dataset_label_set

    with caplog.at_level(logging.WARNING):  # no left/right classes: identity, nothing to warn about
        assert dataset_label_set("fasseg_frontal_train").flip_permutation().tolist() == list(range(6))
    assert "flip" not in caplog.text
    ls = get_label_set("fasseg")
    assert ls.classes == ("background", "skin", "hair", "eyes", "nose", "mouth")
    assert ls.palette == tuple(map(tuple, COLORS.astype(int).tolist()))  # the dataset's own colours
    assert ls.flip_pairs == () and ls.flip_permutation().tolist() == list(range(6))
    for split in ("frontal_train", "frontal_test", "multipose_train", "multipose_test"):
        meta = MetadataCatalog.get(f"fasseg_{split}")
        assert meta.label_set == "fasseg" and meta.stuff_classes == list(ls.classes) and meta.flip_pairs == []


# fine class -> FASSEG class (None = ignore), written out by hand for every fine set
_FINE_TO_FASSEG = {
    "background": "background", "skin": "skin", "nose": "nose", "eye_g": "skin", "l_eye": "eyes", "r_eye": "eyes",
    "l_brow": "hair", "r_brow": "hair", "l_ear": "skin", "r_ear": "skin", "mouth": "mouth", "u_lip": "mouth",
    "l_lip": "mouth", "hair": "hair", "hat": "background", "ear_r": "skin", "neck_l": None, "neck": "skin",
    "cloth": "background",
    # LaPa / Helen names
    "left_eyebrow": "hair", "right_eyebrow": "hair", "left_eye": "eyes", "right_eye": "eyes",
    "upper_lip": "mouth", "inner_mouth": "mouth", "lower_lip": "mouth",
}
_FASSEG = ["background", "skin", "hair", "eyes", "nose", "mouth"]


@pytest.mark.parametrize("fine", ["synthetic", "celebamask_hq", "lapa", "helen"])
def test_conversion_into_fasseg(fine):
    src = get_label_set(fine)
    expect = [IGNORE_LABEL if _FINE_TO_FASSEG[c] is None else _FASSEG.index(_FINE_TO_FASSEG[c]) for c in src.classes]
    ids = conversion_ids(fine, "fasseg")
    assert ids.dtype == np.int64 and ids.shape == (src.num_classes,)
    assert ids.tolist() == expect
    assert ids.tolist() == conversion_lut(fine, "fasseg")[: src.num_classes].tolist()
    # a hand-made label map with every class, 255 and an id outside the set
    label = np.array([list(range(src.num_classes)) + [IGNORE_LABEL, src.num_classes]], np.uint8)
    out = convert_labels(label, fine, "fasseg")
    assert out.tolist() == [expect + [IGNORE_LABEL, IGNORE_LABEL]]
    # every FASSEG class is reached from the fine set, and only ignore is outside 0..5
    assert set(expect) - {IGNORE_LABEL} == set(range(6))


def test_conversion_of_a_small_map():
    celeb = get_label_set("celebamask_hq")
    c = celeb.class_id
    label = np.array([[c("hair"), c("l_brow"), c("r_brow"), c("hair")],
                      [c("l_ear"), c("l_eye"), c("r_eye"), c("eye_g")],
                      [c("skin"), c("nose"), c("u_lip"), c("mouth")],
                      [c("neck"), c("neck_l"), c("cloth"), c("hat")]], np.uint8)
    assert convert_labels(label, "celebamask_hq", "fasseg").tolist() == [
        [HAIR, HAIR, HAIR, HAIR], [SKIN, EYES, EYES, SKIN], [SKIN, NOSE, MOUTH, MOUTH], [SKIN, 255, BG, BG]]


def test_sfp_converts_by_part_names():
    sfp = sfp_label_set(["background", "face", "left eye", "Right_Eye", "l_brow", "nose", "upper lip", "mouth",
                         "hair", "eyeglasses", "neck", "necklace", "cloth", "hat", "earring"])
    assert conversion_ids(sfp, "fasseg").tolist() == [BG, SKIN, EYES, EYES, HAIR, NOSE, MOUTH, MOUTH, HAIR, SKIN,
                                                     SKIN, 255, BG, BG, SKIN]
    with pytest.raises(KeyError, match=r"\['earring_l'\] are not known part names"):
        conversion_ids(sfp_label_set(["background", "skin", "earring_l"]), "fasseg")
    # the identity, and no way back from the coarse set
    assert conversion_ids("fasseg", "fasseg").tolist() == list(range(6))
    with pytest.raises(KeyError, match="no conversion"):
        conversion_ids("fasseg", "lapa")


# --------------------------------------------------------------------------- snapping colours
def test_snap_blends_to_a_class_around_the_edge():
    # skin | eyes with a column of 55/45 blends between them
    blend = np.round(0.55 * COLORS[SKIN] + 0.45 * COLORS[EYES])
    rgb = np.zeros((5, 9, 3))
    rgb[:, :4] = COLORS[SKIN]
    rgb[:, 4] = blend
    rgb[:, 5:] = COLORS[EYES]
    ids = snap_label_colors(rgb.astype(np.uint8))
    assert ids[:, :5].tolist() == [[SKIN] * 5] * 5 and (ids[:, 5:] == EYES).all()
    # plain nearest-colour snapping (no class nearby) would call the blend hair
    assert snap_label_colors(np.full((3, 3, 3), blend, np.uint8)).tolist() == [[HAIR] * 3] * 3
    # slightly off colours (noise within 10) keep their class
    noisy = np.clip(rgb + np.random.default_rng(0).integers(-5, 6, rgb.shape), 0, 255).astype(np.uint8)
    assert snap_label_colors(noisy)[:, 5:].tolist() == [[EYES] * 4] * 5


# --------------------------------------------------------------------------- face boxes
def _frontal_label(h=64, w=48):
    """Upright frontal face: hair on top, skin face with ears, neck and shoulders down to the bottom."""
    lab = np.zeros((h, w), np.uint8)
    lab[4:15, 12:37] = HAIR
    lab[12:50, 12:37] = SKIN
    lab[24:33, 9:12] = SKIN  # ears
    lab[24:33, 37:40] = SKIN
    lab[50:h, 18:31] = SKIN  # neck
    lab[56:h, 2:47] = SKIN  # shoulders (below the chin)
    lab[24:27, 16:20] = EYES  # rows 24..26: centroid 25 + 0.5
    lab[24:27, 28:32] = EYES
    lab[28:36, 22:26] = NOSE  # rows 28..35: centroid 31.5 + 0.5
    lab[38:41, 19:29] = MOUTH  # rows 38..40: centroid 39 + 0.5
    return lab


def test_face_box_frontal():
    lab = _frontal_label()
    # chin = 39.5 + 0.6 * (39.5 - 25.5) = 47.9 -> 48; sides: the ears; top: the hair
    assert fasseg_face_box(lab) == [9.0, 4.0, 40.0, 48.0]
    # a speck of hair far above the head (< 1% of the head) does not move the top
    speck = lab.copy()
    speck[0, 40:42] = HAIR
    assert fasseg_face_box(speck) == [9.0, 4.0, 40.0, 48.0]
    # without the eyes: chin = 39.5 + 0.95 * (39.5 - 32) = 46.625 -> 47
    no_eyes = np.where(lab == EYES, SKIN, lab)
    assert fasseg_face_box(no_eyes) == [9.0, 4.0, 40.0, 47.0]
    # without the mouth: chin = 32 + 3.3 * (32 - 25.5) = 53.45 -> 53
    no_mouth = np.where(lab == MOUTH, SKIN, lab)
    assert fasseg_face_box(no_mouth) == [9.0, 4.0, 40.0, 53.0]
    # one part only: the whole head (a warning says so)
    only_mouth = np.where((lab == EYES) | (lab == NOSE), SKIN, lab)
    assert fasseg_face_box(only_mouth) == [2.0, 4.0, 47.0, 64.0]
    assert fasseg_face_box(np.zeros((8, 8), np.uint8)) is None


def test_face_box_profile():
    """Profile facing image left: one eye, the nose at the front edge, hair at the back."""
    lab = np.zeros((60, 50), np.uint8)
    lab[2:30, 14:46] = HAIR
    lab[14:44, 6:30] = SKIN
    lab[44:60, 20:36] = SKIN  # neck to the bottom, further back than the face
    lab[22:25, 10:15] = EYES  # centroid 23 + 0.5
    lab[24:34, 3:8] = NOSE  # sticks out in front of the skin
    lab[36:39, 6:12] = MOUTH  # centroid 37 + 0.5
    # chin = 37.5 + 0.6 * (37.5 - 23.5) = 45.9 -> 46; the neck below does not widen the box
    assert fasseg_face_box(lab) == [3.0, 2.0, 46.0, 46.0]
    # the chin estimate never ends above the lowest part pixel, nor below the image
    low = lab.copy()
    low[56:59, 6:12] = MOUTH
    assert fasseg_face_box(low)[3] == 60.0


# --------------------------------------------------------------------------- converter on fixtures
def _colour_label(ids, weight=0.55):
    """RGB label with anti-aliased vertical edges: a pixel whose right neighbour has another class
    gets ``weight`` of its own colour and the rest of the neighbour's."""
    rgb = COLORS[ids]
    edge = np.zeros(ids.shape, bool)
    edge[:, :-1] = ids[:, :-1] != ids[:, 1:]
    right = np.zeros_like(ids)
    right[:, :-1] = ids[:, 1:]
    rgb[edge] = weight * COLORS[ids[edge]] + (1 - weight) * COLORS[right[edge]]
    return np.round(rgb).astype(np.uint8)


def _profile_label():
    return np.ascontiguousarray(_frontal_label()[:, ::-1][:, 4:44])  # mirrored, cropped


def _save(path, rgb):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path)


def _photo(shape, seed):
    return np.random.default_rng(seed).integers(0, 256, shape + (3,), dtype=np.uint8)


def _release(root, ext=".bmp", v3_test=False):
    """A FASSEG tree: V1 + V2 frontal (2 train, 1 test), V3 train with three pose folders (2 each)."""
    frontal = _frontal_label()
    for version in ("V1", "V2"):
        ids = frontal.copy()
        if version == "V1":  # other labels: less hair
            ids[4:8] = BG
        for part, names in (("Train", ["1", "2"]), ("Test", ["1"])):
            for k, name in enumerate(names):
                _save(root / version / f"{part}_RGB" / f"{name}{ext}", _photo(ids.shape, k))
                _save(root / version / f"{part}_Labels" / f"{name}{ext}", _colour_label(ids))
    (root / "V2" / "Test_RGB" / "JPEG").mkdir()  # release extras the converter must ignore
    (root / "V2" / "Test_RGB" / "JPEG" / "1.jpg").write_bytes(b"not an image")
    (root / "V2" / "Test_RGB" / ".DS_Store").write_bytes(b"\0")
    parts = [("Train", ["-90", "0", "+45"], "personne01")] + ([("Test", ["-30", "+60"], "personne08")] if v3_test else [])
    for part, poses, person in parts:
        for pose in poses:
            ids = _profile_label() if pose != "0" else frontal
            for k in range(2):
                name = f"{person}{k}46+0{pose if pose[0] in '+-' else '+' + pose}"
                _save(root / "V3" / f"{part}_RGB" / pose / f"{name}{ext}", _photo(ids.shape, 10 + k))
                _save(root / "V3" / f"{part}_labels" / pose / f"{name}{ext}", _colour_label(ids))


@pytest.mark.parametrize("ext", [".bmp", ".png"])
def test_convert_release(tmp_path, ext, caplog, monkeypatch):
    src = tmp_path / "FASSEG-repository"
    _release(src, ext)
    with caplog.at_level(logging.WARNING, logger="qanet_d2.data.datasets.fasseg"):
        out = convert_fasseg(str(tmp_path), str(tmp_path / "d2" / "fasseg"), mode="copy")
    assert sorted(out) == ["frontal_test", "frontal_train", "multipose_train"]
    assert "split 'multipose_test' not written" in caplog.text and "Test_RGB not found" in caplog.text

    train = json.load(open(out["frontal_train"]))
    assert train["label_set"] == "fasseg" and train["classes"] == _FASSEG
    assert [v["video_id"] for v in train["videos"]] == ["frontal_train_1", "frontal_train_2"]
    assert train["source"] == str(src / "V2")
    f = train["videos"][0]["frames"][0]
    assert f["file_name"] == "images/frontal_train_1/00000.png" and f["pose"] == 0
    assert (f["height"], f["width"]) == (64, 48)
    assert f["faces"] == [{"bbox": [9.0, 4.0, 40.0, 48.0]}]
    root = tmp_path / "d2" / "fasseg"
    # the photo keeps its pixels (a .bmp becomes a .png); anti-aliased labels snap back to the ids
    assert np.array_equal(cv2.imread(str(root / f["file_name"]))[:, :, ::-1], _photo((64, 48), 0))
    lab = cv2.imread(str(root / f["label_file"]), cv2.IMREAD_UNCHANGED)
    assert lab.dtype == np.uint8 and np.array_equal(lab, _frontal_label())
    # (plain nearest-colour snapping would have turned the skin next to each eye into hair)
    colours = _colour_label(_frontal_label())
    nearest = ((colours[:, :, None].astype(float) - COLORS) ** 2).sum(-1).argmin(-1)
    assert (nearest[_frontal_label() == SKIN] == HAIR).sum() == 6  # left of each eye row

    multi = json.load(open(out["multipose_train"]))
    poses = {v["video_id"]: v["frames"][0]["pose"] for v in multi["videos"]}
    assert poses == {"multipose_train_personne01046+0+0": 0, "multipose_train_personne01146+0+0": 0,
                     "multipose_train_personne01046+0+45": 45, "multipose_train_personne01146+0+45": 45,
                     "multipose_train_personne01046+0-90": -90, "multipose_train_personne01146+0-90": -90}
    prof = next(v for v in multi["videos"] if v["frames"][0]["pose"] == -90)["frames"][0]
    assert np.array_equal(cv2.imread(str(root / prof["label_file"]), cv2.IMREAD_UNCHANGED), _profile_label())
    assert prof["faces"] == [{"bbox": [4.0, 4.0, 35.0, 48.0]}]  # the frontal box, mirrored and cropped

    # registered datasets read these files, pose included
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path / "d2"))
    dicts = DatasetCatalog.get("fasseg_multipose_train")
    assert len(dicts) == 6 and sorted({d["pose"] for d in dicts}) == [-90, 0, 45]
    for d in dicts:
        assert d["annotations"][0]["bbox"] == ([9.0, 4.0, 40.0, 48.0] if d["pose"] == 0 else [4.0, 4.0, 35.0, 48.0])
    assert len(DatasetCatalog.get("fasseg_frontal_test")) == 1


def test_multipose_dev_splits(tmp_path, monkeypatch, caplog):
    """multipose_train split by person: 06-07 held out, the rest for training, same files."""
    src = tmp_path / "FASSEG-repository"
    _release(src, ".png")
    for folder in (src / "V3" / "Train_RGB", src / "V3" / "Train_labels"):  # person 06 next to 01
        for f in list(folder.rglob("personne01*")):
            shutil.copy(f, f.with_name(f.name.replace("personne01", "personne06")))
    out = convert_fasseg(str(tmp_path), str(tmp_path / "d2" / "fasseg"), mode="copy")
    ids = {s: [v["video_id"] for v in json.load(open(out[s]))["videos"]] for s in MULTIPOSE_DEV_SPLITS}
    assert len(ids["multipose_dev_train"]) == 6 and len(ids["multipose_dev_val"]) == 6
    assert {multipose_person(i) for i in ids["multipose_dev_train"]} == {"01"}
    assert {multipose_person(i) for i in ids["multipose_dev_val"]} == {"06"}
    all_ids = [v["video_id"] for v in json.load(open(out["multipose_train"]))["videos"]]
    assert sorted(ids["multipose_dev_train"] + ids["multipose_dev_val"]) == sorted(all_ids)
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path / "d2"))
    val = DatasetCatalog.get("fasseg_multipose_dev_val")
    assert sorted(d["pose"] for d in val) == [-90, -90, 0, 0, 45, 45]
    assert all(os.path.isfile(d["file_name"]) and "multipose_train_personne06" in d["file_name"] for d in val)
    assert MetadataCatalog.get("fasseg_multipose_dev_train").label_set == "fasseg"
    # only one person: no dev splits, and a warning saying why
    assert multipose_person("personne01140+0-90") == "01" and multipose_person("x") is None
    with caplog.at_level(logging.WARNING, logger="qanet_d2.data.datasets.fasseg"):
        _release(tmp_path / "one", ".png")
        out = convert_fasseg(str(tmp_path / "one"), str(tmp_path / "one_out"), mode="copy")
    assert not set(MULTIPOSE_DEV_SPLITS) & set(out) and "dev splits not written" in caplog.text


def test_convert_v1_and_multipose_test(tmp_path, caplog):
    _release(tmp_path, ".png", v3_test=True)
    # the release labels only some test poses: an image without a label is left out
    (tmp_path / "V3" / "Test_labels" / "+60" / "personne08146+0+60.png").unlink()
    with caplog.at_level(logging.WARNING, logger="qanet_d2.data.datasets.fasseg"):
        out = convert_fasseg(str(tmp_path), str(tmp_path / "out"), frontal_version="V1", workers=2)
    assert sorted(out) == ["frontal_test", "frontal_train", "multipose_test", "multipose_train"]
    assert "1 file(s) without their image or label are left out" in caplog.text
    test = json.load(open(out["multipose_test"]))
    assert [(v["video_id"], v["frames"][0]["pose"]) for v in test["videos"]] == [
        ("multipose_test_personne08046+0+60", 60), ("multipose_test_personne08046+0-30", -30),
        ("multipose_test_personne08146+0-30", -30)]
    # V1's labels (less hair) are the ones converted
    frame = json.load(open(out["frontal_train"]))["videos"][0]["frames"][0]
    lab = cv2.imread(str(tmp_path / "out" / frame["label_file"]), cv2.IMREAD_UNCHANGED)
    assert (lab == HAIR).sum() == (_frontal_label()[8:12] == HAIR).sum() > 0
    # png photos are linked, not re-encoded
    assert os.path.samefile(tmp_path / "out" / frame["file_name"], tmp_path / "V1" / "Train_RGB" / "1.png")


def test_convert_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="cannot find FASSEG's V1, V2 or V3 folder"):
        convert_fasseg(str(tmp_path), str(tmp_path / "out"))
    (tmp_path / "V3").mkdir()
    with pytest.raises(FileNotFoundError, match="no FASSEG split found"):
        convert_fasseg(str(tmp_path), str(tmp_path / "out"))
    _release(tmp_path, ".png")
    bad = tmp_path / "V2" / "Test_Labels" / "1.png"
    Image.fromarray(_frontal_label()).save(bad)  # a grey id map instead of colours
    with pytest.raises(DataReadError, match="Test_Labels/1.png: FASSEG labels are colour images"):
        convert_fasseg(str(tmp_path), str(tmp_path / "out"))
    _save(bad, _colour_label(_frontal_label())[:, :40])
    with pytest.raises(ValueError, match=r"Test_Labels/1.png is 40x64 \(WxH\) but its image .*Test_RGB/1.png is 48x64"):
        convert_fasseg(str(tmp_path), str(tmp_path / "out"))
    with pytest.raises(ValueError, match="frontal_version"):
        convert_fasseg(str(tmp_path), str(tmp_path / "out"), frontal_version="V3")


def test_pose_in_json_is_checked(tmp_path):
    from qanet_d2.data.video_format import DatasetFormatError, make_frame_record, read_face_video_json, write_face_video_json

    frame = {**make_frame_record(0, "images/a/00000.png", 4, 4), "pose": "left"}
    path = write_face_video_json(str(tmp_path / "x.json"), "fasseg", [{"video_id": "a", "frames": [frame]}])
    with pytest.raises(DatasetFormatError, match=r"x.json: .*frames\[0\].*pose must be a number"):
        read_face_video_json(path)


def test_prepare_fasseg_cli(tmp_path, capsys):
    mod = load_script("datasets/prepare_fasseg.py", "prepare_fasseg")
    assert mod.main(["--src", str(tmp_path), "--dst", str(tmp_path / "out")]) == 1
    assert "prepare_fasseg.py: error: cannot find FASSEG's" in capsys.readouterr().err
    _release(tmp_path / "src")
    assert mod.main(["--src", str(tmp_path / "src"), "--dst", str(tmp_path / "out"), "--workers", "1"]) == 0
    assert capsys.readouterr().out.split("\n")[0] == f"frontal_train: {tmp_path / 'out' / 'frontal_train.json'}"


# --------------------------------------------------------------------------- the real data
@pytest.mark.skipif(not (REAL / "V2").is_dir(), reason=f"no FASSEG copy at {REAL}")
def test_real_fasseg(tmp_path):
    out = convert_fasseg(str(REAL), str(tmp_path / "fasseg"), workers=2)
    counts = {s: len(json.load(open(p))["videos"]) for s, p in out.items()}
    assert counts == {"frontal_train": 20, "frontal_test": 50, "multipose_train": 182,
                      "multipose_dev_train": 130, "multipose_dev_val": 52}
    val = json.load(open(out["multipose_dev_val"]))["videos"]
    assert sorted({multipose_person(v["video_id"]) for v in val}) == ["06", "07"]
    assert sorted({v["frames"][0]["pose"] for v in val}) == list(range(-90, 91, 15))  # every pose held out
    out = {s: p for s, p in out.items() if s not in MULTIPOSE_DEV_SPLITS}
    hist = np.zeros(6)
    gaps, heights = [], []
    poses = {}
    for split, path in out.items():
        for video in json.load(open(path))["videos"]:
            f = video["frames"][0]
            lab = cv2.imread(str(tmp_path / "fasseg" / f["label_file"]), cv2.IMREAD_UNCHANGED)
            assert lab.shape == (f["height"], f["width"]) and lab.max() <= MOUTH
            hist += np.bincount(lab.ravel(), minlength=6)
            x0, y0, x1, y1 = f["faces"][0]["bbox"]
            assert 0 <= x0 < x1 <= f["width"] and 0 <= y0 < y1 <= f["height"]
            # the box ends at the chin: below the mouth, above the neck's end at the image bottom
            mouth_rows = np.flatnonzero((lab == MOUTH).any(axis=1))
            assert y1 > mouth_rows[-1]
            gaps.append(f["height"] - y1)
            heights.append((y1 - y0) / f["height"])
            poses[f["pose"]] = poses.get(f["pose"], 0) + 1
    share = hist / hist.sum()
    # background, skin, hair, eyes, nose, mouth: measured 19.1 / 42.9 / 33.9 / 0.85 / 2.2 / 1.0 %
    lo = [0.10, 0.35, 0.25, 0.005, 0.015, 0.006]
    hi = [0.30, 0.55, 0.42, 0.015, 0.035, 0.020]
    assert all(a <= s <= b for a, s, b in zip(lo, share, hi)), share
    assert poses == {**{p: 14 for p in range(-90, 91, 15) if p}, 0: 70 + 14}
    gaps = np.array(gaps)
    assert (gaps > 0).mean() >= 0.95 and np.median(gaps) >= 15  # neck below the box
    assert 0.8 <= np.median(heights) <= 0.97
