import json
import os

import cv2
import numpy as np
import pytest

import qanet_d2  # noqa: F401
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode
from qanet_d2.data import (
    DatasetFormatError,
    DatasetNotFoundError,
    boxes_from_label_map,
    get_dataset_label_set,
    load_face_video_json,
    register_face_video_dataset,
    write_face_video_json,
)
from qanet_d2.structures.label_sets import get_label_set
from qanet_d2.data.video_format import face_box_excluded_ids, make_frame_record, union_box_from_label_map

SYN = get_label_set("synthetic")


def _make_dataset(root, label_set="synthetic", faces=True, classes=None, n_frames=2):
    """A 2-video dataset of 40x30 frames with one square 'face' (skin + hair) per frame."""
    videos = []
    for v in range(2):
        frames = []
        for t in range(n_frames):
            img = np.full((30, 40, 3), 60 + 40 * t, np.uint8)
            lab = np.zeros((30, 40), np.uint8)
            lab[5:15, 10:20] = 1
            lab[3:5, 10:20] = 13  # hair
            lab[15:25, 12:18] = 15  # neck: not part of the face box
            vid = f"vid{v}"
            os.makedirs(root / "images" / vid, exist_ok=True)
            os.makedirs(root / "labels" / vid, exist_ok=True)
            cv2.imwrite(str(root / "images" / vid / f"{t:05d}.jpg"), img)
            cv2.imwrite(str(root / "labels" / vid / f"{t:05d}.png"), lab)
            frames.append(make_frame_record(t, f"images/{vid}/{t:05d}.jpg", 30, 40, f"labels/{vid}/{t:05d}.png",
                                            [[10, 3, 20, 15]] if faces else None))
        videos.append({"video_id": f"vid{v}", "frames": frames[::-1]})  # unordered on purpose
    return write_face_video_json(str(root / "train.json"), label_set, videos, classes=classes)


def test_load_face_video_json(tmp_path):
    json_file = _make_dataset(tmp_path)
    dicts = load_face_video_json(json_file, str(tmp_path), "x")
    assert len(dicts) == 4
    d = dicts[1]
    assert d["file_name"] == str(tmp_path / "images/vid0/00001.jpg")
    assert d["sem_seg_file_name"] == str(tmp_path / "labels/vid0/00001.png")
    assert (d["height"], d["width"]) == (30, 40)
    assert d["image_id"] == "vid0/1" and d["video_id"] == "vid0" and d["frame_index"] == 1
    assert d["annotations"] == [{"bbox": [10.0, 3.0, 20.0, 15.0], "bbox_mode": BoxMode.XYXY_ABS, "category_id": 0}]
    assert [x["image_id"] for x in dicts] == ["vid0/0", "vid0/1", "vid1/0", "vid1/1"]
    data = json.load(open(json_file))
    assert data["label_set"] == "synthetic" and data["classes"] == list(SYN.classes)


def test_instance_file_is_optional_and_read_into_the_dataset_dicts(tmp_path):
    json_file = _make_dataset(tmp_path)
    assert all("instance_file_name" not in d for d in load_face_video_json(json_file, str(tmp_path)))
    data = json.load(open(json_file))
    data["videos"][0]["frames"][0]["instance_file"] = "instances/vid0/00001.png"
    p = tmp_path / "with_inst.json"
    p.write_text(json.dumps(data))
    dicts = load_face_video_json(str(p), str(tmp_path))
    assert dicts[1]["instance_file_name"] == str(tmp_path / "instances/vid0/00001.png")
    assert sum("instance_file_name" in d for d in dicts) == 1
    data["videos"][0]["frames"][0]["instance_file"] = 3
    p.write_text(json.dumps(data))
    with pytest.raises(DatasetFormatError, match=r"with_inst.json: .*instance_file must be a non-empty string"):
        load_face_video_json(str(p), str(tmp_path))


def test_single_face_metadata_of_the_builtin_datasets():
    assert MetadataCatalog.get("lapa_val").single_face is True
    assert MetadataCatalog.get("celebamask_hq_test").single_face is True
    assert MetadataCatalog.get("helen_train").single_face is True
    assert MetadataCatalog.get("fasseg_multipose_test").single_face is True
    assert MetadataCatalog.get("face_synth_val").single_face is False
    assert MetadataCatalog.get("sfp_val").single_face is False


def test_boxes_derived_from_labels_when_faces_missing(tmp_path):
    json_file = _make_dataset(tmp_path, faces=False)
    dicts = load_face_video_json(json_file, str(tmp_path))
    # skin + hair, neck excluded: the same box the JSON would give
    assert dicts[0]["annotations"][0]["bbox"] == [10.0, 3.0, 20.0, 15.0]


def test_boxes_from_label_map():
    lab = np.zeros((50, 60), np.uint8)
    lab[10:20, 5:15] = 1          # face A, 100 px
    lab[30:45, 30:50] = 4         # face B, 300 px
    lab[0:2, 58:60] = 1           # 4 px speck: dropped
    lab[45:50, 30:50] = 15        # neck under B
    lab[20:22, 5:15] = 255        # ignore
    boxes = boxes_from_label_map(lab, min_area=16, exclude_ids=face_box_excluded_ids(SYN))
    assert boxes == [[30.0, 30.0, 50.0, 45.0], [5.0, 10.0, 15.0, 20.0]]
    # with the default exclusions the neck joins face B
    assert boxes_from_label_map(lab)[0] == [30.0, 30.0, 50.0, 50.0]
    # touching faces merge into one component (why JSON boxes are preferred)
    lab2 = np.zeros((20, 40), np.uint8)
    lab2[5:15, 5:20] = 1
    lab2[5:15, 20:35] = 1
    assert boxes_from_label_map(lab2) == [[5.0, 5.0, 35.0, 15.0]]
    assert union_box_from_label_map(lab, face_box_excluded_ids(SYN)) == [5.0, 0.0, 60.0, 45.0]
    assert union_box_from_label_map(np.zeros((4, 4), np.uint8)) is None


def test_errors_name_the_file(tmp_path):
    missing = tmp_path / "nope.json"
    with pytest.raises(FileNotFoundError, match="nope.json"):
        load_face_video_json(str(missing), str(tmp_path))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DatasetFormatError, match=r"bad.json: malformed JSON"):
        load_face_video_json(str(bad), str(tmp_path))
    json_file = _make_dataset(tmp_path)
    data = json.load(open(json_file))
    del data["videos"][1]["frames"][0]["height"]
    p = tmp_path / "nokey.json"
    p.write_text(json.dumps(data))
    with pytest.raises(DatasetFormatError, match=r"nokey.json: videos\[1\]\.frames\[0\].*missing key 'height'"):
        load_face_video_json(str(p), str(tmp_path))
    p2 = tmp_path / "nolabelset.json"
    p2.write_text(json.dumps({"videos": []}))
    with pytest.raises(DatasetFormatError, match="nolabelset.json: missing key 'label_set'"):
        load_face_video_json(str(p2), str(tmp_path))
    # label set mismatch: with the registered set, and between label_set and classes
    with pytest.raises(DatasetFormatError, match="train.json: label_set mismatch.*'synthetic'.*'lapa'"):
        load_face_video_json(json_file, str(tmp_path), label_set="lapa")
    wrong = _make_dataset(tmp_path, classes=list(SYN.classes)[:-1])
    with pytest.raises(DatasetFormatError, match="train.json: label_set mismatch"):
        load_face_video_json(wrong, str(tmp_path))
    dup = json.load(open(json_file))
    dup["videos"][1]["video_id"] = "vid0"
    p3 = tmp_path / "dup.json"
    p3.write_text(json.dumps(dup))
    with pytest.raises(DatasetFormatError, match="dup.json: videos\\[1\\]: duplicate video_id"):
        load_face_video_json(str(p3), str(tmp_path))


def test_register_follows_env_at_load_time(tmp_path, monkeypatch):
    (tmp_path / "a" / "mine").mkdir(parents=True)
    _make_dataset(tmp_path / "a" / "mine")
    name = "test_data_format_env"
    register_face_video_dataset(name, "mine/train.json", "mine", "synthetic")
    monkeypatch.chdir(tmp_path / "a")  # relative paths resolve at load time
    meta = MetadataCatalog.get(name)
    assert meta.json_file == str(tmp_path / "a" / "mine" / "train.json")
    assert meta.stuff_classes == list(SYN.classes) and meta.flip_pairs == [(4, 5), (6, 7), (8, 9)]
    assert meta.thing_classes == ["face"] and meta.ignore_label == 255 and meta.evaluator_type == "face_parsing"
    assert meta.label_set == "synthetic" and meta.image_root == meta.dataset_root == str(tmp_path / "a" / "mine")
    assert len(DatasetCatalog.get(name)) == 4
    # builtin names follow DETECTRON2_DATASETS when accessed
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path / "d2"))
    assert MetadataCatalog.get("lapa_val").json_file == str(tmp_path / "d2" / "lapa" / "val.json")
    assert MetadataCatalog.get("celebamask_hq_train").stuff_classes[15] == "ear_r"
    with pytest.raises(DatasetNotFoundError, match=r"lapa/val.json not found.*prepare_lapa.py"):
        DatasetCatalog.get("lapa_val")


def test_sfp_metadata_from_dataset_files(tmp_path, monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    with pytest.raises(DatasetNotFoundError, match="sfp/train.json does not exist.*prepare_sfp.py"):
        MetadataCatalog.get("sfp_train").stuff_classes
    classes = ["background", "skin", "l_eye", "r_eye", "neck"]
    from qanet_d2.structures.label_sets import sfp_label_set

    _make_dataset(tmp_path / "sfp", label_set=sfp_label_set(classes))
    os.rename(tmp_path / "sfp" / "train.json", tmp_path / "sfp" / "val.json")
    meta = MetadataCatalog.get("sfp_train")  # train.json absent: classes come from val.json
    assert meta.stuff_classes == classes and meta.flip_pairs == [(2, 3)]
    assert len(meta.stuff_colors) == 5 and meta.label_set == "sfp"
    assert get_dataset_label_set("sfp_val").classes == tuple(classes)
    dicts = DatasetCatalog.get("sfp_val")
    assert len(dicts) == 4 and dicts[0]["annotations"][0]["bbox"] == [10.0, 3.0, 20.0, 15.0]


def test_one_metadata_accessor_with_one_exception(tmp_path, monkeypatch, caplog):
    """Validation, the model's flip permutation and the predictor read a dataset's label set
    through dataset_label_set; absent files (DatasetNotFoundError) are tolerated by all three,
    any other problem with the files is not."""
    from qanet_d2.data import dataset_label_set
    from qanet_d2.structures.label_sets import sfp_label_set
    from qanet_d2.engine.validation import ConfigError, validate_config
    from qanet_d2.data.mixed_label_sets import model_label_set
    from qanet_d2.predictor import metadata_field

    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    cfg = qanet_d2.get_qanet_cfg()
    cfg.merge_from_file(os.path.join(os.path.dirname(__file__), "..", "configs", "quick_schedules",
                                     "qanet_fcos_synth_instant_test.yaml"))
    cfg.DATASETS.TRAIN = cfg.DATASETS.TEST = ("sfp_train",)  # the model's label set: sfp's
    cfg.MODEL.QANET.NUM_CLASSES = 4
    meta = MetadataCatalog.get("sfp_train")

    # files absent: the accessor raises its one exception, the three callers carry on
    with pytest.raises(DatasetNotFoundError, match="sfp/train.json does not exist"):
        dataset_label_set("sfp_train")
    validate_config(cfg, for_training=False)
    assert model_label_set(cfg) is None  # unknown without the files, no guess
    assert metadata_field(meta, "stuff_classes", "default") == "default"
    assert "sfp_train" in caplog.text and "prepare_sfp.py" in caplog.text

    # files present: the same label set everywhere, and in detectron2's metadata fields
    classes = ["background", "skin", "l_eye", "r_eye", "neck"]
    _make_dataset(tmp_path / "sfp", label_set=sfp_label_set(classes))
    ls = dataset_label_set("sfp_train")
    assert ls.name == "sfp" and ls.classes == tuple(classes) and ls.flip_pairs == ((2, 3),)
    assert model_label_set(cfg).flip_permutation().tolist() == [0, 1, 3, 2, 4]
    assert metadata_field(meta, "stuff_colors") == [list(c) for c in ls.palette] == meta.stuff_colors
    assert metadata_field(meta, "stuff_classes") == classes == meta.stuff_classes
    with pytest.raises(ConfigError, match=r"NUM_CLASSES = 4, but dataset 'sfp_train' \(label set 'sfp'\) has 5"):
        validate_config(cfg, for_training=False)

    # a broken dataset file is an error for every caller, not "no metadata"
    broken = tmp_path / "sfp" / "train.json"
    broken.write_text("{")
    os.utime(broken, (1, 1))
    for read in (lambda: dataset_label_set("sfp_train"), lambda: validate_config(cfg, for_training=False),
                 lambda: model_label_set(cfg), lambda: metadata_field(meta, "stuff_classes")):
        with pytest.raises(DatasetFormatError, match="train.json: cannot read the class list"):
            read()

    # datasets known to detectron2 only: built from their metadata; unknown names: None
    MetadataCatalog.get("test_data_format_meta_only").set(stuff_classes=["bg", "l_ear", "r_ear"], flip_pairs=[(1, 2)])
    ls = dataset_label_set("test_data_format_meta_only")
    assert ls.classes == ("bg", "l_ear", "r_ear") and ls.flip_pairs == ((1, 2),) and len(ls.palette) == 3
    assert dataset_label_set("test_data_format_never_registered") is None and dataset_label_set(None) is None
    assert "test_data_format_never_registered" not in MetadataCatalog.list()


def test_face_synth_generated_on_first_use(tmp_path, monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    from qanet_d2.data.datasets import face_video

    face_video.set_synthetic_auto_generate(False)
    try:
        with pytest.raises(DatasetNotFoundError, match="face_synth_tiny/val.json not found"):
            DatasetCatalog.get("face_synth_tiny_val")
    finally:
        face_video.set_synthetic_auto_generate(True)
    dicts = DatasetCatalog.get("face_synth_tiny_val")
    assert len(dicts) == 2 * 3 and os.path.isfile(tmp_path / "face_synth_tiny" / "params.json")
    assert MetadataCatalog.get("face_synth_train").dataset_root == str(tmp_path / "face_synth")
    assert sorted(os.listdir(tmp_path)) == [".locks", "face_synth_tiny"]
