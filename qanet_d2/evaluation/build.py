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
    """FaceParsingEvaluator (TEST.FACE_PARSING.*), plus InstanceParsingEvaluator when
    TEST.INSTANCE_PARSING (it reports nothing on a dataset without per-face ground truth) and
    FaceDetectionEvaluator when TEST.DETECTION_AP, combined in one DatasetEvaluators. The parsing
    evaluators convert the predictions into the dataset's label set when the model predicts
    another one (``MODEL.QANET.LABEL_SET``).

    Args:
        output_dir: default ``<OUTPUT_DIR>/inference/<dataset_name>``; receives
            ``face_parsing_results.json``, ``instance_parsing_results.json``, ``labels/``
            (SAVE_LABELS) and the COCO files.
    """
    from ..data.mixed_label_sets import model_label_set

    if output_dir is None:
        output_dir = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
    fp = cfg.TEST.FACE_PARSING
    # A model of another (finer) label set than the dataset's is scored on its predictions
    # converted into the dataset's classes.
    model_set = model_label_set(cfg)
    evaluators = [
        FaceParsingEvaluator(
            dataset_name,
            output_dir=output_dir,
            absent_class=fp.ABSENT_CLASS,
            bound_th=fp.BOUND_TH,
            save_labels=fp.SAVE_LABELS,
            prediction_label_set=model_set,
        )
    ]
    if cfg.TEST.INSTANCE_PARSING:
        evaluators.append(InstanceParsingEvaluator(
            dataset_name, output_dir=output_dir, prediction_label_set=model_set,
            nms_thresh=cfg.TEST.INSTANCE_PARSING_NMS_THRESH, score_thresh=cfg.TEST.INSTANCE_PARSING_SCORE_THRESH))
    if cfg.TEST.DETECTION_AP:
        evaluators.append(FaceDetectionEvaluator(dataset_name, output_dir))
    return DatasetEvaluators(evaluators)
