"""Config keys of qanet_d2 (:func:`add_qanet_config`): every weight, threshold and mode of the model,
data, evaluator and tools, the report's setting by default. Sizes are (height, width) in pixels.
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
    # Convolution weights (hence activations) in channels-last memory order: same results, about
    # 15 % faster training on CPUs with oneDNN (the quickstart).
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
    # Part checkpoints applied after MODEL.WEIGHTS, each loaded strictly into its part (one that
    # records its part as untrained is refused); stage 2 sets DETECTOR_WEIGHTS to stage 1's model.
    _C.MODEL.QANET.DETECTOR_WEIGHTS = ""
    _C.MODEL.QANET.PARSER_WEIGHTS = ""

    # Faces parsed per image (the best by box score) and per parser forward (bounds memory).
    _C.MODEL.QANET.INFERENCE = CN()
    _C.MODEL.QANET.INFERENCE.MAX_PARSED_FACES = 100
    _C.MODEL.QANET.INFERENCE.PARSER_BATCH = 32
    add_postprocessing_config(_C)

    # ------------------------------------------------------------------ data
    add_data_config(_C)
    add_video_config(_C)

    # ------------------------------------------------------------------ solver
    add_solver_config(_C)
    # SOLVER.AMP.ENABLED: float16 autocast with a GradScaler on CUDA, bfloat16 on CPU; losses in float32.

    # ------------------------------------------------------------------ test
    # Test-time views of the parser (with detectron2's TEST.AUG.ENABLED / FLIP): BOX_SCALES enlarge
    # or shrink the box context.
    _C.TEST.AUG.BOX_SCALES = (1.0,)
    # Ensemble: checkpoints whose parser probabilities are averaged with MODEL.WEIGHTS's.
    _C.TEST.ENSEMBLE = CN()
    _C.TEST.ENSEMBLE.WEIGHTS = []
    # FaceParsingPredictor folds the batch norms into the convolutions (qanet_d2.modeling.fusion):
    # same outputs up to rounding, a quarter less parser time on CPU.
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
    # Also report the instance-level parsing metrics of Parsing R-CNN / QANet (APp50, APvol, PCP50;
    # ranked by the quality score, and by the box score as "...-box") where faces have ground truth.
    _C.TEST.INSTANCE_PARSING = True
    # APp's score filter and parsing NMS (the official QANet code's): faces scored below SCORE_THRESH
    # are dropped, and a face whose mean part IoU with a better kept face is >= NMS_THRESH. 0 = off.
    _C.TEST.INSTANCE_PARSING_NMS_THRESH = 0.6
    _C.TEST.INSTANCE_PARSING_SCORE_THRESH = 0.01
    # Also report face-detection AP (COCO) of the predicted boxes.
    _C.TEST.DETECTION_AP = False

    return cfg


def get_qanet_cfg() -> CN:
    """detectron2's default config with qanet_d2's keys added."""
    from detectron2.config import get_cfg

    return add_qanet_config(get_cfg())
