"""Face detectors of ``QANetFaceParser``, registered in :data:`FACE_DETECTOR_REGISTRY` and
chosen by ``MODEL.QANET.DETECTOR.NAME``: ``FCOS`` (:mod:`.fcos`, the report's, trainable) and
``YuNet`` (:mod:`.yunet`, pretrained on WIDER FACE, frozen); :mod:`.box_adapter` turns a face
box with landmarks into the head box the parser was trained on."""
from .box_adapter import HeadBoxAdapter, fit_head_box_adapter
from .build import FACE_DETECTOR_REGISTRY, build_face_detector
from .fcos import build_basic_resnet, build_fcos_detector, build_fcos_resnet_fpn_backbone, group_norm
from .yunet import YuNet, YuNetFaceDetector, decode_yunet, load_yunet_state_dict

__all__ = [
    "FACE_DETECTOR_REGISTRY", "HeadBoxAdapter", "YuNet", "YuNetFaceDetector", "build_basic_resnet",
    "build_face_detector", "build_fcos_detector", "build_fcos_resnet_fpn_backbone", "decode_yunet",
    "fit_head_box_adapter", "group_norm", "load_yunet_state_dict",
]
