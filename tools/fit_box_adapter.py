#!/usr/bin/env python
"""Fit the box adapter (``MODEL.QANET.DETECTOR.BOX_ADAPTER``): the detector's face box and
landmarks -> the head box the parser was trained on, by least squares on faces whose head box
the datasets give; then measure it.

    python tools/fit_box_adapter.py --config-file configs/real_faces/qanet_yunet_fasseg.yaml \\
        --train fasseg_frontal_train fasseg_multipose_dev_train face_composite_fasseg_train \\
        --test fasseg_frontal_test fasseg_multipose_dev_val face_composite_fasseg_test

Each labelled face is matched to the best-scoring detection with at least ``--min-overlap`` of
its area inside the face's head box. Prints per dataset the faces found, the unmatched detections
and the mean IoU of the raw and the adapted boxes with the head boxes. ``--write-boxes DIR`` makes
DIR a datasets root (the rest of ``$DETECTRON2_DATASETS`` linked) whose ``--train`` faces carry the
detector's adapted boxes, for training a parser on them (``DETECTRON2_DATASETS=DIR``).
"""
import argparse
import json
import os
import sys
from typing import Dict, List

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import qanet_d2  # noqa: E402,F401  (compat shims, registrations)
from detectron2.data import DatasetCatalog, MetadataCatalog  # noqa: E402
from detectron2.structures import BoxMode, pairwise_ioa, pairwise_iou, Boxes  # noqa: E402
from qanet_d2 import get_qanet_cfg  # noqa: E402
from qanet_d2.data.io import read_image_bgr  # noqa: E402
from qanet_d2.modeling.detectors import HeadBoxAdapter, build_face_detector, fit_head_box_adapter  # noqa: E402
from qanet_d2.modeling.detectors.box_adapter import NUM_ADAPTER_FEATURES  # noqa: E402


def match_faces(gt: torch.Tensor, det: torch.Tensor, scores: torch.Tensor, min_overlap: float) -> List[int]:
    """For each ground-truth head box the index of its detection (-1: none): the best-scoring
    detection with at least ``min_overlap`` of its area inside the box; each detection once."""
    ioa = pairwise_ioa(Boxes(gt), Boxes(det))  # G x D: intersection over the detection's area
    order = torch.argsort(scores, descending=True).tolist()
    out = []
    for g in range(len(gt)):
        out.append(next((d for d in order if ioa[g, d] >= min_overlap and d not in out), -1))
    return out


def detect(detector, image):
    """The detector's Instances on a BGR image."""
    chw = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
    x = {"image": chw, "height": image.shape[0], "width": image.shape[1]}
    with torch.no_grad():
        return detector([x])[0]["instances"]


def collect(detector, names: List[str], min_overlap: float) -> Dict[str, Dict]:
    """Per dataset: matched (face box, landmarks, head box) triples and counts."""
    per = {}
    for name in names:
        faces, lms, heads, widths, hits = [], [], [], [], []
        dicts, n_false = DatasetCatalog.get(name), 0
        for d in dicts:
            gt = [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in d.get("annotations", [])]
            inst = detect(detector, read_image_bgr(d["file_name"]))
            gt_t = torch.tensor(gt, dtype=torch.float32).view(-1, 4)
            match = match_faces(gt_t, inst.pred_boxes.tensor, inst.scores, min_overlap)
            found = [(g, m) for g, m in enumerate(match) if m >= 0]
            n_false += len(inst) - len(found)
            widths += (gt_t[:, 2] - gt_t[:, 0]).tolist()
            hits += [m >= 0 for m in match]
            faces += [inst.pred_boxes.tensor[m] for _, m in found]
            lms += [inst.pred_keypoints[m, :, :2] for _, m in found]
            heads += [gt_t[g] for g, _ in found]
        hits = np.array(hits, dtype=bool)
        per[name] = {
            "faces": torch.stack(faces) if faces else torch.zeros(0, 4),
            "landmarks": torch.stack(lms) if lms else torch.zeros(0, 5, 2),
            "heads": torch.stack(heads) if heads else torch.zeros(0, 4),
            "images": len(dicts), "gt": len(hits), "found": int(hits.sum()), "false": n_false,
            "widths": np.array(widths), "hits": hits,
        }
    return per


def write_detector_boxes(detector, adapter, names: List[str], out_dir: str, min_overlap: float) -> None:
    """Copies of the datasets' JSON under ``out_dir`` (same layout below the datasets root, other
    files linked) whose matched faces carry the detector's (adapted) boxes."""
    from qanet_d2.data.datasets.face_video import datasets_root

    base = os.path.abspath(datasets_root())
    for name in names:
        meta = MetadataCatalog.get(name)
        json_file, root = os.path.abspath(meta.json_file), os.path.abspath(meta.dataset_root)
        dst = os.path.join(out_dir, os.path.relpath(root, base))
        link_entries(root, dst)
        with open(json_file) as f:
            data = json.load(f)
        found = total = 0
        for frame in (fr for v in data["videos"] for fr in v["frames"]):
            if not frame.get("faces"):
                continue
            inst = detect(detector, read_image_bgr(os.path.join(root, frame["file_name"])))
            boxes = inst.pred_boxes.tensor
            if adapter is not None and len(inst):
                boxes = adapter(boxes, inst.pred_keypoints)
            gt = torch.tensor([f["bbox"] for f in frame["faces"]], dtype=torch.float32).view(-1, 4)
            for face, m in zip(frame["faces"], match_faces(gt, inst.pred_boxes.tensor, inst.scores, min_overlap)):
                total += 1
                if m >= 0:
                    found += 1
                    face["bbox"] = [round(float(v), 2) for v in boxes[m]]
        out_json = os.path.join(dst, os.path.basename(json_file))
        if os.path.islink(out_json):  # never write through a link into the original
            os.remove(out_json)
        with open(out_json, "w") as f:
            json.dump(data, f)
        print(f"{name}: {found} of {total} faces get the detector's box -> {dst}")
    link_entries(base, out_dir)  # the other datasets and splits, as they are


def link_entries(src: str, dst: str) -> None:
    """Link every entry of ``src`` that ``dst`` lacks (``dst`` is created)."""
    os.makedirs(dst, exist_ok=True)
    for entry in os.listdir(src):
        if not os.path.lexists(os.path.join(dst, entry)):
            os.symlink(os.path.join(src, entry), os.path.join(dst, entry))


def found_by_width(widths: np.ndarray, hits: np.ndarray, edges=(0, 24, 32, 48, 96)) -> str:
    """'found/total' per head-box width bin, e.g. '<24 px 13/20, 24-32 px 50/54, ..., >=96 px 29/29'."""
    bins = np.digitize(widths, edges[1:])
    names = [f"<{edges[1]} px"] + [f"{a}-{b} px" for a, b in zip(edges[1:-1], edges[2:])] + [f">={edges[-1]} px"]
    return ", ".join(f"{n} {int(hits[bins == i].sum())}/{int((bins == i).sum())}" for i, n in enumerate(names) if (bins == i).any())


def mean_iou(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(pairwise_iou(Boxes(a), Boxes(b)).diagonal().mean()) if len(a) else float("nan")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True, help="config whose detector (MODEL.QANET.DETECTOR.NAME) gives landmarks")
    p.add_argument("--train", nargs="+", required=True, help="registered datasets to fit on")
    p.add_argument("--test", nargs="*", default=[], help="registered datasets to measure on")
    p.add_argument("--min-overlap", type=float, default=0.6, help="share of a detection's area inside the head box to match it")
    p.add_argument("--ridge", type=float, default=1e-3)
    p.add_argument("--constant", action="store_true", help="fit a fixed box around the face box (median offsets, no landmarks)")
    p.add_argument("--write-boxes", default="", metavar="DIR", help="write the --train datasets with the detector's boxes, through the fitted adapter, under DIR")
    p.add_argument("--output", default="", help="write the fitted BOX_ADAPTER as a config fragment (YAML)")
    p.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="config overrides KEY VALUE ...")
    args = p.parse_args(argv)

    unknown = [n for n in list(args.train) + list(args.test) if n not in DatasetCatalog.list()]
    if unknown:
        raise SystemExit(f"not registered datasets: {unknown} (see datasets/README.md)")
    cfg = get_qanet_cfg()
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    detector = build_face_detector(cfg)
    if detector is None:
        raise SystemExit(f"{args.config_file}: MODEL.QANET.DETECTOR.NAME is empty: no detector to fit an adapter for")
    detector.eval()
    data = collect(detector, list(args.train) + list(args.test), args.min_overlap)
    train = [data[n] for n in args.train]
    faces, landmarks, heads = (torch.cat([t[k] for t in train]) for k in ("faces", "landmarks", "heads"))
    if args.constant:
        m = torch.zeros(4, NUM_ADAPTER_FEATURES, dtype=torch.float64)
        centre, size = (faces[:, :2] + faces[:, 2:]) / 2, faces[:, 2:] - faces[:, :2]
        m[:, 0] = torch.cat([(heads[:, :2] - centre) / size, (heads[:, 2:] - centre) / size], 1).median(0).values.double()
    else:
        m = fit_head_box_adapter(faces, landmarks, heads, ridge=args.ridge)
    adapter = HeadBoxAdapter(m.flatten().tolist())
    print(f"{'dataset':34s} {'images':>6s} {'faces':>6s} {'found':>6s} {'false':>6s} {'IoU raw':>8s} {'IoU adapted':>11s}")
    for name, r in data.items():
        adapted = adapter(r["faces"], r["landmarks"]) if len(r["faces"]) else r["faces"]
        tag = " (fit)" if name in args.train else ""
        print(f"{name + tag:34s} {r['images']:6d} {r['gt']:6d} {r['found']:6d} {r['false']:6d} "
              f"{mean_iou(r['faces'], r['heads']):8.3f} {mean_iou(adapted, r['heads']):11.3f}")
    for name, r in data.items():
        print(f"{name}: faces found by head-box width: {found_by_width(r['widths'], r['hits'])}")
    if args.write_boxes:
        write_detector_boxes(detector, adapter, list(args.train), args.write_boxes, args.min_overlap)
    values = [round(float(v), 4) for v in m.flatten()]
    print("MODEL.QANET.DETECTOR.BOX_ADAPTER:", json.dumps(values))
    if args.output:
        rows = ",\n".join("      " + ", ".join(f"{v:.4f}" for v in values[i * 11:(i + 1) * 11]) for i in range(4))
        with open(args.output, "w") as f:
            f.write(f"# fitted by tools/fit_box_adapter.py on {', '.join(args.train)}\nMODEL:\n  QANET:\n    DETECTOR:\n"
                    f"      BOX_ADAPTER: [\n{rows}]\n")
        print("wrote", args.output)


if __name__ == "__main__":
    main()
