"""The registry of face detectors (detectron2's pattern, as ``PROPOSAL_GENERATOR_REGISTRY``).

A face detector is an ``nn.Module`` built by ``FACE_DETECTOR_REGISTRY.get(name)(cfg)``. In eval
mode, ``detector(batched_inputs)`` takes detectron2 inputs (``image``: ``3 x H x W`` in
``INPUT.FORMAT``; ``height``/``width``: the frame of the outputs) and returns per image
``{"instances": Instances}`` with ``pred_boxes`` (XYXY_ABS) and ``scores`` in the
``height`` x ``width`` frame, plus ``pred_keypoints`` (``N x 5 x 3``: x, y, score; eyes, nose
tip, mouth corners) when it has landmarks. A trainable detector returns its losses in training
mode; a frozen one (``trainable = False``) refuses to train.
"""
from detectron2.config import CfgNode as CN
from detectron2.utils.registry import Registry

__all__ = ["FACE_DETECTOR_REGISTRY", "build_face_detector", "detector_is_pretrained", "register_face_detector"]

FACE_DETECTOR_REGISTRY = Registry("FACE_DETECTOR")
FACE_DETECTOR_REGISTRY.__doc__ = "Face detectors of QANetFaceParser, selected by MODEL.QANET.DETECTOR.NAME."


def register_face_detector(name: str, pretrained: bool = False):
    """Decorator: register a builder ``fn(cfg) -> nn.Module`` (or a configurable class) under ``name``
    (the value of ``MODEL.QANET.DETECTOR.NAME``; fvcore's ``register`` only takes the object's own name).
    ``pretrained``: the detector loads released weights when built and needs no checkpoint."""

    def deco(fn):
        fn.pretrained = bool(pretrained)
        FACE_DETECTOR_REGISTRY._do_register(name, fn)
        return fn

    return deco


def detector_is_pretrained(name: str) -> bool:
    """Whether the registered detector ``name`` brings its own trained weights."""
    return bool(name) and name in FACE_DETECTOR_REGISTRY and getattr(FACE_DETECTOR_REGISTRY.get(name), "pretrained", False)


def build_face_detector(cfg):
    """The detector named by ``MODEL.QANET.DETECTOR.NAME``, or None for ""."""
    name = cfg.MODEL.QANET.DETECTOR.NAME
    if not name:
        return None
    if name not in FACE_DETECTOR_REGISTRY:
        known = sorted(k for k, _ in FACE_DETECTOR_REGISTRY)
        raise KeyError(f"MODEL.QANET.DETECTOR.NAME {name!r} is not a registered face detector; registered: {known}")
    return FACE_DETECTOR_REGISTRY.get(name)(cfg)


def add_detector_config(cfg) -> None:
    """The face detector's keys: MODEL.FCOS, MODEL.YUNET and MODEL.QANET.DETECTOR (NAME, BOX_ADAPTER)."""
    # Face detector: detectron2's FCOS with one class ("face") on MODEL.BACKBONE
    # (the report: ResNet-50-FPN with P6/P7 computed from P5).
    cfg.MODEL.FCOS = CN()
    cfg.MODEL.FCOS.NUM_CLASSES = 1
    cfg.MODEL.FCOS.IN_FEATURES = ["p3", "p4", "p5", "p6", "p7"]
    cfg.MODEL.FCOS.NUM_CONVS = 4
    cfg.MODEL.FCOS.HEAD_NORM = "GN"
    cfg.MODEL.FCOS.PRIOR_PROB = 0.01
    cfg.MODEL.FCOS.CENTER_SAMPLING_RADIUS = 1.5
    cfg.MODEL.FCOS.FOCAL_LOSS_ALPHA = 0.25
    cfg.MODEL.FCOS.FOCAL_LOSS_GAMMA = 2.0
    cfg.MODEL.FCOS.SCORE_THRESH_TEST = 0.2
    cfg.MODEL.FCOS.TOPK_CANDIDATES_TEST = 1000
    cfg.MODEL.FCOS.NMS_THRESH_TEST = 0.6
    # Weight of the detector's losses in joint training.
    cfg.MODEL.FCOS.LOSS_WEIGHT = 1.0
    # ImageNet weights of the detector's ResNet, loaded strictly when training starts unless a
    # checkpoint provides the detector: detectron2's MSRA R-50.pkl / R-101.pkl or a torchvision
    # resnet*.pth (URL or path), with the matching MODEL.PIXEL_MEAN/STD, INPUT.FORMAT and
    # STRIDE_IN_1X1 (docs/pretrained.md). "" = random initialisation.
    cfg.MODEL.FCOS.BACKBONE_WEIGHTS = ""
    # The detector sees the model input ("image") resized by this factor, while the parser
    # crops from the unscaled input: a cheap detector on small images, detailed face crops.
    cfg.MODEL.FCOS.INPUT_SCALE = 1.0
    # INPUT_SCALE at inference (evaluation, predictor, video, export); 0: INPUT_SCALE. A smaller
    # test scale makes the detector cheaper where its training sizes cover the smaller faces.
    cfg.MODEL.FCOS.INPUT_SCALE_TEST = 0.0

    # YuNet (libfacedetection.train, Apache-2.0), pretrained on WIDER FACE; never trained here.
    cfg.MODEL.YUNET = CN()
    cfg.MODEL.YUNET.VARIANT = "n"  # "n" (77.9 k parameters) or "s" (54.6 k)
    # The released state dict, loaded strictly when the model is built; a relative path is
    # looked up from the working directory, then from the repository root.
    cfg.MODEL.YUNET.WEIGHTS = "models/yunet/yunet_n.pth"
    # Faces are kept from this score (sigmoid(cls) x sigmoid(obj), the authors' score).
    cfg.MODEL.YUNET.SCORE_THRESH_TEST = 0.5
    cfg.MODEL.YUNET.NMS_THRESH_TEST = 0.45
    cfg.MODEL.YUNET.TOPK_CANDIDATES_TEST = 1000
    # The detector sees the model input resized by each factor of SCALES_TEST (2.0: faces of
    # half the size are found; 0.5: faces larger than its 640 px training crops), the longer
    # side capped at MAX_SIZE_TEST (0: no cap); the detections of all sizes are merged by NMS.
    cfg.MODEL.YUNET.SCALES_TEST = (1.0,)
    cfg.MODEL.YUNET.MAX_SIZE_TEST = 1920

    if "QANET" not in cfg.MODEL:
        cfg.MODEL.QANET = CN()
    # The face detector, a registered part (qanet_d2.modeling.detectors.FACE_DETECTOR_REGISTRY),
    # built from its own subtree: "FCOS" (the report's, trainable; MODEL.FCOS) or "YuNet"
    # (pretrained on WIDER FACE, frozen; MODEL.YUNET). "" = no detector: a parser-only model
    # (TRAIN_MODE "parser" with TEST_BOXES "gt", or boxes given to the predictor).
    cfg.MODEL.QANET.DETECTOR = CN()
    cfg.MODEL.QANET.DETECTOR.NAME = "FCOS"
    # Box adapter: the detector's face box and five landmarks -> the head box the parser was
    # trained on (hair top to chin, ears included). 44 numbers, the 4 x 11 matrix of
    # qanet_d2.modeling.detectors.box_adapter.HeadBoxAdapter (fitted by tools/fit_box_adapter.py).
    # Empty: the detector's boxes as they are (FCOS is trained on head boxes).
    cfg.MODEL.QANET.DETECTOR.BOX_ADAPTER = []
