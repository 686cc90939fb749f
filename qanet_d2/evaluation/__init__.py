"""Evaluation: DAVIS J/F, mIoU / F1, instance-level parsing (APp, APvol, PCP) and face detection AP
for the face parsing datasets."""
from .build import build_face_parsing_evaluators
from .davis import boundary_f_measure, boundary_radius, davis_disk, label_boundaries, seg_to_boundary
from .face_detection_evaluator import FaceDetectionEvaluator
from .face_parsing_evaluator import FaceParsingEvaluator, FrameScores, frame_key, label_png_path, score_frame, summarize
from .instance_parsing import (PART_IOU_THRESHOLDS, InstanceParsingAccumulator, PredictedFace, face_part_ious,
                               match_faces)
from .instance_parsing_evaluator import InstanceParsingEvaluator, faces_from_output

__all__ = ["seg_to_boundary", "label_boundaries", "boundary_f_measure", "boundary_radius", "davis_disk",
           "score_frame", "summarize", "FrameScores", "label_png_path", "frame_key", "FaceParsingEvaluator",
           "FaceDetectionEvaluator", "PART_IOU_THRESHOLDS", "PredictedFace", "face_part_ious", "match_faces",
           "InstanceParsingAccumulator", "InstanceParsingEvaluator", "faces_from_output",
           "build_face_parsing_evaluators"]
