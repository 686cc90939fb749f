"""The training crops (TrainingCropper) alone, built from the config: crop geometry, labels outside
the image, left/right swap on flipped crops, the augmentation's distributions from torch's global
generator or a given one."""
from pathlib import Path

import pytest
import torch

import qanet_d2  # noqa: F401
from detectron2.data import MetadataCatalog
from detectron2.structures import Boxes, Instances
from qanet_d2 import get_qanet_cfg
from qanet_d2.data.mixed_label_sets import fill_model_label_set
from qanet_d2.data import TrainingCropper
from qanet_d2.layers.crops import face_crop_affines
from qanet_d2.modeling import FaceCropper
from qanet_d2.modeling.qanet import iou_targets

REPO = Path(__file__).resolve().parents[1]
INSTANT = REPO / "configs" / "quick_schedules" / "qanet_fcos_synth_instant_test.yaml"

DATASET = "qanet_cropper_test_faces"
CLASSES = ["background", "skin", "l_eye", "r_eye", "nose"]
MetadataCatalog.get(DATASET).set(stuff_classes=CLASSES, flip_pairs=[(2, 3)])


def _cfg(*opts):
    cfg = get_qanet_cfg()
    cfg.merge_from_file(str(INSTANT))
    cfg.merge_from_list([
        "DATASETS.TRAIN", (DATASET,), "DATASETS.TEST", (DATASET,), "MODEL.QANET.NUM_CLASSES", len(CLASSES),
        "MODEL.QANET.INPUT_SIZE", (32, 24), "MODEL.QANET.BOX_EXPAND", 1.0, "MODEL.QANET.AUG.ENABLED", False,
        *opts,
    ])
    fill_model_label_set(cfg)
    return cfg


def cropper(*opts) -> TrainingCropper:
    return TrainingCropper(_cfg(*opts))


def face(labels: torch.Tensor, boxes, image=None):
    h, w = labels.shape
    image = torch.full((3, h, w), 100, dtype=torch.uint8) if image is None else image
    return {"image": image, "sem_seg": labels, "instances": Instances((h, w), gt_boxes=Boxes(torch.tensor(boxes, dtype=torch.float32)))}


def test_built_from_config():
    c = cropper("MODEL.QANET.AUG.FLIP_PROB", 0.25, "MODEL.QANET.CROP_OUTSIDE_LABEL", "background")
    assert c.crop_size == (32, 24) and c.box_expand == 1.0 and c.aug_flip_prob == 0.25
    assert c.outside_label == "background" and c.ignore_value == 255
    assert c.label_set.name == DATASET and c.label_set.classes == tuple(CLASSES)  # the dataset's, via the config
    assert c.label_set_flip_permutation(None).tolist() == [0, 1, 3, 2, 4]  # from the dataset's flip pairs
    with pytest.raises(ValueError, match="CROP_OUTSIDE_LABEL"):
        cropper("MODEL.QANET.CROP_OUTSIDE_LABEL", "zero")
    # a box is grown to 3:4 around its centre: a 24 x 32 box maps 1:1 onto the 24 x 32 crop
    box = torch.tensor([[10.0, 4.0, 34.0, 36.0]])
    a = face_crop_affines(box, c.crop_size, c.aspect_ratio, c.box_expand)
    torch.testing.assert_close(a[0], torch.tensor([[1.0, 0.0, 10.0], [0.0, 1.0, 4.0]]))
    # at box scale 2 the crop covers [-2, -12, 46, 52]
    a2 = face_crop_affines(box, c.crop_size, c.aspect_ratio, c.box_expand, 2.0)
    torch.testing.assert_close(a2[0], torch.tensor([[2.0, 0.0, -2.0], [0.0, 2.0, -12.0]]))
    # the model's test crops and the training crops share this geometry
    model_cropper = FaceCropper(_cfg())
    torch.testing.assert_close(model_cropper.affines(box, 2.0), a2)


@pytest.mark.parametrize("outside", ["ignore", "background"])
def test_labels_outside_the_image_and_in_the_batch_padding(outside):
    """Image A is 40 x 60, image B 40 x 30 (padded to 60 in the batch); all labels 1 (skin).
    A's box hangs 12 pixels over the left border, B's 12 pixels over its right border into the
    batch padding: those crop columns are "outside the image" in both cases."""
    c = cropper("MODEL.QANET.CROP_OUTSIDE_LABEL", outside)
    a = face(torch.ones(40, 60, dtype=torch.long), [[-12.0, 4.0, 12.0, 36.0]])
    b = face(torch.ones(40, 30, dtype=torch.long), [[18.0, 4.0, 42.0, 36.0]])
    b["sem_seg"][4:6] = 255  # labelled "ignore" inside the image (crop rows 0, 1): stays ignore either way
    crops, labels, batch_idx = c.training_crops([a, b])
    assert batch_idx.tolist() == [0, 1] and labels.shape == (2, 32, 24)
    out = 255 if outside == "ignore" else 0
    assert (labels[0, :, :12] == out).all() and (labels[0, :, 12:] == 1).all()
    assert (labels[1, :, 12:] == out).all() and (labels[1, 2:, :12] == 1).all()
    assert (labels[1, :2, :12] == 255).all()
    # the crop's image pixels outside are the mean colour (0 after normalisation) either way
    assert crops[0, :, :, :12].abs().max() < 1e-5 and crops[1, :, :, 12:].abs().max() < 1e-5
    # the IoU target of a parsing that says "skin" everywhere: 1 when outside pixels are ignored,
    # skin IoU 1/2 and background IoU 0 (its pixels are all missed) when they are background
    pred = torch.ones(1, 32, 24, dtype=torch.long)
    target = float(iou_targets(pred, labels[:1], len(CLASSES))[0])
    assert target == pytest.approx(1.0 if outside == "ignore" else (0.5 + 0.0) / 2)


def test_flipped_crops_are_mirrored_with_left_right_swapped():
    labels = torch.zeros(48, 64, dtype=torch.long)
    labels[8:40, 16:40] = 1
    labels[14:18, 19:23] = 3  # r_eye on the image left
    labels[14:18, 33:37] = 2  # l_eye on the image right
    image = torch.randint(0, 255, (3, 48, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    sample = face(labels, [[16.0, 8.0, 40.0, 40.0]], image)
    plain = cropper()
    flipped = cropper("MODEL.QANET.AUG.ENABLED", True, "MODEL.QANET.AUG.FLIP_PROB", 1.0, "MODEL.QANET.AUG.ROTATION_PROB", 0.0,
                      "MODEL.QANET.AUG.SCALE_STD", 0.0)
    crops, lab, _ = plain.training_crops([sample])
    crops_f, lab_f, _ = flipped.training_crops([sample])
    torch.testing.assert_close(crops_f, crops.flip(-1), atol=1e-4, rtol=0)
    assert torch.equal(lab_f, plain.label_set_flip_permutation(None)[lab].flip(-1))
    # the mirrored picture shows a face whose left eye (2) is again on the image right: the
    # mirrored right eye, relabelled
    assert (lab[0, :, 12:] == 2).any() and not (lab[0, :, :12] == 2).any()
    assert (lab_f[0, :, 12:] == 2).any() and not (lab_f[0, :, :12] == 2).any()
    assert (lab_f[0] == 2).sum() == (lab[0] == 3).sum() == 16


def test_max_faces_per_image_keeps_the_largest():
    c = cropper("MODEL.QANET.MAX_FACES_PER_IMAGE_TRAIN", 2)
    sample = face(torch.ones(60, 80, dtype=torch.long), [[0, 0, 6, 8], [10, 10, 40, 50], [50, 5, 62, 21]])
    _, _, batch_idx = c.training_crops([sample, {k: v for k, v in sample.items() if k != "sem_seg"}])
    assert batch_idx.tolist() == [0, 0]  # two faces; no crop from the image without labels


@pytest.mark.parametrize("kind", ["global", "torch"])
def test_augmentation_distributions(kind):
    """Scale N(0,1)*0.3+1 clipped to [0.7, 1.3]: P(clipped at each end) = P(z > 1) = 0.1587;
    rotation applied with p = 0.6, N(0,1)*40 clipped to +-80: P(|z| > 2) = 0.0455; flip p = 0.5;
    shift N(0,1)*0.1 clipped to +-0.2 per axis."""
    c = cropper("MODEL.QANET.AUG.ENABLED", True, "MODEL.QANET.AUG.SHIFT_STD", 0.1)
    n = 40000
    generator = {"global": None, "torch": torch.Generator().manual_seed(1)}[kind]
    torch.manual_seed(1)
    aug = c.sample_augmentation(n, generator)
    assert aug.scale.dtype == torch.float32 and aug.flip.dtype == torch.bool and aug.shift.shape == (n, 2)
    assert float(aug.scale.min()) == pytest.approx(0.7) and float(aug.scale.max()) == pytest.approx(1.3)
    assert float((aug.scale == aug.scale.max()).float().mean()) == pytest.approx(0.1587, abs=0.01)
    assert float((aug.scale == aug.scale.min()).float().mean()) == pytest.approx(0.1587, abs=0.01)
    assert float(aug.scale.mean()) == pytest.approx(1.0, abs=0.01)
    rotated = aug.rotation != 0
    assert float(rotated.float().mean()) == pytest.approx(0.6, abs=0.01)
    assert float(aug.rotation.abs().max()) == pytest.approx(80.0)
    assert float((aug.rotation[rotated].abs() == 80.0).float().mean()) == pytest.approx(0.0455, abs=0.006)
    # N(0, 40) clipped at 2 sigma: std 40 * sqrt(0.9545 - 4 * 0.0540 + 4 * 0.0455) = 38.4
    assert float(aug.rotation[rotated].std()) == pytest.approx(38.4, abs=1.0)
    assert float(aug.flip.float().mean()) == pytest.approx(0.5, abs=0.01)
    assert float(aug.shift.abs().max()) == pytest.approx(0.2)
    # the same seed draws the same augmentation
    if kind == "torch":
        again = c.sample_augmentation(n, torch.Generator().manual_seed(1))
        assert torch.equal(again.rotation, aug.rotation) and torch.equal(again.flip, aug.flip)
    # disabled: the identity
    off = cropper().sample_augmentation(5, generator)
    assert (off.scale == 1).all() and (off.rotation == 0).all() and not off.flip.any() and (off.shift == 0).all()


def test_off_face_crops():
    """AUG.OFF_FACE_PROB 0.25: a quarter of the crops are moved 1-2 box sizes off their face
    (direction uniform) and scaled by 1.5-2.5; their labels are mostly the background found there."""
    c = cropper("MODEL.QANET.AUG.ENABLED", True, "MODEL.QANET.AUG.OFF_FACE_PROB", 0.25,
                "MODEL.QANET.AUG.OFF_FACE_SHIFT", (1.0, 2.0), "MODEL.QANET.AUG.OFF_FACE_SCALE", (1.5, 2.5))
    n = 40000
    aug = c.sample_augmentation(n, torch.Generator().manual_seed(3))
    distance = aug.shift.norm(dim=1)
    off = distance > 0
    assert float(off.float().mean()) == pytest.approx(0.25, abs=0.01)
    assert float(distance[off].min()) >= 1.0 and float(distance[off].max()) <= 2.0
    assert float(distance[off].mean()) == pytest.approx(1.5, abs=0.01)
    assert float(aug.scale[off].min()) >= 1.5 and float(aug.scale[off].mean()) == pytest.approx(2.0, abs=0.01)
    assert float(aug.scale[~off].max()) <= 1.3  # the others keep the usual scale
    angle = torch.atan2(aug.shift[off, 1], aug.shift[off, 0])
    assert float((angle > 0).float().mean()) == pytest.approx(0.5, abs=0.02)  # above as often as below
    assert float((aug.shift[off, 0] > 0).float().mean()) == pytest.approx(0.5, abs=0.02)
    # the crops: a 20x20 face (label 1) in the middle of a 200x200 background frame
    labels = torch.zeros(200, 200, dtype=torch.long)
    labels[90:110, 90:110] = 1
    sample = face(labels, [[90, 90, 110, 110]] * 64)
    plain = cropper("MODEL.QANET.AUG.ENABLED", True, "MODEL.QANET.AUG.ROTATION_PROB", 0.0)
    _, on_face, _ = plain.training_crops([sample], torch.Generator().manual_seed(0))
    c = cropper("MODEL.QANET.AUG.ENABLED", True, "MODEL.QANET.AUG.ROTATION_PROB", 0.0, "MODEL.QANET.AUG.OFF_FACE_PROB", 1.0,
                "MODEL.QANET.AUG.OFF_FACE_SHIFT", (1.0, 2.0), "MODEL.QANET.AUG.OFF_FACE_SCALE", (1.5, 2.5))
    _, off_face, _ = c.training_crops([sample], torch.Generator().manual_seed(0))
    face_share = lambda lab: (lab == 1).float().mean(dim=(1, 2))  # noqa: E731
    assert float(face_share(on_face).min()) > 0.4
    assert float(face_share(off_face).max()) < 0.25 and float((off_face == 0).float().mean()) > 0.9
    with pytest.raises(ValueError, match="OFF_FACE_PROB must be in"):
        cropper("MODEL.QANET.AUG.OFF_FACE_PROB", 1.5)
    with pytest.raises(ValueError, match="OFF_FACE_SCALE must be a range"):
        cropper("MODEL.QANET.AUG.OFF_FACE_SCALE", (2.0, 1.0))
