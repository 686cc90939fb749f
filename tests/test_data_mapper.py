import os

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

import qanet_d2
from detectron2.data import transforms as T
from detectron2.structures import BoxMode
from qanet_d2.data import DataReadError, FaceParsingDatasetMapper


def _record(tmp_path, h=30, w=40, label=True, boxes=((10, 3, 20, 15),), image=None, lab=None, ext="png"):
    img = image if image is not None else np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)
    f = tmp_path / f"img.{ext}"
    cv2.imwrite(str(f), img)
    d = {"file_name": str(f), "height": h, "width": w, "image_id": "v/0", "video_id": "v", "frame_index": 0,
         "annotations": [{"bbox": list(b), "bbox_mode": BoxMode.XYXY_ABS, "category_id": 0} for b in boxes]}
    if label:
        if lab is None:
            lab = np.zeros((h, w), np.uint8)
            lab[5:15, 10:20] = 4
            lab[0, 0] = 255
        cv2.imwrite(str(tmp_path / "lab.png"), lab)
        d["sem_seg_file_name"] = str(tmp_path / "lab.png")
    return d


def _mapper(**kw):
    args = dict(is_train=True, augmentations=[T.ResizeShortestEdge(60, 1000)], image_format="BGR", num_classes=17)
    args.update(kw)
    return FaceParsingDatasetMapper(**args)


def test_shapes_and_resize_consistency(tmp_path):
    d = _record(tmp_path)
    out = _mapper()(d)
    assert out["image"].dtype == torch.uint8 and out["image"].shape == (3, 60, 80)
    assert out["sem_seg"].dtype == torch.int64 and out["sem_seg"].shape == (60, 80)
    # nearest resize of the label: the part doubles, values stay ids
    assert set(out["sem_seg"].unique().tolist()) == {0, 4, 255}
    assert (out["sem_seg"][10:30, 20:40] == 4).all() and int((out["sem_seg"] == 4).sum()) == 4 * 100
    inst = out["instances"]
    assert inst.image_size == (60, 80)
    assert inst.gt_boxes.tensor.tolist() == [[20.0, 6.0, 40.0, 30.0]]
    assert inst.gt_classes.tolist() == [0]
    assert (out["height"], out["width"]) == (30, 40)  # original size
    assert out["file_name"] == d["file_name"] and out["sem_seg_file_name"] == d["sem_seg_file_name"]
    assert (out["image_id"], out["video_id"], out["frame_index"]) == ("v/0", "v", 0)
    assert "annotations" not in out and "annotations" in d  # input untouched
    # BGR vs RGB channel order
    rgb = _mapper(image_format="RGB")(d)["image"]
    assert torch.equal(rgb, out["image"].flip(0))


def test_from_config(tmp_path):
    cfg = qanet_d2.get_qanet_cfg()
    cfg.INPUT.MIN_SIZE_TRAIN = (90,)
    cfg.INPUT.MIN_SIZE_TEST = 0  # no resize at test time
    cfg.MODEL.QANET.NUM_CLASSES = 17
    d = _record(tmp_path)
    assert FaceParsingDatasetMapper(cfg, is_train=True)(d)["image"].shape == (3, 90, 120)
    assert FaceParsingDatasetMapper(cfg, is_train=False)(d)["image"].shape == (3, 30, 40)
    cfg.INPUT.RANDOM_FLIP = "horizontal"
    with pytest.raises(ValueError, match="RANDOM_FLIP must be 'none'"):
        FaceParsingDatasetMapper(cfg, is_train=True)


def test_detector_only_training_sees_the_joint_frames_and_the_crops_their_own_stream(tmp_path):
    """A detector-only mapper (TRAIN_MODE "detector") cuts no crops but draws their seed as joint
    training does: the same frames (grey frames, resize choices) and the same NumPy stream after
    each sample. The crops are drawn from that seed alone: equal seeds give equal crops."""
    cfg = qanet_d2.get_qanet_cfg()
    cfg.MODEL.QANET.NUM_CLASSES = 17
    cfg.MODEL.QANET.INPUT_SIZE = (32, 24)
    cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN, cfg.INPUT.GRAYSCALE_PROB = (40, 60, 80), 1000, 0.5
    d = _record(tmp_path, boxes=((10, 3, 20, 15), (25, 10, 38, 28)))
    joint = FaceParsingDatasetMapper(cfg, is_train=True)
    cfg.MODEL.QANET.TRAIN_MODE = "detector"
    detector = FaceParsingDatasetMapper(cfg, is_train=True)
    sizes, crops = set(), []
    for seed in range(6):
        np.random.seed(seed)
        a = joint(d)
        after_joint = np.random.random()
        np.random.seed(seed)
        b = detector(d)
        assert np.random.random() == after_joint
        assert torch.equal(a["image"], b["image"]) and "face_crops" not in b
        assert torch.equal(a["instances"].gt_boxes.tensor, b["instances"].gt_boxes.tensor)
        assert a["face_crops"].shape == (2, 3, 32, 24)
        np.random.seed(seed)
        assert torch.equal(joint(d)["face_crops"], a["face_crops"])
        sizes.add(a["image"].shape)
        crops.append(a["face_crops"])
    # each sample's crops have their own draw (a grey frame alone would give two kinds)
    assert len(sizes) > 1 and len({c.numpy().tobytes() for c in crops}) == len(crops)


def test_flip_in_detector_only_training_moves_boxes_and_nothing_else(tmp_path):
    """detectron2's FCOS recipe flips frames horizontally; detector-only training may, because it
    uses the frame and its boxes only: a flipped sample is the unflipped one mirrored (image and
    boxes), with the same size and classes, and carries no label map (whose left/right
    parts a flip would not swap). Other training modes refuse the flip."""
    cfg = qanet_d2.get_qanet_cfg()
    cfg.MODEL.QANET.NUM_CLASSES = 17
    cfg.MODEL.QANET.TRAIN_MODE = "detector"
    cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN = (60,), 1000
    d = _record(tmp_path, boxes=((10, 3, 20, 15), (25, 10, 38, 28)))
    plain = FaceParsingDatasetMapper(cfg, is_train=True)
    cfg.INPUT.RANDOM_FLIP = "horizontal"
    flipping = FaceParsingDatasetMapper(cfg, is_train=True)
    assert any(isinstance(a, T.RandomFlip) for a in flipping.augmentations.augs)
    assert not any(isinstance(a, T.RandomFlip) for a in FaceParsingDatasetMapper(cfg, is_train=False).augmentations.augs)
    seen = set()
    for seed in range(12):
        np.random.seed(seed)
        a = plain(d)
        np.random.seed(seed)
        b = flipping(d)
        assert a["image"].shape == b["image"].shape == (3, 60, 80)
        assert (a["height"], a["width"]) == (b["height"], b["width"]) == (30, 40)
        assert torch.equal(a["instances"].gt_classes, b["instances"].gt_classes)
        assert "sem_seg" in a and "sem_seg" not in b
        boxes_a, boxes_b = a["instances"].gt_boxes.tensor, b["instances"].gt_boxes.tensor
        if torch.equal(b["image"], a["image"]):
            seen.add("kept")
            assert torch.equal(boxes_b, boxes_a)
        else:
            seen.add("flipped")
            assert torch.equal(b["image"], a["image"].flip(-1))
            mirrored = torch.stack([80 - boxes_a[:, 2], boxes_a[:, 1], 80 - boxes_a[:, 0], boxes_a[:, 3]], 1)
            assert torch.allclose(boxes_b, mirrored)
    assert seen == {"kept", "flipped"}
    cfg.MODEL.QANET.TRAIN_MODE = "joint"
    with pytest.raises(ValueError, match="'horizontal' is for detector-only training"):
        FaceParsingDatasetMapper(cfg, is_train=True)


def test_boxes_clipped_and_thin_dropped_no_label(tmp_path):
    d = _record(tmp_path, label=False, boxes=((-5, -5, 10, 10), (30, 3, 30.4, 20), (35, 20, 60, 50)))
    out = _mapper(augmentations=[])(d)
    assert "sem_seg" not in out
    assert out["instances"].gt_boxes.tensor.tolist() == [[0, 0, 10, 10], [35, 20, 40, 30]]
    empty = _mapper(augmentations=[])(_record(tmp_path, label=False, boxes=()))
    assert len(empty["instances"]) == 0 and empty["instances"].gt_boxes.tensor.shape == (0, 4)


def test_image_conversions(tmp_path):
    gray = (np.arange(30 * 40) % 256).astype(np.uint8).reshape(30, 40)
    Image.fromarray(gray, "L").save(tmp_path / "g.png")
    Image.fromarray(np.dstack([gray, gray, gray, np.full_like(gray, 7)]), "RGBA").save(tmp_path / "rgba.png")
    cv2.imwrite(str(tmp_path / "g16.png"), gray.astype(np.uint16) * 257)
    m = _mapper(augmentations=[])
    for name in ("g.png", "rgba.png", "g16.png"):
        d = _record(tmp_path, label=False)
        d["file_name"] = str(tmp_path / name)
        img = m(d)["image"]
        assert img.dtype == torch.uint8 and img.shape == (3, 30, 40), name
        assert torch.equal(img[0], torch.from_numpy(gray)) and torch.equal(img[2], img[0]), name


def test_bad_inputs_name_the_file(tmp_path):
    m = _mapper()
    d = _record(tmp_path)
    os.remove(d["sem_seg_file_name"])
    with pytest.raises(FileNotFoundError, match="lab.png"):
        m(d)
    d = _record(tmp_path, ext="jpg")
    data = open(d["file_name"], "rb").read()
    open(d["file_name"], "wb").write(data[: len(data) // 2])
    with pytest.raises(DataReadError, match="img.jpg: cannot decode image"):
        m(d)
    d = _record(tmp_path)
    open(d["file_name"], "wb").write(b"not an image")
    with pytest.raises(DataReadError, match="img.png: cannot decode image"):
        m(d)
    d = _record(tmp_path, lab=np.zeros((20, 40), np.uint8))
    with pytest.raises(DataReadError, match=r"label map .*lab.png is 40x20 .*image .*img.png is 40x30"):
        m(d)
    bad = np.zeros((30, 40), np.uint8)
    bad[0, :3] = [17, 40, 255]
    with pytest.raises(DataReadError, match=r"lab.png: label values \[17, 40\] are outside"):
        m(_record(tmp_path, lab=bad))
    d = _record(tmp_path)
    d["height"] = 31
    with pytest.raises(DataReadError, match=r"img.png: image is 40x30 .* dataset says 40x31"):
        m(d)
    d = _record(tmp_path)
    cv2.imwrite(d["sem_seg_file_name"], np.random.default_rng(1).integers(0, 9, (30, 40, 3), dtype=np.uint8))
    with pytest.raises(DataReadError, match="lab.png: label map must be a single-channel"):
        m(d)
    with pytest.raises(ValueError, match="flips"):
        _mapper(augmentations=[T.RandomFlip()])


def test_grayscale_frames_and_their_crops(tmp_path):
    """INPUT.GRAYSCALE_PROB: a frame turned grey has the luma of its colours in all three channels
    (OpenCV's BGR->GRAY on the original), before resizing and before the face crops are cut; at
    probability 0 nothing changes and no random number is drawn; about p of the frames turn grey."""
    from qanet_d2.data import TrainingCropper

    d = _record(tmp_path)
    colour = cv2.imread(d["file_name"])
    grey = cv2.cvtColor(colour, cv2.COLOR_BGR2GRAY)
    out = _mapper(augmentations=[], grayscale_prob=1.0)(d)
    assert torch.equal(out["image"], torch.as_tensor(np.repeat(grey[None], 3, axis=0)))
    rgb = _mapper(augmentations=[], grayscale_prob=1.0, image_format="RGB")(d)["image"]
    assert torch.equal(rgb, out["image"])  # the same luma whichever the channel order

    cfg = qanet_d2.get_qanet_cfg()
    cfg.MODEL.QANET.INPUT_SIZE = (32, 24)
    cfg.MODEL.QANET.AUG.ENABLED = False
    crops = _mapper(augmentations=[], grayscale_prob=1.0, cropper=TrainingCropper(cfg))(d)["face_crops"]
    grey_dir = tmp_path / "grey"
    grey_dir.mkdir()
    grey_record = _record(grey_dir, image=np.repeat(grey[:, :, None], 3, axis=2))
    expected = _mapper(augmentations=[], cropper=TrainingCropper(cfg))(grey_record)["face_crops"]
    assert crops.shape[0] == 1 and torch.equal(crops, expected)
    assert not torch.equal(crops, _mapper(augmentations=[], cropper=TrainingCropper(cfg))(d)["face_crops"])

    np.random.seed(3)
    state = np.random.get_state()[1].copy()
    plain = _mapper(augmentations=[], grayscale_prob=0.0)(d)
    assert torch.equal(plain["image"], torch.as_tensor(colour.transpose(2, 0, 1).copy()))
    assert np.array_equal(np.random.get_state()[1], state)
    np.random.seed(0)
    mapper = _mapper(augmentations=[], grayscale_prob=0.3)
    turned = [bool((m["image"][0] == m["image"][1]).all() and (m["image"][1] == m["image"][2]).all()) for m in (mapper(d) for _ in range(200))]
    assert 0.2 < np.mean(turned) < 0.4
    with pytest.raises(ValueError, match="GRAYSCALE_PROB"):
        _mapper(grayscale_prob=1.5)


def test_zoom_out_places_the_frame_on_a_larger_grey_canvas(tmp_path):
    from qanet_d2.data.mapper import RandomZoomOut

    img = np.full((30, 40, 3), 50, np.uint8)
    img[3:15, 10:20] = 230  # the face in its box (10, 3, 20, 15); its label 4 at [5:15, 10:20]
    d = _record(tmp_path, image=img)
    np.random.seed(0)
    out = _mapper(augmentations=[RandomZoomOut(1.0, 3.0)])(d)
    h, w = out["sem_seg"].shape
    assert h > 30 and w > 40 and out["image"].shape[1:] == (h, w)
    (x0, y0, x1, y1), = out["instances"].gt_boxes.tensor.tolist()
    assert (x1 - x0, y1 - y0) == (10, 12) and (x0, y0) != (10, 3)  # moved, not scaled
    x0, y0 = int(x0), int(y0)
    # the face and its labels moved with the box; the canvas is the frame's mean grey, background
    assert (out["image"][:, y0:y0 + 12, x0:x0 + 10] == 230).all()
    assert (out["sem_seg"][y0 + 2:y0 + 12, x0:x0 + 10] == 4).all()
    assert int((out["sem_seg"] == 4).sum()) == 100 and int((out["sem_seg"] == 255).sum()) == 1
    grey = int(img.mean())
    assert int((out["image"][0] == grey).sum()) == h * w - 30 * 40 + int((img[..., 0] == grey).sum())
    assert int((out["sem_seg"] == 0).sum()) == h * w - 101
    # the scale is drawn in [1, MAX_SCALE]: sizes vary and stay within it
    sizes = {_mapper(augmentations=[RandomZoomOut(1.0, 3.0)])(d)["sem_seg"].shape for _ in range(20)}
    assert len(sizes) > 5 and all(30 <= sh <= 90 and 40 <= sw <= 120 for sh, sw in sizes)
    # probability 0: the frame as it is
    assert _mapper(augmentations=[RandomZoomOut(0.0, 3.0)])(d)["sem_seg"].shape == (30, 40)
    with pytest.raises(ValueError, match="INPUT.ZOOM_OUT.MAX_SCALE must be >= 1"):
        RandomZoomOut(0.5, 0.8)


def test_zoom_out_from_config_only_in_training():
    cfg = qanet_d2.get_qanet_cfg()
    cfg.merge_from_list(["INPUT.ZOOM_OUT.PROB", 0.5, "INPUT.ZOOM_OUT.MAX_SCALE", 2.5, "MODEL.QANET.TRAIN_MODE", "detector"])
    augs = FaceParsingDatasetMapper.from_config(cfg, is_train=True)["augmentations"]
    assert type(augs[0]).__name__ == "RandomZoomOut" and (augs[0].prob, augs[0].max_scale) == (0.5, 2.5)
    assert not any(type(a).__name__ == "RandomZoomOut" for a in FaceParsingDatasetMapper.from_config(cfg, is_train=False)["augmentations"])
    cfg.INPUT.ZOOM_OUT.PROB = 0.0
    assert not any(type(a).__name__ == "RandomZoomOut" for a in FaceParsingDatasetMapper.from_config(cfg, is_train=True)["augmentations"])
