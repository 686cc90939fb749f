"""Rescaling a config written for ``SOLVER.REFERENCE_WORLD_SIZE`` processes to the number in use.

A config states its schedule for a reference number of GPUs (8 for the shipped GPU configs).
Run with another number of processes, the per-process batch is kept (so that memory per GPU
stays what the config was sized for) and everything that depends on the total batch follows:
the total batch itself, the learning rate, and every length counted in iterations (so that a
run still lasts the same number of epochs, and its LR steps, warm-up, checkpoints and
evaluations fall at the same epochs). This is detectron2's
``DefaultTrainer.auto_scale_workers``, with the keys listed in one place
(:data:`WORLD_SIZE_SCALED_KEYS`) and the learning-rate rule chosen by ``SOLVER.LR_SCALING``.

Learning rate: detectron2 scales it linearly with the batch (Goyal et al., "ImageNet in 1 hour"),
which is derived for SGD. For Adam the update is normalised by the gradient's second moment, and
the rule that keeps training dynamics equivalent is the square root of the batch ratio (Malladi
et al., "On the SDEs and Scaling Rules for Adaptive Gradient Algorithms", NeurIPS 2022; also
Granziol et al., JMLR 2022). ``SOLVER.LR_SCALING "auto"`` (the default) therefore applies the
square-root rule to ADAM/ADAMW and the linear rule to SGD. That analysis also moves Adam's betas
towards 1 for smaller batches (``1 - beta`` times the batch ratio); they are kept as configured,
since for the ratios used here (8 -> 4 or 2 GPUs) the square-root LR is the larger effect.
"""
import logging
import math
from typing import Dict

logger = logging.getLogger(__name__)

# Config keys that depend on the number of processes, and how they change when it differs from
# SOLVER.REFERENCE_WORLD_SIZE by the factor r = world_size / REFERENCE_WORLD_SIZE:
#   "batch":      total batch sizes (images, or crops): x r, so the per-process batch is unchanged;
#   "lr":         learning rates: x r (linear) or x sqrt(r) (square root), see SOLVER.LR_SCALING;
#   "iterations": lengths counted in iterations (int or tuple of ints): / r, rounded.
# A key added to the config whose value counts a total batch or iterations belongs here.
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
    """``"linear"`` or ``"sqrt"``: ``SOLVER.LR_SCALING``, with ``"auto"`` resolved by
    ``SOLVER.OPTIMIZER`` (square root for ADAM/ADAMW, linear for SGD)."""
    rule = cfg.SOLVER.LR_SCALING
    if rule not in LR_SCALING_RULES:
        raise ValueError(f"SOLVER.LR_SCALING = {rule!r}: expected one of {', '.join(LR_SCALING_RULES)}")
    if rule == "auto":
        return "sqrt" if cfg.SOLVER.OPTIMIZER.upper() in ("ADAM", "ADAMW") else "linear"
    return rule


def _node_and_leaf(cfg, key: str):
    *path, leaf = key.split(".")
    node = cfg
    for part in path:
        node = node[part]
    if leaf not in node:
        raise KeyError(f"WORLD_SIZE_SCALED_KEYS lists {key}, which is not a config key")
    return node, leaf


def scale_config_to_world_size(cfg, world_size: int):
    """A copy of ``cfg`` for ``world_size`` processes (``cfg`` itself if
    ``SOLVER.REFERENCE_WORLD_SIZE`` is 0 or already ``world_size``); see the module doc.

    Raises ValueError if a total batch of :data:`WORLD_SIZE_SCALED_KEYS` is not a multiple of
    the reference world size (the per-process batch would not be an integer).
    """
    reference = int(cfg.SOLVER.REFERENCE_WORLD_SIZE)
    if reference == 0 or reference == world_size:
        return cfg
    if world_size <= 0:
        raise ValueError(f"world size must be positive, got {world_size}")
    ratio = world_size / reference
    lr_factor = ratio if lr_scaling_rule(cfg) == "linear" else math.sqrt(ratio)

    frozen = cfg.is_frozen()
    cfg = cfg.clone()
    cfg.defrost()
    changes = []
    for key, kind in WORLD_SIZE_SCALED_KEYS.items():
        node, leaf = _node_and_leaf(cfg, key)
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
        elif kind == "iterations":
            if isinstance(value, (tuple, list)):
                new = type(value)(int(round(v / ratio)) for v in value)
            else:
                new = int(round(value / ratio))
        else:
            raise ValueError(f"WORLD_SIZE_SCALED_KEYS[{key!r}] = {kind!r}: expected batch, lr or iterations")
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
