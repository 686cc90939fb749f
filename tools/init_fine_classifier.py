#!/usr/bin/env python
"""Start a finer model from a trained coarser one: copy a checkpoint and give each fine class the
classifier row of its coarse parent (the class it converts into), its bias lowered by log(number
of siblings), so the fine model's probabilities merged into the coarse classes are the coarse
model's (qanet_d2.modeling.qanet.parsing_branch.classifier_from_coarser).

    python tools/init_fine_classifier.py models/qanet_yunet_real_faces_fasseg.pth \\
        output/real_faces/qanet_yunet_fine_init.pth --coarse fasseg --fine fasseg_fine

The output is a checkpoint for MODEL.WEIGHTS (configs/real_faces/qanet_yunet_fasseg_fine.yaml).
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from qanet_d2.structures.label_sets import conversion_ids, get_label_set  # noqa: E402
from qanet_d2.engine.checkpoint import load_checkpoint_file  # noqa: E402
from qanet_d2.modeling.qanet.parsing_branch import classifier_from_coarser  # noqa: E402

PREDICTOR = "parser.parsing_branch.predictor."
FLIP = "parser.flip_permutation"


def split_checkpoint(checkpoint: dict, coarse: str, fine: str) -> dict:
    """The checkpoint dict with its parsing classifier turned from ``coarse`` to ``fine`` classes."""
    if not isinstance(checkpoint, dict) or "model" not in checkpoint:
        raise ValueError("not a checkpoint: no 'model' entry")
    state = dict(checkpoint["model"])
    w, b = state.get(PREDICTOR + "weight"), state.get(PREDICTOR + "bias")
    if w is None or b is None:
        raise ValueError(f"the checkpoint has no parsing classifier ({PREDICTOR}weight/bias)")
    cs, fs = get_label_set(coarse), get_label_set(fine)
    if w.shape[0] != cs.num_classes:
        raise ValueError(f"the checkpoint's classifier has {w.shape[0]} classes, label set '{coarse}' has {cs.num_classes}")
    state[PREDICTOR + "weight"], state[PREDICTOR + "bias"] = classifier_from_coarser(
        w, b, conversion_ids(fs, cs).tolist())
    if FLIP in state:  # a training checkpoint's flip permutation: the fine set's pairs
        state[FLIP] = torch.as_tensor(fs.flip_permutation(), dtype=state[FLIP].dtype)
    out = {"model": state, "label_set": fs.to_json()}  # the classes it now predicts
    if "trained_parts" in checkpoint:
        out["trained_parts"] = list(checkpoint["trained_parts"])
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", help="checkpoint of the coarse model")
    p.add_argument("output", help="checkpoint to write")
    p.add_argument("--coarse", default="fasseg", help="label set of the input's classifier")
    p.add_argument("--fine", default="fasseg_fine", help="label set to give the output's classifier")
    args = p.parse_args(argv)
    try:
        out = split_checkpoint(load_checkpoint_file(args.input), args.coarse, args.fine)
    except (ValueError, KeyError) as e:
        p.error(f"{args.input}: {e}")
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    torch.save(out, args.output)
    print(f"{args.output}: classifier {args.coarse} -> {args.fine}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
