"""train_net.py on a tiny mix of label sets: the synthetic videos and a FASSEG-like dataset (the
tiny synthetic frames with their labels converted into FASSEG's six classes), both routes:
a synthetic model merging its probabilities for the FASSEG crops, and a FASSEG model whose
synthetic labels are converted; evaluated on the FASSEG-like test split."""
import json
import math
import os
import re
import shutil

import cv2
import pytest

from conftest import INSTANT_CONFIG, run_train_net
from qanet_d2.structures.label_sets import convert_labels, get_label_set

SUMMARY = re.compile(r"^fasseg_frontal_test  J&F \d+\.\d  .*mean-F1 (\d+\.\d)(.*)\(train \d+m\d\ds, eval \d+m\d\ds\)$", re.M)


@pytest.fixture(scope="module")
def mixed_root(synth_datasets_root, tmp_path_factory):
    """DETECTRON2_DATASETS with face_synth (tiny) and fasseg/frontal_{train,test}.json made from it."""
    root = tmp_path_factory.mktemp("mixed_datasets")
    os.symlink(synth_datasets_root / "face_synth", root / "face_synth")
    src, dst = synth_datasets_root / "face_synth", root / "fasseg"
    val = json.loads((src / "val.json").read_text())
    videos = []
    for video in val["videos"]:
        frames = []
        for frame in video["frames"]:
            frame = {k: v for k, v in frame.items() if k != "instance_file"}  # FASSEG: one face per photo
            for key in ("file_name", "label_file"):
                (dst / frame[key]).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src / frame["file_name"], dst / frame["file_name"])
            label = cv2.imread(str(src / frame["label_file"]), cv2.IMREAD_UNCHANGED)
            cv2.imwrite(str(dst / frame["label_file"]), convert_labels(label, "synthetic", "fasseg"))
            frames.append(frame)
        videos.append({"video_id": video["video_id"], "frames": frames})
    fasseg = get_label_set("fasseg")
    for split, part in (("frontal_train", videos[:1]), ("frontal_test", videos[1:])):
        (dst / f"{split}.json").write_text(json.dumps({"label_set": "fasseg", "classes": list(fasseg.classes), "videos": part}))
    return root


def _losses(out):
    records = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    return [r for r in records if "total_loss" in r]


@pytest.mark.parametrize("model_set", ["synthetic", "fasseg"])
def test_mixed_run_trains_and_evaluates_on_the_coarse_set(mixed_root, tmp_path, model_set):
    out = tmp_path / "run"
    opts = ["DATASETS.TRAIN", '("face_synth_train", "fasseg_frontal_train")', "DATALOADER.TRAIN_RATIOS", "(0.5, 0.5)",
            "DATASETS.TEST", '("fasseg_frontal_test",)', "MODEL.QANET.LABEL_SET.NAME", model_set,
            "MODEL.QANET.NUM_CLASSES", get_label_set(model_set).num_classes,
            "SOLVER.MAX_ITER", 3, "SOLVER.LOG_PERIOD", 1, "OUTPUT_DIR", out]
    proc = run_train_net(["--config-file", INSTANT_CONFIG, *opts], mixed_root)
    log = proc.stdout + proc.stderr
    assert "Training datasets drawn at ratios: face_synth_train 0.500" in log and "fasseg_frontal_train 0.500" in log
    records = _losses(out)
    assert [r["iteration"] for r in records] == [0, 1, 2]
    assert all(math.isfinite(r[k]) for r in records for k in ("loss_parsing_ce", "loss_parsing_lovasz", "loss_iou"))
    match = SUMMARY.search(proc.stdout)
    assert match, proc.stdout[-2000:]
    details = json.loads((out / "inference" / "fasseg_frontal_test" / "face_parsing_results.json").read_text())
    assert [c["name"] for c in details["per_class"]] == list(get_label_set("fasseg").classes)
    if model_set == "synthetic":
        assert "[predictions converted from synthetic to fasseg]" in match.group(2)
        assert details["protocol"]["predictions"] == "predictions converted from synthetic to fasseg"
        assert "Face parsing evaluation of fasseg_frontal_test (predictions converted from synthetic to fasseg)" in log
    else:
        assert "converted" not in match.group(2) and "predictions" not in details["protocol"]
