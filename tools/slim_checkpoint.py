#!/usr/bin/env python
"""Turn a training checkpoint into a model file to share: the model's weights only (no optimizer,
scheduler or iteration), optionally in half precision.

    python tools/slim_checkpoint.py output/real_faces/model_final.pth models/real_faces.pth --half

The output loads like any checkpoint (detectron2's checkpointer copies half-precision tensors
into the float32 model) and keeps the ``"trained_parts"`` and ``"label_set"`` records. ``--half``
keeps BatchNorm running statistics in float32 (their variances can fall below half precision's
smallest normal number).
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from qanet_d2.weights_io import load_checkpoint_file  # noqa: E402

_KEEP_FLOAT32 = ("running_mean", "running_var")


def slim_state(checkpoint: dict, half: bool, parts=None) -> dict:
    """The checkpoint's weights (and records); with ``parts``, only those parts'."""
    if not isinstance(checkpoint, dict) or "model" not in checkpoint:
        raise ValueError("not a training checkpoint: no 'model' entry")
    if parts:
        present = {k.split(".", 1)[0] for k in checkpoint["model"]}
        missing = sorted(set(parts) - present)
        if missing:
            raise ValueError(f"the checkpoint has no weights of the parts {missing} (it has {sorted(present)})")
    state = {}
    for key, value in checkpoint["model"].items():
        if parts and key.split(".", 1)[0] not in parts:
            continue
        if half and torch.is_tensor(value) and value.is_floating_point() and not key.endswith(_KEEP_FLOAT32):
            value = value.half()
        state[key] = value
    out = {"model": state}
    if "trained_parts" in checkpoint:
        out["trained_parts"] = [p for p in checkpoint["trained_parts"] if not parts or p in parts]
    if "label_set" in checkpoint:
        out["label_set"] = checkpoint["label_set"]
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", help="a training checkpoint (.pth)")
    p.add_argument("output", help="the model file to write (.pth)")
    p.add_argument("--half", action="store_true", help="store floating-point weights in float16")
    p.add_argument("--parts", nargs="+", choices=("detector", "parser"), help="keep only these parts (e.g. the parser "
                   "of a model whose detector loads its own pretrained weights)")
    args = p.parse_args(argv)
    try:
        checkpoint = load_checkpoint_file(args.input)
        slim = slim_state(checkpoint, args.half, args.parts)
    except (OSError, ValueError, RuntimeError) as e:
        print(f"slim_checkpoint.py: error: {args.input}: {e}", file=sys.stderr)
        return 1
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    torch.save(slim, args.output)
    change = max(
        ((v.float() - checkpoint["model"][k].float()).abs().max().item() for k, v in slim["model"].items()
         if torch.is_tensor(v) and v.is_floating_point() and v.numel()),
        default=0.0,
    )
    mb = 1024 * 1024
    print(f"{args.output}: {os.path.getsize(args.output) / mb:.1f} MB (from {os.path.getsize(args.input) / mb:.1f} MB), "
          f"{len(slim['model'])} tensors, largest weight change {change:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
