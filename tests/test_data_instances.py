"""Training samples and their crops: one face per sample (DATALOADER.SAMPLE_UNIT "face"), every
face once per epoch, batches counted in crops (and rescaled with the world size), crops cut in the
data loader from the original-resolution frame, the same augmentation in the frame and face routes."""
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import qanet_d2  # noqa: F401  (compat shims before detectron2's modules)
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import transforms as T
from detectron2.structures import BoxMode
from qanet_d2 import get_qanet_cfg
from qanet_d2.data import FaceInstanceDatasetMapper, FaceParsingDatasetMapper, face_instance_dicts
from qanet_d2.engine import ConfigError, QANetTrainer, validate_config
from qanet_d2.engine.world_size import scale_config_to_world_size
from qanet_d2.data import TrainingCropper
from qanet_d2.data.mixed_label_sets import fill_model_label_set
from qanet_d2.modeling import FaceCropper

REPO = Path(__file__).resolve().parents[1]
PARSER_INSTANT = REPO / "configs" / "quick_schedules" / "qanet_parser_synth_instant_test.yaml"

DATASET = "qanet_instances_test_faces"
CLASSES = ["background", "skin", "l_eye", "r_eye"]
MetadataCatalog.get(DATASET).set(stuff_classes=CLASSES, flip_pairs=[(2, 3)])


def config(*opts):
    cfg = get_qanet_cfg()
    cfg.merge_from_file(str(PARSER_INSTANT))
    cfg.merge_from_list([
        "DATASETS.TRAIN", (DATASET,), "DATASETS.TEST", (), "MODEL.QANET.NUM_CLASSES", len(CLASSES),
        "MODEL.QANET.INPUT_SIZE", (32, 24), "MODEL.QANET.BOX_EXPAND", 1.0, "MODEL.QANET.AUG.ENABLED", False,
        "INPUT.MIN_SIZE_TRAIN", (0,), *opts,
    ])
    fill_model_label_set(cfg)  # as train_net.py sets the config up
    return cfg


def textured(h, w, seed=0, smooth=False):
    """A BGR uint8 frame: low-frequency gradients (``smooth``) or per-pixel noise (fine detail
    that a 2x downscale destroys)."""
    if smooth:
        y, x = np.mgrid[0:h, 0:w].astype(np.float32)
        img = np.stack([x / w * 200 + 20, y / h * 200 + 20, 120 + 80 * np.sin(x / w * 3) * np.cos(y / h * 2)], -1)
        return img.round().astype(np.uint8)
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def write_frame(folder: Path, name, image, boxes, labels=True):
    """A dataset dict of a frame written to ``folder``; each face box gets its skin and a left
    eye (class 2) in its left half, so that a flipped crop shows a right eye (class 3)."""
    h, w = image.shape[:2]
    cv2.imwrite(str(folder / f"{name}.png"), image)
    d = {"file_name": str(folder / f"{name}.png"), "height": h, "width": w, "image_id": name, "video_id": "v",
         "annotations": [{"bbox": list(map(float, b)), "bbox_mode": BoxMode.XYXY_ABS, "category_id": 0} for b in boxes]}
    if labels:
        lab = np.zeros((h, w), np.uint8)
        for x0, y0, x1, y1 in boxes:
            x0, y0, x1, y1 = (int(round(v)) for v in (x0, y0, x1, y1))
            lab[y0:y1, x0:x1] = 1
            lab[y0 + (y1 - y0) // 4: y0 + (y1 - y0) // 2, x0 + (x1 - x0) // 8: x0 + (x1 - x0) * 3 // 8] = 2
        cv2.imwrite(str(folder / f"{name}_label.png"), lab)
        d["sem_seg_file_name"] = str(folder / f"{name}_label.png")
    return d


def test_face_instance_dicts_one_per_labelled_face(tmp_path):
    a = write_frame(tmp_path, "a", textured(60, 80), [(5, 5, 25, 30), (40, 10, 60, 40), (70, 50, 70.5, 59)])
    a["annotations"].append({"bbox": [0, 0, 10, 10], "bbox_mode": BoxMode.XYXY_ABS, "iscrowd": 1})
    b = write_frame(tmp_path, "b", textured(60, 80), [(10, 10, 30, 35)])
    c = write_frame(tmp_path, "c", textured(60, 80), [(10, 10, 30, 35)], labels=False)
    faces = face_instance_dicts([a, b, c])
    # the thin box (0.5 px) and the crowd region are skipped; the frame without labels gives none
    assert [(f["image_id"], f["face_index"]) for f in faces] == [("a", 0), ("a", 1), ("b", 0)]
    assert [f["annotations"][0]["bbox"] for f in faces] == [[5, 5, 25, 30], [40, 10, 60, 40], [10, 10, 30, 35]]
    assert len(a["annotations"]) == 4  # the frame's dict is left as it was


def test_instance_loader_visits_every_face_once_per_epoch_in_batches_of_crops(tmp_path):
    frames = [
        write_frame(tmp_path, "a", textured(60, 80, 1), [(5, 5, 25, 30), (40, 10, 60, 40)]),
        write_frame(tmp_path, "b", textured(60, 80, 2), [(10, 10, 30, 35)]),
        write_frame(tmp_path, "c", textured(60, 80, 3), [(2, 2, 22, 27), (30, 5, 50, 30), (55, 20, 75, 50)]),
    ]
    name = DATASET + "_loader"
    DatasetCatalog.register(name, lambda: frames)
    MetadataCatalog.get(name).set(stuff_classes=CLASSES, flip_pairs=[(2, 3)])
    cfg = config("DATASETS.TRAIN", (name,), "DATALOADER.SAMPLE_UNIT", "face", "SOLVER.IMS_PER_BATCH", 3,
                 "DATALOADER.NUM_WORKERS", 0)
    loader = iter(QANetTrainer.build_train_loader(cfg, seed=0))
    epoch = [next(loader) for _ in range(2)]  # 6 faces = 2 batches of 3 crops
    assert all(len(batch) == 3 for batch in epoch)
    seen = sorted((x["image_id"], x["face_index"]) for batch in epoch for x in batch)
    assert seen == [("a", 0), ("a", 1), ("b", 0), ("c", 0), ("c", 1), ("c", 2)]
    for x in epoch[0]:
        assert x["face_crops"].shape == (1, 3, 32, 24) and x["face_crops"].dtype == torch.float32
        assert x["face_crop_sem_seg"].shape == (1, 32, 24) and x["face_crop_sem_seg"].dtype == torch.long
        assert "image" not in x and "sem_seg" not in x  # no full frame travels to the model
    # the model takes the batch: 3 crops, one per input
    crops, labels, batch_idx = FaceCropper(cfg).training_crops(epoch[0])
    assert crops.shape == (3, 3, 32, 24) and batch_idx.tolist() == [0, 1, 2]


def test_batch_in_crops_scales_with_the_world_size():
    cfg = config("DATALOADER.SAMPLE_UNIT", "face", "SOLVER.REFERENCE_WORLD_SIZE", 8, "SOLVER.IMS_PER_BATCH", 256,
                 "SOLVER.MAX_ITER", 1000, "SOLVER.STEPS", (600, 800))
    four = scale_config_to_world_size(cfg, 4)
    assert four.SOLVER.IMS_PER_BATCH == 128  # 32 crops per GPU, as on 8
    assert (four.SOLVER.MAX_ITER, tuple(four.SOLVER.STEPS)) == (2000, (1200, 1600))  # the same epochs of faces
    stage2 = get_qanet_cfg()
    stage2.merge_from_file(str(REPO / "configs" / "sfp" / "qanet_hrnet_w48_fcos_r50_512x384.yaml"))
    assert stage2.DATALOADER.SAMPLE_UNIT == "face" and stage2.SOLVER.IMS_PER_BATCH == 256
    assert scale_config_to_world_size(stage2, 2).SOLVER.IMS_PER_BATCH == 64


def test_face_samples_train_the_parser_only():
    size = ("MODEL.QANET.INPUT_SIZE", (128, 96))
    with pytest.raises(ConfigError, match="SAMPLE_UNIT = 'face'"):
        validate_config(config(*size, "DATALOADER.SAMPLE_UNIT", "face", "MODEL.QANET.TRAIN_MODE", "joint",
                               "MODEL.QANET.DETECTOR.NAME", "FCOS", "MODEL.QANET.TEST_BOXES", "detector"), check_datasets=False)
    with pytest.raises(ConfigError, match="DATALOADER.SAMPLE_UNIT = 'faces'"):
        validate_config(config(*size, "DATALOADER.SAMPLE_UNIT", "faces"), check_datasets=False)
    validate_config(config(*size, "DATALOADER.SAMPLE_UNIT", "face"), check_datasets=False)


@pytest.mark.parametrize("smooth", [True, False])
def test_crops_come_from_the_original_resolution(tmp_path, smooth):
    """The frame mapper resizes the frame 2x down for the detector but cuts the face crops from
    the original: they equal the crops of the original frame at the same box exactly. On a
    smooth frame the crop of the downscaled frame at the scaled box agrees within interpolation
    error; on a frame with per-pixel detail it does not, which shows where the crops came from."""
    d = write_frame(tmp_path, "f", textured(120, 160, smooth=smooth), [(40, 20, 100, 100)])
    cfg = config()
    cropper = TrainingCropper(cfg)
    mapper = FaceParsingDatasetMapper(
        is_train=True, augmentations=[T.ResizeShortestEdge(60, 1000)], num_classes=len(CLASSES), cropper=cropper)
    out = mapper(d)
    assert out["image"].shape == (3, 60, 80) and out["instances"].gt_boxes.tensor.tolist() == [[20.0, 10.0, 50.0, 50.0]]
    original = FaceParsingDatasetMapper(is_train=True, augmentations=[], num_classes=len(CLASSES))(d)
    at_original, labels_original, _ = cropper.training_crops([original])
    at_detector, _, _ = cropper.training_crops([{k: out[k] for k in ("image", "sem_seg", "instances")}])
    torch.testing.assert_close(out["face_crops"], at_original, rtol=0, atol=1e-5)
    assert torch.equal(out["face_crop_sem_seg"], labels_original)
    difference = (out["face_crops"] - at_detector).abs().mean().item()  # in units of the pixel std (~57 levels)
    if smooth:
        assert difference < 0.03
    else:  # (both crops anti-aliased: the original's averages its noise over 3 x 3 samples)
        assert difference > 0.15


def test_test_crops_come_from_the_original_frame_as_training_crops(tmp_path):
    """On a large frame (1080 x 1440, per-pixel detail) that the test mapper resizes to short side
    256 for the detector, the model's test crop of a face equals the training crop of the same
    box without augmentation (both cut from the original frame, anti-aliased: the crop shrinks
    the face 6x); a crop of the resized frame, what the parser saw at test before, differs."""
    from detectron2.modeling import build_model

    d = write_frame(tmp_path, "big", textured(1080, 1440, 7), [(300, 200, 900, 1000)])
    cfg = config("MODEL.QANET.INPUT_SIZE", (128, 96), "INPUT.MIN_SIZE_TEST", 256, "INPUT.MAX_SIZE_TEST", 4000)
    train = FaceParsingDatasetMapper(cfg, is_train=True)(d)
    test_input = FaceParsingDatasetMapper(cfg, is_train=False)(d)
    assert test_input["image"].shape == (3, 256, 341) and test_input["original_image"].shape == (3, 1080, 1440)
    model = build_model(cfg).eval()
    seen = []
    parse_crops = model.parse_crops
    model.parse_crops = lambda crops, flips, parsers: seen.append(crops.clone()) or parse_crops(crops, flips, parsers)
    with torch.no_grad():
        out = model.inference([test_input])[0]
    assert len(seen) == 1 and seen[0].shape == (1, 3, 128, 96)
    torch.testing.assert_close(seen[0], train["face_crops"], rtol=0, atol=2e-3)
    # the results are in the original frame: the face's box and crop there
    torch.testing.assert_close(out["instances"].pred_boxes.tensor, torch.tensor([[300.0, 200.0, 900.0, 1000.0]]), atol=0.5, rtol=0)
    assert out["labels"].shape == (1080, 1440)
    # what the crop of the detector's resized frame looks like: not the same picture
    resized = {k: test_input[k] for k in ("image", "instances")}
    images = model.cropper.preprocess([resized])
    at_resized, _ = model.crop_faces(images, resized["instances"].gt_boxes.tensor, torch.zeros(1, dtype=torch.long))
    assert (at_resized - train["face_crops"]).abs().mean().item() > 0.05  # 50 times the tolerance above


def _two_touching_faces(tmp_path):
    """A 60 x 100 frame with two faces side by side (skin, left eye) and its face-instance map
    (face k has id k + 1): each face's crop (BOX_EXPAND 1.25) reaches into the other face."""
    d = write_frame(tmp_path, "pair", textured(60, 100, 8), [(10, 10, 50, 50), (50, 10, 90, 50)])
    inst = np.zeros((60, 100), np.uint8)
    inst[10:50, 10:50], inst[10:50, 50:90] = 1, 2
    cv2.imwrite(str(tmp_path / "pair_instances.png"), inst)
    d["instance_file_name"] = str(tmp_path / "pair_instances.png")
    return d


@pytest.mark.parametrize("route", ["frame", "face"])
def test_other_faces_in_a_crop_are_background(tmp_path, route):
    """As the official QANet code, a training crop's labels are its own face's: the pixels of the
    other face (by the frame's face-instance map) are background; CROP_OTHER_FACES "keep" keeps
    their part labels, and a frame without an instance map keeps them too."""
    d = _two_touching_faces(tmp_path)
    crops = {}
    for other in ("background", "keep"):
        cfg = config("MODEL.QANET.BOX_EXPAND", 1.25, "MODEL.QANET.INPUT_SIZE", (40, 40), "MODEL.QANET.ASPECT_RATIO", 1.0,
                     "MODEL.QANET.CROP_OTHER_FACES", other)
        if route == "frame":
            crops[other] = FaceParsingDatasetMapper(cfg, is_train=True)(d)["face_crop_sem_seg"]
        else:
            mapper = FaceInstanceDatasetMapper(cfg)
            crops[other] = torch.cat([mapper(f)["face_crop_sem_seg"] for f in face_instance_dicts([d])])
    # crop of face 1: the box [10, 50) grown to [5, 55): 1 crop pixel = 1.25 frame pixels;
    # frame columns 50..54 (face 2's skin) are crop columns 36..39
    keep, background = crops["keep"], crops["background"]
    assert keep.shape == background.shape == (2, 40, 40)
    assert (keep[0, 8:32, 37:] == 1).all() and (background[0, 8:32, 37:] == 0).all()
    assert (keep[1, 8:32, :3] == 1).all() and (background[1, 8:32, :3] == 0).all()  # face 2: face 1's skin on its left
    own = (background != 0)
    assert torch.equal(background[own], keep[own])  # its own face's labels are untouched
    assert int((keep != background).sum()) > 2 * 24 * 3
    no_map = dict(d)
    no_map.pop("instance_file_name")
    cfg = config("MODEL.QANET.BOX_EXPAND", 1.25, "MODEL.QANET.INPUT_SIZE", (40, 40), "MODEL.QANET.ASPECT_RATIO", 1.0)
    assert torch.equal(FaceParsingDatasetMapper(cfg, is_train=True)(no_map)["face_crop_sem_seg"], keep)


def test_same_augmentation_in_the_frame_and_the_face_route(tmp_path):
    """The frame route (joint training) and the face route (stage 2) draw the augmentation with
    the same function from the same generator: equal seeds give equal crops and labels."""
    d = write_frame(tmp_path, "f", textured(90, 120, 4), [(30, 20, 80, 80)])
    cfg = config("MODEL.QANET.AUG.ENABLED", True, "MODEL.QANET.AUG.SHIFT_STD", 0.05)
    frame_mapper = FaceParsingDatasetMapper(cfg, is_train=True)
    face_mapper = FaceInstanceDatasetMapper(cfg)
    (face,) = face_instance_dicts([d])
    for seed in range(4):
        np.random.seed(seed)  # detectron2 seeds NumPy's global generator per worker, the trainer per iteration
        a = frame_mapper(d)
        np.random.seed(seed)
        b = face_mapper(face)
        assert torch.equal(a["face_crops"], b["face_crops"]) and torch.equal(a["face_crop_sem_seg"], b["face_crop_sem_seg"])
    # ... and different seeds differ
    np.random.seed(0)
    c = face_mapper(face)
    np.random.seed(1)
    assert not torch.equal(c["face_crops"], face_mapper(face)["face_crops"])


def test_flip_rate_through_the_face_route(tmp_path):
    """AUG.FLIP_PROB 0.25 through the loader path: a crop whose left eye became a right eye is a
    flipped one (400 draws: the binomial standard deviation is 0.022)."""
    d = write_frame(tmp_path, "f", textured(60, 80, 5), [(20, 10, 60, 50)])
    cfg = config("MODEL.QANET.AUG.ENABLED", True, "MODEL.QANET.AUG.FLIP_PROB", 0.25, "MODEL.QANET.AUG.ROTATION_PROB", 0.0)
    mapper = FaceInstanceDatasetMapper(cfg)
    (face,) = face_instance_dicts([d])
    np.random.seed(0)
    flipped = []
    for _ in range(400):
        labels = mapper(face)["face_crop_sem_seg"]
        has_left, has_right = bool((labels == 2).any()), bool((labels == 3).any())
        assert has_left != has_right
        flipped.append(has_right)
    assert np.mean(flipped) == pytest.approx(0.25, abs=0.07)


def test_the_parser_trains_on_a_batch_of_face_samples(tmp_path):
    """A batch of the face loader goes through the model as detectron2's data flow does:
    dataset dicts -> FaceInstanceDatasetMapper -> QANetFaceParser -> finite parser losses with
    gradients for the parser."""
    from detectron2.modeling import build_model

    frames = [write_frame(tmp_path, "a", textured(96, 128, 6), [(10, 10, 50, 60), (60, 20, 110, 80)])]
    name = DATASET + "_model"
    DatasetCatalog.register(name, lambda: frames)
    MetadataCatalog.get(name).set(stuff_classes=CLASSES, flip_pairs=[(2, 3)])
    cfg = config("DATASETS.TRAIN", (name,), "MODEL.QANET.INPUT_SIZE", (128, 96), "DATALOADER.SAMPLE_UNIT", "face",
                 "SOLVER.IMS_PER_BATCH", 2, "DATALOADER.NUM_WORKERS", 0, "MODEL.QANET.AUG.ENABLED", True)
    batch = next(iter(QANetTrainer.build_train_loader(cfg, seed=0)))
    torch.manual_seed(0)
    model = build_model(cfg).train()
    losses = model(batch)
    assert set(losses) == {"loss_parsing_ce", "loss_parsing_lovasz", "loss_iou"}
    assert all(torch.isfinite(v) and v > 0 for k, v in losses.items() if k != "loss_iou")
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in model.parser.parameters() if p.requires_grad)
