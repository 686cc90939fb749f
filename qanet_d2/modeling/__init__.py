"""The model: face detectors, parser backbones, face cropper, QANet parser, post-processing, the
meta-architecture and TTA. Importing it registers ``QANetFaceParser`` and the backbones in detectron2's registries.
"""
from .backbone import TimmHRNetBackbone, build_parser_backbone
from .detectors import FACE_DETECTOR_REGISTRY, build_face_detector, build_fcos_detector, build_fcos_resnet_fpn_backbone
from .face_cropper import FaceCropper
from .meta_arch import QANetFaceParser
from .postprocessing import FacePostProcessor
from .qanet import QANetParser
from .test_time_augmentation import QANetFaceParserWithTTA, build_test_time_model, tta_views_from_config

__all__ = [
    "QANetFaceParser", "FaceCropper", "FacePostProcessor", "QANetParser", "QANetFaceParserWithTTA", "TimmHRNetBackbone",
    "FACE_DETECTOR_REGISTRY", "build_face_detector", "build_fcos_detector", "build_fcos_resnet_fpn_backbone",
    "build_parser_backbone", "build_test_time_model", "tta_views_from_config",
]
