"""Config keys of qanet_d2, added to detectron2's defaults by :func:`add_qanet_config`.

The config is the project's only switchboard: every weight, threshold and mode that the
model, data pipeline, evaluator and tools read is a key here, with the report's setting as
the default unless noted. Sizes are (height, width) in pixels.
"""
from detectron2.config import CfgNode as CN

from .data.mapper import add_data_config
from .data.training_crops import add_training_crops_config
from .engine.trainer import add_solver_config
from .modeling.detectors.build import add_detector_config
from .modeling.postprocessing import add_postprocessing_config
from .modeling.qanet.parser import add_parser_config
from .video import add_video_config


def add_qanet_config(cfg: CN) -> CN:
    """Add qanet_d2's keys to a detectron2 config (in place) and return it."""
    _C = cfg

    # ------------------------------------------------------------------ model
    _C.MODEL.META_ARCHITECTURE = "QANetFaceParser"
    # Keep convolution weights (hence activations) in channels-last (NHWC) memory order.
    # Same results; about 15 % faster training on CPUs with oneDNN (measured on the quickstart).
    _C.MODEL.CHANNELS_LAST = False
    _C.MODEL.QANET = CN()
    add_detector_config(_C)  # MODEL.FCOS, MODEL.YUNET, MODEL.QANET.DETECTOR
    add_parser_config(_C)  # label set, classes, crops, backbone, neck, branches, losses
    add_training_crops_config(_C)  # MODEL.QANET.AUG and the labels of training crops
    # "joint": detector losses on full images + parser losses on ground-truth face crops;
    # "detector": detector only; "parser": parser only (ground-truth boxes, detector frozen/absent).
    _C.MODEL.QANET.TRAIN_MODE = "joint"
    # Boxes the parser uses at test time: "detector" (its own detections) or "gt" (the
    # dataset's face boxes, to measure parsing alone).
    _C.MODEL.QANET.TEST_BOXES = "detector"
    # Assemble the model from part checkpoints, applied after MODEL.WEIGHTS: the detector.* /
    # parser.* weights of these files (qanet_d2 checkpoints or bare part state dicts), each loaded
    # strictly into its part. A checkpoint that records its part as untrained is refused.
    # Stage-wise training: stage 2 sets DETECTOR_WEIGHTS to stage 1's model_final.pth.
    _C.MODEL.QANET.DETECTOR_WEIGHTS = ""
    _C.MODEL.QANET.PARSER_WEIGHTS = ""

    # Inference: faces parsed per image (the detector's best, by box score) and per forward of
    # the parser (bounds memory); scoring, paste-back and painting: add_postprocessing_config.
    _C.MODEL.QANET.INFERENCE = CN()
    _C.MODEL.QANET.INFERENCE.MAX_PARSED_FACES = 100
    _C.MODEL.QANET.INFERENCE.PARSER_BATCH = 32
    add_postprocessing_config(_C)

    # ------------------------------------------------------------------ data
    add_data_config(_C)
    add_video_config(_C)

    # ------------------------------------------------------------------ solver
    add_solver_config(_C)
    # detectron2's SOLVER.AMP.ENABLED (default False) turns on mixed precision training: float16
    # autocast with a GradScaler on CUDA, bfloat16 autocast (no scaler needed) on CPU. Losses are
    # computed in float32 either way.

    # ------------------------------------------------------------------ test
    # Test-time augmentation of the parser (detectron2's TEST.AUG.ENABLED / FLIP are reused):
    # flip averages with the mirrored crop (left/right channels swapped back); BOX_SCALES
    # enlarge or shrink the box context. All views are averaged after pasting back.
    _C.TEST.AUG.BOX_SCALES = (1.0,)
    # Ensemble: checkpoints whose parser probabilities are averaged with MODEL.WEIGHTS's.
    _C.TEST.ENSEMBLE = CN()
    _C.TEST.ENSEMBLE.WEIGHTS = []
    # FaceParsingPredictor (demo, video, tools/benchmark*.py) folds the batch norms into the
    # convolutions before them (qanet_d2.modeling.fusion): same outputs up to float rounding,
    # a quarter less parser time on CPU. Evaluation during training runs the model as it trains.
    _C.TEST.FUSE_CONV_BN = True

    # Face parsing evaluation (J/F of DAVIS, mIoU, F1).
    _C.TEST.FACE_PARSING = CN()
    # A class absent from both prediction and ground truth in a frame: "skip" it (stricter)
    # or score it 1 as DAVIS does ("one").
    _C.TEST.FACE_PARSING.ABSENT_CLASS = "skip"
    # Contour tolerance: fraction of the image diagonal (< 1) or pixels (>= 1).
    _C.TEST.FACE_PARSING.BOUND_TH = 0.008
    # Also write per-frame label PNGs of the predictions under OUTPUT_DIR/inference/labels.
    _C.TEST.FACE_PARSING.SAVE_LABELS = False
    # Also report the instance-level parsing metrics of Parsing R-CNN / QANet (APp50, APvol,
    # PCP50; faces ranked by the quality score, and by the box score as "...-box") on datasets
    # with per-face ground truth (the synthetic sets' instance PNGs; single-face datasets).
    _C.TEST.INSTANCE_PARSING = True
    # --- APp's parsing NMS and score filter (the official QANet code's) ---------------------------
    # Before the instance-level metrics match faces, faces whose ranking score is below
    # SCORE_THRESH are dropped and a parsing NMS drops a face whose mean part IoU with a
    # better-scored kept face is >= NMS_THRESH (qanet_d2/evaluation/instance_parsing.py). 0 = off.
    _C.TEST.INSTANCE_PARSING_NMS_THRESH = 0.6
    _C.TEST.INSTANCE_PARSING_SCORE_THRESH = 0.01
    # ------------------------------------------------------------------------------------------
    # Also report face-detection AP (COCO) of the predicted boxes.
    _C.TEST.DETECTION_AP = False

    return cfg


def get_qanet_cfg() -> CN:
    """detectron2's default config with qanet_d2's keys added."""
    from detectron2.config import get_cfg

    return add_qanet_config(get_cfg())
