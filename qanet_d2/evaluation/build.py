"""The evaluators a face dataset is tested with, built from the config."""
from __future__ import annotations

import os
from typing import Optional

from detectron2.evaluation import DatasetEvaluators

from .face_detection_evaluator import FaceDetectionEvaluator
from .face_parsing_evaluator import FaceParsingEvaluator
from .instance_parsing_evaluator import InstanceParsingEvaluator

__all__ = ["build_face_parsing_evaluators"]


def build_face_parsing_evaluators(cfg, dataset_name: str, output_dir: Optional[str] = None) -> DatasetEvaluators:
    """FaceParsingEvaluator, plus InstanceParsingEvaluator with TEST.INSTANCE_PARSING and
    FaceDetectionEvaluator with TEST.DETECTION_AP, in one DatasetEvaluators; predictions of
    another label set (``MODEL.QANET.LABEL_SET``) are converted into the dataset's.
    ``output_dir`` defaults to ``<OUTPUT_DIR>/inference/<dataset_name>``."""
    from ..data.mixed_label_sets import model_label_set

    if output_dir is None:
        output_dir = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
    fp = cfg.TEST.FACE_PARSING
    model_set = model_label_set(cfg)
    evaluators = [FaceParsingEvaluator(dataset_name, output_dir=output_dir, absent_class=fp.ABSENT_CLASS,
                                       bound_th=fp.BOUND_TH, save_labels=fp.SAVE_LABELS,
                                       prediction_label_set=model_set)]
    if cfg.TEST.INSTANCE_PARSING:
        evaluators.append(InstanceParsingEvaluator(
            dataset_name, output_dir=output_dir, prediction_label_set=model_set,
            nms_thresh=cfg.TEST.INSTANCE_PARSING_NMS_THRESH, score_thresh=cfg.TEST.INSTANCE_PARSING_SCORE_THRESH))
    if cfg.TEST.DETECTION_AP:
        evaluators.append(FaceDetectionEvaluator(dataset_name, output_dir))
    return DatasetEvaluators(evaluators)
