"""Registers the project's datasets on ``import qanet_d2`` (as detectron2's builtin datasets).

All live under ``$DETECTRON2_DATASETS`` (default ``./datasets``), read when a dataset is loaded
or its path metadata is accessed; datasets/README.md lists them and how to prepare each one.
"""
from __future__ import annotations

import os
from functools import partial

from .face_video import datasets_root, register_face_video_dataset

__all__ = ["register_all_face_datasets", "BUILTIN_DATASETS"]

# name prefix -> (directory under DETECTRON2_DATASETS, splits, label set, how to prepare)
BUILTIN_DATASETS = {
    "face_synth": ("face_synth", ("train", "val"), "synthetic",
                   "Generate it with: python datasets/prepare_synthetic.py --preset quickstart"),
    "face_synth_tiny": ("face_synth_tiny", ("train", "val"), "synthetic",
                        "Generate it with: python datasets/prepare_synthetic.py --preset tiny"),
    "face_composite_fasseg": (
        "face_composite_fasseg", ("train", "test"), "fasseg",
        "Generate it with: python datasets/prepare_synthetic.py --preset composite_fasseg (it "
        "needs the fasseg datasets: python datasets/prepare_fasseg.py --src <dir with V2/ and "
        "V3/>)"),
    "face_composite_fasseg_photos": (
        "face_composite_fasseg_photos", ("train",), "fasseg",
        "Generate it with: python datasets/prepare_synthetic.py --preset "
        "composite_fasseg_photos (it needs the fasseg datasets: python "
        "datasets/prepare_fasseg.py --src <dir with V2/ and V3/>, and scikit-image's and "
        "matplotlib's sample photos)"),
    "sfp": ("sfp", ("train", "val", "test"), "sfp",
            "Convert the challenge data with: python datasets/prepare_sfp.py --src <SFP dir>"),
    "lapa": ("lapa", ("train", "val", "test"), "lapa",
             "Convert the release with: python datasets/prepare_lapa.py --src <dir with LaPa/>"),
    "celebamask_hq": ("celebamask_hq", ("train", "val", "test"), "celebamask_hq",
                      "Convert the release with: python datasets/prepare_celebamask_hq.py "
                      "--src <dir with CelebAMask-HQ/>"),
    "helen": ("helen", ("train", "val", "test"), "helen",
              "Convert the release with: python datasets/prepare_helen.py "
              "--src <dir with helenstar_release/>"),
    # one directory, four split JSONs: fasseg_<split> reads fasseg/<split>.json
    "fasseg": ("fasseg", ("frontal_train", "frontal_test", "multipose_train", "multipose_test",
                          "multipose_dev_train", "multipose_dev_val"),
               "fasseg", "Convert the release with: python datasets/prepare_fasseg.py "
               "--src <dir with V2/ and V3/> (the FASSEG copy without V3/Test_* has no "
               "fasseg_multipose_test)"),
    "fasseg_fine": ("fasseg_fine", ("frontal_train", "frontal_test", "multipose_train",
                                    "multipose_test", "multipose_dev_train", "multipose_dev_val"),
                    "fasseg_fine", "Derive it from the fasseg datasets with: python "
                    "datasets/derive_fasseg_fine.py"),
}

_GENERATED_PRESETS = {"face_synth": "default", "face_synth_tiny": "tiny",
                      "face_composite_fasseg": "composite_fasseg",
                      "face_composite_fasseg_photos": "composite_fasseg_photos"}
# One face per image: every foreground pixel belongs to it (per-face ground truth of the
# instance-level metrics).
_SINGLE_FACE = frozenset({"lapa", "celebamask_hq", "helen", "fasseg", "fasseg_fine"})


def _path_fn(*parts):
    return lambda: os.path.join(datasets_root(), *parts)


def _generate(preset, root):
    from ..synthetic import generate_preset

    return generate_preset(preset, root=root)


def register_all_face_datasets() -> None:
    for prefix, (subdir, splits, label_set, hint) in BUILTIN_DATASETS.items():
        preset = _GENERATED_PRESETS.get(prefix)
        for split in splits:
            register_face_video_dataset(
                f"{prefix}_{split}", _path_fn(subdir, f"{split}.json"), _path_fn(subdir), label_set,
                generate=partial(_generate, preset) if preset else None, prepare_hint=hint,
                single_face=prefix in _SINGLE_FACE)


if __name__.endswith(".builtin"):
    register_all_face_datasets()
