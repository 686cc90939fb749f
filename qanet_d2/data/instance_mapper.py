"""Training on face instances: one sample = one face crop (``DATALOADER.SAMPLE_UNIT "face"``), as
the official QANet code trains its parser; each face is cut by the frame route's mapper.
"""
from __future__ import annotations

from typing import Dict, List

from detectron2.config import configurable
from detectron2.structures import BoxMode

from .mapper import FaceParsingDatasetMapper

__all__ = ["FaceInstanceDatasetMapper", "face_instance_dicts", "SAMPLE_UNITS"]

# DATALOADER.SAMPLE_UNIT values: a training sample is a frame (with all its faces) or one face.
SAMPLE_UNITS = ("image", "face")


def face_instance_dicts(dataset_dicts: List[Dict], min_box_size: float = 1.0) -> List[Dict]:
    """One dataset dict per face, frame by frame: the frame's dict (shallow copy) with
    ``annotations`` = that face's alone and ``face_index`` = its position in the frame's. Frames
    without a label map, crowd annotations and boxes with a side under ``min_box_size`` pixels
    (clipped to the frame) give none."""
    out = []
    for d in dataset_dicts:
        if not d.get("sem_seg_file_name"):
            continue
        h, w = d.get("height"), d.get("width")
        for k, ann in enumerate(d.get("annotations", [])):
            if ann.get("iscrowd", 0):
                continue
            x0, y0, x1, y1 = BoxMode.convert(list(ann["bbox"]), ann.get("bbox_mode", BoxMode.XYXY_ABS), BoxMode.XYXY_ABS)
            if w is not None and h is not None:
                x0, x1 = min(max(x0, 0), w), min(max(x1, 0), w)
                y0, y1 = min(max(y0, 0), h), min(max(y1, 0), h)
            if x1 - x0 < min_box_size or y1 - y0 < min_box_size:
                continue
            face = dict(d)
            face["annotations"] = [ann]
            face["face_index"] = k
            out.append(face)
    return out


class FaceInstanceDatasetMapper:
    """Face-instance dataset dict (:func:`face_instance_dicts`) -> one augmented face crop, cut by
    ``frame_mapper`` (with a ``cropper``, no resize): the frame mapper's output without ``image``,
    ``sem_seg`` and ``instances``."""

    @configurable
    def __init__(self, *, frame_mapper: FaceParsingDatasetMapper):
        self.frame_mapper = frame_mapper

    @classmethod
    def from_config(cls, cfg):
        args = FaceParsingDatasetMapper.from_config(cfg, is_train=True)
        frame_mapper = FaceParsingDatasetMapper(**{**args, "augmentations": []})
        return {"frame_mapper": frame_mapper}

    def __call__(self, dataset_dict: Dict) -> Dict:
        out = self.frame_mapper(dataset_dict)
        for key in ("image", "sem_seg", "instances"):
            out.pop(key, None)
        return out
