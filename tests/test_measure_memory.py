"""tools/measure_memory.py: the meters on hand-computed cases, the linear fit and the per-GPU
prediction, and a run on the instant parser whose fit predicts a larger batch."""

import pytest
import torch
from torch import nn

from conftest import REPO, load_script
PARSER_INSTANT = "configs/quick_schedules/qanet_parser_synth_instant_test.yaml"
GIB = 2**30


@pytest.fixture(scope="module")
def tool():
    return load_script("tools/measure_memory.py", "qanet_measure_memory")


def test_saved_tensor_meter_counts_each_storage_once_without_parameters(tool):
    """x -> Linear -> ReLU -> Linear -> sum: autograd saves x (for the first matmul), the ReLU's
    output (for the ReLU and, the same storage, for the second matmul) and the second weight."""
    torch.manual_seed(0)
    first, second = nn.Linear(64, 32, bias=False), nn.Linear(32, 16, bias=False)
    x = torch.randn(8, 64)
    with tool.SavedTensorMeter(exclude=list(first.parameters()) + list(second.parameters())) as meter:
        loss = second(torch.relu(first(x))).sum()
    assert meter.bytes == 8 * 64 * 4 + 8 * 32 * 4
    loss.backward()
    with tool.SavedTensorMeter() as with_weights:  # weights counted when not excluded: only the
        second(torch.relu(first(x))).sum()  # second's (x needs no gradient, so W1 is not saved)
    assert with_weights.bytes == 8 * 64 * 4 + 8 * 32 * 4 + 32 * 16 * 4


def test_live_tensor_meter_follows_allocations_and_frees(tool):
    before = torch.zeros(500)  # created outside: never counted, nor its views or in-place writes
    with tool.LiveTensorMeter() as meter:
        a = torch.ones(1000)
        assert meter.current == 4000
        b = a * 2
        assert (meter.current, meter.peak) == (8000, 8000)
        view = b.view(10, 100)
        before.add_(1.0)
        assert meter.current == 8000 and before.view(5, 100).shape == (5, 100) and meter.current == 8000
        del a
        assert meter.current == 4000
        del b  # its storage lives on in the view
        assert meter.current == 4000
        del view
        assert (meter.current, meter.peak) == (0, 8000)
        c = torch.empty(250, dtype=torch.float64)
        assert (meter.current, meter.peak) == (2000, 8000)
        del c


def test_fit_and_prediction(tool):
    fit = tool.fit_line([1, 2, 3], [5.0, 7.0, 9.0])
    assert fit["intercept"] == pytest.approx(3.0) and fit["slope"] == pytest.approx(2.0) and fit["max_residual"] < 1e-9
    with pytest.raises(ValueError, match="two different batch sizes"):
        tool.fit_line([2, 2], [1.0, 1.0])

    memory = {"fixed": 2 * GIB, "per_frame": 0.5 * GIB, "per_crop": 1.0 * GIB, "optimizer_step": 3 * GIB}
    # 32 frames x 1 face: 2 + 32 * 1.5 = 50 GiB; 2 faces: 2 + 32 * 2.5 = 82 GiB
    assert tool.predict(memory, 32, 1) == pytest.approx(50 * GIB)
    assert tool.predict(memory, 32, 2) == pytest.approx(82 * GIB)
    assert tool.predict(memory, 0, 1) == pytest.approx(3 * GIB)  # the optimizer step's peak
    assert tool.predict(memory, 32, 1, ddp_bytes=GIB) == pytest.approx(51 * GIB)
    budget = 0.9 * 24 * GIB  # 21.6 GiB: (21.6 - 2) / 1.5 = 13.07 frames
    assert tool.largest_batch(memory, 1, budget) == 13
    assert tool.largest_batch(memory, 1, budget, ddp_bytes=GIB) == 12
    assert tool.largest_batch({**memory, "optimizer_step": 30 * GIB}, 1, budget) == 0


def _load_cfg(tool, path, *opts):
    return tool.setup_cfg(str(REPO / path), opts)


def test_frame_sizes_and_synthetic_inputs(tool):
    sfp = _load_cfg(tool, "configs/sfp/qanet_hrnet_w48_fcos_r50_512x384.yaml")
    # 16:9 frame, short side 800 -> long side 1422 > 1333: scaled to 750 x 1333 (a 1080p frame)
    assert tool.training_frame_size(sfp) == (750, 1333)
    assert tool.training_frame_size(sfp, aspect=4 / 3) == (800, 1067)
    lapa = _load_cfg(tool, "configs/lapa/qanet_hrnet_w48_512x384.yaml")
    assert tool.training_frame_size(lapa) == (1024, 768)  # no frame resizing: twice the crop

    inputs = tool.synthetic_inputs(sfp, 2, 3, (300, 400))
    assert len(inputs) == 2
    for x in inputs:
        assert x["image"].shape == (3, 300, 400) and x["image"].dtype == torch.uint8
        assert len(x["instances"]) == 3
        boxes = x["instances"].gt_boxes.tensor
        assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= 400).all()
        assert sorted(x["sem_seg"].unique().tolist()) == list(range(sfp.MODEL.QANET.NUM_CLASSES))


def test_parts_and_shared_measurements(tool):
    w48 = _load_cfg(tool, "configs/sfp/qanet_hrnet_w48_fcos_r50_512x384_joint.yaml")
    w18 = _load_cfg(tool, "configs/sfp/qanet_hrnet_w18_fcos_r50_512x384.yaml")
    stage2 = _load_cfg(tool, "configs/sfp/qanet_hrnet_w48_fcos_r50_512x384.yaml")
    detector = _load_cfg(tool, "configs/sfp/fcos_r50_detector_only.yaml")
    # initial weights are not read, so that configs differing only in them share measurements
    assert not stage2.MODEL.QANET.DETECTOR_WEIGHTS and not w48.MODEL.FCOS.BACKBONE_WEIGHTS
    assert not w48.MODEL.QANET.HRNET.PRETRAINED
    assert tool.trained_parts(w48) == ("detector", "parser") and tool.trained_parts(w18) == ("parser",)
    assert tool.trained_parts(stage2) == ("parser",) and tool.trained_parts(detector) == ("detector",)
    size, points, precisions = (750, 1333), [(1, 1), (2, 1)], ("fp32",)

    def key(cfg, part):
        return tool.part_key(cfg, part, size, points, precisions)

    # one detector measurement serves every joint SFP config; the parser's is per network. The
    # detector stage trains with SGD (one momentum buffer, not Adam's two moments): its own.
    assert key(w48, "detector") == key(w18, "detector") != key(detector, "detector")
    assert key(w48, "parser") == key(stage2, "parser") != key(w18, "parser")
    parser_cfg = tool.part_config(stage2, "parser")
    assert parser_cfg.MODEL.QANET.TRAIN_MODE == "parser" and not parser_cfg.MODEL.QANET.DETECTOR.NAME and not parser_cfg.MODEL.WEIGHTS


def test_instant_parser_fit_predicts_a_larger_batch(tool):
    """Fitted on 1 and 2 crops, the line predicts the measured peak of 5 crops; bfloat16 autocast
    saves less per crop than float32."""
    cfg = _load_cfg(tool, PARSER_INSTANT)
    size = tool.training_frame_size(cfg)
    measured = tool.measure_part(cfg, "parser", size, [(1, 1), (2, 1)], ("fp32", "amp"), log=lambda line: None)
    fp32, amp = measured["precisions"]["fp32"], measured["precisions"]["amp"]
    for m in (fp32, amp):
        assert m["peak"]["slope"] > 0 and m["saved"]["slope"] > 0
        # the activations saved for backward are part of the peak
        assert m["peak"]["slope"] >= 0.9 * m["saved"]["slope"]
    assert amp["saved"]["slope"] < 0.8 * fp32["saved"]["slope"]

    model, optimizer = tool.build_training(tool.part_config(cfg, "parser"))
    torch.manual_seed(0)
    step = tool.measure_step(model, optimizer, tool.synthetic_inputs(cfg, 5, 1, size), amp=False)
    assert step["before"] == fp32["steps"][0]["before"]  # weights and optimizer state
    assert step["peak"] == pytest.approx(fp32["peak"]["intercept"] + 5 * fp32["peak"]["slope"], rel=0.1)
    assert step["saved"] == pytest.approx(fp32["saved"]["intercept"] + 5 * fp32["saved"]["slope"], rel=0.1)


def test_command_line_table(tool, capsys):
    rows = tool.main(["--config-file", str(REPO / PARSER_INSTANT), "--points", "1:1", "2:1", "--precision", "fp32", "amp"])
    assert [r["precision"] for r in rows] == ["fp32", "amp"]
    for r in rows:
        assert r["train_mode"] == "parser" and r["per_gpu_batch"] == 2 and r["fits"]
        assert r["per_crop_gib"] > 0 and r["per_frame_gib"] == 0
        assert r["per_gpu_peak_gib"] >= r["fixed_gib"] + 2 * r["per_crop_gib"] - 1e-9
    out = capsys.readouterr().out
    assert "| configs/quick_schedules/qanet_parser_synth_instant_test.yaml" in out.replace(str(REPO) + "/", "")
    assert "per crop GiB (saved)" in out
