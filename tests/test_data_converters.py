import json
import os

import cv2
import numpy as np
import pytest

import qanet_d2  # noqa: F401
from detectron2.data import DatasetCatalog, MetadataCatalog
from qanet_d2.data import load_face_video_json
from qanet_d2.data.checks import check_json
from qanet_d2.data.datasets import convert_celebamask_hq, convert_helen, convert_lapa, convert_sfp
from qanet_d2.structures.label_sets import get_label_set

from conftest import load_script


def _img(path, h, w, seed=0):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    cv2.imwrite(str(path), np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8))


def _face_label(h, w, ids, seed=0):
    """A one-face label: skin block with parts inside, hair on top."""
    lab = np.zeros((h, w), np.uint8)
    lab[h // 4:3 * h // 4, w // 4:3 * w // 4] = ids[0]
    for k, v in enumerate(ids[1:]):
        lab[h // 4 + 2 + k, w // 4 + 2:w // 4 + 5] = v
    return lab


def _write(path, arr):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    assert cv2.imwrite(str(path), arr)


def _load(json_file):
    return load_face_video_json(str(json_file), os.path.dirname(str(json_file)))


# --------------------------------------------------------------------------- LaPa
def _lapa_release(src):
    sizes = {"train": [(30, 40), (24, 24)], "val": [(20, 20)], "test": [(32, 16)]}
    for split, shapes in sizes.items():
        for i, (h, w) in enumerate(shapes):
            name = f"{split}_{i}"
            _img(src / "LaPa" / split / "images" / f"{name}.jpg", h, w, i)
            _write(src / "LaPa" / split / "labels" / f"{name}.png", _face_label(h, w, [1, 2, 3, 4, 5, 10]))
            (src / "LaPa" / split / "landmarks").mkdir(parents=True, exist_ok=True)
            (src / "LaPa" / split / "landmarks" / f"{name}.txt").write_text("106\n")


def test_lapa(tmp_path):
    _lapa_release(tmp_path / "src")
    out = convert_lapa(str(tmp_path / "src"), str(tmp_path / "lapa"), workers=1)
    assert sorted(out) == ["test", "train", "val"]
    dicts = _load(out["train"])
    assert [d["video_id"] for d in dicts] == ["train_0", "train_1"]
    d = dicts[0]
    assert d["frame_index"] == 0 and (d["height"], d["width"]) == (30, 40)
    assert d["file_name"].endswith("images/train_0/00000.jpg") and os.path.isfile(d["file_name"])
    lab = cv2.imread(d["sem_seg_file_name"], cv2.IMREAD_UNCHANGED)
    assert np.array_equal(lab, _face_label(30, 40, [1, 2, 3, 4, 5, 10]))
    assert d["annotations"][0]["bbox"] == [10.0, 7.0, 30.0, 22.0]
    assert json.load(open(out["train"]))["label_set"] == "lapa"
    assert check_json(out["val"]).ok
    # worker processes give the same result
    out2 = convert_lapa(str(tmp_path / "src" / "LaPa"), str(tmp_path / "lapa2"), workers=2, mode="symlink")
    strip = lambda p: {k: v for k, v in json.load(open(p)).items() if k != "source"}  # noqa: E731
    assert strip(out2["train"]) == strip(out["train"])
    assert os.path.islink(tmp_path / "lapa2" / "images" / "train_0" / "00000.jpg")


def test_lapa_errors_name_the_file(tmp_path):
    _lapa_release(tmp_path / "src")
    bad = tmp_path / "src" / "LaPa" / "val" / "labels" / "val_0.png"
    _write(bad, np.full((20, 20), 11, np.uint8))
    with pytest.raises(ValueError, match=r"val_0.png: label values \[11\]"):
        convert_lapa(str(tmp_path / "src"), str(tmp_path / "out"))
    bad.unlink()
    with pytest.raises(FileNotFoundError, match="val_0.jpg"):
        convert_lapa(str(tmp_path / "src"), str(tmp_path / "out"))
    with pytest.raises(FileNotFoundError, match="expected layout"):
        convert_lapa(str(tmp_path / "nowhere"), str(tmp_path / "out"))


# --------------------------------------------------------------------------- Helen
def test_helen_with_val_split(tmp_path):
    base = tmp_path / "helenstar_release"
    for split, n in (("train", 10), ("test", 2)):
        for i in range(n):
            _img(base / split / f"{split}{i}_image.jpg", 24, 20, i)
            _write(base / split / f"{split}{i}_label.png", _face_label(24, 20, [1, 6, 10]))
            _img(base / split / f"{split}{i}_viz.jpg", 24, 20, i)  # ignored
    out = convert_helen(str(tmp_path), str(tmp_path / "helen"), val_fraction=0.2, mode="copy")
    train, val, test = (_load(out[s]) for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (8, 2, 2)
    names = {d["video_id"] for d in train} | {d["video_id"] for d in val}
    assert names == {f"train{i}" for i in range(10)}
    lab = cv2.imread(test[0]["sem_seg_file_name"], cv2.IMREAD_UNCHANGED)
    assert set(np.unique(lab)) == {0, 1, 6, 10}
    assert json.load(open(out["test"]))["label_set"] == "helen"
    # same seed, same val images; no val.json with val_fraction 0
    again = convert_helen(str(base), str(tmp_path / "helen2"), val_fraction=0.2)
    assert [d["video_id"] for d in _load(again["val"])] == [d["video_id"] for d in val]
    assert "val" not in convert_helen(str(base), str(tmp_path / "helen3"), val_fraction=0.0)


# --------------------------------------------------------------------------- CelebAMask-HQ
def _celeb_release(src, n=3, img_size=64, mask_size=32):
    base = src / "CelebAMask-HQ"
    for idx in range(n):
        _img(base / "CelebA-HQ-img" / f"{idx}.jpg", img_size, img_size, idx)
        masks = base / "CelebAMask-HQ-mask-anno" / str(idx // 2000)
        skin = np.zeros((mask_size, mask_size), np.uint8)
        skin[8:24, 8:24] = 255
        hair = np.zeros_like(skin)
        hair[4:12, 6:26] = 255  # overlaps skin: hair (later in the order) wins
        l_eye = np.zeros_like(skin)
        l_eye[14:16, 18:21] = 255
        cloth = np.zeros_like(skin)
        cloth[28:, :] = 255
        for part, m in (("skin", skin), ("hair", hair), ("l_eye", l_eye), ("cloth", cloth)):
            _write(masks / f"{idx:05d}_{part}.png", m)
    (base / "CelebA-HQ-to-CelebA-mapping.txt").write_text(
        "idx         orig_idx  orig_file\n" + "".join(f"{i}  {100 + i}  {100 + i:06d}.jpg\n" for i in range(n)))
    parts = ["000100.jpg 0", "000101.jpg 1", "000102.jpg 2", "000999.jpg 0"]
    (src / "list_eval_partition.txt").write_text("\n".join(parts) + "\n")
    return base


def test_celebamask_hq_merge_split_resize(tmp_path):
    _celeb_release(tmp_path / "src")
    with pytest.raises(FileNotFoundError, match="list_eval_partition.txt"):
        convert_celebamask_hq(str(tmp_path / "src"), str(tmp_path / "out"), image_size=32)
    out = convert_celebamask_hq(str(tmp_path / "src"), str(tmp_path / "celeb"),
                                partition_file=str(tmp_path / "src" / "list_eval_partition.txt"), image_size=32)
    assert {s: [d["video_id"] for d in _load(p)] for s, p in out.items()} == {"train": ["0"], "val": ["1"], "test": ["2"]}
    d = _load(out["train"])[0]
    assert (d["height"], d["width"]) == (32, 32)
    assert cv2.imread(d["file_name"]).shape == (32, 32, 3)  # image resized to the masks
    lab = cv2.imread(d["sem_seg_file_name"], cv2.IMREAD_UNCHANGED)
    ls = get_label_set("celebamask_hq")
    assert lab[10, 10] == ls.class_id("hair") and lab[20, 10] == ls.class_id("skin")
    assert lab[15, 19] == ls.class_id("l_eye") and lab[30, 0] == ls.class_id("cloth") and lab[0, 0] == 0
    assert d["annotations"][0]["bbox"] == [6.0, 4.0, 26.0, 24.0]  # cloth excluded from the face box
    # keeping the original resolution upsamples the masks (nearest)
    out64 = convert_celebamask_hq(str(tmp_path / "src"), str(tmp_path / "celeb64"),
                                  partition_file=str(tmp_path / "src" / "list_eval_partition.txt"), image_size=64)
    d64 = _load(out64["val"])[0]
    lab64 = cv2.imread(d64["sem_seg_file_name"], cv2.IMREAD_UNCHANGED)
    assert lab64.shape == (64, 64) and lab64[30, 38] == ls.class_id("l_eye")
    assert check_json(out64["val"]).ok


# --------------------------------------------------------------------------- SFP
SFP_CLASSES = ["background", "skin", "nose", "eyeglasses", "left_eye", "right_eye", "left_brow", "right_brow",
               "left_ear", "right_ear", "mouth", "upper_lip", "lower_lip", "hair", "hat", "earring", "neck", "cloth"]


def _sfp_release(src, rgb_labels=False):
    palette = [[(i * 37) % 256, (i * 91) % 256, (i * 53) % 256] for i in range(len(SFP_CLASSES))]
    cats = [{"id": i, "name": n, "color": palette[i]} for i, n in enumerate(SFP_CLASSES)]
    (src).mkdir(parents=True, exist_ok=True)
    (src / "categories.json").write_text(json.dumps({"categories": cats}))
    for split in ("train", "val", "test"):
        for v in range(2):
            for frame in ("1", "2", "10"):
                _img(src / split / "images" / f"video{v}" / f"{frame}.jpg", 40, 60, int(frame))
                if split == "test":
                    continue
                lab = np.zeros((40, 60), np.uint8)
                lab[5:20, 5:20] = 1
                lab[8, 8:11] = 4
                lab[8, 13:16] = 5
                lab[20:30, 8:17] = 16  # neck joins the two components only if not excluded
                lab[5:20, 35:50] = 1  # a second face
                lab[20:30, 17:40] = 17
                if rgb_labels:
                    rgb = np.array(palette, np.uint8)[lab][:, :, ::-1]
                    _write(src / split / "labels" / f"video{v}" / f"{frame}.png", rgb)
                else:
                    _write(src / split / "labels" / f"video{v}" / f"{frame}.png", lab)
    return palette


def test_sfp(tmp_path, monkeypatch):
    _sfp_release(tmp_path / "src")
    out = convert_sfp(str(tmp_path / "src"), str(tmp_path / "d2" / "sfp"))
    assert sorted(out) == ["test", "train", "val"]
    data = json.load(open(out["train"]))
    assert data["label_set"] == "sfp" and data["classes"] == SFP_CLASSES
    frames = data["videos"][0]["frames"]
    assert [f["file_name"] for f in frames] == ["images/video0/1.jpg", "images/video0/2.jpg", "images/video0/10.jpg"]
    assert [f["frame_index"] for f in frames] == [0, 1, 2]
    assert frames[0]["faces"] == [{"bbox": [5.0, 5.0, 20.0, 20.0]}, {"bbox": [35.0, 5.0, 50.0, 20.0]}]
    test = json.load(open(out["test"]))
    assert all("label_file" not in f and "faces" not in f for v in test["videos"] for f in v["frames"])
    # the registered sfp_* datasets take their classes and flip pairs from these files
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path / "d2"))
    meta = MetadataCatalog.get("sfp_train")
    assert meta.stuff_classes == SFP_CLASSES
    assert meta.flip_pairs == [(4, 5), (6, 7), (8, 9)]
    assert len(DatasetCatalog.get("sfp_val")) == 6 and len(DatasetCatalog.get("sfp_test")) == 6
    lab = cv2.imread(str(tmp_path / "d2" / "sfp" / "labels" / "video1" / "10.png"), cv2.IMREAD_UNCHANGED)
    assert lab[8, 9] == 4 and lab[25, 30] == 17


def test_sfp_per_face_data_of_the_release(tmp_path):
    """Two touching faces, the second with a lock of hair detached from it. The label map's
    components merge the faces and make the hair a third "face"; the release's face-instance
    map gives the two faces (the hair inside the second's box) and is written re-indexed by
    area; a per-frame JSON gives its boxes as they are; without either, the components."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "categories.json").write_text(json.dumps(SFP_CLASSES))
    lab = np.zeros((40, 60), np.uint8)
    lab[5:20, 5:20] = 1  # face A (15 x 15)
    lab[5:25, 20:40] = 1  # face B (20 x 20), touching A
    lab[30:35, 45:50] = 13  # B's detached hair
    inst = np.zeros((40, 60), np.uint8)
    inst[5:20, 5:20], inst[5:25, 20:40], inst[30:35, 45:50] = 7, 3, 3
    for v in ("vinst", "vjson", "vplain"):
        _img(src / "train" / "images" / v / "0.jpg", 40, 60)
        _write(src / "train" / "labels" / v / "0.png", lab)
    _write(src / "train" / "instances" / "vinst" / "0.png", inst)
    (src / "train" / "labels" / "vjson" / "0.json").write_text(json.dumps(
        {"faces": [{"bbox": [5, 5, 15, 15], "bbox_mode": "xywh"}, {"bbox": [20, 5, 50, 35]}]}))
    out = convert_sfp(str(src), str(tmp_path / "sfp"), splits=("train",))
    data = json.load(open(out["train"]))
    assert data["face_source"] == {"instance maps": 1, "json": 1, "label-map components": 1}
    frames = {v["video_id"]: v["frames"][0] for v in data["videos"]}
    assert [f["bbox"] for f in frames["vinst"]["faces"]] == [[20.0, 5.0, 50.0, 35.0], [5.0, 5.0, 20.0, 20.0]]
    written = cv2.imread(str(tmp_path / "sfp" / frames["vinst"]["instance_file"]), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(written, np.where(inst == 3, 1, np.where(inst == 7, 2, 0)))
    assert [f["bbox"] for f in frames["vjson"]["faces"]] == [[5.0, 5.0, 20.0, 20.0], [20.0, 5.0, 50.0, 35.0]]
    assert "instance_file" not in frames["vjson"] and "instance_file" not in frames["vplain"]
    assert [f["bbox"] for f in frames["vplain"]["faces"]] == [[5.0, 5.0, 40.0, 25.0], [45.0, 30.0, 50.0, 35.0]]
    # the loader hands the instance map to the training mapper (other faces' pixels in crops)
    dicts = {d["video_id"]: d for d in _load(out["train"])}
    assert dicts["vinst"]["instance_file_name"].endswith("instances/vinst/0.png")
    assert "instance_file_name" not in dicts["vplain"]


def test_sfp_rgb_labels_and_class_list_formats(tmp_path):
    _sfp_release(tmp_path / "src", rgb_labels=True)
    out = convert_sfp(str(tmp_path / "src"), str(tmp_path / "sfp"), splits=("val",))
    lab = cv2.imread(str(tmp_path / "sfp" / "labels" / "video0" / "1.png"), cv2.IMREAD_UNCHANGED)
    assert lab.ndim == 2 and lab[8, 9] == 4 and lab[25, 30] == 17 and lab[0, 0] == 0
    assert list(out) == ["val"]
    # class list as {"0": name} in a file given explicitly; COCO-style ids from 1 get background
    f1 = tmp_path / "names.json"
    f1.write_text(json.dumps({str(i): n for i, n in enumerate(SFP_CLASSES)}))
    from qanet_d2.data.datasets.sfp import read_class_list

    assert read_class_list(str(f1))[0] == SFP_CLASSES
    f2 = tmp_path / "coco.json"
    f2.write_text(json.dumps({"categories": [{"id": i, "name": n} for i, n in enumerate(SFP_CLASSES[1:], 1)]}))
    assert read_class_list(str(f2))[0] == SFP_CLASSES
    f3 = tmp_path / "gap.json"
    f3.write_text(json.dumps([{"id": 0, "name": "background"}, {"id": 2, "name": "skin"}]))
    with pytest.raises(ValueError, match="gap.json: class ids must be contiguous"):
        read_class_list(str(f3))


def test_sfp_cli_without_class_list(tmp_path, capsys):
    src = tmp_path / "src"
    _img(src / "train" / "images" / "v" / "0.jpg", 10, 10)
    mod = load_script("datasets/prepare_sfp.py", "prepare_sfp")
    assert mod.main(["--src", str(src), "--dst", str(tmp_path / "out"), "--workers", "1"]) == 1
    assert "no class list found in" in capsys.readouterr().err
