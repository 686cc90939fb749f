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
    FaceDetectionEvaluator when TEST.DETECTION_AP, combined in one DatasetEvaluators.

    Args:
        output_dir: default ``<OUTPUT_DIR>/inference/<dataset_name>``; receives
            ``face_parsing_results.json``, ``instance_parsing_results.json``, ``labels/``
            (SAVE_LABELS) and the COCO files.
    """
    if output_dir is None:
        output_dir = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
    fp = cfg.TEST.FACE_PARSING
    evaluators = [
        FaceParsingEvaluator(
            dataset_name,
            output_dir=output_dir,
            absent_class=fp.ABSENT_CLASS,
            bound_th=fp.BOUND_TH,
            save_labels=fp.SAVE_LABELS,
        )
    ]
    if cfg.TEST.INSTANCE_PARSING:
        evaluators.append(InstanceParsingEvaluator(dataset_name, output_dir=output_dir))
    if cfg.TEST.DETECTION_AP:
        evaluators.append(FaceDetectionEvaluator(dataset_name, output_dir))
    return DatasetEvaluators(evaluators)
