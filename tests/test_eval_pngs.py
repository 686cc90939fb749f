"""tools/evaluate_pngs.py reproduces the evaluator's numbers from saved label PNGs."""
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import qanet_d2  # noqa: F401
from qanet_d2.evaluation import FaceParsingEvaluator
from qanet_d2.evaluation.face_parsing_evaluator import RESULTS_FILE

from test_eval_evaluator import _register, make_fake_dataset, run_evaluator

REPO = Path(__file__).resolve().parents[1]


def load_tool():
    spec = importlib.util.spec_from_file_location("evaluate_pngs", REPO / "tools" / "evaluate_pngs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
