import json
import shutil

import cv2
import pytest

import qanet_d2  # noqa: F401
from qanet_d2.data import register_face_video_dataset
from qanet_d2.data.checks import check_dataset, check_json, check_label_set
from qanet_d2.structures.label_sets import LabelSet, get_label_set
from qanet_d2.data.synthetic import generate_preset

from conftest import load_script


def _tool():
    return load_script("tools/check_dataset.py", "check_dataset_tool")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("check") / "face_synth_tiny"
    generate_preset("tiny", root=str(root))
    return root


def _copy(tiny, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(tiny, dst)
    data = json.load(open(dst / "train.json"))
    return dst, data


def test_clean_tiny_set_passes(tiny, capsys):
    name = "test_check_clean_train"
    register_face_video_dataset(name, str(tiny / "train.json"), str(tiny), "synthetic")
    report = check_dataset(name)
    assert report.ok, [str(p) for p in report.problems]
    assert report.num_frames == 9
    assert _tool().main([name, str(tiny / "val.json"), "--workers", "2"]) == 0
    out = capsys.readouterr().out
    assert out.strip().splitlines()[-1] == "check_dataset: 2 dataset(s), 15 frames, 0 problem(s)"


def test_each_corruption_is_reported_with_its_file(tiny, tmp_path, capsys):
    root, data = _copy(tiny, tmp_path)
    frames = [f for v in data["videos"] for f in v["frames"]]
    # 1. truncated image
    img = root / frames[0]["file_name"]
    raw = img.read_bytes()
    img.write_bytes(raw[: len(raw) // 3])
    # 2. missing label
    (root / frames[1]["label_file"]).unlink()
    # 3. illegal label values
    lab_file = root / frames[2]["label_file"]
    lab = cv2.imread(str(lab_file), cv2.IMREAD_UNCHANGED)
    lab[0, 0], lab[0, 1] = 17, 99
    cv2.imwrite(str(lab_file), lab)
    # 4. label size differs from the image
    small = root / frames[3]["label_file"]
    cv2.imwrite(str(small), cv2.imread(str(small), cv2.IMREAD_UNCHANGED)[:100])
    # 5. box outside the image, 6. image size in the JSON wrong
    frames[4]["faces"][0] = {"bbox": [150.0, 10.0, 170.0, 30.0]}
    frames[5]["width"] = 161
    # 7. face index without a face box, 8. missing face-instance map
    inst_file = root / frames[6]["instance_file"]
    inst = cv2.imread(str(inst_file), cv2.IMREAD_UNCHANGED)
    inst[0, 0] = len(frames[6]["faces"]) + 1
    cv2.imwrite(str(inst_file), inst)
    (root / frames[7]["instance_file"]).unlink()
    (root / "train.json").write_text(json.dumps(data))

    name = "test_check_corrupt_train"
    register_face_video_dataset(name, str(root / "train.json"), str(root), "synthetic")
    report = check_dataset(name)
    text = "\n".join(str(p) for p in report.problems)
    expected = [
        (frames[0]["file_name"], "image cannot be read"),
        (frames[1]["label_file"], "label file is missing"),
        (frames[2]["label_file"], "illegal label values [17, 99]"),
        (frames[3]["label_file"], "label map is 160x100 (WxH) but its image"),
        (frames[4]["file_name"], "face box 0 [150.0, 10.0, 170.0, 30.0] is outside the 160x120 image"),
        (frames[5]["file_name"], "image is 160x120 (WxH) but the JSON says 161x120"),
        (frames[6]["instance_file"], f"face index {len(frames[6]['faces']) + 1} but the frame has "
                                     f"{len(frames[6]['faces'])} face box(es)"),
        (frames[7]["instance_file"], "face-instance file is missing"),
    ]
    for file, msg in expected:
        assert any(str(root / file) == p.file and msg in p.message for p in report.problems), (file, msg, text)
    assert len(report.problems) == len(expected), text

    assert _tool().main([str(root / "train.json"), "--workers", "1"]) == 1
    out = capsys.readouterr().out
    for file, msg in expected:
        assert f"{root / file}: " in out and msg in out
    assert out.strip().splitlines()[-1] == f"check_dataset: 1 dataset(s), 9 frames, {len(expected)} problem(s)"


def test_unloadable_json_and_unknown_dataset(tmp_path):
    bad = tmp_path / "train.json"
    bad.write_text('{"label_set": "synthetic"}')
    report = check_json(str(bad))
    assert not report.ok and "train.json: missing key 'videos'" in report.problems[0].message
    assert not check_dataset("no_such_dataset_registered").ok


def test_flip_pair_consistency():
    ls = get_label_set("lapa")
    assert check_label_set(ls) == []
    probs = check_label_set(ls, flip_pairs=[(2, 3)])
    assert any("differ from the label set" in p.message for p in probs)
    # a set whose pairs do not follow its left/right names
    odd = LabelSet("odd", ("background", "l_eye", "r_eye", "nose"), ((0, 0, 0), (1, 1, 1), (2, 2, 2), (3, 3, 3)),
                   ((1, 3),))
    msgs = [p.message for p in check_label_set(odd)]
    assert any("'l_eye' (1) and 'r_eye' (2) are named as a left/right pair" in m for m in msgs)
    assert any("flip pair (1, 3)" in m and "does not pair left/right names" in m for m in msgs)
