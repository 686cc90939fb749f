#!/usr/bin/env python
"""Add a constant to the parsing classifier's bias of some classes of a checkpoint (a calibration
of how often a class wins the argmax; the pixels where it wins stay decided by the learned
weights). Used for the fine real-face model, whose brows start as copies of hair and after a
short fine-tuning lose every argmax to hair by a near-constant margin:

    python tools/shift_class_bias.py output/real_faces/qanet_yunet_fine/model_final.pth \\
        output/real_faces/qanet_yunet_fine/model_calibrated.pth --label-set fasseg_fine \\
        --shift l_brow=1.5 r_brow=1.5

The shift was chosen on training photos (fasseg_fine_frontal_train: mean brow F1 76.8 at 1.5,
75.8 at 2.0, 0 without), never on test sets.
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from qanet_d2.engine.checkpoint import load_checkpoint_file  # noqa: E402
from qanet_d2.structures.label_sets import get_label_set  # noqa: E402

BIAS = "parser.parsing_branch.predictor.bias"


def shift_bias(checkpoint: dict, label_set: str, shifts: dict) -> dict:
    """The checkpoint with ``shifts`` ({class name: delta}) added to the classifier's bias."""
    state = dict(checkpoint["model"])
    ls = get_label_set(label_set)
    bias = state[BIAS].clone()
    if bias.shape[0] != ls.num_classes:
        raise ValueError(f"the classifier has {bias.shape[0]} classes, label set '{label_set}' {ls.num_classes}")
    for name, delta in shifts.items():
        bias[ls.class_id(name)] += delta
    state[BIAS] = bias
    out = {"model": state}
    for key in ("trained_parts", "label_set"):  # the same parts and classes
        if key in checkpoint:
            out[key] = checkpoint[key]
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input")
    p.add_argument("output")
    p.add_argument("--label-set", required=True, help="the label set the checkpoint's classifier predicts")
    p.add_argument("--shift", nargs="+", required=True, metavar="CLASS=DELTA")
    args = p.parse_args(argv)
    try:
        shifts = {k: float(v) for k, v in (s.split("=", 1) for s in args.shift)}
        out = shift_bias(load_checkpoint_file(args.input), args.label_set, shifts)
    except (ValueError, KeyError) as e:
        p.error(f"{args.input}: {e}")
    torch.save(out, args.output)
    print(f"{args.output}: bias shifted {shifts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
