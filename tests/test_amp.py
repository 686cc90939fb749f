"""SOLVER.AMP.ENABLED: autocast training (bfloat16 on CPU, float16 + GradScaler on CUDA) with the
losses in float32, finite and close to float32 training; checkpoints resume exactly."""
import shutil

import pytest
import torch
from torch import nn

import qanet_d2  # noqa: F401  (compat shims before detectron2's modules)
from conftest import INSTANT_CONFIG, run_train_net
from detectron2.utils.events import EventStorage
from qanet_d2 import get_qanet_cfg
from qanet_d2.engine import QANetTrainer
from qanet_d2.engine import trainer as trainer_module
from qanet_d2.engine.trainer import QANetSimpleTrainer, autocast_settings
from qanet_d2.modeling.qanet import iou_loss
from test_model_parts import lovasz_softmax_loss, parsing_ce_loss, parsing_iou_targets
from test_reliability import raw_losses


def test_autocast_settings_per_device():
    assert autocast_settings(torch.device("cuda", 0)) == ("cuda", torch.float16, True)
    assert autocast_settings(torch.device("cpu")) == ("cpu", torch.bfloat16, False)
    with pytest.raises(ValueError, match="not on meta"):
        autocast_settings(torch.device("meta"))


def test_parsing_losses_are_float32_for_half_precision_logits():
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(2, 5, 16, 12, generator=g) * 3).bfloat16()
    labels = torch.randint(0, 5, (2, 16, 12), generator=g)
    labels[0, :3] = 255
    exact = logits.float()  # the same values, held in float32
    for loss in (parsing_ce_loss, lovasz_softmax_loss):
        value = loss(logits, labels)
        assert value.dtype == torch.float32
        assert value.item() == loss(exact, labels).item()
    target = parsing_iou_targets(logits, labels)
    assert target.dtype == torch.float32
    pred = torch.tensor([0.3, 0.7], dtype=torch.bfloat16)
    assert iou_loss(pred, target).dtype == torch.float32
    # wider inputs keep their precision
    assert lovasz_softmax_loss(exact.double(), labels).dtype == torch.float64


def _first_batch_losses(amp: bool, synth_datasets_root, monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(synth_datasets_root))
    cfg = get_qanet_cfg()
    cfg.merge_from_file(str(INSTANT_CONFIG))
    torch.manual_seed(0)
    model = QANetTrainer.build_model(cfg)
    data = next(iter(QANetTrainer.build_train_loader(cfg, seed=0)))
    with EventStorage():
        torch.manual_seed(1)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            losses = model(data)
        sum(losses.values()).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    return losses, grads


# detectron2 v0.6's anchor generator calls torch.meshgrid without ``indexing``
@pytest.mark.filterwarnings("ignore:torch.meshgrid:UserWarning")
def test_bfloat16_autocast_losses_close_to_float32(synth_datasets_root, monkeypatch):
    """The instant model on one real batch: every loss term float32, finite and within bfloat16's
    rounding of the float32 value; every gradient finite."""
    fp32, _ = _first_batch_losses(False, synth_datasets_root, monkeypatch)
    amp, grads = _first_batch_losses(True, synth_datasets_root, monkeypatch)
    assert set(amp) == set(fp32) and len(amp) == 6
    for name, value in amp.items():
        assert value.dtype == torch.float32, name
        assert torch.isfinite(value), name
        # loss_iou is a squared difference of two IoUs ~1e-2 apart: bfloat16's 3 significant
        # digits on the predicted IoU set its absolute error
        tol = dict(abs=2e-3) if name == "loss_iou" else dict(rel=2e-2)
        assert value.item() == pytest.approx(fp32[name].item(), **tol), name
    assert grads and all(torch.isfinite(g).all() for g in grads)


class _ToyModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 1)

    def forward(self, batch):
        out = self.linear(batch)
        return {"loss": (out.float() ** 2).mean()}


def _toy_trainer(monkeypatch):
    """QANetSimpleTrainer on a toy model with the GradScaler path (CPU float16 stands for CUDA)."""
    monkeypatch.setattr(trainer_module, "autocast_settings", lambda device: ("cpu", torch.float16, True))
    torch.manual_seed(0)
    model = _ToyModel()
    batches = iter([torch.randn(8, 4) for _ in range(10)])
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    return QANetSimpleTrainer(model, batches, optimizer, base_seed=0, amp=True), model


def test_grad_scaler_steps_and_is_checkpointed(monkeypatch):
    trainer, model = _toy_trainer(monkeypatch)
    assert trainer.grad_scaler is not None
    before = model.linear.weight.detach().clone()
    with EventStorage(0) as storage:
        trainer.storage = storage
        for it in range(3):
            trainer.iter = storage.iter = it
            trainer.run_step()
    assert not torch.equal(before, model.linear.weight), "the optimizer did not step"
    state = trainer.state_dict()
    assert state["grad_scaler"]["scale"] == trainer.grad_scaler.get_scale() > 0
    assert state["optimizer"]["state"]

    # resumed: scaler state restored; a checkpoint without one (trained in float32) keeps a fresh scaler
    other, _ = _toy_trainer(monkeypatch)
    other.grad_scaler.scale(torch.tensor(1.0))
    other.grad_scaler.update(1.0)  # a different scale, to see it overwritten
    assert other.grad_scaler.get_scale() == 1.0
    other.load_state_dict(state)
    assert other.grad_scaler.state_dict() == trainer.grad_scaler.state_dict()
    fresh, _ = _toy_trainer(monkeypatch)
    no_scaler = {k: v for k, v in state.items() if k != "grad_scaler"}
    fresh.load_state_dict(no_scaler)
    assert fresh.grad_scaler.get_scale() == 2.0**16


def test_amp_training_resumes_exactly(synth_datasets_root, tmp_path):
    """train_net with SOLVER.AMP.ENABLED on CPU: finite losses; resuming from a mid-run
    checkpoint reproduces the uninterrupted run's losses."""
    args = ["SOLVER.AMP.ENABLED", True, "SOLVER.MAX_ITER", 4, "SOLVER.CHECKPOINT_PERIOD", 2, "SOLVER.LOG_PERIOD", 1,
            "SEED", 7, "DATASETS.TEST", "()", "DATALOADER.NUM_WORKERS", 0]
    reference = tmp_path / "reference"
    proc = run_train_net(["--config-file", INSTANT_CONFIG, "OUTPUT_DIR", reference, *args], synth_datasets_root)
    assert "bfloat16 autocast on cpu" in proc.stdout + proc.stderr
    expected = raw_losses(reference)
    assert sorted(expected) == list(range(4))
    assert all(torch.isfinite(torch.tensor(loss)) for loss, _ in expected.values())

    resumed = tmp_path / "resumed"
    shutil.copytree(reference, resumed)
    (resumed / "metrics.json").unlink()
    (resumed / "model_final.pth").unlink()
    (resumed / "last_checkpoint").write_text("model_0000001.pth")
    run_train_net(["--config-file", INSTANT_CONFIG, "--resume", "OUTPUT_DIR", resumed, *args], synth_datasets_root)
    after = raw_losses(resumed)
    assert sorted(after) == [2, 3]
    for it in (2, 3):
        assert after[it] == pytest.approx(expected[it], rel=1e-6, abs=1e-7), f"iteration {it} after resume"
