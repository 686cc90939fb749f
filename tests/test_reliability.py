"""Interrupted training, determinism, several CPU processes, non-finite losses, unsafe checkpoints,
config validation."""
import json
import os
import pickle
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import INSTANT_CONFIG, REPO, run_train_net
from test_train_net import SUMMARY

import qanet_d2  # noqa: F401
from qanet_d2.engine import ConfigError, QANetCheckpointer, UnsafeCheckpointError, validate_config


def raw_losses(output_dir):
    """{iteration: (total_loss, lr)} from metrics.json written with SOLVER.LOG_PERIOD 1."""
    out = {}
    for line in (output_dir / "metrics.json").read_text().splitlines():
        record = json.loads(line)
        if "total_loss" in record:
            out[record["iteration"]] = (record["total_loss"], record["lr"])
    return out


TRAIN_ARGS = ["SOLVER.MAX_ITER", 8, "SOLVER.CHECKPOINT_PERIOD", 2, "SOLVER.LOG_PERIOD", 1, "SEED", 7, "DATASETS.TEST", "()", "DATALOADER.NUM_WORKERS", 0]


def test_sigkill_then_resume_continues_exactly(synth_datasets_root, tmp_path, monkeypatch):
    # One thread: float reductions then have one order in every process, so a resumed run must
    # repeat the uninterrupted run's losses; with several threads a fresh process may sum in
    # another order and drift by ~1e-5 within a few iterations.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("MKL_NUM_THREADS", "1")
    reference = tmp_path / "reference"
    run_train_net(["--config-file", INSTANT_CONFIG, "OUTPUT_DIR", reference, *TRAIN_ARGS], synth_datasets_root)
    expected = raw_losses(reference)
    assert sorted(expected) == list(range(8))

    killed = tmp_path / "killed"
    env = {**os.environ, "DETECTRON2_DATASETS": str(synth_datasets_root), "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "train_net.py"), "--config-file", str(INSTANT_CONFIG), "OUTPUT_DIR", str(killed), *map(str, TRAIN_ARGS)],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while not (killed / "model_0000003.pth").exists():
        assert proc.poll() is None, "training ended before it could be killed"
        assert time.time() < deadline, "no checkpoint after 300 s"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "model_final.pth").exists(), "the run finished before SIGKILL; nothing was tested"
    before_kill = raw_losses(killed)
    # Determinism: a second run with the same seed has identical losses.
    for it, values in before_kill.items():
        assert values == expected[it], f"iteration {it}: {values} != {expected[it]}"

    last = (killed / "last_checkpoint").read_text()
    resumed_from = torch.load(killed / last, weights_only=True)["iteration"]
    run_train_net(["--config-file", INSTANT_CONFIG, "--resume", "OUTPUT_DIR", killed, *TRAIN_ARGS], synth_datasets_root)
    after = raw_losses(killed)
    resumed_iters = [it for it in range(resumed_from + 1, 8)]
    assert resumed_iters, "nothing left to resume"
    for it in resumed_iters:
        assert after[it] == pytest.approx(expected[it], rel=1e-6, abs=1e-7), f"iteration {it} after resume"
    assert torch.load(killed / "model_final.pth", weights_only=True)["iteration"] == 7


def test_two_cpu_processes_train_and_evaluate_like_one(synth_datasets_root, tmp_path):
    out = tmp_path / "ddp"
    two = run_train_net(
        ["--num-gpus", 2, "--config-file", INSTANT_CONFIG, "OUTPUT_DIR", out, "SOLVER.MAX_ITER", 2, "SOLVER.IMS_PER_BATCH", 2],
        synth_datasets_root,
    )
    assert "World size: 2" in two.stdout + two.stderr
    two_summary = SUMMARY.search(two.stdout)
    assert two_summary, two.stdout[-2000:] + two.stderr[-3000:]
    one = run_train_net(
        ["--config-file", INSTANT_CONFIG, "--eval-only", "MODEL.WEIGHTS", out / "model_final.pth", "OUTPUT_DIR", tmp_path / "eval1"],
        synth_datasets_root,
    )
    assert SUMMARY.search(one.stdout).groups() == two_summary.groups()


def test_non_finite_loss_names_iteration_and_term():
    from qanet_d2.engine.trainer import QANetSimpleTrainer

    class NanModel(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(1))

        def forward(self, batch):
            return {"loss_ok": self.w.sum(), "loss_parsing_ce": self.w.sum() * float("nan")}

    model = NanModel()
    trainer = QANetSimpleTrainer(model, [[{}]] * 10, torch.optim.SGD(model.parameters(), lr=0.1), base_seed=0)
    trainer.iter = 5
    with pytest.raises(FloatingPointError, match=r"'loss_parsing_ce' is nan at iteration 5"):
        trainer.run_step()


class Opaque:
    """An object that only full unpickling can restore."""


def test_checkpoint_needing_unpickling_is_refused(tmp_path):
    model = torch.nn.Linear(2, 2)
    bad = tmp_path / "bad.pth"
    torch.save({"model": model.state_dict(), "extra": Opaque()}, bad, pickle_protocol=pickle.DEFAULT_PROTOCOL)
    with pytest.raises(UnsafeCheckpointError, match="bad.pth: refused to load"):
        QANetCheckpointer(model).load(str(bad))
    pkl = tmp_path / "weights.pkl"
    pkl.write_bytes(pickle.dumps({"model": {"weight": Opaque()}, "__author__": "x"}))
    with pytest.raises(UnsafeCheckpointError, match=r"weights\.pkl: refused to unpickle: it refers to '.*Opaque'"):
        QANetCheckpointer(model).load(str(pkl))

    good = QANetCheckpointer(model, save_dir=str(tmp_path / "ok"))
    good.save("model_x", iteration=3)
    assert (tmp_path / "ok" / "last_checkpoint").read_text() == "model_x.pth"
    assert not [f for f in os.listdir(tmp_path / "ok") if f.startswith(".tmp-")]
    assert QANetCheckpointer(torch.nn.Linear(2, 2)).load(str(tmp_path / "ok" / "model_x.pth"))["iteration"] == 3


def test_config_validation_lists_every_problem(synth_datasets_root, monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(synth_datasets_root))
    cfg = qanet_d2.get_qanet_cfg()
    cfg.merge_from_file(str(INSTANT_CONFIG))
    validate_config(cfg)  # the shipped config is valid
    cfg.MODEL.QANET.NUM_CLASSES = 5
    cfg.MODEL.QANET.INPUT_SIZE = (64, 64)
    cfg.DATASETS.TEST = ("face_synth_vall",)
    cfg.SOLVER.OPTIMIZER = "LAMB"
    cfg.MODEL.QANET.INFERENCE.PAINT_ORDER = "score"
    with pytest.raises(ConfigError) as err:
        validate_config(cfg)
    message = str(err.value)
    assert "MODEL.QANET.INFERENCE.PAINT_ORDER = 'score': expected one of quality, box" in message
    assert "MODEL.QANET.NUM_CLASSES = 5, but dataset 'face_synth_train'" in message
    assert "width/height 1.0000" in message
    assert "'face_synth_vall' is not a registered dataset" in message and "face_synth_val" in message
    assert "SOLVER.OPTIMIZER = 'LAMB'" in message


def test_config_error_reported_by_train_net_before_work(synth_datasets_root, tmp_path):
    proc = run_train_net(
        ["--config-file", INSTANT_CONFIG, "OUTPUT_DIR", tmp_path, "MODEL.QANET.NUM_CLASSES", 3], synth_datasets_root, check=False
    )
    assert proc.returncode != 0
    assert "MODEL.QANET.NUM_CLASSES = 3" in proc.stderr
    assert not (tmp_path / "model_final.pth").exists()
