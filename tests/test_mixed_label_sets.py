"""One model, many label sets: merged losses on hand-made logits, per-set flips, the weighted
sampler, conversion of predictions in evaluation, routes and the validator's messages."""
import itertools
from collections import Counter

import numpy as np
import pytest
import torch
from torch.nn import functional as F

import qanet_d2  # noqa: F401
from detectron2.data import MetadataCatalog
from detectron2.data import DatasetCatalog
from qanet_d2.structures.label_sets import LabelSet, conversion_ids, get_label_set
from qanet_d2.data.mixed_label_sets import NoConversionError, training_route
from qanet_d2.engine.trainer import WeightedTrainingSampler
from qanet_d2.evaluation.face_parsing_evaluator import FaceParsingEvaluator, convert_label_map
from qanet_d2.data import TrainingCropper
from qanet_d2.modeling.qanet import QANetParser
from qanet_d2.modeling.qanet.losses import (cross_entropy_loss, iou_targets, lovasz_softmax, merge_log_probs)

SYN, FAS, CELEB = get_label_set("synthetic"), get_label_set("fasseg"), get_label_set("celebamask_hq")


def _parser(model_set, per_crop=False):
    # the losses need no layers
    return QANetParser(backbone=None, neck=None, parsing_branch=None, iou_branch=None, label_set=get_label_set(model_set),
                       lovasz_per_crop=per_crop)


def _coarse_logits(fine_logits, ids, num_coarse):
    """A coarse model whose logit of class c is the logsumexp of the fine logits mapped to c."""
    ids = torch.as_tensor(ids)
    return torch.stack([torch.logsumexp(fine_logits[:, ids == c], dim=1) for c in range(num_coarse)], dim=1)


def _case(fine, coarse, seed=0, n=3, h=6, w=5):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, fine.num_classes, h, w, generator=g) * 3
    labels = torch.randint(0, coarse.num_classes, (n, h, w), generator=g)
    labels[:, 0, :2] = 255
    return logits, labels


@pytest.mark.parametrize("per_crop", [False, True])
def test_merged_loss_equals_the_coarse_model_loss(per_crop):
    logits, labels = _case(SYN, FAS)
    ids = conversion_ids("synthetic", "fasseg")
    assert (ids != 255).all()
    coarse = _coarse_logits(logits, ids, FAS.num_classes)
    expect_ce = cross_entropy_loss(F.log_softmax(coarse, 1), labels)
    expect_lovasz = lovasz_softmax(coarse.softmax(1), labels, per_crop=per_crop)
    expect_iou = iou_targets(coarse.argmax(1), labels, FAS.num_classes)

    merged = merge_log_probs(F.log_softmax(logits, 1), ids, FAS.num_classes)
    assert torch.allclose(merged, F.log_softmax(coarse, 1), atol=1e-5)
    pred_iou = torch.full((3,), 0.5)
    out = _parser("synthetic", per_crop).losses(logits, pred_iou, labels, ["fasseg"] * 3)
    assert torch.allclose(out["loss_parsing_ce"], expect_ce, atol=1e-6)
    assert torch.allclose(out["loss_parsing_lovasz"], expect_lovasz, atol=1e-6)
    keep = expect_iou > 0
    assert torch.allclose(out["loss_iou"], (0.5 * (0.5 - expect_iou[keep]) ** 2).mean(), atol=1e-6)
    # and the merged loss is not the fine model's loss on the same numbers
    assert not torch.allclose(out["loss_parsing_ce"], cross_entropy_loss(F.log_softmax(logits, 1), labels))


def test_merged_loss_gradients_flow_to_the_fine_logits():
    logits, labels = _case(SYN, FAS)
    logits.requires_grad_(True)
    out = _parser("synthetic").losses(logits, torch.full((3,), 0.5), labels, ["fasseg"] * 3)
    (out["loss_parsing_ce"] + out["loss_parsing_lovasz"]).backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    # l_eye and r_eye share the "eyes" class: at an eyes pixel their gradients are proportional to
    # their probabilities (d/dz_k of -log(p_l + p_r) is p_k - p_k / (p_l + p_r) for k in {l, r})


def test_unmapped_fine_class_leaves_the_loss_unchanged():
    ids = conversion_ids("celebamask_hq", "fasseg")
    neck_l = CELEB.class_id("neck_l")
    assert ids[neck_l] == 255 and (ids == 255).sum() == 1
    logits, labels = _case(CELEB, FAS, seed=1)
    parser = _parser("celebamask_hq")
    base = parser.losses(logits, torch.full((3,), 0.5), labels, ["fasseg"] * 3)
    raised = logits.clone()
    raised[:, neck_l] += 6.0  # the model now puts most of its mass on the necklace
    other = parser.losses(raised, torch.full((3,), 0.5), labels, ["fasseg"] * 3)
    for key in base:
        assert torch.allclose(base[key], other[key], atol=1e-6), key
    # equal to the coarse model on the mapped classes only
    mapped = torch.as_tensor(ids != 255)
    coarse = _coarse_logits(logits[:, mapped], ids[ids != 255], FAS.num_classes)
    assert torch.allclose(base["loss_parsing_ce"], cross_entropy_loss(F.log_softmax(coarse, 1), labels), atol=1e-6)


def test_iou_target_in_the_samples_label_set():
    """Fine probabilities 0.3 l_eye, 0.3 r_eye, 0.4 skin: the fine argmax says skin, the merged
    probabilities say eyes (0.6), which is the coarse label: IoU 1, not 0."""
    p = torch.full((SYN.num_classes,), 1e-6)
    p[SYN.class_id("l_eye")], p[SYN.class_id("r_eye")], p[SYN.class_id("skin")] = 0.3, 0.3, 0.4
    logits = p.log()[None, :, None, None].expand(1, -1, 2, 2).clone()
    labels = torch.full((1, 2, 2), FAS.class_id("eyes"))
    parser = _parser("synthetic")
    out = parser.losses(logits, torch.ones(1), labels, ["fasseg"])
    assert out["loss_iou"].item() == pytest.approx(0.0, abs=1e-7)  # target 1 = prediction 1
    out = parser.losses(logits, torch.zeros(1) + 0.25, labels, ["fasseg"])
    assert out["loss_iou"].item() == pytest.approx(0.5 * 0.75 ** 2, abs=1e-6)


def test_mixed_batch_groups_crops_by_label_set():
    """Two synthetic crops and one fasseg crop: the cross-entropy is the pixel mean over the
    batch, each crop scored in its own set; per-crop Lovasz is the mean over the crops."""
    logits, fine_labels = _case(SYN, SYN, seed=2)
    _, coarse_labels = _case(SYN, FAS, seed=3)
    labels = torch.stack([fine_labels[0], coarse_labels[1], fine_labels[2]])
    sets = ["synthetic", "fasseg", None]  # None: the model's set
    out = _parser("synthetic", per_crop=True).losses(logits, torch.full((3,), 0.5), labels, sets)
    ids = conversion_ids("synthetic", "fasseg")
    fine_lp = F.log_softmax(logits, 1)
    coarse_lp = F.log_softmax(_coarse_logits(logits, ids, FAS.num_classes), 1)
    nll = [F.nll_loss(lp[None], lab[None], ignore_index=255, reduction="sum") for lp, lab in
           [(fine_lp[0], labels[0]), (coarse_lp[1], labels[1]), (fine_lp[2], labels[2])]]
    valid = (labels != 255).sum()
    assert torch.allclose(out["loss_parsing_ce"], sum(nll) / valid, atol=1e-6)
    lov = [lovasz_softmax(lp.exp()[None], lab[None], per_crop=True) for lp, lab in
           [(fine_lp[0], labels[0]), (coarse_lp[1], labels[1]), (fine_lp[2], labels[2])]]
    assert torch.allclose(out["loss_parsing_lovasz"], sum(lov) / 3, atol=1e-6)
    # one set only (the model's): exactly the plain losses
    plain = _parser("synthetic").losses(logits, torch.full((3,), 0.5), fine_labels, ["synthetic"] * 3)
    assert torch.equal(plain["loss_parsing_ce"], cross_entropy_loss(fine_lp, fine_labels))
    with pytest.raises(KeyError, match="label set 'no_such_set'"):
        _parser("synthetic").losses(logits, torch.full((3,), 0.5), fine_labels, ["no_such_set"] * 3)


def test_coarse_class_without_fine_class_is_ignored():
    """celebamask_hq as a coarse set of a synthetic model: ear_r and neck_l have no synthetic class,
    so their pixels are ignored, not an infinite loss."""
    ids = conversion_ids("synthetic", "celebamask_hq")
    logits, labels = _case(SYN, CELEB, seed=4)
    labels[:, 1] = CELEB.class_id("ear_r")
    out = _parser("synthetic").losses(logits, torch.full((3,), 0.5), labels, ["celebamask_hq"] * 3)
    assert all(torch.isfinite(v) for v in out.values())
    without = labels.clone()
    without[:, 1] = 255
    again = _parser("synthetic").losses(logits, torch.full((3,), 0.5), without, ["celebamask_hq"] * 3)
    assert torch.allclose(out["loss_parsing_ce"], again["loss_parsing_ce"])
    assert len(ids) == SYN.num_classes


# --------------------------------------------------------------------------- flips per set
def test_flip_pairs_apply_in_each_crops_label_set():
    lapa = get_label_set("lapa")
    cropper = TrainingCropper(crop_size=(4, 3), num_classes=SYN.num_classes, label_set=SYN,
                          label_set_flip_permutations={"lapa": lapa.flip_permutation()})
    # one 4 x 3 image per crop, the crop is the whole image (an identity affine)
    label = torch.tensor([[4, 5, 6]] * 4)  # synthetic: l_eye r_eye l_brow; lapa: left_eye right_eye nose
    maps = cropper.label_batch([label, label, label])
    affines = torch.tensor([[[1.0, 0, 0], [0, 1.0, 0]]] * 3)
    flip = torch.tensor([True, True, False])
    out = cropper.crop_labels(maps, torch.arange(3), affines, flip=flip, label_sets=["synthetic", "lapa", "lapa"])
    assert out[0, 0].tolist() == [5, 4, 7]  # synthetic pairs: (4,5) (6,7)
    assert out[1, 0].tolist() == [5, 4, 6]  # lapa pairs: (2,3) (4,5); 6 (nose) unpaired
    assert out[2, 0].tolist() == [4, 5, 6]  # not flipped
    fasseg = cropper.crop_labels(cropper.label_batch([torch.tensor([[1, 2, 3]] * 4)]), torch.arange(1), affines[:1],
                                 flip=flip[:1], label_sets=["fasseg"])  # registered, no pairs
    assert fasseg[0, 0].tolist() == [1, 2, 3]


# --------------------------------------------------------------------------- sampler
def _draws(sampler, n):
    return list(itertools.islice(iter(sampler), n))


def test_weighted_sampler_ratios_determinism_and_resume():
    sizes, ratios = [10, 1000, 3], [1.0, 1.0, 2.0]
    sampler = WeightedTrainingSampler(sizes, ratios, seed=7)
    draws = _draws(sampler, 20000)
    per_dataset = Counter(0 if i < 10 else 1 if i < 1010 else 2 for i in draws)
    assert per_dataset[0] / 20000 == pytest.approx(0.25, abs=0.015)
    assert per_dataset[1] / 20000 == pytest.approx(0.25, abs=0.015)
    assert per_dataset[2] / 20000 == pytest.approx(0.5, abs=0.015)
    # within a dataset, passes over all its samples: each of the 10 drawn equally often
    small = Counter(i for i in draws if i < 10)
    assert max(small.values()) - min(small.values()) <= 1
    assert set(draws) >= set(range(10)) | set(range(1010, 1013))
    # same seed, same stream; another seed, another one
    assert _draws(WeightedTrainingSampler(sizes, ratios, seed=7), 500) == draws[:500]
    assert _draws(WeightedTrainingSampler(sizes, ratios, seed=8), 500) != draws[:500]
    # a resumed run continues the stream
    assert _draws(WeightedTrainingSampler(sizes, ratios, seed=7, start_index=4321), 300) == draws[4321:4621]
    with pytest.raises(ValueError, match="one ratio per dataset"):
        WeightedTrainingSampler(sizes, [1.0, 2.0], seed=0)
    with pytest.raises(ValueError, match="positive"):
        WeightedTrainingSampler(sizes, [1.0, 0.0, 1.0], seed=0)


# --------------------------------------------------------------------------- evaluation
def test_predictions_converted_into_the_test_set(tmp_path):
    import cv2

    ids = conversion_ids("synthetic", "fasseg")
    s = SYN.class_id
    pred = np.array([[s("l_eye"), s("r_eye"), s("l_brow"), s("hair")],
                     [s("u_lip"), s("mouth"), s("neck"), s("cloth")]], np.uint8)
    assert convert_label_map(pred, ids).tolist() == [[3, 3, 2, 2], [5, 5, 1, 0]]
    assert convert_label_map(np.array([[200, 255]]), ids).tolist() == [[255, 255]]

    # the evaluator: a synthetic model on a fasseg-labelled frame, every number in fasseg's classes
    gt = np.array([[3, 3, 2, 2], [5, 5, 1, 0]], np.uint8)
    gt_file = str(tmp_path / "gt.png")
    cv2.imwrite(gt_file, gt)
    name = "test_mixed_label_sets_fasseg_like"
    MetadataCatalog.get(name).set(stuff_classes=list(FAS.classes), label_set="fasseg", ignore_label=255)
    ev = FaceParsingEvaluator(name, distributed=False, prediction_label_set=SYN)
    assert ev.conversion_note == "predictions converted from synthetic to fasseg"
    inp = {"file_name": "x.png", "sem_seg_file_name": gt_file, "image_id": "x"}
    ev.process([inp], [{"labels": torch.as_tensor(pred)}])
    res = ev.evaluate()["face_parsing"]
    assert res["mIoU"] == pytest.approx(100.0) and res["mean_F1"] == pytest.approx(100.0)
    assert {k for k in res if k.startswith("F1-")} == {f"F1-{c}" for c in FAS.classes[1:]}
    # without the conversion, the same predictions score poorly
    plain = FaceParsingEvaluator(name, distributed=False)
    assert plain.conversion_note is None
    plain.process([inp], [{"labels": torch.as_tensor(pred)}])
    assert plain.evaluate()["face_parsing"]["mIoU"] < 50
    with pytest.raises(ValueError, match="cannot be converted into label set 'lapa'"):
        MetadataCatalog.get(name + "_lapa").set(stuff_classes=list(get_label_set("lapa").classes), label_set="lapa")
        FaceParsingEvaluator(name + "_lapa", distributed=False, prediction_label_set=FAS)


# --------------------------------------------------------------------------- routes, validation
def test_training_routes():
    assert training_route(SYN, SYN) == "same"
    assert training_route(FAS, SYN) == "convert"  # synthetic labels converted for a fasseg model
    assert training_route(SYN, FAS) == "merge"  # fasseg crops: synthetic probabilities merged
    assert training_route(SYN, CELEB) == "convert"  # celebamask_hq -> synthetic exists
    assert training_route(get_label_set("lapa"), get_label_set("helen")) == "convert"
    assert training_route(FAS, get_label_set("lapa")) == "convert"
    assert training_route(get_label_set("lapa"), FAS) == "merge"
    with pytest.raises(NoConversionError, match="'test_tails'.*'fasseg'"):
        training_route(FAS, LabelSet("test_tails", ("background", "tail"), ((0, 0, 0), (1, 2, 3))))


def test_validator_on_mixed_label_sets():
    from qanet_d2.engine.validation import ConfigError, validate_config

    cfg = qanet_d2.get_qanet_cfg()
    cfg.merge_from_file(str(__import__("conftest").INSTANT_CONFIG))
    cfg.DATASETS.TRAIN = ("face_synth_train", "fasseg_frontal_train")
    cfg.DATASETS.TEST = ("fasseg_frontal_test",)
    cfg.DATALOADER.TRAIN_RATIOS = [0.7, 0.3]
    validate_config(cfg)  # synthetic model (17 classes): fasseg merged, evaluated converted
    cfg.MODEL.QANET.LABEL_SET.NAME = "fasseg"
    with pytest.raises(ConfigError, match=r"NUM_CLASSES = 17, but MODEL.QANET.LABEL_SET 'fasseg' \(label set 'fasseg'\) has 6"):
        validate_config(cfg)
    cfg.MODEL.QANET.NUM_CLASSES = 6
    validate_config(cfg)  # fasseg model: synthetic labels converted
    tails = "test_mixed_label_sets_tails"  # a set with no conversion to or from fasseg
    if tails not in DatasetCatalog.list():
        DatasetCatalog.register(tails, lambda: [])
        MetadataCatalog.get(tails).set(stuff_classes=["background", "tail"], label_set="tails")
    cfg.DATASETS.TRAIN = ("face_synth_train", tails, "lapa_train")
    cfg.DATALOADER.TRAIN_RATIOS = [1.0]
    cfg.DATASETS.TEST = ("lapa_test",)
    with pytest.raises(ConfigError) as err:
        validate_config(cfg)
    msg = str(err.value)
    assert (f"DATASETS.TRAIN: dataset '{tails}' cannot train a model of label set 'fasseg' (MODEL.QANET.LABEL_SET): "
            "no conversion between label set 'tails'") in msg
    assert "dataset 'lapa_train'" not in msg  # lapa's labels convert into fasseg's
    assert "DATASETS.TEST: dataset 'lapa_test' cannot evaluate a model of label set 'fasseg'" in msg
    assert "DATALOADER.TRAIN_RATIOS = (1.0,): expected one ratio per dataset" in msg
    cfg.MODEL.QANET.LABEL_SET.NAME = "no_such_set"
    with pytest.raises(ConfigError, match="MODEL.QANET.LABEL_SET.NAME = 'no_such_set': not a registered label set"):
        validate_config(cfg)


def test_mapper_records_and_converts_label_sets(tmp_path):
    import cv2

    from qanet_d2.data.io import DataReadError
    from qanet_d2.data.mapper import FaceParsingDatasetMapper

    s = SYN.class_id
    label = np.array([[s("l_eye"), s("r_brow"), s("u_lip"), 255]] * 3, np.uint8)
    image = np.zeros((3, 4, 3), np.uint8)
    cv2.imwrite(str(tmp_path / "im.png"), image)
    cv2.imwrite(str(tmp_path / "syn.png"), label)
    cv2.imwrite(str(tmp_path / "fas.png"), convert_label_map(label, conversion_ids("synthetic", "fasseg")))
    syn = {"file_name": str(tmp_path / "im.png"), "sem_seg_file_name": str(tmp_path / "syn.png"), "label_set": "synthetic"}
    fas = dict(syn, sem_seg_file_name=str(tmp_path / "fas.png"), label_set="fasseg")

    # a synthetic model: fasseg samples keep their labels and their set (losses merged)
    mapper = FaceParsingDatasetMapper(True, augmentations=[], num_classes=17, label_set=SYN,
                                      dataset_label_sets={"fasseg": FAS})
    out = mapper(fas)
    assert out["label_set"] == "fasseg" and out["sem_seg"][0].tolist() == [3, 2, 5, 255]
    out = mapper(syn)
    assert out["label_set"] == "synthetic" and out["sem_seg"][0].tolist() == label[0].tolist()
    # a fasseg model: synthetic labels converted into fasseg's classes
    mapper = FaceParsingDatasetMapper(True, augmentations=[], num_classes=6, label_set=FAS,
                                      dataset_label_sets={"synthetic": SYN})
    out = mapper(syn)
    assert out["label_set"] == "fasseg" and out["sem_seg"][0].tolist() == [3, 2, 5, 255]
    # label values are checked against the sample's own set
    cv2.imwrite(str(tmp_path / "bad.png"), np.full((3, 4), 7, np.uint8))
    with pytest.raises(DataReadError, match="bad.png: label values \\[7\\] are outside the label set's ids 0..5"):
        FaceParsingDatasetMapper(True, augmentations=[], num_classes=17, label_set=SYN)(
            dict(fas, sem_seg_file_name=str(tmp_path / "bad.png")))


@pytest.mark.parametrize("model_set", ["fasseg", "synthetic"])
def test_face_samples_convert_or_keep_label_sets_as_frames_do(tmp_path, model_set):
    """DATALOADER.SAMPLE_UNIT "face": a synthetic face's labels are converted into a fasseg
    model's classes, and a fasseg face keeps its labels and set for a synthetic model's merged
    losses, as on the frame route."""
    import cv2

    from detectron2.structures import BoxMode
    from qanet_d2.data import FaceInstanceDatasetMapper

    cfg = qanet_d2.get_qanet_cfg()
    cfg.merge_from_file(str(__import__("conftest").INSTANT_CONFIG))
    cfg.merge_from_list([
        "DATASETS.TRAIN", ("face_synth_train", "fasseg_frontal_train"), "DATASETS.TEST", (),
        "MODEL.QANET.LABEL_SET.NAME", model_set, "MODEL.QANET.NUM_CLASSES", 6 if model_set == "fasseg" else 17,
        "MODEL.QANET.TRAIN_MODE", "parser", "DATALOADER.SAMPLE_UNIT", "face", "MODEL.QANET.INPUT_SIZE", (32, 24),
        "MODEL.QANET.BOX_EXPAND", 1.0, "MODEL.QANET.AUG.ENABLED", False,
    ])
    mapper = FaceInstanceDatasetMapper(cfg)
    s = SYN.class_id
    label = np.full((32, 24), s("skin"), np.uint8)
    label[8:12, 4:10] = s("l_eye")
    label[20:24, 6:18] = s("u_lip")
    cv2.imwrite(str(tmp_path / "im.png"), np.full((32, 24, 3), 128, np.uint8))
    cv2.imwrite(str(tmp_path / "syn.png"), label)
    fine_to_coarse = conversion_ids("synthetic", "fasseg")
    cv2.imwrite(str(tmp_path / "fas.png"), convert_label_map(label, fine_to_coarse))
    face = {"file_name": str(tmp_path / "im.png"), "height": 32, "width": 24, "image_id": "f",
            "annotations": [{"bbox": [0.0, 0.0, 24.0, 32.0], "bbox_mode": BoxMode.XYXY_ABS, "category_id": 0}]}
    syn = mapper(dict(face, sem_seg_file_name=str(tmp_path / "syn.png"), label_set="synthetic"))
    fas = mapper(dict(face, sem_seg_file_name=str(tmp_path / "fas.png"), label_set="fasseg"))
    coarse = convert_label_map(label, fine_to_coarse)
    assert fas["label_set"] == "fasseg" and fas["face_crop_sem_seg"][0].numpy().tolist() == coarse.tolist()
    if model_set == "fasseg":
        assert syn["label_set"] == "fasseg" and syn["face_crop_sem_seg"][0].numpy().tolist() == coarse.tolist()
    else:
        assert syn["label_set"] == "synthetic" and syn["face_crop_sem_seg"][0].numpy().tolist() == label.tolist()
