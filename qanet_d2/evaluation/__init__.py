"""Evaluation: DAVIS J/F, mIoU / F1 and face detection AP for the face parsing datasets."""
from .build import build_face_parsing_evaluators
from .davis import (
    boundary_f_measure,
    boundary_radius,
    contour_accuracy,
    contour_accuracy_per_class,
    davis_disk,
    label_boundaries,
    region_similarity,
    seg_to_boundary,
)
from .face_detection_evaluator import FaceDetectionEvaluator
from .face_parsing_evaluator import (
    FaceParsingEvaluator,
    FrameScores,
    frame_key,
    label_png_path,
    score_frame,
    summarize,
)

__all__ = [
    "region_similarity",
    "contour_accuracy",
    "contour_accuracy_per_class",
    "seg_to_boundary",
    "label_boundaries",
    "boundary_f_measure",
    "boundary_radius",
    "davis_disk",
    "score_frame",
    "summarize",
    "FrameScores",
    "label_png_path",
    "frame_key",
    "FaceParsingEvaluator",
    "FaceDetectionEvaluator",
    "build_face_parsing_evaluators",
]
