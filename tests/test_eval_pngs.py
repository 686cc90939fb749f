"""tools/evaluate_pngs.py reproduces the evaluator's numbers from saved label PNGs."""
import json

import numpy as np
import pytest
from PIL import Image

import qanet_d2  # noqa: F401
from qanet_d2.evaluation import FaceParsingEvaluator
from qanet_d2.evaluation.face_parsing_evaluator import RESULTS_FILE, _json_safe

from test_eval_evaluator import _register, make_fake_dataset, run_evaluator

from conftest import REPO, load_script


def load_tool():
    return load_script("tools/evaluate_pngs.py", "evaluate_pngs")


@pytest.mark.parametrize("absent_class", ["skip", "one"])
def test_evaluate_pngs_reproduces_the_evaluator(tmp_path, absent_class):
    dicts, preds = make_fake_dataset(tmp_path / "data")
    _register("test_eval_pngs_fake", dicts)
    model_dir = tmp_path / "model_eval"
    ev = FaceParsingEvaluator("test_eval_pngs_fake", distributed=False, output_dir=str(model_dir),
                              absent_class=absent_class, bound_th=2, save_labels=True)
    want = run_evaluator(ev, dicts, preds)["face_parsing"]

    pred_dir = model_dir / "labels"
    # A palette PNG holds its indices: rewrite one prediction that way.
    one = pred_dir / "v0" / "00001.png"
    im = Image.fromarray(np.asarray(Image.open(one)), "P")
    im.putpalette([i % 256 for i in range(768)])
    im.save(one)

    got = load_tool().main(["--gt-dataset", "test_eval_pngs_fake", "--pred-dir", str(pred_dir),
                            "--output-dir", str(tmp_path / "png_eval"), "--absent-class", absent_class,
                            "--bound-th", "2"])["face_parsing"]
    assert got == want
    a = json.loads((model_dir / RESULTS_FILE).read_text())
    b = json.loads((tmp_path / "png_eval" / RESULTS_FILE).read_text())
    assert a["per_frame"] == b["per_frame"] and a["per_video"] == b["per_video"]


def test_missing_prediction_is_a_failed_frame(tmp_path):
    dicts, preds = make_fake_dataset(tmp_path / "data", num_videos=1, frames=3)
    _register("test_eval_pngs_missing", dicts)
    ev = FaceParsingEvaluator("test_eval_pngs_missing", distributed=False, output_dir=str(tmp_path / "m"),
                              save_labels=True)
    run_evaluator(ev, dicts, preds)
    (tmp_path / "m" / "labels" / "v0" / "00002.png").unlink()
    got = load_tool().main(["--gt-dataset", "test_eval_pngs_missing", "--pred-dir", str(tmp_path / "m" / "labels")])
    assert got["face_parsing"]["num_failed_frames"] == 1 and got["face_parsing"]["num_frames"] == 2
    detail = json.loads((tmp_path / "m" / "labels" / RESULTS_FILE).read_text())
    assert "00002.png" in detail["failed_frames"][0]["problem"]


def test_command_line_on_the_synthetic_set(synth_datasets_root, monkeypatch, tmp_path):
    import os
    import subprocess
    import sys

    from detectron2.data import DatasetCatalog, MetadataCatalog
    from qanet_d2.data.io import read_label_map
    from test_eval_evaluator import one_hot_output

    monkeypatch.setenv("DETECTRON2_DATASETS", str(synth_datasets_root))
    dicts = DatasetCatalog.get("face_synth_val")
    C = len(MetadataCatalog.get("face_synth_val").stuff_classes)
    ev = FaceParsingEvaluator("face_synth_val", distributed=False, output_dir=str(tmp_path / "model"), save_labels=True)
    ev.reset()
    for d in dicts:
        pred = np.where(read_label_map(d["sem_seg_file_name"]) == 255, 0, read_label_map(d["sem_seg_file_name"]))
        pred = np.roll(pred, 2, axis=1)  # imperfect
        ev.process([d], [one_hot_output(pred, C)])
    want = ev.evaluate()["face_parsing"]
    assert 0 < want["J&F"] < 100

    env = {**os.environ, "PYTHONWARNINGS": "ignore", "DETECTRON2_DATASETS": str(synth_datasets_root)}
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools" / "evaluate_pngs.py"), "--gt-dataset", "face_synth_val",
         "--pred-dir", str(tmp_path / "model" / "labels"), "--output-dir", str(tmp_path / "pngs")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads((tmp_path / "pngs" / RESULTS_FILE).read_text())["summary"]
    assert got == _json_safe(dict(want))  # NaN (a class without pixels) is null in the file
    assert "J&F" in proc.stdout + proc.stderr  # the table is shown
