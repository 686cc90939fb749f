#!/usr/bin/env python
"""Score a folder of predicted label PNGs against a registered face dataset, without a model.

    python tools/evaluate_pngs.py --gt-dataset sfp_val --pred-dir output/demo_labels
    python tools/evaluate_pngs.py --gt-dataset lapa_test --pred-dir my_method/ --absent-class one

Predictions: ``<pred-dir>/<video_id>/<frame stem>.png`` (the layout of ``demo/demo.py
--save-labels DIR`` and ``TEST.FACE_PARSING.SAVE_LABELS``), class ids of the dataset's label set
at the frames' original size, scored by :class:`qanet_d2.evaluation.FaceParsingEvaluator`; a
missing or unreadable prediction is a failed frame. Results go to
``<output-dir>/face_parsing_results.json``.
"""
import argparse
import logging
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import qanet_d2  # noqa: E402,F401  (compat shims, dataset registration)
from detectron2.data import DatasetCatalog  # noqa: E402
from detectron2.evaluation.testing import print_csv_format  # noqa: E402
from detectron2.utils.logger import setup_logger  # noqa: E402

from qanet_d2.config import get_qanet_cfg  # noqa: E402
from qanet_d2.data.io import read_label_map  # noqa: E402
from qanet_d2.evaluation import FaceParsingEvaluator, frame_key, label_png_path  # noqa: E402

logger = logging.getLogger("qanet_d2.evaluate_pngs")


def build_argument_parser() -> argparse.ArgumentParser:
    defaults = get_qanet_cfg().TEST.FACE_PARSING
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gt-dataset", required=True, help="registered dataset name, e.g. sfp_val, lapa_test, face_synth_val")
    p.add_argument("--pred-dir", required=True, help="folder with <video_id>/<frame stem>.png label maps")
    p.add_argument("--output-dir", default=None, help="where face_parsing_results.json goes (default: --pred-dir)")
    p.add_argument("--absent-class", choices=("skip", "one"), default=defaults.ABSENT_CLASS,
                   help="a class absent from prediction and ground truth of a frame: skip it, or score 1 as DAVIS does")
    p.add_argument("--bound-th", type=float, default=defaults.BOUND_TH,
                   help="contour tolerance: fraction of the image diagonal (< 1) or pixels (>= 1)")
    return p


def main(argv=None):
    args = build_argument_parser().parse_args(argv)
    setup_logger(name="qanet_d2")
    setup_logger(name="detectron2")
    output_dir = args.output_dir or args.pred_dir
    dicts = DatasetCatalog.get(args.gt_dataset)
    evaluator = FaceParsingEvaluator(
        args.gt_dataset, distributed=False, output_dir=output_dir,
        absent_class=args.absent_class, bound_th=args.bound_th,
    )
    start = time.perf_counter()
    for i, d in enumerate(dicts):
        video_id, _ = frame_key(d)
        path = label_png_path(args.pred_dir, video_id, d.get("file_name", ""))
        try:
            pred = read_label_map(path)
        except (OSError, ValueError) as e:
            evaluator.record_failure(d, f"prediction {path}: {e}")
            continue
        evaluator.process_label_map(d, pred)
        if (i + 1) % 500 == 0:
            elapsed = time.perf_counter() - start
            logger.info("%d / %d frames, %.1f frames/s", i + 1, len(dicts), (i + 1) / elapsed)
    results = evaluator.evaluate()
    logger.info("Scored %d frames in %.1f s", len(dicts), time.perf_counter() - start)
    print_csv_format(results)
    return results


if __name__ == "__main__":
    main()
