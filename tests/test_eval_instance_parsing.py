"""Instance-level face parsing metrics (APp, APvol, PCP): hand-computed cases, the full-image
definition, the evaluator on model-shaped outputs and on the tiny synthetic set."""
import json
import logging
import math

import cv2
import numpy as np
import pytest
import torch

import qanet_d2  # noqa: F401
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import Boxes, Instances
from qanet_d2.evaluation import (
    InstanceParsingAccumulator,
    InstanceParsingEvaluator,
    PredictedFace,
    build_face_parsing_evaluators,
    face_part_ious,
    faces_from_output,
    match_faces,
)
from qanet_d2.evaluation.instance_parsing import single_face_instances, voc_ap
from qanet_d2.evaluation.instance_parsing_evaluator import INSTANCE_RESULTS_FILE
from qanet_d2.modeling.postprocessing import FacePostProcessor


# ----------------------------------------------------------------------------- hand-computed
def two_face_image():
    """10x10 image, classes 0..2. Face 1: rows 0-3, cols 0-3 (class 1 in rows 0-1, class 2 in rows
    2-3); face 2: the same at rows/cols 6-9. 16 + 16 face pixels, 68 background pixels."""
    gt = np.zeros((10, 10), np.uint8)
    inst = np.zeros((10, 10), np.int32)
    gt[0:2, 0:4], gt[2:4, 0:4], inst[0:4, 0:4] = 1, 2, 1
    gt[6:8, 6:10], gt[8:10, 6:10], inst[6:10, 6:10] = 1, 2, 2
    return gt, inst


def hand_faces():
    gt, _ = two_face_image()
    perfect = gt[0:4, 0:4].copy()  # face 1 exactly
    one_wrong = gt[6:10, 6:10].copy()
    one_wrong[2] = 1  # half of face 2's class 2 (row 8) predicted as class 1
    false_pos = np.ones((4, 4), np.uint8)  # rows 6-9, cols 0-3: no face there
    return [
        PredictedFace(0.9, 0.6, (0, 0, 4, 4), perfect),
        PredictedFace(0.8, 0.5, (6, 6, 10, 10), one_wrong),
        PredictedFace(0.7, 0.95, (0, 6, 4, 10), false_pos),
    ]


def test_part_ious_by_hand():
    gt, inst = two_face_image()
    faces = hand_faces()
    ious, num_parts, ids = face_part_ious([f.window for f in faces], [f.labels for f in faces], gt, inst, 3)
    assert ids.tolist() == [1, 2] and num_parts.tolist() == [2, 2]
    # perfect face vs face 1: every class exact; vs face 2: background 68 / (84 + 84 - 68), parts 0.
    np.testing.assert_allclose(ious[0, 0], [1, 1, 1])
    np.testing.assert_allclose(ious[0, 1], [0.68, 0, 0])
    # one wrong part vs face 2: class 1 8 / (8 + 12 - 8), class 2 4 / 8, background exact.
    np.testing.assert_allclose(ious[1, 1], [1, 2 / 3, 0.5])
    # false positive: background 0.68 with either face, no part overlaps.
    np.testing.assert_allclose(ious[2], [[0.68, 0, 0], [0.68, 0, 0]])


def hand_accumulator():
    gt, inst = two_face_image()
    acc = InstanceParsingAccumulator(3)
    acc.add_image("a", hand_faces(), gt, inst)
    # a second image: one ground-truth face, no prediction (unmatched)
    gt2 = np.zeros((10, 10), np.uint8)
    gt2[2:5, 2:5] = 1
    acc.add_image("b", [], gt2, (gt2 > 0).astype(np.int32))
    return acc


def test_ap_and_pcp_ranked_by_quality_score_by_hand():
    # Order: perfect (mean IoU 1), one wrong part (mean (1 + 2/3 + 1/2) / 3 = 0.722), false
    # positive (best: face 1, mean 0.227, already taken at t <= 0.2). 3 ground-truth faces.
    # t <= 0.7: TP, TP, FP -> AP = 1/3 * 1 + 1/3 * 1 = 2/3; t >= 0.8: TP, FP, FP -> AP = 1/3.
    c = hand_accumulator().compute("score")
    for t in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7):
        assert c["AP"][t] == pytest.approx(2 / 3), t
    assert c["AP"][0.8] == pytest.approx(1 / 3) and c["AP"][0.9] == pytest.approx(1 / 3)
    assert c["APvol"] == pytest.approx(16 / 27)
    # PCP: perfect face 2/2 parts at every t; the wrong one 2/2 (t <= 0.4), 1/2 (0.5, 0.6),
    # 0/2 at 0.7 (matched, no part above 0.7), unmatched above; the third face 0.
    assert c["PCP"][0.1] == pytest.approx(2 / 3)
    assert c["PCP"][0.5] == pytest.approx(0.5)
    assert c["PCP"][0.7] == pytest.approx(1 / 3) and c["PCP"][0.9] == pytest.approx(1 / 3)


def test_ap_ranked_by_box_score_by_hand():
    # Box scores put the false positive first: at t <= 0.2 it takes face 1 (mean IoU 0.227) and
    # the perfect face becomes a duplicate: TP FP TP -> AP = 1/3 + 1/3 * 2/3 = 5/9, PCP 1/3.
    # 0.3 <= t <= 0.7: FP TP TP -> 4/9; t >= 0.8: FP TP FP -> 1/6.
    c = hand_accumulator().compute("box")
    assert c["AP"][0.1] == pytest.approx(5 / 9) and c["AP"][0.2] == pytest.approx(5 / 9)
    for t in (0.3, 0.4, 0.5, 0.6, 0.7):
        assert c["AP"][t] == pytest.approx(4 / 9), t
    assert c["AP"][0.8] == pytest.approx(1 / 6)
    assert c["APvol"] == pytest.approx(11 / 27)
    assert c["PCP"][0.1] == pytest.approx(1 / 3) and c["PCP"][0.5] == pytest.approx(0.5)


def test_summary_keys_and_percentages():
    results, details = hand_accumulator().summarize()
    assert list(results)[:6] == ["APp50", "APvol", "PCP50", "APp50-box", "APvol-box", "PCP50-box"]
    assert results["APp50"] == pytest.approx(200 / 3) and results["APvol"] == pytest.approx(1600 / 27)
    assert results["APp50-box"] == pytest.approx(400 / 9) and results["PCP50-box"] == pytest.approx(50.0)
    assert results["APp80"] == pytest.approx(100 / 3)
    assert (results["num_frames"], results["num_gt_faces"], results["num_pred_faces"]) == (2, 3, 3)
    assert details["box"]["ranked_by"] == "box_score" and details["score"]["APp"]["90"] == pytest.approx(1 / 3)


def test_threshold_is_strict():
    # Face 2 predicted with class 1 everywhere: IoUs (1, 8/16, 0), mean exactly 0.5: a true
    # positive at 0.4 but not at 0.5 (the reference code tests "> t").
    gt, inst = two_face_image()
    labels = np.ones((4, 4), np.uint8)
    ious, num_parts, _ = face_part_ious([(6, 6, 10, 10)], [labels], gt, inst, 3)
    np.testing.assert_allclose(ious[0, 1], [1, 0.5, 0])
    tp, pcp = match_faces([1.0], ious, num_parts, (0.4, 0.5))
    assert tp.tolist() == [[True, False]]
    assert pcp.tolist() == [[0.5, 0.0]]  # class 1 (0.5 > 0.4) of 2 parts


def test_each_ground_truth_face_is_matched_once_and_ties_keep_input_order():
    gt, inst = two_face_image()
    perfect = gt[0:4, 0:4].copy()
    faces = [PredictedFace(0.5, 0.5, (0, 0, 4, 4), perfect), PredictedFace(0.5, 0.5, (0, 0, 4, 4), perfect)]
    ious, num_parts, _ = face_part_ious([f.window for f in faces], [f.labels for f in faces], gt, inst, 3)
    tp, _ = match_faces([0.5, 0.5], ious, num_parts)
    assert tp[:, 4].tolist() == [True, False]
    acc = InstanceParsingAccumulator(3)
    acc.add_image("a", faces, gt, inst)
    # 2 ground-truth faces: TP then duplicate -> recall 1/2 at precision 1
    assert acc.compute("score")["AP"][0.5] == pytest.approx(0.5)


def nms_faces():
    """A: face 1 exactly (score 0.9); B: face 1 with its row 3 (class 2) predicted as class 1
    (0.8); C: face 2 exactly, but scored 0.005; D: no face, class 1 at rows 6-9, cols 0-3 (0.7).
    Box scores 0.9, 0.8, 0.6, 0.5."""
    gt, _ = two_face_image()
    b = gt[0:4, 0:4].copy()
    b[3] = 1
    return [
        PredictedFace(0.9, 0.9, (0, 0, 4, 4), gt[0:4, 0:4].copy()),
        PredictedFace(0.8, 0.8, (0, 0, 4, 4), b),
        PredictedFace(0.005, 0.6, (6, 6, 10, 10), gt[6:10, 6:10].copy()),
        PredictedFace(0.7, 0.5, (0, 6, 4, 10), np.ones((4, 4), np.uint8)),
    ]


def test_parsing_nms_and_score_filter_by_hand():
    """The official QANet code's parsing NMS (0.6) and score filter (0.01) before matching.
    IoU(A, B) on the whole 10x10 image: background 84 / 84, class 1 8 / 12, class 2 4 / 8:
    mean (1 + 2/3 + 1/2) / 3 = 0.722 >= 0.6, so B goes; IoU(A, D): background 68 / 100, parts 0:
    0.227, D stays; C's score is under 0.01.
    Ranked by the quality score: A TP, D FP (2 ground-truth faces): APp50 = 1/2. Without NMS and
    filter: A TP, B FP (duplicate), D FP, C TP: 1/2 * 1 + 1/2 * 2/4 = 3/4.
    Ranked by the box score (C at 0.6 passes the filter): A TP, C TP, D FP: 1."""
    from qanet_d2.evaluation.instance_parsing import pairwise_parsing_ious, parsing_nms

    gt, inst = two_face_image()
    faces = nms_faces()
    ious = pairwise_parsing_ious(faces, gt.shape, 3)
    assert ious[0, 1] == pytest.approx((1 + 2 / 3 + 1 / 2) / 3) and ious[1, 0] == ious[0, 1]
    assert ious[0, 3] == pytest.approx(0.68 / 3)
    # C vs D: no overlap, background 68 / 100, class 1 0 / 24, class 2 0 / 8
    assert ious[2, 3] == pytest.approx(0.68 / 3)
    assert parsing_nms([f.score for f in faces], ious).tolist() == [0, 3]
    assert parsing_nms([f.box_score for f in faces], ious).tolist() == [0, 2, 3]
    assert parsing_nms([f.score for f in faces], ious, nms_thresh=0, score_thresh=0).tolist() == [0, 1, 2, 3]
    assert parsing_nms([f.score for f in faces], ious, nms_thresh=0.75).tolist() == [0, 1, 3]

    official = InstanceParsingAccumulator(3)
    official.add_image("a", faces, gt, inst)
    assert official.compute("score")["AP"][0.5] == pytest.approx(0.5)
    assert official.compute("box")["AP"][0.5] == pytest.approx(1.0)
    plain = InstanceParsingAccumulator(3, nms_thresh=0, score_thresh=0)
    plain.add_image("a", faces, gt, inst)
    assert plain.compute("score")["AP"][0.5] == pytest.approx(0.75)


def test_parsing_nms_thresholds_come_from_the_config(tmp_path):
    cfg = qanet_d2.get_qanet_cfg()
    assert (cfg.TEST.INSTANCE_PARSING_NMS_THRESH, cfg.TEST.INSTANCE_PARSING_SCORE_THRESH) == (0.6, 0.01)
    name = "qanet_test_nms_config"
    if name not in DatasetCatalog.list():
        DatasetCatalog.register(name, lambda: [])
        MetadataCatalog.get(name).set(stuff_classes=["background", "a", "b"], ignore_label=255)
    cfg.MODEL.QANET.NUM_CLASSES = 3
    cfg.MODEL.QANET.LABEL_SET.NAME = ""
    cfg.DATASETS.TEST = (name,)
    cfg.TEST.INSTANCE_PARSING_NMS_THRESH, cfg.TEST.INSTANCE_PARSING_SCORE_THRESH = 0.0, 0.0
    (ev,) = [e for e in build_face_parsing_evaluators(cfg, name, str(tmp_path))._evaluators
             if isinstance(e, InstanceParsingEvaluator)]
    assert (ev._acc.nms_thresh, ev._acc.score_thresh) == (0.0, 0.0)


def test_no_ground_truth_faces_and_no_predictions():
    acc = InstanceParsingAccumulator(3)
    acc.add_image("a", [PredictedFace(0.9, 0.9, (0, 0, 2, 2), np.ones((2, 2), np.uint8))],
                  np.zeros((5, 5), np.uint8), np.zeros((5, 5), np.int32))
    c = acc.compute("score")
    assert math.isnan(c["AP"][0.5]) and math.isnan(c["APvol"])
    gt, inst = two_face_image()
    acc.add_image("b", [], gt, inst)  # 2 faces, no prediction: AP 0, PCP 0
    c = acc.compute("score")
    assert c["AP"][0.5] == 0.0 and c["PCP"][0.5] == 0.0


def test_voc_ap_by_hand():
    assert voc_ap(np.array([0.5, 0.5, 1.0]), np.array([1.0, 0.5, 2 / 3])) == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert voc_ap(np.array([]), np.array([])) == 0.0


def _full_image_ious(window, labels, gt, inst, fid, C, ignore=255):
    """The definition written out: both maps over the whole image, one confusion matrix."""
    pred = np.zeros(gt.shape, np.int64)
    x0, y0, x1, y1 = window
    pred[y0:y1, x0:x1] = labels
    face_gt = np.where(inst == fid, gt, 0).astype(np.int64)
    valid = (gt < C) & (gt != ignore)
    hist = np.bincount(face_gt[valid] * C + pred[valid], minlength=C * C).reshape(C, C).astype(float)
    tp = np.diag(hist)
    union = hist.sum(0) + hist.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return tp / union


def test_windowed_computation_equals_the_full_image_definition():
    rng = np.random.default_rng(0)
    C, H, W = 5, 40, 50
    for _ in range(5):
        gt = cv2.resize(rng.integers(0, C, (8, 10)).astype(np.uint8), (W, H), interpolation=cv2.INTER_NEAREST)
        gt[rng.random((H, W)) < 0.03] = 255  # void pixels
        inst = np.zeros((H, W), np.int32)
        inst[2:20, 3:25], inst[15:38, 20:48], inst[30:40, 0:8] = 1, 2, 3
        inst[gt == 0] = 0
        windows, labels = [], []
        for _ in range(4):
            x0, y0 = int(rng.integers(0, W - 5)), int(rng.integers(0, H - 5))
            x1, y1 = int(rng.integers(x0 + 1, W + 1)), int(rng.integers(y0 + 1, H + 1))
            windows.append((x0, y0, x1, y1))
            labels.append(rng.integers(0, C, (y1 - y0, x1 - x0)).astype(np.uint8))
        ious, num_parts, ids = face_part_ious(windows, labels, gt, inst, C)
        for p in range(len(windows)):
            for g, fid in enumerate(ids):
                np.testing.assert_allclose(ious[p, g], _full_image_ious(windows[p], labels[p], gt, inst, fid, C))
        for g, fid in enumerate(ids):
            face = gt[(inst == fid) & (gt < C)]
            assert num_parts[g] == len(set(face.tolist()) - {0})


def test_bad_inputs_are_named():
    gt, inst = two_face_image()
    with pytest.raises(ValueError, match="do not match its window"):
        face_part_ious([(0, 0, 4, 4)], [np.zeros((3, 4), np.uint8)], gt, inst, 3)
    with pytest.raises(ValueError, match="label values"):
        face_part_ious([(0, 0, 4, 4)], [np.full((4, 4), 7, np.uint8)], gt, inst, 3)
    with pytest.raises(ValueError, match="same size"):
        face_part_ious([], [], gt, inst[:, :5], 3)


def test_single_face_instances():
    gt = np.array([[0, 1, 2], [255, 3, 9]], np.uint8)
    assert single_face_instances(gt, 4).tolist() == [[0, 1, 1], [0, 1, 0]]


# ----------------------------------------------------------------------------- the evaluator
def _instances(faces, image_size, num_classes):
    """Model-shaped outputs: one-hot crop probabilities whose crop is the face's window (crop ->
    image affine a pure translation), so pasting gives the labels back exactly."""
    inst = Instances(image_size)
    n = len(faces)
    h = max(f.window[3] - f.window[1] for f in faces)
    w = max(f.window[2] - f.window[0] for f in faces)
    probs = torch.zeros(n, num_classes, h, w)
    probs[:, 0] = 1.0
    affines = torch.zeros(n, 2, 3)
    boxes = []
    for i, f in enumerate(faces):
        x0, y0, x1, y1 = f.window
        # crops of a common size h x w: the face's labels in the top-left, background elsewhere
        lab = torch.zeros(h, w, dtype=torch.long)
        lab[: y1 - y0, : x1 - x0] = torch.from_numpy(f.labels.astype(np.int64))
        probs[i] = torch.nn.functional.one_hot(lab, num_classes).permute(2, 0, 1).float()
        affines[i] = torch.tensor([[1.0, 0, x0], [0, 1.0, y0]])
        boxes.append([x0, y0, x1, y1])
    inst.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    inst.scores = torch.tensor([f.score for f in faces])
    inst.box_scores = torch.tensor([f.box_score for f in faces])
    inst.parsing_probs = probs[:, None]  # one box-scale view
    inst.crop_affines = affines[:, None]
    # each face pasted on its window by the post-processor's per-face stage
    return {"instances": inst, "face_labels": FacePostProcessor(num_classes=num_classes).face_labels(inst)}


def test_face_labels_paste_each_face_on_its_window():
    faces = hand_faces()
    got = faces_from_output(_instances(faces, (10, 10), 3))
    assert len(got) == 3
    for f, g in zip(faces, got):
        assert (g.score, g.box_score) == pytest.approx((f.score, f.box_score))
        # the window covers the common crop size, clipped to the image
        x0, y0 = f.window[:2]
        assert g.window[:2] == (x0, y0)
        h, w = f.labels.shape
        assert (g.labels[:h, :w] == f.labels).all() and not g.labels[h:].any() and not g.labels[:, w:].any()


def _register(name, dicts, classes, **meta):
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, lambda: dicts)
    MetadataCatalog.get(name).set(stuff_classes=list(classes), ignore_label=255, **meta)


def _write_hand_dataset(root):
    gt, inst = two_face_image()
    root.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(root / "label.png"), gt)
    cv2.imwrite(str(root / "inst.png"), inst.astype(np.uint8))
    gt2 = np.zeros((10, 10), np.uint8)
    gt2[2:5, 2:5] = 1
    cv2.imwrite(str(root / "label2.png"), gt2)
    cv2.imwrite(str(root / "inst2.png"), (gt2 > 0).astype(np.uint8))
    return [
        {"file_name": "a.jpg", "image_id": "a", "sem_seg_file_name": str(root / "label.png"),
         "instance_file_name": str(root / "inst.png"), "height": 10, "width": 10},
        {"file_name": "b.jpg", "image_id": "b", "sem_seg_file_name": str(root / "label2.png"),
         "instance_file_name": str(root / "inst2.png"), "height": 10, "width": 10},
    ]


def test_evaluator_reports_the_hand_numbers_and_writes_json(tmp_path):
    dicts = _write_hand_dataset(tmp_path / "data")
    _register("test_inst_hand", dicts, ["background", "a", "b"])
    ev = InstanceParsingEvaluator("test_inst_hand", distributed=False, output_dir=str(tmp_path / "out"))
    ev.reset()
    # crops of the common size 4x4 equal the windows here, so the hand numbers hold
    ev.process(dicts[:1], [_instances(hand_faces(), (10, 10), 3)])
    ev.process(dicts[1:], [{"instances": Instances((10, 10), scores=torch.zeros(0))}])
    res = ev.evaluate()["instance_parsing"]
    assert res["APp50"] == pytest.approx(200 / 3) and res["APvol"] == pytest.approx(1600 / 27)
    assert res["PCP50"] == pytest.approx(50.0)
    assert res["APp50-box"] == pytest.approx(400 / 9) and res["APvol-box"] == pytest.approx(1100 / 27)
    assert res["num_gt_faces"] == 3 and res["num_failed_frames"] == 0
    saved = json.loads((tmp_path / "out" / INSTANCE_RESULTS_FILE).read_text())
    assert saved["summary"]["APvol"] == pytest.approx(res["APvol"])
    assert saved["rankings"]["box"]["APp"]["10"] == pytest.approx(5 / 9)


def test_evaluator_single_face_dataset_and_skips_without_per_face_ground_truth(tmp_path, caplog):
    gt = np.zeros((10, 10), np.uint8)
    gt[2:8, 2:8] = 1
    gt[4:6, 4:6] = 2
    gt[0, 0] = 255
    (tmp_path / "d").mkdir()
    cv2.imwrite(str(tmp_path / "d" / "l.png"), gt)
    dicts = [{"file_name": "x.jpg", "image_id": "x", "sem_seg_file_name": str(tmp_path / "d" / "l.png")}]
    perfect = PredictedFace(0.9, 0.9, (2, 2, 8, 8), gt[2:8, 2:8].copy())
    outputs = [_instances([perfect], (10, 10), 3)]

    _register("test_inst_single", dicts, ["background", "a", "b"], single_face=True)
    ev = InstanceParsingEvaluator("test_inst_single", distributed=False)
    ev.reset()
    ev.process(dicts, outputs)
    res = ev.evaluate()["instance_parsing"]
    assert res["APp50"] == pytest.approx(100.0) and res["APvol"] == pytest.approx(100.0) and res["PCP50"] == 100.0

    _register("test_inst_none", dicts, ["background", "a", "b"])  # several faces possible, no instance file
    ev = InstanceParsingEvaluator("test_inst_none", distributed=False)
    ev.reset()
    called = []
    ev._faces_fn = lambda out: called.append(1)  # frames without ground truth are not pasted
    ev.process(dicts, outputs)
    with caplog.at_level(logging.INFO, logger="qanet_d2.evaluation.instance_parsing_evaluator"):
        assert ev.evaluate() == {}
    assert not called
    assert sum("skipped for test_inst_none" in r.getMessage() for r in caplog.records) == 1


def test_bad_instance_file_is_counted_and_named(tmp_path):
    dicts = _write_hand_dataset(tmp_path / "data")
    cv2.imwrite(dicts[1]["instance_file_name"], np.zeros((5, 10), np.uint8))  # wrong size
    _register("test_inst_bad", dicts, ["background", "a", "b"])
    ev = InstanceParsingEvaluator("test_inst_bad", distributed=False, output_dir=str(tmp_path / "out"))
    ev.reset()
    ev.process(dicts, [_instances(hand_faces(), (10, 10), 3)] * 2)
    res = ev.evaluate()["instance_parsing"]
    assert res["num_failed_frames"] == 1 and res["num_frames"] == 1
    failed = json.loads((tmp_path / "out" / INSTANCE_RESULTS_FILE).read_text())["failed_frames"]
    assert "inst2.png" in failed[0]["problem"] and "10x5" in failed[0]["problem"]


def test_build_evaluators_adds_the_instance_evaluator(tmp_path):
    from qanet_d2.config import get_qanet_cfg

    dicts = _write_hand_dataset(tmp_path / "data")
    _register("test_inst_build", dicts, ["background", "a", "b"])
    cfg = get_qanet_cfg()
    cfg.OUTPUT_DIR = str(tmp_path / "out")
    assert cfg.TEST.INSTANCE_PARSING is True
    kinds = [type(e).__name__ for e in build_face_parsing_evaluators(cfg, "test_inst_build")._evaluators]
    assert kinds == ["FaceParsingEvaluator", "InstanceParsingEvaluator"]
    cfg.TEST.INSTANCE_PARSING = False
    kinds = [type(e).__name__ for e in build_face_parsing_evaluators(cfg, "test_inst_build")._evaluators]
    assert kinds == ["FaceParsingEvaluator"]


def test_synthetic_ground_truth_faces_score_100(synth_datasets_root, monkeypatch):
    """Each ground-truth face of the tiny synthetic set, predicted on its box's window, is a
    perfect match: every metric is 100 under both rankings."""
    from qanet_d2.data.io import read_instance_map, read_label_map

    monkeypatch.setenv("DETECTRON2_DATASETS", str(synth_datasets_root))
    name = "face_synth_val"
    dicts = DatasetCatalog.get(name)
    C = len(MetadataCatalog.get(name).stuff_classes)
    ev = InstanceParsingEvaluator(name, distributed=False)
    ev.reset()
    n_faces = 0
    for d in dicts:
        labels, inst = read_label_map(d["sem_seg_file_name"]), read_instance_map(d["instance_file_name"])
        faces = []
        for k in range(1, inst.max() + 1):
            ys, xs = np.nonzero(inst == k)
            win = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
            lab = np.where(inst == k, labels, 0)[win[1]:win[3], win[0]:win[2]]
            faces.append(PredictedFace(1.0 - 0.01 * k, 0.5, tuple(int(v) for v in win), lab))
        n_faces += len(faces)
        ev.process([d], [_instances(faces, labels.shape, C)])
    res = ev.evaluate()["instance_parsing"]
    assert res["num_gt_faces"] == n_faces == res["num_pred_faces"] and n_faces >= len(dicts)
    for k in ("APp50", "APvol", "PCP50", "APp50-box", "APvol-box", "PCP50-box"):
        assert res[k] == pytest.approx(100.0), k
