"""SOLVER.REFERENCE_WORLD_SIZE: a config written for 8 (or 16) GPUs run on 4 or 2 keeps its per-GPU batch
and epochs; batch, LR and every length in iterations follow (qanet_d2.engine.world_size)."""
import math
from pathlib import Path

import pytest

import qanet_d2  # noqa: F401  (compat shims before detectron2's modules)
from detectron2.engine import DefaultTrainer
from qanet_d2 import get_qanet_cfg
from qanet_d2.engine import ConfigError, QANetTrainer, validate_config
from qanet_d2.engine import world_size
from qanet_d2.engine.world_size import scale_config_to_world_size

REPO = Path(__file__).resolve().parents[1]
SFP_JOINT = "configs/sfp/qanet_hrnet_w48_fcos_r50_512x384_joint.yaml"  # joint: written for 16 GPUs
SFP_STAGE2 = "configs/sfp/qanet_hrnet_w48_fcos_r50_512x384.yaml"  # the W48 entry's parser stage: 256 crops over 8 GPUs
GPU_CONFIGS = sorted(
    p.relative_to(REPO).as_posix()
    for family in ("sfp", "lapa", "celebamask_hq")
    for p in (REPO / "configs" / family).glob("*.yaml")
)
CPU_CONFIGS = sorted(p.relative_to(REPO).as_posix() for family in ("quickstart", "quick_schedules") for p in (REPO / "configs" / family).glob("*.yaml"))


def load(path):
    cfg = get_qanet_cfg()
    cfg.merge_from_file(str(REPO / path))
    return cfg


def test_sfp_recipe_on_8_and_4_gpus():
    """The report's parser stage is written for 8 GPUs of 32 crops; other counts keep 32 crops per
    GPU and the epochs, and the lr follows the authors' linear rule (1e-3 at 128, 2e-3 at 256)."""
    cfg = load(SFP_STAGE2)
    assert (cfg.SOLVER.REFERENCE_WORLD_SIZE, cfg.SOLVER.IMS_PER_BATCH, cfg.SOLVER.BASE_LR) == (8, 256, 0.002)
    assert (cfg.SOLVER.EPOCHS, tuple(cfg.SOLVER.STEPS_EPOCHS), cfg.SOLVER.LR_SCALING) == (140, (90, 120), "linear")
    assert cfg.SOLVER.AMP.ENABLED
    four = QANetTrainer.auto_scale_workers(cfg, 4)
    assert four.SOLVER.IMS_PER_BATCH == 128 and four.SOLVER.BASE_LR == pytest.approx(0.001, rel=1e-12)
    sixteen = QANetTrainer.auto_scale_workers(cfg, 16)
    assert sixteen.SOLVER.IMS_PER_BATCH == 512 and sixteen.SOLVER.BASE_LR == pytest.approx(0.004, rel=1e-12)
    for scaled in (four, sixteen):  # epochs are kept; their iterations follow from the batch at start-up
        assert (scaled.SOLVER.EPOCHS, tuple(scaled.SOLVER.STEPS_EPOCHS)) == (140, (90, 120))

    joint = load(SFP_JOINT)  # 16 frames per GPU with AMP: 256 frames on 16 GPUs
    assert (joint.SOLVER.REFERENCE_WORLD_SIZE, joint.SOLVER.IMS_PER_BATCH, joint.SOLVER.LR_SCALING) == (16, 256, "linear")
    eight = QANetTrainer.auto_scale_workers(joint, 8)
    assert eight.SOLVER.IMS_PER_BATCH == 128 and eight.SOLVER.BASE_LR == pytest.approx(0.001, rel=1e-12)
    assert eight.SOLVER.REFERENCE_WORLD_SIZE == 8
    # the input config is left as it was
    assert (joint.SOLVER.IMS_PER_BATCH, joint.SOLVER.REFERENCE_WORLD_SIZE) == (256, 16)


def test_linear_rule_matches_detectron2():
    cfg = load(SFP_STAGE2)
    cfg.SOLVER.WARMUP_ITERS = 1000
    cfg.SOLVER.LR_SCALING = "linear"
    for n in (2, 4, 16):
        ours, theirs = scale_config_to_world_size(cfg, n), DefaultTrainer.auto_scale_workers(cfg, n)
        for key in world_size.WORLD_SIZE_SCALED_KEYS:
            section, leaf = key.split(".")
            assert ours[section][leaf] == theirs[section][leaf], (n, key)
    assert scale_config_to_world_size(cfg, 4).SOLVER.WARMUP_ITERS == 2000
    assert scale_config_to_world_size(cfg, 4).SOLVER.BASE_LR == pytest.approx(0.001)


def test_sgd_scales_linearly_by_default():
    cfg = load("configs/sfp/fcos_r50_detector_only.yaml")
    cfg.SOLVER.OPTIMIZER = "SGD"
    cfg.SOLVER.BASE_LR = 0.01
    assert cfg.SOLVER.IMS_PER_BATCH == 16
    scaled = scale_config_to_world_size(cfg, 4)
    assert scaled.SOLVER.IMS_PER_BATCH == 8 and scaled.SOLVER.BASE_LR == pytest.approx(0.005)
    cfg.SOLVER.LR_SCALING = "sqrt"
    assert scale_config_to_world_size(cfg, 4).SOLVER.BASE_LR == pytest.approx(0.01 / math.sqrt(2))


def test_no_rescaling_at_the_reference_size_or_without_one():
    cfg = load(SFP_STAGE2)
    assert scale_config_to_world_size(cfg, 8) is cfg
    cfg.SOLVER.REFERENCE_WORLD_SIZE = 0
    assert scale_config_to_world_size(cfg, 2) is cfg


def test_frozen_config_stays_frozen():
    cfg = load(SFP_STAGE2)
    cfg.freeze()
    scaled = scale_config_to_world_size(cfg, 2)
    assert scaled.is_frozen() and scaled.SOLVER.IMS_PER_BATCH == 64


def test_batch_not_divisible_by_reference_is_an_error():
    cfg = load(SFP_STAGE2)
    cfg.SOLVER.IMS_PER_BATCH = 100
    with pytest.raises(ValueError, match="SOLVER.IMS_PER_BATCH = 100 is not a multiple of SOLVER.REFERENCE_WORLD_SIZE = 8"):
        scale_config_to_world_size(cfg, 4)
    with pytest.raises(ConfigError, match="SOLVER.IMS_PER_BATCH = 100 is not a multiple"):
        validate_config(cfg, for_training=True, check_datasets=False)
    cfg.SOLVER.IMS_PER_BATCH = 256
    cfg.SOLVER.LR_SCALING = "cubic"
    with pytest.raises(ConfigError, match="SOLVER.LR_SCALING = 'cubic'"):
        validate_config(cfg, for_training=True, check_datasets=False)


def test_a_key_added_to_the_list_is_rescaled(monkeypatch):
    """A recipe whose batch is counted in crops adds its key to WORLD_SIZE_SCALED_KEYS."""
    cfg = load(SFP_STAGE2)
    cfg.SOLVER.CROPS_PER_BATCH = 256
    cfg.SOLVER.SOME_PERIOD = 400
    monkeypatch.setitem(world_size.WORLD_SIZE_SCALED_KEYS, "SOLVER.CROPS_PER_BATCH", "batch")
    monkeypatch.setitem(world_size.WORLD_SIZE_SCALED_KEYS, "SOLVER.SOME_PERIOD", "iterations")
    scaled = scale_config_to_world_size(cfg, 2)
    assert (scaled.SOLVER.CROPS_PER_BATCH, scaled.SOLVER.SOME_PERIOD) == (64, 1600)
    cfg.SOLVER.CROPS_PER_BATCH = 12
    with pytest.raises(ValueError, match="SOLVER.CROPS_PER_BATCH = 12"):
        scale_config_to_world_size(cfg, 2)
    cfg.SOLVER.CROPS_PER_BATCH = 256
    monkeypatch.setitem(world_size.WORLD_SIZE_SCALED_KEYS, "SOLVER.NO_SUCH_KEY", "batch")
    with pytest.raises(KeyError, match="SOLVER.NO_SUCH_KEY"):
        scale_config_to_world_size(cfg, 2)


# Per-GPU batch of the GPU configs: what fits a 24 GB GPU (docs/tools.md's memory table).
JOINT_PER_GPU_FRAMES = 16  # with AMP; 32 frames of the report's batch need 31 GiB even with AMP


@pytest.mark.parametrize("path", GPU_CONFIGS)
def test_gpu_configs_per_gpu_batch(path):
    cfg = load(path)
    joint = cfg.MODEL.QANET.TRAIN_MODE == "joint"
    assert cfg.SOLVER.REFERENCE_WORLD_SIZE == (16 if joint else 8)
    per_gpu = cfg.SOLVER.IMS_PER_BATCH // cfg.SOLVER.REFERENCE_WORLD_SIZE
    assert cfg.SOLVER.IMS_PER_BATCH % cfg.SOLVER.REFERENCE_WORLD_SIZE == 0
    if joint:
        assert per_gpu == JOINT_PER_GPU_FRAMES and cfg.SOLVER.AMP.ENABLED
    elif cfg.MODEL.QANET.TRAIN_MODE == "parser":
        assert per_gpu == 32 and cfg.SOLVER.AMP.ENABLED  # 32 crops: 17 GiB with AMP, 30 GiB without
    else:
        assert per_gpu == 2  # detector: 2 frames, 2.3 GiB in float32
    # 4 GPUs keep the per-GPU batch and the epochs (converted to iterations at start-up)
    four = scale_config_to_world_size(cfg, 4)
    assert four.SOLVER.IMS_PER_BATCH // 4 == per_gpu
    assert cfg.SOLVER.EPOCHS > 0 and four.SOLVER.EPOCHS == cfg.SOLVER.EPOCHS
    assert tuple(four.SOLVER.STEPS_EPOCHS) == tuple(cfg.SOLVER.STEPS_EPOCHS)


@pytest.mark.parametrize("path", CPU_CONFIGS)
def test_cpu_configs_are_not_rescaled(path):
    """The CPU configs state their batch for however many processes run them."""
    assert load(path).SOLVER.REFERENCE_WORLD_SIZE == 0
