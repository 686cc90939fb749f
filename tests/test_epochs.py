"""Schedules in epochs (SOLVER.EPOCHS, STEPS_EPOCHS, WARMUP_EPOCHS, *_PERIOD_EPOCHS): converted to
iterations at start-up from the number of training samples in the run's unit (frames or faces)
and the total batch after the rescaling to the world size (qanet_d2.engine.epochs)."""
import logging
import warnings
from pathlib import Path

import pytest

import qanet_d2  # noqa: F401  (compat shims before detectron2's modules)
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode
from qanet_d2 import get_qanet_cfg
from qanet_d2.engine import ConfigError, QANetTrainer, validate_config
from qanet_d2.engine.epochs import schedule_in_iterations
from qanet_d2.engine.world_size import scale_config_to_world_size

REPO = Path(__file__).resolve().parents[1]
PARSER_INSTANT = REPO / "configs" / "quick_schedules" / "qanet_parser_synth_instant_test.yaml"
DATASET = "qanet_epochs_test_frames"
FACES_PER_FRAME = [1, 2, 1, 3, 2, 1]  # 6 frames, 10 faces


def _frames():
    out = []
    for i, n in enumerate(FACES_PER_FRAME):
        anns = [{"bbox": [10.0 + 30 * k, 10.0, 35.0 + 30 * k, 40.0], "bbox_mode": BoxMode.XYXY_ABS, "category_id": 0}
                for k in range(n)]
        out.append({"file_name": f"/nonexistent/{i}.png", "sem_seg_file_name": f"/nonexistent/{i}_label.png",
                    "height": 64, "width": 128, "image_id": str(i), "annotations": anns})
    return out


if DATASET not in DatasetCatalog.list():
    DatasetCatalog.register(DATASET, _frames)
    MetadataCatalog.get(DATASET).set(stuff_classes=["background", "skin", "l_eye", "r_eye"], flip_pairs=[(2, 3)])


def config(*opts):
    cfg = get_qanet_cfg()
    cfg.merge_from_file(str(PARSER_INSTANT))
    cfg.merge_from_list([
        "DATASETS.TRAIN", (DATASET,), "DATASETS.TEST", (), "MODEL.QANET.NUM_CLASSES", 4,
        "SOLVER.REFERENCE_WORLD_SIZE", 2, "SOLVER.IMS_PER_BATCH", 4, "SOLVER.EPOCHS", 4,
        "SOLVER.STEPS_EPOCHS", (2, 3), "SOLVER.WARMUP_EPOCHS", 1.0, "SOLVER.CHECKPOINT_PERIOD_EPOCHS", 1,
        # iteration values that the epoch keys replace
        "SOLVER.MAX_ITER", 999, "SOLVER.STEPS", (500,), "SOLVER.WARMUP_ITERS", 77, "SOLVER.CHECKPOINT_PERIOD", 333, *opts,
    ])
    return cfg


def scheduled(cfg, world_size):
    cfg = scale_config_to_world_size(cfg, world_size)
    samples = QANetTrainer.training_samples(cfg)
    return schedule_in_iterations(cfg, len(samples.dataset), samples.unit), len(samples.dataset)


@pytest.mark.parametrize("unit, world_size, samples, expected", [
    # (MAX_ITER, STEPS, WARMUP_ITERS, CHECKPOINT_PERIOD): epochs x samples / total batch
    ("image", 2, 6, (6, (3, 5), 2, 2)),  # 6 frames / 4 = 1.5 it/epoch: 6, (3, 4.5 -> 5), 1.5 -> 2
    ("image", 1, 6, (12, (6, 9), 3, 3)),  # one process: batch 2, 3 it/epoch
    ("face", 2, 10, (10, (5, 8), 3, 3)),  # 10 faces / 4 = 2.5 it/epoch: 10, (5, 7.5 -> 8), 2.5 -> 3
    ("face", 1, 10, (20, (10, 15), 5, 5)),
    ("face", 4, 10, (5, (3, 4), 1, 1)),  # batch 8: 1.25 it/epoch: 5, (2.5 -> 3, 3.75 -> 4), 1.25 -> 1
])
def test_epochs_to_iterations_from_samples_and_world_size(unit, world_size, samples, expected):
    cfg, n = scheduled(config("DATALOADER.SAMPLE_UNIT", unit), world_size)
    assert n == samples
    s = cfg.SOLVER
    assert (s.MAX_ITER, tuple(s.STEPS), s.WARMUP_ITERS, s.CHECKPOINT_PERIOD) == expected
    assert s.IMS_PER_BATCH == 2 * world_size
    assert cfg.TEST.EVAL_PERIOD == 0  # no epoch period given: the iteration value stays


def test_conversion_is_logged_once_and_iterations_stay_without_epochs(caplog):
    cfg = config("DATALOADER.SAMPLE_UNIT", "face")
    with caplog.at_level(logging.INFO, logger="qanet_d2.engine.epochs"):
        schedule_in_iterations(cfg, 10, "faces")
    lines = [r.getMessage() for r in caplog.records if r.name == "qanet_d2.engine.epochs"]
    assert len(lines) == 1
    assert "10 training faces, 4 per iteration = 2.50 iterations per epoch" in lines[0]
    assert "EPOCHS 4 -> MAX_ITER 10" in lines[0] and "STEPS_EPOCHS (2, 3) -> STEPS (5, 8)" in lines[0]
    plain = config("SOLVER.EPOCHS", 0, "SOLVER.STEPS_EPOCHS", (), "SOLVER.WARMUP_EPOCHS", 0.0, "SOLVER.CHECKPOINT_PERIOD_EPOCHS", 0)
    assert schedule_in_iterations(plain, 10) is plain and plain.SOLVER.MAX_ITER == 999


def test_trainer_runs_the_schedule_in_iterations(tmp_path):
    """QANetTrainer counts its samples once and hands the iterations to detectron2's LR
    scheduler, checkpointer and loop."""
    cfg = config("DATALOADER.SAMPLE_UNIT", "face", "SOLVER.REFERENCE_WORLD_SIZE", 0, "SOLVER.IMS_PER_BATCH", 2,
                 "MODEL.QANET.INPUT_SIZE", (128, 96), "OUTPUT_DIR", str(tmp_path))
    trainer = QANetTrainer(cfg)
    assert trainer.max_iter == 20 and trainer.cfg.SOLVER.MAX_ITER == 20  # 4 epochs of 10 faces, 2 per iteration
    lrs = []
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step\\(\\)` before")  # no training here
        for _ in range(trainer.max_iter):
            lrs.append(trainer.optimizer.param_groups[0]["lr"] / cfg.SOLVER.BASE_LR)
            trainer.scheduler.step()
    # no warm-up (WARMUP_EPOCHS 1 with the default WARMUP_FACTOR 1.0), x0.1 at 10 and at 15
    assert lrs == pytest.approx([1.0] * 10 + [0.1] * 5 + [0.01] * 5)
    from detectron2.engine import hooks

    (ckpt,) = [h for h in trainer._hooks if isinstance(h, hooks.PeriodicCheckpointer)]
    assert ckpt.period == 5


@pytest.mark.parametrize("opts, message", [
    (("SOLVER.STEPS_EPOCHS", (3, 2)), "STEPS_EPOCHS = \\(3, 2\\): must be increasing"),
    (("SOLVER.STEPS_EPOCHS", (2, 4)), "every step must lie in \\(0, SOLVER.EPOCHS = 4\\)"),
    (("SOLVER.EPOCHS", 0), "SOLVER.EPOCHS is 0"),
    (("SOLVER.WARMUP_EPOCHS", -1.0), "WARMUP_EPOCHS = -1.0"),
])
def test_validation_of_epoch_keys(opts, message):
    validate_config(config(), for_training=True, check_datasets=False)
    with pytest.raises(ConfigError, match=message):
        validate_config(config(*opts), for_training=True, check_datasets=False)
