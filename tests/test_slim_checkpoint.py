"""tools/slim_checkpoint.py: weights only, half precision except BatchNorm statistics, loadable."""

import pytest
import torch
from torch import nn

from detectron2.checkpoint import DetectionCheckpointer

from conftest import load_script


def _tool():
    return load_script("tools/slim_checkpoint.py", "slim_checkpoint")


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1)).eval()


def test_slim_checkpoint_half_loads_and_keeps_bn_statistics(tmp_path, capsys):
    model = _model()
    model[1].running_var.fill_(1e-8)  # below float16's smallest normal number
    model[1].running_mean.uniform_(-1, 1)
    src, dst = tmp_path / "model_final.pth", tmp_path / "slim.pth"
    torch.save({"model": model.state_dict(), "optimizer": {"state": {0: torch.zeros(1000)}}, "iteration": 99,
                "trained_parts": ["parser"]}, src)
    assert _tool().main([str(src), str(dst), "--half"]) == 0
    assert "slim.pth:" in capsys.readouterr().out
    slim = torch.load(dst, weights_only=True)
    assert set(slim) == {"model", "trained_parts"} and slim["trained_parts"] == ["parser"]
    assert slim["model"]["0.weight"].dtype == torch.float16
    assert slim["model"]["1.running_var"].dtype == torch.float32 and slim["model"]["1.running_var"][0] == pytest.approx(1e-8)
    assert slim["model"]["1.num_batches_tracked"].dtype == torch.int64

    fresh = _model()
    for p in fresh.parameters():
        nn.init.zeros_(p)
    DetectionCheckpointer(fresh).load(str(dst))  # float16 weights copied into the float32 model
    assert fresh[0].weight.dtype == torch.float32
    x = torch.randn(1, 3, 8, 8)
    ref = model(x)
    assert torch.allclose(fresh(x), ref, atol=2e-2 * ref.abs().max().item())
    assert not torch.equal(fresh[0].weight, torch.zeros_like(fresh[0].weight))


def test_slim_checkpoint_without_half_is_exact_and_rejects_non_checkpoints(tmp_path, capsys):
    model = _model()
    torch.save({"model": model.state_dict(), "scheduler": {}}, tmp_path / "a.pth")
    assert _tool().main([str(tmp_path / "a.pth"), str(tmp_path / "b.pth")]) == 0
    slim = torch.load(tmp_path / "b.pth", weights_only=True)
    assert set(slim) == {"model"}
    assert all(torch.equal(slim["model"][k], v) for k, v in model.state_dict().items())
    torch.save([1, 2], tmp_path / "bad.pth")
    assert _tool().main([str(tmp_path / "bad.pth"), str(tmp_path / "c.pth")]) == 1
    assert "bad.pth" in capsys.readouterr().err and not (tmp_path / "c.pth").exists()
