import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

import qanet_d2  # noqa: F401
from qanet_d2.structures.label_sets import get_label_set
from qanet_d2.data.synthetic import (
    FACE_BOX_UNITS,
    MAX_ANGLE,
    MIN_FACE_HEIGHT,
    PRESETS,
    FacePose,
    SyntheticVideo,
    draw_face,
    generate_preset,
    generate_synthetic_dataset,
    sample_face_style,
)

from conftest import load_script

REPO = Path(__file__).resolve().parents[1]
SYN = get_label_set("synthetic")
C = {n: i for i, n in enumerate(SYN.classes)}
PAIRS = [("l_eye", "r_eye"), ("l_brow", "r_brow"), ("l_ear", "r_ear")]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth") / "face_synth_tiny"
    generate_preset("tiny", root=str(root))
    return root


def _frames(root):
    for split in ("train", "val"):
        for v in json.load(open(root / f"{split}.json"))["videos"]:
            for f in v["frames"]:
                yield split, v["video_id"], f


def test_layout_and_presets(tiny):
    assert PRESETS["default"] == PRESETS["quickstart"]
    q = PRESETS["quickstart"]
    assert (q["num_train_videos"], q["num_val_videos"], q["frames"], q["size"]) == (40, 10, 10, (320, 240))
    params = json.load(open(tiny / "params.json"))["params"]
    assert params["num_train_videos"] == 3 and params["frames"] == 3 and (params["width"], params["height"]) == (160, 120)
    data = json.load(open(tiny / "train.json"))
    assert data["label_set"] == "synthetic" and data["classes"] == list(SYN.classes)
    frames = list(_frames(tiny))
    assert len(frames) == (3 + 2) * 3
    for _, vid, f in frames:
        assert f["file_name"] == f"images/{vid}/{f['frame_index']:05d}.jpg"
        assert f["instance_file"] == f"instances/{vid}/{f['frame_index']:05d}.png"
        assert (tiny / f["file_name"]).is_file() and (tiny / f["label_file"]).is_file()
        assert (tiny / f["instance_file"]).is_file()
        assert (f["height"], f["width"]) == (120, 160)


def test_determinism_same_seed_same_bytes(tiny, tmp_path):
    again = generate_synthetic_dataset(str(tmp_path / "again"), 3, 2, 3, (160, 120), seed=0, workers=2)
    for _, _, f in _frames(tiny):
        assert (tiny / f["label_file"]).read_bytes() == (Path(again["root"]) / f["label_file"]).read_bytes()
        assert (tiny / f["instance_file"]).read_bytes() == (Path(again["root"]) / f["instance_file"]).read_bytes()
        assert (tiny / f["file_name"]).read_bytes() == (Path(again["root"]) / f["file_name"]).read_bytes()
    assert (tiny / "train.json").read_bytes() == Path(again["train"]).read_bytes()
    other = generate_synthetic_dataset(str(tmp_path / "other"), 1, 0, 1, (160, 120), seed=1)
    f0 = "labels/train_0000/00000.png"
    assert (tiny / f0).read_bytes() != (Path(other["root"]) / f0).read_bytes()


def test_every_class_present_and_labels_legal(tiny):
    seen = np.zeros(256, bool)
    for _, _, f in _frames(tiny):
        lab = cv2.imread(str(tiny / f["label_file"]), cv2.IMREAD_UNCHANGED)
        assert lab.dtype == np.uint8 and lab.shape == (120, 160)
        seen[np.unique(lab)] = True
    assert np.flatnonzero(seen).tolist() == list(range(SYN.num_classes))


def test_face_counts_and_boxes_within_spec(tiny):
    for split, vid, f in _frames(tiny):
        faces = f["faces"]
        assert 1 <= len(faces) <= 4
        lab = cv2.imread(str(tiny / f["label_file"]), cv2.IMREAD_UNCHANGED)
        for face in faces:
            x0, y0, x1, y1 = face["bbox"]
            assert 0 <= x0 < x1 <= 160 and 0 <= y0 < y1 <= 120
            # a box's border rows/columns touch labelled face pixels (tight box)
            inside = lab[int(y0):int(y1), int(x0):int(x1)]
            face_px = ~np.isin(inside, [0, C["neck"], C["cloth"]])
            assert face_px[0].any() and face_px[-1].any() and face_px[:, 0].any() and face_px[:, -1].any()
    # sizes and angles of the generated people (unoccluded face-box height, in pixels)
    heights, angles = [], []
    for split_id, n in ((0, 3), (1, 2)):
        for i in range(n):
            video = SyntheticVideo([0, split_id, i], 160, 120, 3)
            assert 1 <= len(video.people) <= 4
            for p in video.people:
                heights += (p.scale * FACE_BOX_UNITS).tolist()
                angles += p.angle.tolist()
    assert min(heights) >= MIN_FACE_HEIGHT - 1e-6 and max(heights) <= 0.95 * 120 + 1e-6
    assert max(abs(a) for a in angles) <= MAX_ANGLE


def test_instance_maps_give_each_boxed_face_all_its_pixels(tiny):
    """Instance k + 1 = the person of box k: every pixel of it is labelled, the box is the
    bounding box of its pixels without neck and cloth, and no labelled face pixel of a boxed
    person is left out."""
    n_faces = 0
    for split, vid, f in _frames(tiny):
        lab = cv2.imread(str(tiny / f["label_file"]), cv2.IMREAD_UNCHANGED)
        inst = cv2.imread(str(tiny / f["instance_file"]), cv2.IMREAD_UNCHANGED)
        assert inst.dtype == np.uint8 and inst.shape == lab.shape
        assert set(np.unique(inst).tolist()) <= set(range(len(f["faces"]) + 1))
        assert (lab[inst > 0] > 0).all()
        for k, face in enumerate(f["faces"]):
            own = (inst == k + 1) & ~np.isin(lab, [C["neck"], C["cloth"]])
            ys, xs = np.nonzero(own)
            assert [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1] == face["bbox"]
            n_faces += 1
    assert n_faces > 15
    # the same map as the renderer's owner map, neck and cloth included
    video = SyntheticVideo([0, 0, 0], 160, 120, 3, force_glasses=True, force_open_mouth=True)
    fr = video.render(1)
    inst = fr.instance_map()
    for k, person in enumerate(fr.box_owner):
        assert ((inst == k + 1) == (fr.owner == person)).all()
        assert np.isin(fr.label[inst == k + 1], [C["neck"], C["cloth"]]).any()


def _centroid_x(mask):
    return np.nonzero(mask)[1].mean()


def test_left_right_parts_are_mirrored_by_position():
    """For an upright frontal face, l_* (the person's left) lies on the IMAGE RIGHT, and the two
    sides of each pair have the same shape (mirror images)."""
    style = sample_face_style(np.random.default_rng(3))
    style.glasses = style.hat = False
    style.hair_style = "short"  # long hair may cover the ears
    style.fringe, style.fringe_tilt = -0.75, 0.0  # a side-parted fringe may cover one brow
    h, w = 200, 200
    image = np.zeros((h, w, 3), np.uint8)
    label = np.zeros((h, w), np.uint8)
    owner = np.full((h, w), -1, np.int16)
    draw_face(image, label, owner, 0, style, FacePose(cx=100.0, cy=90.0, scale=50.0))
    for left, right in PAIRS:
        lm, rm = label == C[left], label == C[right]
        assert lm.sum() > 20 and _centroid_x(lm) > 100 > _centroid_x(rm), left
        # mirror images about the face's vertical axis (OpenCV rasterises with pixel centres at
        # integer coordinates, so the axis is column index 100)
        assert abs(int(lm.sum()) - int(rm.sum())) <= 0.05 * lm.sum(), left
        mirrored = np.roll(rm[:, ::-1], 1, axis=1)  # column x -> 200 - x
        assert (lm != mirrored).sum() <= max(4, 0.1 * lm.sum()), left  # rasterisation at edges
    # same colour statistics on both sides of the pair
    for left, right in PAIRS[:2]:
        a = image[label == C[left]].mean(0)
        b = image[label == C[right]].mean(0)
        assert np.abs(a - b).max() < 12, left


def test_left_right_hold_through_rotation_in_the_dataset():
    """In every generated frame (rotation within +-40 degrees), each person's l_eye lies on the
    person's left: its centroid projected on the face's x axis exceeds the r_eye's."""
    checked = 0
    for i in range(4):
        video = SyntheticVideo([5, 0, i], 320, 240, 3)
        for t in range(3):
            fr = video.render(t)
            for k, pose in enumerate(fr.poses):
                a = np.deg2rad(pose.angle)
                axis = np.array([np.cos(a), np.sin(a)])
                for left, right in PAIRS[:2]:
                    lm = (fr.label == C[left]) & (fr.owner == k)
                    rm = (fr.label == C[right]) & (fr.owner == k)
                    if lm.sum() < 4 or rm.sum() < 4:
                        continue  # occluded or cut off
                    pl = np.array([np.nonzero(lm)[1].mean(), np.nonzero(lm)[0].mean()])
                    pr = np.array([np.nonzero(rm)[1].mean(), np.nonzero(rm)[0].mean()])
                    assert (pl - pr) @ axis > 0, (i, t, k, left)
                    checked += 1
    assert checked > 20


def test_idempotent_and_safe(tmp_path):
    root = tmp_path / "fs"
    paths = generate_synthetic_dataset(str(root), 1, 1, 1, (64, 48), seed=2)
    mtime = os.path.getmtime(paths["train"])
    assert generate_synthetic_dataset(str(root), 1, 1, 1, (64, 48), seed=2) == paths
    assert os.path.getmtime(paths["train"]) == mtime  # untouched
    with pytest.raises(ValueError, match="other parameters"):
        generate_synthetic_dataset(str(root), 1, 1, 2, (64, 48), seed=2)
    generate_synthetic_dataset(str(root), 1, 1, 2, (64, 48), seed=2, force=True)
    assert json.load(open(root / "params.json"))["params"]["frames"] == 2
    assert len(os.listdir(root / "images" / "train_0000")) == 2
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("x")
    with pytest.raises(ValueError, match="refusing"):
        generate_synthetic_dataset(str(foreign), 1, 0, 1, (64, 48), force=True)
    assert (foreign / "keep.txt").exists()
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p]


def test_prepare_synthetic_cli(tmp_path, capsys, monkeypatch):
    mod = load_script("datasets/prepare_synthetic.py", "prepare_synthetic")
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    args = ["--preset", "tiny", "--num-train-videos", "1", "--num-val-videos", "1", "--frames", "2",
            "--size", "96x64", "--seed", "4", "--workers", "1"]
    assert mod.main(args) == 0
    assert "generated in" in capsys.readouterr().out
    root = tmp_path / "face_synth_tiny"
    p = json.load(open(root / "params.json"))["params"]
    assert (p["num_train_videos"], p["frames"], p["width"], p["height"], p["seed"]) == (1, 2, 96, 64, 4)
    assert mod.main(args) == 0
    assert "already present with these parameters" in capsys.readouterr().out
    assert mod.main(args[:-4] + ["--seed", "5", "--workers", "1"]) == 2  # other params without --force
    assert "--force" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        mod.main(["--size", "96by64"])


def test_synthetic_generator_imported_only_when_used():
    code = (
        "import sys, qanet_d2, qanet_d2.data\n"
        "assert not [m for m in sys.modules if m.startswith('qanet_d2.data.synthetic')], 'eager'\n"
        "from qanet_d2.data import generate_preset, generate_synthetic_dataset\n"
        "assert generate_preset.__module__ == 'qanet_d2.data.synthetic.dataset'\n"
        "assert 'qanet_d2.data.synthetic' in sys.modules\n"
    )
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", code], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
