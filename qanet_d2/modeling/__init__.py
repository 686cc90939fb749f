"""The model: FCOS face detector, parser backbones, face cropper, QANet parser, post-processing,
the meta-architecture and TTA.

Importing this package registers ``QANetFaceParser`` in ``META_ARCH_REGISTRY`` and the
backbones ``build_fcos_resnet_fpn_backbone``, ``build_timm_hrnet_backbone`` and
``build_qanet_resnet_backbone`` in ``BACKBONE_REGISTRY``.
"""
from .backbone import TimmHRNetBackbone, build_parser_backbone
from .detectors import FACE_DETECTOR_REGISTRY, build_face_detector, build_fcos_detector, build_fcos_resnet_fpn_backbone
from .face_cropper import FaceCropper
from .meta_arch import QANetFaceParser
from .postprocessing import FacePostProcessor
from .qanet import QANetParser
from .test_time_augmentation import QANetFaceParserWithTTA, build_test_time_model, load_parser_weights, tta_views_from_config

__all__ = [
    "QANetFaceParser",
    "FaceCropper",
    "FacePostProcessor",
    "QANetParser",
    "QANetFaceParserWithTTA",
    "TimmHRNetBackbone",
    "FACE_DETECTOR_REGISTRY",
    "build_face_detector",
    "build_fcos_detector",
    "build_fcos_resnet_fpn_backbone",
    "build_parser_backbone",
    "build_test_time_model",
    "load_parser_weights",
    "tta_views_from_config",
]
