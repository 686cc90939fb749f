"""Config validation, run before any data is read or any model is built: every problem, with
its key, value and what is expected, in one :class:`ConfigError`."""
import os
from typing import List

from detectron2.data import DatasetCatalog

from ..data.mixed_label_sets import (NoConversionError, dataset_label_sets, model_label_set, model_label_set_source,
                                     prediction_conversion, training_route)
from ..data.instance_mapper import SAMPLE_UNITS
from ..data.training_crops import CROP_OTHER_FACES, CROP_OUTSIDE_LABELS
from ..evaluation.face_parsing_evaluator import ABSENT_CLASS_MODES
from ..modeling.detectors.build import detector_is_pretrained
from ..modeling.meta_arch import TEST_BOXES, TRAIN_MODES
from ..modeling.postprocessing import PAINT_ORDERS, PIXEL_SCORE_REGIONS
from ..modeling.qanet import parser as qanet_parser
from ..video import ALIGNS, TRACK_MOTIONS
from .epochs import _get, epoch_problems, uses_epochs
from .world_size import LR_SCALING_RULES, WORLD_SIZE_SCALED_KEYS


class ConfigError(ValueError):
    """One or more config values cannot work together."""


OPTIMIZERS = ("SGD", "ADAM", "ADAMW")  # SOLVER.OPTIMIZER, built by QANetTrainer.build_optimizer


# The allowed values are those of the modules that act on them.
_CHOICES = {
    "MODEL.QANET.TRAIN_MODE": TRAIN_MODES,
    "MODEL.QANET.TEST_BOXES": TEST_BOXES,
    "MODEL.QANET.CROP_OUTSIDE_LABEL": CROP_OUTSIDE_LABELS,
    "MODEL.QANET.CROP_OTHER_FACES": CROP_OTHER_FACES,
    "MODEL.QANET.INFERENCE.PAINT_ORDER": PAINT_ORDERS,
    "MODEL.QANET.INFERENCE.PIXEL_SCORE_REGION": PIXEL_SCORE_REGIONS,
    "SOLVER.OPTIMIZER": OPTIMIZERS,
    "TEST.FACE_PARSING.ABSENT_CLASS": ABSENT_CLASS_MODES,
    "SOLVER.LR_SCALING": LR_SCALING_RULES,
    "VIDEO.ALIGN": ALIGNS,
    "VIDEO.TRACK_MOTION": TRACK_MOTIONS,
    "DATALOADER.SAMPLE_UNIT": SAMPLE_UNITS,
}


def _registered_problems(names, role: str) -> List[str]:
    problems = []
    registered = set(DatasetCatalog.list())
    for name in names:
        if name not in registered:
            close = sorted(n for n in registered if n.split("_")[0] == name.split("_")[0])
            hint = f" (registered with that prefix: {', '.join(close)})" if close else ""
            problems.append(f"DATASETS.{role}: '{name}' is not a registered dataset{hint}")
    return problems


def _label_set_problems(cfg, for_training: bool) -> List[str]:
    """The model's label set against NUM_CLASSES, the training datasets (same set, labels
    convertible into it, or a coarser set its probabilities merge into) and the test datasets
    (same set, or predictions convertible into theirs)."""
    registered = set(DatasetCatalog.list())
    train = [n for n in cfg.DATASETS.TRAIN if n in registered] if for_training else []
    test = [n for n in cfg.DATASETS.TEST if n in registered]
    try:
        model = model_label_set(cfg)
    except KeyError as e:
        return [str(e.args[0])]
    # unknown (files absent): loading the dataset reports it, with how to prepare it
    sets = dataset_label_sets(train + test)
    if model is None:
        # the model's set is unknown: each known dataset must have NUM_CLASSES classes
        return [_num_classes_problem(cfg, f"dataset '{n}'", ls) for n, ls in sets.items()
                if ls is not None and ls.num_classes != cfg.MODEL.QANET.NUM_CLASSES]
    problems = []
    if model.num_classes != cfg.MODEL.QANET.NUM_CLASSES:
        source = model_label_set_source(cfg)
        problems.append(_num_classes_problem(cfg, source if source.startswith("dataset") else f"{source} '{model.name}'", model))
    checks = [("DATASETS.TRAIN", train, training_route, "train"), ("DATASETS.TEST", test, prediction_conversion, "evaluate")]
    for key, names, check, verb in checks:
        for name in names:
            if sets[name] is None:
                continue
            try:
                check(model, sets[name])
            except NoConversionError as e:
                problems.append(f"{key}: dataset '{name}' cannot {verb} a model of label set '{model.name}' "
                                f"({model_label_set_source(cfg)}): {e}")
    return problems


def _num_classes_problem(cfg, source: str, label_set) -> str:
    return (f"MODEL.QANET.NUM_CLASSES = {cfg.MODEL.QANET.NUM_CLASSES}, but {source} (label set '{label_set.name}') "
            f"has {label_set.num_classes} classes: {list(label_set.classes)}")


def _train_ratio_problems(cfg) -> List[str]:
    ratios = list(cfg.DATALOADER.TRAIN_RATIOS)
    if not ratios:
        return []
    problems = []
    if len(ratios) != len(cfg.DATASETS.TRAIN):
        problems.append(f"DATALOADER.TRAIN_RATIOS = {tuple(ratios)}: expected one ratio per dataset of DATASETS.TRAIN "
                        f"({len(cfg.DATASETS.TRAIN)}: {', '.join(cfg.DATASETS.TRAIN)}), or none")
    if any(not float(r) > 0 for r in ratios):
        problems.append(f"DATALOADER.TRAIN_RATIOS = {tuple(ratios)}: ratios must be positive")
    return problems


def validate_config(cfg, *, for_training: bool = True, check_datasets: bool = True) -> None:
    """Raise :class:`ConfigError` listing every inconsistency in ``cfg``."""
    problems: List[str] = []
    for key, choices in _CHOICES.items():
        value = _get(cfg, key)
        if (value.upper() if key == "SOLVER.OPTIMIZER" else value) not in choices:
            problems.append(f"{key} = {value!r}: expected one of {', '.join(choices)}")

    for key in ("VIDEO.DETECT_EVERY", "VIDEO.TEMPORAL_WINDOW"):
        if int(_get(cfg, key)) < 1:
            problems.append(f"{key} = {_get(cfg, key)}: expected an integer >= 1")
    weight = cfg.VIDEO.CURRENT_WEIGHT
    if weight is not None and not 0.0 < float(weight) <= 1.0:
        problems.append(f"VIDEO.CURRENT_WEIGHT = {weight}: expected a weight in (0, 1] or None (a plain mean)")

    q = cfg.MODEL.QANET
    if cfg.MODEL.META_ARCHITECTURE == "QANetFaceParser":
        height, width = (int(v) for v in q.INPUT_SIZE)
        div = qanet_parser.INPUT_SIZE_DIVISIBILITY
        if height <= 0 or width <= 0 or height % div or width % div:
            problems.append(f"MODEL.QANET.INPUT_SIZE = {tuple(q.INPUT_SIZE)} (height, width): both must be positive "
                            f"multiples of {div} (the parser backbone's stride)")
        elif abs(width / height - q.ASPECT_RATIO) > 1.0 / min(height, width) + 1e-6:
            problems.append(f"MODEL.QANET.INPUT_SIZE = {tuple(q.INPUT_SIZE)} has width/height {width / height:.4f}, "
                            f"but MODEL.QANET.ASPECT_RATIO = {q.ASPECT_RATIO}: crops would be distorted")
        if q.NUM_CLASSES < 2:
            problems.append(f"MODEL.QANET.NUM_CLASSES = {q.NUM_CLASSES}: need background and at least one part")
        if len(q.INFERENCE.SCORE_WEIGHTS) != 3 or any(w < 0 for w in q.INFERENCE.SCORE_WEIGHTS) or sum(q.INFERENCE.SCORE_WEIGHTS) <= 0:
            problems.append(f"MODEL.QANET.INFERENCE.SCORE_WEIGHTS = {tuple(q.INFERENCE.SCORE_WEIGHTS)}: expected three "
                            "non-negative weights (box, iou, pixel) with a positive sum")
        if q.BOX_EXPAND <= 0:
            problems.append(f"MODEL.QANET.BOX_EXPAND = {q.BOX_EXPAND}: must be positive")
        lo, hi = q.AUG.SCALE_RANGE
        if not 0 < lo <= 1 <= hi:
            problems.append(f"MODEL.QANET.AUG.SCALE_RANGE = {tuple(q.AUG.SCALE_RANGE)}: expected 0 < low <= 1 <= high")
        if (q.TRAIN_MODE == "parser" and for_training and q.TEST_BOXES == "detector" and not (cfg.MODEL.WEIGHTS or q.DETECTOR_WEIGHTS)
                and not detector_is_pretrained(q.DETECTOR.NAME)):
            problems.append("MODEL.QANET.TRAIN_MODE = 'parser' trains no detector, but MODEL.QANET.TEST_BOXES = "
                            "'detector' and neither MODEL.WEIGHTS nor MODEL.QANET.DETECTOR_WEIGHTS is set: evaluation "
                            "would use an untrained detector; set MODEL.QANET.TEST_BOXES gt or give detector weights")
        if cfg.DATALOADER.SAMPLE_UNIT == "face" and for_training and q.TRAIN_MODE != "parser":
            problems.append(
                f"DATALOADER.SAMPLE_UNIT = 'face' trains on face crops alone, but MODEL.QANET.TRAIN_MODE = "
                f"{q.TRAIN_MODE!r} also trains the detector, which needs whole frames: use TRAIN_MODE parser "
                "(stage 2) or SAMPLE_UNIT image"
            )
        if q.DETECTOR_WEIGHTS and not cfg.MODEL.QANET.DETECTOR.NAME:
            problems.append(
                f"MODEL.QANET.DETECTOR_WEIGHTS = {q.DETECTOR_WEIGHTS!r}, but the model has no detector (MODEL.QANET.DETECTOR.NAME '')"
            )
    if any(s <= 0 for s in cfg.TEST.AUG.BOX_SCALES):
        problems.append(f"TEST.AUG.BOX_SCALES = {tuple(cfg.TEST.AUG.BOX_SCALES)}: scales must be positive")
    for path in cfg.TEST.ENSEMBLE.WEIGHTS:
        if not os.path.isfile(path):
            problems.append(f"TEST.ENSEMBLE.WEIGHTS: checkpoint {path} does not exist")
    if cfg.SOLVER.IMS_PER_BATCH <= 0:
        problems.append(f"SOLVER.IMS_PER_BATCH = {cfg.SOLVER.IMS_PER_BATCH}: must be positive")
    reference = cfg.SOLVER.REFERENCE_WORLD_SIZE
    if reference < 0:
        problems.append(f"SOLVER.REFERENCE_WORLD_SIZE = {reference}: must be 0 (no rescaling) or the number of GPUs the config is written for")
    elif reference > 0:
        for key, kind in WORLD_SIZE_SCALED_KEYS.items():
            if kind == "batch" and _get(cfg, key) % reference:
                problems.append(
                    f"{key} = {_get(cfg, key)} is not a multiple of SOLVER.REFERENCE_WORLD_SIZE = {reference}: "
                    "the batch per GPU would not be an integer"
                )
    problems += epoch_problems(cfg)
    if not uses_epochs(cfg) and list(cfg.SOLVER.STEPS) != sorted(cfg.SOLVER.STEPS):
        problems.append(f"SOLVER.STEPS = {tuple(cfg.SOLVER.STEPS)}: must be increasing")

    if check_datasets:
        if for_training:
            if not cfg.DATASETS.TRAIN:
                problems.append("DATASETS.TRAIN is empty")
            problems += _registered_problems(cfg.DATASETS.TRAIN, "TRAIN")
            problems += _train_ratio_problems(cfg)
        problems += _registered_problems(cfg.DATASETS.TEST, "TEST")
        problems += _label_set_problems(cfg, for_training)

    if problems:
        raise ConfigError("invalid config:\n  - " + "\n  - ".join(problems))
