"""train_net.py end to end on the tiny synthetic set: train, checkpoint, --eval-only, summary line."""
import json
import re

import pytest
import torch

from conftest import INSTANT_CONFIG, run_train_net

SUMMARY = re.compile(r"^face_synth_val  J&F (\d+\.\d)  J (\d+\.\d)  F (\d+\.\d)  mIoU (\d+\.\d)  mean-F1 (\d+\.\d)  \(.*eval \d+m\d\ds\)$", re.M)


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
