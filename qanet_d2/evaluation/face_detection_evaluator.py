"""Face detection AP (COCO) of the predicted face boxes, by detectron2's COCOEvaluator.

Why a subclass: COCOEvaluator needs COCO json and integer ``image_id``s; the face datasets have
their own split format and string ids. So COCOEvaluator sees a derived dataset
``<name>__face_boxes`` with integer ids (COCO json rewritten on every build), and ``process``
maps the inputs' ids to those integers.
"""
from __future__ import annotations

import copy
import os

import numpy as np

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.coco import convert_to_coco_json
from detectron2.evaluation import COCOEvaluator
from detectron2.structures import BoxMode, pairwise_iou, Boxes
from detectron2.utils import comm
import torch

from ..compat import compiled_extension_available
from .face_parsing_evaluator import gather_shards

__all__ = ["FaceDetectionEvaluator"]


def _register_face_box_view(dataset_name: str, output_dir: str) -> str:
    """(Re-)register ``<dataset_name>__face_boxes`` and write its COCO json; returns the name."""
    view = f"{dataset_name}__face_boxes"
    json_file = os.path.join(output_dir, f"{dataset_name}_face_boxes_coco.json")

    def load():
        dicts = (dict(d, image_id=i) for i, d in enumerate(DatasetCatalog.get(dataset_name)))
        return [{k: v for k, v in d.items() if k != "sem_seg_file_name"} for d in dicts]

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


def count_missed_faces(gt_boxes: np.ndarray, pred_boxes: np.ndarray, iou: float = 0.5) -> int:
    """Ground-truth faces (G x 4 XYXY_ABS) that no output face (P x 4) overlaps with IoU >= ``iou``."""
    if len(gt_boxes) == 0:
        return 0
    if len(pred_boxes) == 0:
        return len(gt_boxes)
    ious = pairwise_iou(Boxes(torch.as_tensor(gt_boxes, dtype=torch.float32)),
                        Boxes(torch.as_tensor(pred_boxes, dtype=torch.float32)))
    return int((ious.max(dim=1).values < iou).sum())


class FaceDetectionEvaluator(COCOEvaluator):
    """Box AP (percent, under ``"bbox"``) of ``outputs[i]["instances"]`` against the dataset's face
    boxes, plus ``num_gt_faces`` and ``missed_faces`` (:func:`count_missed_faces` at IoU 0.5)."""

    def __init__(self, dataset_name: str, output_dir: str, *, distributed: bool = True):
        if not output_dir:
            raise ValueError("FaceDetectionEvaluator needs an output_dir for the COCO-format ground truth")
        dicts = DatasetCatalog.get(dataset_name)
        self._image_ids = {str(d["image_id"]): i for i, d in enumerate(dicts)}
        view = _register_face_box_view(dataset_name, output_dir)
        super().__init__(view, tasks=("bbox",), distributed=distributed, output_dir=output_dir,
                         use_fast_impl=compiled_extension_available())
        self._gt_boxes = {str(d["image_id"]): _xyxy_boxes(d.get("annotations", [])) for d in dicts}
        self._face_counts = [0, 0]  # ground-truth faces, missed

    def reset(self):
        super().reset()
        self._face_counts = [0, 0]

    def process(self, inputs, outputs):
        for x, out in zip(inputs, outputs):
            gt = self._gt_boxes.get(str(x["image_id"]), np.zeros((0, 4)))
            pred = out["instances"].pred_boxes.tensor.detach().cpu().numpy() if "instances" in out else np.zeros((0, 4))
            self._face_counts[0] += len(gt)
            self._face_counts[1] += count_missed_faces(gt, pred)
        inputs = [dict(x, image_id=self._image_ids[str(x["image_id"])]) for x in inputs]
        super().process(inputs, outputs)

    def evaluate(self, img_ids=None):
        gathered = gather_shards(self._face_counts, self._distributed)
        results = super().evaluate(img_ids)
        if results is None or not comm.is_main_process():
            return results
        results = copy.deepcopy(results)
        results.setdefault("bbox", {}).update(num_gt_faces=sum(c[0] for c in gathered),
                                              missed_faces=sum(c[1] for c in gathered))
        return results


def _xyxy_boxes(annotations) -> np.ndarray:
    boxes = [BoxMode.convert(list(a["bbox"]), a.get("bbox_mode", BoxMode.XYXY_ABS), BoxMode.XYXY_ABS)
             for a in annotations]
    return np.asarray(boxes, np.float64).reshape(-1, 4)
