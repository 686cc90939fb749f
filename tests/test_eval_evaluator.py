"""FaceParsingEvaluator: per-frame scoring, aggregation, failures, files, distributed equality,
detection AP, and the tiny synthetic set."""
import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import qanet_d2  # noqa: F401
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode, Boxes, Instances
from qanet_d2.evaluation import (
    FaceParsingEvaluator,
    build_face_parsing_evaluators,
    score_frame,
    summarize,
)
from qanet_d2.evaluation.face_parsing_evaluator import RESULTS_FILE
from test_eval_davis import reference_f, reference_j

REPO = Path(__file__).resolve().parents[1]
CLASSES = ["background", "skin", "nose", "hair"]


# ----------------------------------------------------------------------------- score_frame
def test_score_frame_matches_davis_reference():
    rng = np.random.default_rng(0)
    gt = cv2.resize(rng.integers(0, 6, (6, 8)).astype(np.uint8), (64, 48), interpolation=cv2.INTER_NEAREST)
    gt[:3] = 255
    pred = np.roll(gt, 2, axis=1)
    pred[pred == 255] = 0
    pred[5, 5] = 9  # not a class
    s = score_frame(pred, gt, num_classes=6, ignore_label=255, bound_th=2)
    void = gt == 255
    assert math.isnan(s.j[0]) and math.isnan(s.f[0])
    for c in range(1, 6):
        assert s.j[c] == pytest.approx(reference_j(pred == c, gt == c, void))
        assert s.f[c] == pytest.approx(reference_f(pred == c, gt == c, void, bound_th=2))
    assert s.confusion.shape == (6, 7)
    assert s.confusion.sum() == (~void).sum()
    assert s.confusion[:, 6].sum() == (1 if not void[5, 5] else 0)


def test_score_frame_hand_computed_confusion_and_absent_classes():
    gt = np.array([[0, 1, 1], [0, 1, 255]], np.uint8)
    pred = np.array([[0, 1, 0], [1, 1, 2]], np.uint8)
    s = score_frame(pred, gt, num_classes=4, bound_th=1)
    # rows = gt, cols = pred (+ "not a class"); the void pixel (gt 255) is not counted.
    assert s.confusion.tolist() == [[1, 1, 0, 0, 0], [1, 2, 0, 0, 0], [0] * 5, [0] * 5]
    assert s.j[1] == pytest.approx(2 / 4)
    assert s.present.tolist() == [True, True, False, False]  # class 2 only predicted on void
    assert math.isnan(s.j[2]) and math.isnan(s.f[3])
    one = score_frame(pred, gt, num_classes=4, absent_class="one", bound_th=1)
    assert one.j[2] == one.f[2] == one.j[3] == 1.0 and math.isnan(one.j[0])


def test_score_frame_ignore_label_inside_the_class_range_and_other_dtypes():
    gt = np.array([[0, 1, 2], [3, 1, 2]])
    pred = np.array([[0, 1, 1], [3, 3, 2]], np.int32)
    for g, p in ((gt.astype(np.uint8), pred.astype(np.uint8)), (gt, pred)):
        s = score_frame(p, g, num_classes=4, ignore_label=3, bound_th=1)
        assert s.confusion.tolist() == [[1, 0, 0, 0, 0], [0, 1, 0, 1, 0], [0, 1, 1, 0, 0], [0] * 5]
        assert s.invalid_gt_pixels == 0


def test_score_frame_rejects_size_mismatch():
    with pytest.raises(ValueError, match="size"):
        score_frame(np.zeros((4, 5), np.uint8), np.zeros((5, 4), np.uint8), 3)


def test_score_frame_1080p_all_classes():
    # Speed is measured by tools/benchmark_metrics.py; here: a full-size frame scores every class.
    rng = np.random.default_rng(0)
    h, w = 1080, 1920
    gt = cv2.resize(rng.integers(0, 18, (12, 20)).astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)
    pred = np.roll(gt, 3, axis=1)
    s = score_frame(pred, gt, 18)
    assert s.present[1:].all()
    assert np.isfinite(s.f[1:]).all() and np.isfinite(s.j[1:]).all()
    # A 3-pixel shift is within the 18-pixel contour tolerance: F stays near 1 (only the columns
    # that np.roll wraps around miss), while J drops below 1 for every class.
    assert (s.f[1:] > 0.95).all() and (s.j[1:] < 1.0).all()


# ----------------------------------------------------------------------------- summarize
def _record(video, frame, j, f, present=None):
    j, f = np.asarray(j, float), np.asarray(f, float)
    if present is None:
        present = ~np.isnan(j)
        present[0] = False
    return {"video_id": video, "frame_index": frame, "file_name": f"{video}/{frame}.jpg", "j": j, "f": f,
            "present": np.asarray(present, bool)}


NAN = math.nan


def _video_records():
    # class 1 in all 4 frames; class 2 in frames 0-1 only; class 3 never.
    js = [[NAN, 1.0, 0.6, NAN], [NAN, 0.8, 0.4, NAN], [NAN, 0.4, NAN, NAN], [NAN, 0.2, NAN, NAN]]
    fs = [[NAN, 0.9, 0.5, NAN], [NAN, 0.7, 0.3, NAN], [NAN, 0.5, NAN, NAN], [NAN, 0.1, NAN, NAN]]
    return [_record("v0", t, js[t], fs[t]) for t in (3, 1, 0, 2)]  # order must not matter


def test_summarize_mean_recall_decay_by_hand():
    conf = np.zeros((4, 5), np.int64)
    results, details = summarize(_video_records(), conf, CLASSES, "skip")
    # objects: (v0, skin) J mean 0.6, (v0, nose) J mean 0.5 -> J = 0.55
    assert results["J"] == pytest.approx(55.0)
    assert results["F"] == pytest.approx(((0.9 + 0.7 + 0.5 + 0.1) / 4 + 0.4) / 2 * 100)
    assert results["J&F"] == pytest.approx((results["J"] + results["F"]) / 2)
    # recall: skin 2/4 frames > 0.5; nose 1/2 -> 0.5
    assert results["J_recall"] == pytest.approx(50.0)
    # decay with 4 frames: DAVIS bins [0:2] and [2:4]: skin 0.9 - 0.3 = 0.6; nose: last bin empty -> NaN
    assert results["J_decay"] == pytest.approx(60.0)
    assert results["num_objects"] == 2 and results["num_frames"] == 4 and results["num_videos"] == 1
    assert results["J-skin"] == pytest.approx(60.0) and results["J-nose"] == pytest.approx(50.0)
    assert math.isnan(results["J-hair"])
    frames = details["per_frame"]
    assert [f["frame_index"] for f in frames] == [0, 1, 2, 3]
    assert frames[2]["J"] == {"skin": 0.4}


def test_summarize_absent_class_one_scores_absent_frames_as_one():
    conf = np.zeros((4, 5), np.int64)
    results, _ = summarize(_video_records(), conf, CLASSES, "one")
    # nose: frames 2, 3 absent -> 1.0: mean (0.6 + 0.4 + 1 + 1) / 4 = 0.75; hair never present: no object
    assert results["J-nose"] == pytest.approx(75.0)
    assert results["J"] == pytest.approx((0.6 + 0.75) / 2 * 100)
    assert results["num_objects"] == 2


def _absent_in_one_frame_dataset(root: Path):
    """One video of two 8x8 frames. Frame 0: skin (gt rows 0-1, cols 0-3) predicted on rows
    0-1, cols 0-7 (J = 8 / 16), nose exact (rows 4-5). Frame 1: nose exact, skin absent from both."""
    dicts, preds = [], []
    for t in range(2):
        gt = np.zeros((8, 8), np.uint8)
        gt[4:6] = 2
        pred = gt.copy()
        if t == 0:
            gt[0:2, 0:4] = 1
            pred[0:2] = 1
        path = root / f"{t}.png"
        root.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), gt)
        dicts.append({"file_name": f"{t}.jpg", "sem_seg_file_name": str(path), "video_id": "v", "frame_index": t})
        preds.append(pred)
    return dicts, preds


@pytest.mark.parametrize("configured", ["skip", "one"])
def test_both_absent_class_conventions_from_one_pass_by_hand(tmp_path, configured):
    from qanet_d2.engine import format_summary_line

    dicts, preds = _absent_in_one_frame_dataset(tmp_path / "data")
    _register("test_eval_absent", dicts)
    # 50-pixel contour tolerance: F = 1 wherever both boundaries exist.
    ev = FaceParsingEvaluator("test_eval_absent", distributed=False, bound_th=50, absent_class=configured,
                              output_dir=str(tmp_path / "out"))
    res = run_evaluator(ev, dicts, preds)["face_parsing"]
    # skip: skin J 0.5 (frame 0 only), nose 1 -> J 0.75, F 1, J&F 0.875
    # one:  skin J (0.5 + 1) / 2 = 0.75, nose 1 -> J 0.875, F 1, J&F 0.9375
    assert res["J&F(skip)"] == pytest.approx(87.5) and res["J(skip)"] == pytest.approx(75.0)
    assert res["F(skip)"] == pytest.approx(100.0)
    assert res["J&F(one)"] == pytest.approx(93.75) and res["J(one)"] == pytest.approx(87.5)
    assert res["F(one)"] == pytest.approx(100.0)
    for k in ("J&F", "J", "F"):
        assert res[k] == res[f"{k}({configured})"]
    assert res["J-skin"] == pytest.approx(50.0 if configured == "skip" else 75.0)
    saved = json.loads((tmp_path / "out" / RESULTS_FILE).read_text())["summary"]
    assert saved["J&F(one)"] == pytest.approx(93.75) and saved["J&F(skip)"] == pytest.approx(87.5)

    line = format_summary_line("d", {"face_parsing": res}, eval_seconds=5)
    if configured == "skip":
        assert line.startswith("d  J&F 87.5  J 75.0  F 100.0  J&F(one) 93.8  J(one) 87.5  F(one) 100.0  mIoU ")
    else:
        assert line.startswith("d  J&F 93.8  J 87.5  F 100.0  J&F(skip) 87.5  J(skip) 75.0  F(skip) 100.0  mIoU ")
    assert line.endswith("(eval 0m05s)")


def test_summary_line_carries_the_instance_metrics():
    from qanet_d2.engine import format_summary_line

    fp = {"J&F": 70.0, "J": 60.0, "F": 80.0, "J&F(skip)": 70.0, "J(skip)": 60.0, "F(skip)": 80.0,
          "J&F(one)": 75.0, "J(one)": 70.0, "F(one)": 80.0, "mIoU": 50.0, "mean_F1": 55.0}
    inst = {"APp50": 40.0, "APvol": 35.5, "PCP50": 30.25, "APp50-box": 20.0}
    line = format_summary_line("d", {"d": {"face_parsing": fp, "instance_parsing": inst}})
    assert line == ("d  J&F 70.0  J 60.0  F 80.0  J&F(one) 75.0  J(one) 70.0  F(one) 80.0  mIoU 50.0  "
                    "mean-F1 55.0  APp50 40.0  APvol 35.5  PCP50 30.2")
    bbox = {"AP": 81.25, "num_gt_faces": 50, "missed_faces": 2}
    line = format_summary_line("d", {"d": {"face_parsing": fp, "bbox": bbox}})
    assert line.endswith("mean-F1 55.0  face-AP 81.2  missed faces 2/50")


def test_summarize_single_frame_videos_have_no_decay():
    recs = [_record(f"img{i}", 0, [NAN, 0.5 + 0.1 * i, NAN, NAN], [NAN, 0.5, NAN, NAN]) for i in range(3)]
    results, _ = summarize(recs, np.zeros((4, 5), np.int64), CLASSES)
    assert "J_decay" not in results
    assert results["J"] == pytest.approx(60.0) and results["num_videos"] == 3


def test_summarize_confusion_metrics_by_hand():
    # rows gt, cols pred (+ not-a-class)
    conf = np.array([
        [50, 5, 0, 0, 0],
        [10, 30, 0, 0, 0],
        [0, 0, 0, 0, 0],
        [0, 0, 0, 20, 5],
    ])
    results, details = summarize([], conf, CLASSES)
    iou_bg, iou_skin, iou_hair = 50 / (50 + 10 + 5), 30 / (30 + 5 + 10), 20 / 25
    f1_skin, f1_hair = 60 / (60 + 5 + 10), 40 / (40 + 5)
    assert results["mIoU"] == pytest.approx((iou_bg + iou_skin + iou_hair) / 3 * 100)
    assert results["fg_mIoU"] == pytest.approx((iou_skin + iou_hair) / 2 * 100)
    assert results["mean_F1"] == pytest.approx((f1_skin + f1_hair) / 2 * 100)
    assert results["pACC"] == pytest.approx(100 / 120 * 100)
    assert math.isnan(results["IoU-nose"])  # no support: left out of the means


# ----------------------------------------------------------------------------- the evaluator
def _register(name, dicts, classes=CLASSES):
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, lambda: dicts)
    MetadataCatalog.get(name).set(stuff_classes=list(classes), ignore_label=255, thing_classes=["face"],
                                  evaluator_type="face_parsing")


def make_fake_dataset(root: Path, num_videos=3, frames=5, size=(24, 32), seed=0, write=True):
    """Label PNGs + dataset dicts (contract keys) + matching predicted label maps."""
    rng = np.random.default_rng(seed)
    dicts, preds = [], []
    h, w = size
    for v in range(num_videos):
        for t in range(frames):
            gt = np.zeros((h, w), np.uint8)
            y, x = 4 + t % 3, 6 + v
            gt[y : y + 14, x : x + 12] = 1
            gt[y + 5 : y + 8, x + 4 : x + 7] = 2
            if v % 2 == 0:
                gt[:3, x : x + 12] = 3
            gt[-2:, :4] = 255
            pred = gt.copy()
            pred[pred == 255] = 0
            pred = np.roll(pred, int(rng.integers(-2, 3)), axis=1)
            if t == 2:
                pred[pred == 2] = 1  # nose missed in one frame
            label_file = root / "labels" / f"v{v}" / f"{t:05d}.png"
            if write:
                label_file.parent.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(label_file), gt)
            x0, y0 = x, y
            dicts.append({
                "file_name": str(root / "images" / f"v{v}" / f"{t:05d}.jpg"),
                "sem_seg_file_name": str(label_file), "height": h, "width": w,
                "image_id": f"v{v}/{t}", "video_id": f"v{v}", "frame_index": t,
                "annotations": [{"bbox": [x0, y0, x0 + 12, y0 + 14], "bbox_mode": BoxMode.XYXY_ABS, "category_id": 0}],
            })
            preds.append(pred)
    return dicts, preds


def one_hot_output(pred, num_classes=4, box=None):
    out = {"labels": torch.from_numpy(np.asarray(pred, np.uint8))}
    if box is not None:
        inst = Instances(pred.shape)
        inst.pred_boxes = Boxes(torch.tensor([box], dtype=torch.float32))
        inst.scores = torch.tensor([0.9])
        inst.pred_classes = torch.tensor([0])
        out["instances"] = inst
    return out


def run_evaluator(evaluator, dicts, preds, batch=2):
    evaluator.reset()
    for i in range(0, len(dicts), batch):
        evaluator.process(dicts[i : i + batch], [one_hot_output(p) for p in preds[i : i + batch]])
    return evaluator.evaluate()


def test_evaluator_end_to_end_and_files(tmp_path):
    dicts, preds = make_fake_dataset(tmp_path / "data")
    _register("test_eval_fake", dicts)
    out_dir = tmp_path / "out"
    ev = FaceParsingEvaluator("test_eval_fake", distributed=False, output_dir=str(out_dir), bound_th=1, save_labels=True)
    res = run_evaluator(ev, dicts, preds)["face_parsing"]

    # Same numbers straight from score_frame + summarize.
    records, conf = [], np.zeros((4, 5), np.int64)
    for d, p in zip(dicts, preds):
        s = score_frame(p, cv2.imread(d["sem_seg_file_name"], cv2.IMREAD_UNCHANGED), 4, 255, "skip", 1)
        conf += s.confusion
        records.append({"video_id": d["video_id"], "frame_index": d["frame_index"], "file_name": d["file_name"],
                        "j": s.j, "f": s.f, "present": s.present})
    want, _ = summarize(records, conf, CLASSES)
    assert res.keys() == want.keys()
    for k in want:
        assert res[k] == pytest.approx(want[k], nan_ok=True), k
    assert 0 < res["J&F"] < 100 and res["num_failed_frames"] == 0 and res["num_frames"] == 15
    assert res["num_objects"] == 3 + 3 + 2  # skin, nose in 3 videos; hair in 2

    detail = json.loads((out_dir / RESULTS_FILE).read_text())
    assert detail["summary"]["J"] == pytest.approx(res["J"])
    assert len(detail["per_frame"]) == 15 and set(detail["per_video"]) == {"v0", "v1", "v2"}
    assert [c["name"] for c in detail["per_class"]] == CLASSES
    saved = cv2.imread(str(out_dir / "labels" / "v1" / "00003.png"), cv2.IMREAD_UNCHANGED)
    assert (saved == preds[5 + 3]).all()


def test_ground_truth_as_prediction_scores_100(tmp_path):
    dicts, _ = make_fake_dataset(tmp_path / "data", num_videos=2, frames=3)
    _register("test_eval_fake_gt", dicts)
    gts = [cv2.imread(d["sem_seg_file_name"], cv2.IMREAD_UNCHANGED) for d in dicts]
    preds = [np.where(g == 255, 0, g) for g in gts]
    res = run_evaluator(FaceParsingEvaluator("test_eval_fake_gt", distributed=False), dicts, preds)["face_parsing"]
    for k in ("J&F", "J", "F", "mIoU", "fg_mIoU", "mean_F1", "pACC", "J_recall", "F_recall"):
        assert res[k] == pytest.approx(100.0), k
    assert res["J_decay"] == pytest.approx(0.0)


def test_per_pose_numbers_by_hand(tmp_path, caplog):
    """Frames with a head pose get confusion-matrix numbers per pose (FASSEG multipose)."""
    gt = np.array([[0, 1, 1, 3], [0, 1, 2, 3]], np.uint8)
    frames = [  # (pose, prediction)
        (-90, np.array([[0, 1, 0, 3], [0, 1, 2, 3]], np.uint8)),  # one skin pixel missed
        (0, gt.copy()),
        (0, np.array([[0, 1, 1, 3], [0, 1, 1, 0]], np.uint8)),  # nose -> skin, one hair pixel missed
    ]
    dicts = []
    for i, (pose, _) in enumerate(frames):
        path = tmp_path / f"{i}.png"
        cv2.imwrite(str(path), gt)
        dicts.append({"file_name": f"{i}.jpg", "sem_seg_file_name": str(path), "height": 2, "width": 4,
                      "video_id": f"v{i}", "frame_index": 0, "pose": pose})
    _register("test_eval_poses", dicts)
    ev = FaceParsingEvaluator("test_eval_poses", distributed=False, output_dir=str(tmp_path / "out"), bound_th=1)
    with caplog.at_level("INFO", logger="qanet_d2.evaluation.face_parsing_evaluator"):
        run_evaluator(ev, dicts, [p for _, p in frames])
    per_pose = json.loads((tmp_path / "out" / RESULTS_FILE).read_text())["per_pose"]
    assert list(per_pose) == ["-90", "0"]
    # pose -90: skin tp 2, fn 1 -> F1 4/5; nose, hair perfect
    assert per_pose["-90"]["num_frames"] == 1
    assert per_pose["-90"]["F1"] == pytest.approx({"skin": 80.0, "nose": 100.0, "hair": 100.0})
    # pose 0 (two frames): skin tp 6, fp 1 -> 12/13; nose tp 1, fn 1 -> 2/3; hair tp 3, fn 1 -> 6/7
    assert per_pose["0"]["F1"] == pytest.approx({"skin": 1200 / 13, "nose": 200 / 3, "hair": 600 / 7})
    assert per_pose["0"]["mean_F1"] == pytest.approx((1200 / 13 + 200 / 3 + 600 / 7) / 3)
    # background: tp 4, fp 1 (a hair pixel) -> IoU 4/5; skin 6/7, nose 1/2, hair 3/4
    assert per_pose["0"]["mIoU"] == pytest.approx((4 / 5 + 6 / 7 + 1 / 2 + 3 / 4) / 4 * 100)
    assert "Per head pose" in caplog.text


def test_bad_frames_are_counted_and_reported(tmp_path):
    dicts, preds = make_fake_dataset(tmp_path / "data", num_videos=1, frames=4)
    dicts[1] = dict(dicts[1], sem_seg_file_name=str(tmp_path / "missing.png"))
    Path(dicts[2]["sem_seg_file_name"]).write_bytes(b"not a png")
    preds[3] = preds[3][:, :-1]  # size mismatch
    _register("test_eval_fake_bad", dicts)
    ev = FaceParsingEvaluator("test_eval_fake_bad", distributed=False, output_dir=str(tmp_path / "out"))
    res = run_evaluator(ev, dicts, preds)["face_parsing"]
    assert res["num_failed_frames"] == 3 and res["num_frames"] == 1
    assert np.isfinite(res["J"])
    failed = json.loads((tmp_path / "out" / RESULTS_FILE).read_text())["failed_frames"]
    assert [Path(f["file_name"]).name for f in failed] == ["00001.jpg", "00002.jpg", "00003.jpg"]
    assert "size" in failed[2]["problem"]


def test_build_evaluators_with_detection_ap(tmp_path):
    from qanet_d2.config import get_qanet_cfg

    dicts, preds = make_fake_dataset(tmp_path / "data", num_videos=2, frames=2)
    _register("test_eval_fake_det", dicts)
    cfg = get_qanet_cfg()
    cfg.TEST.DETECTION_AP = True
    cfg.OUTPUT_DIR = str(tmp_path / "out")
    evaluators = build_face_parsing_evaluators(cfg, "test_eval_fake_det")
    evaluators.reset()
    for i, (d, p) in enumerate(zip(dicts, preds)):
        x0, y0, x1, y1 = d["annotations"][0]["bbox"]
        box = [x0, y0, x1, y1] if i else [x0 + 7, y0, x1 + 7, y1]  # first frame: IoU 5/19 < 0.5
        evaluators.process([d], [one_hot_output(p, box=box)])
    res = evaluators.evaluate()
    assert 0 < res["bbox"]["AP"] < 100
    assert res["bbox"]["num_gt_faces"] == 4 and res["bbox"]["missed_faces"] == 1
    assert "J&F" in res["face_parsing"]
    assert (tmp_path / "out" / "inference" / "test_eval_fake_det" / RESULTS_FILE).exists()


def test_count_missed_faces_by_hand():
    from qanet_d2.evaluation.face_detection_evaluator import count_missed_faces

    gt = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [50, 50, 60, 60]], float)
    # IoU with gt 0: 1 (kept); with gt 1: 50/150 (missed); gt 2 without any prediction
    pred = np.array([[0, 0, 10, 10], [25, 20, 35, 30]], float)
    assert count_missed_faces(gt, pred) == 2
    assert count_missed_faces(gt, pred, iou=0.3) == 1
    assert count_missed_faces(gt, np.zeros((0, 4))) == 3 and count_missed_faces(np.zeros((0, 4)), pred) == 0


# ----------------------------------------------------------------------------- two processes
TWO_PROCESS_SCRIPT = textwrap.dedent(
    """
    import json, sys
    sys.path.insert(0, {repo!r})
    sys.path.insert(0, {tests!r})
    import qanet_d2
    from detectron2.utils import comm
    from qanet_d2.engine.launch import launch
    from qanet_d2.evaluation import FaceParsingEvaluator
    from test_eval_evaluator import make_fake_dataset, _register, one_hot_output
    from pathlib import Path

    def main(root, out):
        dicts, preds = make_fake_dataset(Path(root), write=False)  # written by the test
        _register("test_eval_fake_dist", dicts)
        ev = FaceParsingEvaluator("test_eval_fake_dist", distributed=True, bound_th=1)
        ev.reset()
        rank, world = comm.get_rank(), comm.get_world_size()
        for i in range(rank, len(dicts), world):  # interleaved shards
            ev.process([dicts[i]], [one_hot_output(preds[i])])
        res = ev.evaluate()
        if comm.is_main_process():
            json.dump(res, open(out, "w"))

    if __name__ == "__main__":
        launch(main, int(sys.argv[3]), args=(sys.argv[1], sys.argv[2]))
    """
)


def test_two_processes_give_the_single_process_numbers(tmp_path):
    script = tmp_path / "two_proc.py"
    script.write_text(TWO_PROCESS_SCRIPT.format(repo=str(REPO), tests=str(REPO / "tests")))
    dicts, preds = make_fake_dataset(tmp_path / "data")
    _register("test_eval_fake_single", dicts)
    single = run_evaluator(FaceParsingEvaluator("test_eval_fake_single", bound_th=1), dicts, preds, batch=1)
    single = json.loads(json.dumps(single))["face_parsing"]  # same float round trip as the other side

    out = tmp_path / "res2.json"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / "data"), str(out), "2"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = json.loads(out.read_text())["face_parsing"]
    assert single["num_frames"] == 15 and single["num_failed_frames"] == 0
    assert two == single  # exactly (no NaN in this data)


# ----------------------------------------------------------------------------- synthetic set
def test_synthetic_set_ground_truth_and_swapped_eyes(synth_datasets_root, monkeypatch, tmp_path):
    from qanet_d2.data.io import read_label_map

    monkeypatch.setenv("DETECTRON2_DATASETS", str(synth_datasets_root))
    name = "face_synth_val"
    dicts = DatasetCatalog.get(name)
    classes = MetadataCatalog.get(name).stuff_classes
    C, l_eye, r_eye = len(classes), classes.index("l_eye"), classes.index("r_eye")
    gts = [read_label_map(d["sem_seg_file_name"]) for d in dicts]
    perfect = [np.where(g == 255, 0, g) for g in gts]

    def evaluate(preds):
        ev = FaceParsingEvaluator(name, distributed=False, output_dir=str(tmp_path))
        ev.reset()
        for d, p in zip(dicts, preds):
            ev.process([d], [one_hot_output(p, C)])
        return ev.evaluate()["face_parsing"]

    res = evaluate(perfect)
    assert res["num_frames"] == len(dicts) and res["num_failed_frames"] == 0
    for k in ("J&F", "J", "F", "mIoU", "mean_F1", "pACC"):
        assert res[k] == pytest.approx(100.0), k

    # Left and right eyes swapped: those objects score J = 0 in every frame they appear in,
    # everything else stays perfect; IoU of both eye classes drops to 0.
    swap = np.arange(256, dtype=np.uint8)
    swap[l_eye], swap[r_eye] = r_eye, l_eye
    swapped = [swap[p] for p in perfect]
    res = evaluate(swapped)
    objects, eye_objects = set(), set()  # (video, class) present in ground truth or prediction
    for d, g, p in zip(dicts, gts, swapped):
        valid = g != 255
        for c in np.union1d(g[valid], p[valid]):
            if c > 0:
                objects.add((d["video_id"], c))
                if c in (l_eye, r_eye):
                    eye_objects.add((d["video_id"], c))
    assert eye_objects, "the synthetic faces should show eyes"
    assert res["num_objects"] == len(objects)
    assert res["J"] == pytest.approx(100.0 * (len(objects) - len(eye_objects)) / len(objects))
    assert res["J-l_eye"] == res["J-r_eye"] == 0.0
    supported = sum(1 for c in range(C) if any((g == c).any() for g in gts))
    assert res["mIoU"] == pytest.approx(100.0 * (supported - 2) / supported)
    assert res["F"] < 100.0


def test_label_map_path_and_class_score_path_agree(synth_datasets_root, monkeypatch):
    """The evaluator scores the model's label map; outputs with only class scores are scored by
    their argmax. On the instant model's real outputs both give the same numbers, and the label
    map of a plain call (no class scores computed) is the one of a call with class scores."""
    from detectron2.modeling import build_model
    from qanet_d2 import get_qanet_cfg
    from qanet_d2.data.mapper import FaceParsingDatasetMapper

    monkeypatch.setenv("DETECTRON2_DATASETS", str(synth_datasets_root))
    cfg = get_qanet_cfg()
    cfg.merge_from_file(str(REPO / "configs" / "quick_schedules" / "qanet_fcos_synth_instant_test.yaml"))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.QANET.TEST_BOXES", "gt", "MODEL.QANET.INFERENCE.BOX_SCORE_THRESH", 0.0])
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    mapper = FaceParsingDatasetMapper(cfg, is_train=False)
    name = "face_synth_val"
    dicts = DatasetCatalog.get(name)[:6]
    by_labels, by_scores = (FaceParsingEvaluator(name, distributed=False) for _ in range(2))
    for e in (by_labels, by_scores):
        e.reset()
    for d in dicts:
        x = mapper(d)
        plain = model([x])[0]
        scored = model.inference([x], class_scores=True)[0]
        assert torch.equal(plain["labels"], scored["labels"])
        assert (plain["labels"] != 0).any()
        assert np.array_equal(plain["labels"].numpy(), scored["sem_seg"].argmax(dim=0).to(torch.uint8).numpy())
        by_labels.process([d], [plain])
        by_scores.process([d], [{"labels": scored["sem_seg"].argmax(dim=0).to(torch.uint8)}])
    a, b = by_labels.evaluate()["face_parsing"], by_scores.evaluate()["face_parsing"]
    assert a["num_frames"] == 6 and a["num_objects"] > 0
    for k in a:
        assert a[k] == pytest.approx(b[k], nan_ok=True), k
