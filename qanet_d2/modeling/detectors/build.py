"""The registry of face detectors (detectron2's pattern, as ``PROPOSAL_GENERATOR_REGISTRY``).

A face detector is an ``nn.Module`` built by ``FACE_DETECTOR_REGISTRY.get(name)(cfg)``. In eval
mode, ``detector(batched_inputs)`` takes detectron2 inputs (``image``: ``3 x H x W`` in
``INPUT.FORMAT``; ``height``/``width``: the frame of the outputs) and returns per image
``{"instances": Instances}`` with ``pred_boxes`` (XYXY_ABS) and ``scores`` in the
``height`` x ``width`` frame, plus ``pred_keypoints`` (``N x 5 x 3``: x, y, score; eyes, nose
tip, mouth corners) when it has landmarks. A trainable detector returns its losses in training
mode; a frozen one (``trainable = False``) refuses to train.
"""
from detectron2.utils.registry import Registry

__all__ = ["FACE_DETECTOR_REGISTRY", "build_face_detector", "detector_is_pretrained", "register_face_detector"]

FACE_DETECTOR_REGISTRY = Registry("FACE_DETECTOR")
FACE_DETECTOR_REGISTRY.__doc__ = "Face detectors of QANetFaceParser, selected by MODEL.QANET.DETECTOR.NAME."


def register_face_detector(name: str, pretrained: bool = False):
    """Decorator: register a builder ``fn(cfg) -> nn.Module`` under ``name`` (the value of
    ``MODEL.QANET.DETECTOR.NAME``; fvcore's ``register`` only takes the object's own name).
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
