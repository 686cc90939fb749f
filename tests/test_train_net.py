"""train_net.py end to end on the tiny synthetic set: train, checkpoint, --eval-only, summary line."""
import json
import re

import pytest
import torch

from conftest import INSTANT_CONFIG, load_script, run_train_net

SUMMARY = re.compile(
    r"^face_synth_val  J&F (\d+\.\d)  J (\d+\.\d)  F (\d+\.\d)  J&F\(one\) (\d+\.\d)  J\(one\) (\d+\.\d)  "
    r"F\(one\) (\d+\.\d)  mIoU (\d+\.\d)  mean-F1 (\d+\.\d)  APp50 (\d+\.\d)  APvol (\d+\.\d)  PCP50 (\d+\.\d)  "
    r"\(.*eval \d+m\d\ds\)$", re.M)


@pytest.fixture(scope="module")
def trained_run(synth_datasets_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("train_net_run")
    proc = run_train_net(
        ["--config-file", INSTANT_CONFIG, "OUTPUT_DIR", out, "SOLVER.MAX_ITER", 4, "SOLVER.CHECKPOINT_PERIOD", 2, "SOLVER.LOG_PERIOD", 1],
        synth_datasets_root,
    )
    return out, proc


def test_training_writes_checkpoints_metrics_and_summary(trained_run):
    out, proc = trained_run
    assert (out / "model_final.pth").is_file()
    assert (out / "model_0000001.pth").is_file() and (out / "model_0000003.pth").is_file()
    assert (out / "last_checkpoint").read_text() == "model_final.pth"
    records = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    iterations = [r["iteration"] for r in records if "total_loss" in r]
    assert iterations == [0, 1, 2, 3]
    losses = {k for r in records for k in r if k.startswith("loss_")}
    assert {"loss_parsing_ce", "loss_parsing_lovasz", "loss_iou"} <= losses
    assert any(k.startswith("loss_fcos") for k in losses)
    # Checkpoints hold only tensors and plain values.
    ckpt = torch.load(out / "model_final.pth", weights_only=True)
    assert ckpt["iteration"] == 3 and "model" in ckpt
    assert ckpt["trainer"]["_trainer"]["optimizer"]["state"], "Adam moments must be saved for an exact resume"
    match = SUMMARY.search(proc.stdout)
    assert match, proc.stdout[-2000:]
    assert all(0.0 <= float(v) <= 100.0 for v in match.groups())


def test_eval_only_reproduces_final_evaluation(trained_run, synth_datasets_root):
    out, train_proc = trained_run
    proc = run_train_net(
        ["--config-file", INSTANT_CONFIG, "--eval-only", "MODEL.WEIGHTS", out / "model_final.pth", "OUTPUT_DIR", out / "eval"],
        synth_datasets_root,
    )
    after_training = SUMMARY.search(train_proc.stdout).groups()
    eval_only = SUMMARY.search(proc.stdout)
    assert eval_only, proc.stdout[-2000:]
    assert eval_only.groups() == after_training
    assert (out / "eval" / "inference").is_dir()


def test_eval_only_uses_flip_test_and_ensemble(trained_run, synth_datasets_root):
    """TEST.AUG and TEST.ENSEMBLE.WEIGHTS reach the evaluation of train_net.py; an ensemble of a checkpoint
    with itself scores exactly like the checkpoint alone."""
    out, train_proc = trained_run
    weights = out / "model_final.pth"
    proc = run_train_net(
        ["--config-file", INSTANT_CONFIG, "--eval-only", "MODEL.WEIGHTS", weights, "TEST.ENSEMBLE.WEIGHTS", f"['{weights}']",
         "OUTPUT_DIR", out / "eval_ens"],
        synth_datasets_root,
    )
    assert "Test-time model: 2 parser(s), views (box scale, flip) [(1.0, False)]" in proc.stdout + proc.stderr
    assert SUMMARY.search(proc.stdout).groups() == SUMMARY.search(train_proc.stdout).groups()

    proc = run_train_net(
        ["--config-file", INSTANT_CONFIG, "--eval-only", "MODEL.WEIGHTS", weights, "OUTPUT_DIR", out / "eval_flip",
         "TEST.AUG.ENABLED", "True", "TEST.AUG.FLIP", "True", "TEST.AUG.BOX_SCALES", "(1.0, 1.2)"],
        synth_datasets_root,
    )
    assert "Test-time model: 1 parser(s), views (box scale, flip) [(1.0, False), (1.0, True), (1.2, False), (1.2, True)]" in (
        proc.stdout + proc.stderr)
    assert SUMMARY.search(proc.stdout), proc.stdout[-2000:]


def test_detector_stage_trains_the_joint_recipes_detector(synth_datasets_root, tmp_path):
    """A detector-only run (``MODEL.QANET.TRAIN_MODE detector``) sees the frames of the joint run
    draw for draw (grey frames and resize choices come after the crops' draws): both train the
    same detector, bit for bit, whatever the parser does."""
    common = ["--config-file", INSTANT_CONFIG, "SOLVER.MAX_ITER", 3, "DATASETS.TEST", "()", "SEED", 3,
              "INPUT.GRAYSCALE_PROB", 0.5, "INPUT.MIN_SIZE_TRAIN", "(112, 128, 144, 160)"]
    checkpoints = {}
    for mode in ("joint", "detector"):
        out = tmp_path / mode
        run_train_net([*common, "OUTPUT_DIR", out, "MODEL.QANET.TRAIN_MODE", mode], synth_datasets_root)
        checkpoints[mode] = torch.load(out / "model_final.pth", weights_only=False)
    assert checkpoints["joint"]["iteration"] == 2  # 3 steps ran
    states = {mode: c["model"] for mode, c in checkpoints.items()}
    keys = [k for k in states["joint"] if k.startswith("detector.")]
    assert len(keys) > 50
    for k in keys:
        assert torch.equal(states["joint"][k], states["detector"][k]), k
    # the parser was trained in the joint run only
    parser_keys = [k for k in states["joint"] if k.startswith("parser.") and states["joint"][k].is_floating_point()]
    assert any(not torch.equal(states["joint"][k], states["detector"][k]) for k in parser_keys)
