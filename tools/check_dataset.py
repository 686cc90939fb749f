#!/usr/bin/env python
"""Validate face-parsing datasets in one pass and list every problem with its file.

    python tools/check_dataset.py face_synth_train face_synth_val
    python tools/check_dataset.py lapa_test --workers 4
    python tools/check_dataset.py path/to/split.json          # an unregistered split JSON

Checks: files present and decodable, image and label sizes equal to the JSON and to each
other, label values legal for the label set (ids or 255), face boxes finite, non-empty and
inside the image, flip pairs consistent with the label set. Exit status 1 if any problem.
"""
import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("names", nargs="+", metavar="NAME", help="registered dataset names or split JSON files")
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), help="threads decoding files")
    args = p.parse_args(argv)

    import qanet_d2  # noqa: F401  (registers the datasets)
    from qanet_d2.data.checks import check_dataset, check_json

    total_frames = total_problems = 0
    for name in args.names:
        if name.endswith(".json") and os.path.isfile(name):
            report = check_json(name, workers=args.workers)
        else:
            report = check_dataset(name, workers=args.workers)
        for prob in report.problems:
            print(prob, flush=True)
        status = "OK" if report.ok else f"{len(report.problems)} problem(s)"
        print(f"{name}: {report.num_frames} frames checked, {status}", flush=True)
        total_frames += report.num_frames
        total_problems += len(report.problems)
    print(f"check_dataset: {len(args.names)} dataset(s), {total_frames} frames, {total_problems} problem(s)")
    return 1 if total_problems else 0


if __name__ == "__main__":
    sys.exit(main())
