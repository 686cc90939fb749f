"""Instance-level face parsing evaluation (APp, APvol, PCP; metrics in :mod:`.instance_parsing`)
as a detectron2 ``DatasetEvaluator``.

Per-face ground truth of a frame: ``instance_file_name`` (a PNG of face indices, 0 = no face,
k+1 = the frame's k-th face box), else, for a dataset with ``single_face=True`` metadata, every
foreground pixel is face 1; other frames are not evaluated here.
"""
from __future__ import annotations

import itertools
import logging
from collections import OrderedDict
from typing import List, Optional

import numpy as np

from detectron2.data import MetadataCatalog
from detectron2.evaluation import DatasetEvaluator

from ..data.io import read_instance_map, read_label_map
from .face_parsing_evaluator import convert_label_map, frame_key, gather_shards, prediction_converter, write_json
from .instance_parsing import InstanceParsingAccumulator, PredictedFace, single_face_instances

__all__ = ["InstanceParsingEvaluator", "faces_from_output", "INSTANCE_RESULTS_FILE"]

logger = logging.getLogger(__name__)

INSTANCE_RESULTS_FILE = "instance_parsing_results.json"


def faces_from_output(output: dict) -> Optional[List[PredictedFace]]:
    """The predicted faces of one model output, from ``instances.scores``, ``instances.box_scores``
    and ``face_labels`` (each face's own parsing, in ``instances``' order); None without ``instances``."""
    inst = output.get("instances")
    if inst is None:
        return None
    if len(inst) == 0:
        return []
    if len(output.get("face_labels", ())) != len(inst):
        raise KeyError(f"a model output has {len(inst)} instances but {len(output.get('face_labels', ()))} face_labels")
    scores = inst.scores.detach().float().cpu().tolist()
    box_scores = inst.box_scores.detach().float().cpu().tolist() if inst.has("box_scores") else scores
    return [
        PredictedFace(s, b, tuple(int(v) for v in face["window"]), np.asarray(face["labels"].cpu()))
        for s, b, face in zip(scores, box_scores, output["face_labels"])
    ]


class InstanceParsingEvaluator(DatasetEvaluator):
    """APp at part-IoU thresholds 0.1 ... 0.9, APvol and PCP (percentages, task key
    ``instance_parsing``), faces ranked by the quality score (``APp50``, ...) and by the
    detector's box score alone (``APp50-box``, ...). Any number of processes gives the
    single-process numbers.

    ``output_dir``: where ``instance_parsing_results.json`` is written (None: nowhere);
    ``prediction_label_set`` as in :class:`~qanet_d2.evaluation.FaceParsingEvaluator`;
    ``nms_thresh``, ``score_thresh``: the parsing NMS and score filter before matching (0: off).
    """

    def __init__(
        self,
        dataset_name: str,
        *,
        distributed: bool = True,
        output_dir: Optional[str] = None,
        prediction_label_set=None,
        nms_thresh: float = 0.6,
        score_thresh: float = 0.01,
    ):
        meta = MetadataCatalog.get(dataset_name)
        self._dataset_name = dataset_name
        self._num_classes = len(meta.stuff_classes)
        self._ignore_label = meta.get("ignore_label", 255)
        self._single_face = bool(meta.get("single_face", False))
        self._distributed = distributed
        self._output_dir = output_dir
        self._faces_fn = faces_from_output
        self._conversion = prediction_converter(dataset_name, prediction_label_set)[0]
        self._acc = InstanceParsingAccumulator(self._num_classes, self._ignore_label,
                                               nms_thresh=nms_thresh, score_thresh=score_thresh)
        self.reset()

    def reset(self):
        self._acc.reset()
        self._without_gt = 0
        self._failed: List[dict] = []
        self._warned_no_instances = False

    def ground_truth(self, input_dict: dict):
        """``(labels, face ids)`` (H, W) maps of a frame. Raises OSError / ValueError naming the
        file that cannot be used."""
        label_file = input_dict.get("sem_seg_file_name")
        if not label_file:
            raise ValueError("no ground-truth label file")
        labels = read_label_map(label_file)
        inst_file = input_dict.get("instance_file_name")
        if inst_file:
            faces = read_instance_map(inst_file)
            if faces.shape != labels.shape:
                raise ValueError(f"face-instance map {inst_file} is {faces.shape[1]}x{faces.shape[0]} (WxH) but "
                                 f"the label map {label_file} is {labels.shape[1]}x{labels.shape[0]}")
        else:
            faces = single_face_instances(labels, self._num_classes, self._ignore_label)
        return labels, faces

    def process(self, inputs, outputs):
        for inp, out in zip(inputs, outputs):
            if not (inp.get("instance_file_name") or self._single_face):
                self._without_gt += 1
                continue
            faces = self._faces_fn(out)
            if faces is None:
                if not self._warned_no_instances:
                    logger.warning("Instance parsing evaluation of %s: the model outputs have no 'instances'; "
                                   "their frames are not evaluated.", self._dataset_name)
                    self._warned_no_instances = True
                self._without_gt += 1
                continue
            if self._conversion is not None:
                faces = [f._replace(labels=convert_label_map(f.labels, self._conversion)) for f in faces]
            video_id, frame_index = frame_key(inp)
            try:
                labels, face_ids = self.ground_truth(inp)
                self._acc.add_image(f"{video_id}/{frame_index:08d}", faces, labels, face_ids)
            except (OSError, ValueError) as e:
                problem = f"{type(e).__name__}: {e}"
                logger.warning("Instance parsing evaluation: frame %s not scored: %s", inp.get("file_name", ""), problem)
                self._failed.append({"file_name": str(inp.get("file_name", "")), "problem": problem})

    def evaluate(self):
        gathered = gather_shards((self._acc, self._without_gt, self._failed), self._distributed)
        if gathered is None:
            return {}
        acc = InstanceParsingAccumulator(self._num_classes, self._ignore_label)
        for shard, _, _ in gathered:
            acc.merge(shard)
        without_gt = sum(g[1] for g in gathered)
        failed = list(itertools.chain(*[g[2] for g in gathered]))

        if acc.num_images == 0 and not failed:
            logger.info(
                "Instance parsing metrics (APp, APvol, PCP) skipped for %s: none of its %d frames has per-face "
                "ground truth (a per-frame 'instance_file' in the dataset JSON, or single_face=True in its "
                "metadata; regenerate a synthetic set made before instance files existed with "
                "datasets/prepare_synthetic.py --force).", self._dataset_name, without_gt)
            return {}
        if without_gt:
            logger.warning("Instance parsing evaluation of %s: %d frame(s) without per-face ground truth are left "
                           "out; the metrics cover the other %d.", self._dataset_name, without_gt, acc.num_images)
        results, details = acc.summarize()
        results["num_failed_frames"] = len(failed)
        logger.info("Instance-level parsing of %s:\n%s", self._dataset_name, format_instance_table(details))
        if self._output_dir:
            write_json(self._output_dir, INSTANCE_RESULTS_FILE, {
                "dataset": self._dataset_name,
                "protocol": {
                    "definition": "Parsing R-CNN eval_seg_ap / QANet ParsingEvaluator.computeAPp (see "
                                  "qanet_d2/evaluation/instance_parsing.py)",
                    "part_iou": "mean over classes present in either map, background included, one confusion "
                                "matrix over the whole image per (prediction, ground-truth face)",
                    "APvol": "mean of APp over part-IoU thresholds 0.1..0.9",
                    "rankings": {name: d["ranked_by"] for name, d in details.items()},
                    "units": "fractions (the results dict holds percentages)",
                },
                "summary": dict(results),
                "rankings": details,
                "frames_without_face_ground_truth": without_gt,
                "failed_frames": failed,
            })
        return OrderedDict(instance_parsing=results)


def format_instance_table(details: dict) -> str:
    """One row per ranking: APvol, AP at every threshold, PCP50 (percent)."""
    from tabulate import tabulate

    thresholds = list(next(iter(details.values()))["APp"])
    rows = [[d["ranked_by"], 100 * d["APvol"]] + [100 * d["APp"][t] for t in thresholds]
            + [100 * d["PCP"].get("50", float("nan"))] for d in details.values()]
    headers = ["ranked by", "APvol"] + [f"APp{t}" for t in thresholds] + ["PCP50"]
    return tabulate(rows, headers=headers, tablefmt="pipe", floatfmt=".2f", numalign="right")
