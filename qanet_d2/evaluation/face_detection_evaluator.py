"""Face detection AP (COCO) of the predicted face boxes, by detectron2's COCOEvaluator.

Why a subclass: COCOEvaluator reads ground truth from ``metadata.json_file`` as COCO json and
matches predictions by integer ``image_id``. The face datasets' ``json_file`` is the project's
own split format and their image ids are strings (``"<video_id>/<frame_index>"``). So the
dataset is exposed to COCOEvaluator as a derived dataset ``<name>__face_boxes`` whose dicts carry
integer ids, converted to COCO json by detectron2's ``convert_to_coco_json`` on every build (never
a stale cache), and ``process`` maps the string ids of the inputs to those integers.
"""
from __future__ import annotations

import os
import sys

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.coco import convert_to_coco_json
from detectron2.evaluation import COCOEvaluator
from detectron2.utils import comm

__all__ = ["FaceDetectionEvaluator", "fast_coco_eval_available"]


def fast_coco_eval_available() -> bool:
    """Whether detectron2's compiled COCOeval (``detectron2._C``) exists; not the placeholder
    that qanet_d2.compat installs for a Python-only detectron2."""
    try:
        from detectron2 import _C  # noqa: F401
    except ImportError:
        return False
    return not getattr(sys.modules.get("detectron2._C"), "__qanet_placeholder__", False)


def _register_face_box_view(dataset_name: str, output_dir: str) -> str:
    """(Re-)register ``<dataset_name>__face_boxes`` and write its COCO json; returns the name."""
    view = f"{dataset_name}__face_boxes"
    json_file = os.path.join(output_dir, f"{dataset_name}_face_boxes_coco.json")

    def load():
        dicts = []
        for i, d in enumerate(DatasetCatalog.get(dataset_name)):
            d = dict(d, image_id=i)
            d.pop("sem_seg_file_name", None)
            dicts.append(d)
        return dicts

    if view in DatasetCatalog.list():
        DatasetCatalog.remove(view)
        MetadataCatalog.remove(view)
    DatasetCatalog.register(view, load)
    MetadataCatalog.get(view).set(thing_classes=list(MetadataCatalog.get(dataset_name).get("thing_classes", ["face"])))
    # One writer per machine (same file for all local processes), then everyone reads it.
    if comm.get_local_rank() == 0:
        convert_to_coco_json(view, json_file, allow_cached=False)
    comm.synchronize()
    MetadataCatalog.get(view).set(json_file=json_file)
    return view


class FaceDetectionEvaluator(COCOEvaluator):
    """Box AP of ``outputs[i]["instances"]`` (``pred_boxes``, ``scores``, ``pred_classes`` = 0)
    against the dataset's face boxes (``annotations``, any detectron2 bbox_mode). Results under
    ``"bbox"`` (AP, AP50, AP75, APs/m/l, AP-face), in percent."""

    def __init__(self, dataset_name: str, output_dir: str, *, distributed: bool = True, use_fast_impl=None):
        if not output_dir:
            raise ValueError("FaceDetectionEvaluator needs an output_dir for the COCO-format ground truth")
        self._image_ids = {str(d["image_id"]): i for i, d in enumerate(DatasetCatalog.get(dataset_name))}
        view = _register_face_box_view(dataset_name, output_dir)
        if use_fast_impl is None:
            use_fast_impl = fast_coco_eval_available()
        super().__init__(view, tasks=("bbox",), distributed=distributed, output_dir=output_dir,
                         use_fast_impl=use_fast_impl)

    def process(self, inputs, outputs):
        inputs = [dict(x, image_id=self._image_ids[str(x["image_id"])]) for x in inputs]
        super().process(inputs, outputs)
