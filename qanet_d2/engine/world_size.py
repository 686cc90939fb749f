"""Rescaling a config written for ``SOLVER.REFERENCE_WORLD_SIZE`` processes to the number in use.

As detectron2's ``DefaultTrainer.auto_scale_workers``: the per-process batch is kept; the total
batch, the learning rate and every length in iterations (:data:`WORLD_SIZE_SCALED_KEYS`) follow.
The LR rule is ``SOLVER.LR_SCALING``: linear is derived for SGD; for Adam the square root of the
batch ratio keeps training equivalent (Malladi et al., NeurIPS 2022; its change of Adam's betas,
the smaller effect, is not applied), so ``"auto"`` uses it for ADAM/ADAMW.
"""
import logging
import math
from typing import Dict

from .epochs import _get

logger = logging.getLogger(__name__)

# Keys that depend on the number of processes, for r = world_size / REFERENCE_WORLD_SIZE:
# "batch" (total batch sizes) x r; "lr" x r or x sqrt(r); "iterations" (int or tuple) / r, rounded.
WORLD_SIZE_SCALED_KEYS: Dict[str, str] = {
    "SOLVER.IMS_PER_BATCH": "batch",
    "SOLVER.BASE_LR": "lr",
    "SOLVER.MAX_ITER": "iterations",
    "SOLVER.STEPS": "iterations",
    "SOLVER.WARMUP_ITERS": "iterations",
    "SOLVER.CHECKPOINT_PERIOD": "iterations",
    "TEST.EVAL_PERIOD": "iterations",
}

LR_SCALING_RULES = ("auto", "linear", "sqrt")


def lr_scaling_rule(cfg) -> str:
    """``"linear"`` or ``"sqrt"``: ``SOLVER.LR_SCALING`` (checked by validate_config), ``"auto"``
    resolved by ``SOLVER.OPTIMIZER``."""
    rule = cfg.SOLVER.LR_SCALING
    if rule == "auto":
        return "sqrt" if cfg.SOLVER.OPTIMIZER.upper() in ("ADAM", "ADAMW") else "linear"
    return rule


def scale_config_to_world_size(cfg, world_size: int):
    """A copy of ``cfg`` for ``world_size`` processes (``cfg`` itself if
    ``SOLVER.REFERENCE_WORLD_SIZE`` is 0 or already ``world_size``). ValueError if a total batch
    is not a multiple of the reference world size."""
    reference = int(cfg.SOLVER.REFERENCE_WORLD_SIZE)
    if reference == 0 or reference == world_size:
        return cfg
    ratio = world_size / reference
    lr_factor = ratio if lr_scaling_rule(cfg) == "linear" else math.sqrt(ratio)

    frozen = cfg.is_frozen()
    cfg = cfg.clone()
    cfg.defrost()
    changes = []
    for key, kind in WORLD_SIZE_SCALED_KEYS.items():
        section, leaf = key.rsplit(".", 1)
        node = _get(cfg, section)
        if leaf not in node:
            raise KeyError(f"WORLD_SIZE_SCALED_KEYS lists {key}, which is not a config key")
        value = node[leaf]
        if kind == "batch":
            if value % reference:
                raise ValueError(
                    f"{key} = {value} is not a multiple of SOLVER.REFERENCE_WORLD_SIZE = {reference}: "
                    "the batch per process would not be an integer"
                )
            new = value // reference * world_size
        elif kind == "lr":
            new = value * lr_factor
        elif isinstance(value, (tuple, list)):  # iterations
            new = type(value)(int(round(v / ratio)) for v in value)
        else:
            new = int(round(value / ratio))
        node[leaf] = new
        if new != value:
            changes.append(f"{key} {value} -> {new}")
    cfg.SOLVER.REFERENCE_WORLD_SIZE = world_size  # the config now describes this world size
    if frozen:
        cfg.freeze()
    logger.info(
        f"Config written for {reference} processes, running {world_size}: "
        f"{lr_scaling_rule(cfg)} LR scaling; " + ", ".join(changes)
    )
    return cfg
