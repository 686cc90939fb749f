"""Schedules written in epochs, converted to iterations when training starts.

An epoch's length in iterations depends on the run: its training samples (frames, or faces with
``DATALOADER.SAMPLE_UNIT "face"``) and its total batch after the rescaling to the number of
processes. :func:`schedule_in_iterations` fills detectron2's iteration keys from the epoch keys
once both are known; the rest of detectron2 reads iterations as usual.
"""
import logging
import math
from typing import Dict

logger = logging.getLogger(__name__)

# Epoch key -> the iteration key computed from it (when SOLVER.EPOCHS > 0).
EPOCH_KEYS: Dict[str, str] = {
    "SOLVER.EPOCHS": "SOLVER.MAX_ITER",
    "SOLVER.STEPS_EPOCHS": "SOLVER.STEPS",
    "SOLVER.WARMUP_EPOCHS": "SOLVER.WARMUP_ITERS",
    "SOLVER.CHECKPOINT_PERIOD_EPOCHS": "SOLVER.CHECKPOINT_PERIOD",
    "TEST.EVAL_PERIOD_EPOCHS": "TEST.EVAL_PERIOD",
}
# Periods keep their iteration value when their epoch key is 0.
_PERIODS = ("SOLVER.CHECKPOINT_PERIOD_EPOCHS", "TEST.EVAL_PERIOD_EPOCHS")


def _get(cfg, key):
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def uses_epochs(cfg) -> bool:
    """Whether ``cfg`` states its schedule in epochs (``SOLVER.EPOCHS > 0``)."""
    return float(cfg.SOLVER.EPOCHS) > 0


def epoch_problems(cfg) -> list:
    """What is wrong with the epoch keys of ``cfg`` (empty list: nothing)."""
    problems = []
    s = cfg.SOLVER
    epochs = float(s.EPOCHS)
    if epochs < 0:
        problems.append(f"SOLVER.EPOCHS = {s.EPOCHS}: must be 0 (schedule in iterations) or positive")
    for key in ("SOLVER.WARMUP_EPOCHS",) + _PERIODS:
        if float(_get(cfg, key)) < 0:
            problems.append(f"{key} = {_get(cfg, key)}: must not be negative")
    steps = [float(e) for e in s.STEPS_EPOCHS]
    if steps != sorted(steps):
        problems.append(f"SOLVER.STEPS_EPOCHS = {tuple(s.STEPS_EPOCHS)}: must be increasing")
    if epochs > 0 and any(not 0 < e < epochs for e in steps):
        problems.append(f"SOLVER.STEPS_EPOCHS = {tuple(s.STEPS_EPOCHS)}: every step must lie in (0, SOLVER.EPOCHS = {epochs:g})")
    if epochs <= 0 and (steps or float(s.WARMUP_EPOCHS) > 0 or any(float(_get(cfg, k)) > 0 for k in _PERIODS)):
        problems.append("epoch keys (SOLVER.STEPS_EPOCHS, WARMUP_EPOCHS, *_PERIOD_EPOCHS) are set but SOLVER.EPOCHS is 0: "
                        "set SOLVER.EPOCHS, or state the schedule in iterations only")
    return problems


def _iters(epochs: float, per_epoch: float, least: int = 0) -> int:
    return max(least, int(math.floor(float(epochs) * per_epoch + 0.5)))  # halves round up


def schedule_in_iterations(cfg, num_samples: int, sample_unit: str = "frames"):
    """A copy of ``cfg`` with its iteration keys (:data:`EPOCH_KEYS`) computed from its epoch keys
    for ``num_samples`` samples (``sample_unit``: for the log), rounded (MAX_ITER and the periods
    at least 1); ``cfg`` itself without ``SOLVER.EPOCHS``."""
    if not uses_epochs(cfg):  # the keys were checked by validate_config
        return cfg
    per_epoch = num_samples / cfg.SOLVER.IMS_PER_BATCH
    frozen = cfg.is_frozen()
    cfg = cfg.clone()
    cfg.defrost()
    s = cfg.SOLVER
    s.MAX_ITER = _iters(s.EPOCHS, per_epoch, least=1)
    s.STEPS = tuple(_iters(e, per_epoch) for e in s.STEPS_EPOCHS)
    s.WARMUP_ITERS = _iters(s.WARMUP_EPOCHS, per_epoch)
    for key in _PERIODS:
        if float(_get(cfg, key)) > 0:
            section, leaf = EPOCH_KEYS[key].split(".")
            cfg[section][leaf] = _iters(_get(cfg, key), per_epoch, least=1)
    if frozen:
        cfg.freeze()
    changes = ", ".join(f"{k.split('.')[1]} {_fmt(_get(cfg, k))} -> {EPOCH_KEYS[k].split('.')[1]} {_get(cfg, EPOCH_KEYS[k])}"
                        for k in EPOCH_KEYS if k not in _PERIODS or float(_get(cfg, k)) > 0)
    logger.info(
        f"Schedule in epochs: {num_samples} training {sample_unit}, {s.IMS_PER_BATCH} per iteration = "
        f"{per_epoch:.2f} iterations per epoch; {changes}"
    )
    return cfg


def _fmt(value):
    if isinstance(value, (tuple, list)):
        return "(" + ", ".join(f"{float(v):g}" for v in value) + ")"
    return f"{float(value):g}"

