"""The models shipped in the repository: where their config and weights are (relative to the
repository root; :func:`shipped_model` for absolute paths). Standard library only: tools read these
paths before importing torch.
"""
from __future__ import annotations

import os
from typing import Dict, Tuple

__all__ = ["REPO_ROOT", "SHIPPED_MODELS", "DEFAULT_MODEL", "shipped_model"]

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# name -> (config file, weights file), both relative to REPO_ROOT
SHIPPED_MODELS: Dict[str, Tuple[str, str]] = {
    # YuNet (pretrained on WIDER FACE) + box adapter + the real-face parser
    "real_faces": ("configs/real_faces/qanet_yunet_fasseg.yaml", "models/qanet_yunet_real_faces_fasseg.pth"),
    # the same detector with a parser in fine classes (label set "fasseg_fine": left/right eyes and
    # brows, upper/lower lip, inner mouth)
    "real_faces_fine": ("configs/real_faces/qanet_yunet_fasseg_fine.yaml",
                        "models/qanet_yunet_real_faces_fine_fasseg.pth"),
    # real-time video: YuNet + a parser fine-tuned on 192x160 crops (>= 30 frames/s, 4 faces, 2 cores)
    "real_faces_realtime": ("configs/realtime/qanet_yunet_fasseg_realtime.yaml",
                            "models/qanet_yunet_realtime_fasseg.pth"),
    # the report's route: the FCOS detector trained here with the same parser
    "real_faces_fcos": ("configs/real_faces/qanet_fcos_fasseg_synth_composites.yaml",
                        "models/qanet_fcos_real_faces_fasseg.pth"),
}

# What the demo and the predictor use when no config is given.
DEFAULT_MODEL = "real_faces_fine"


def shipped_model(name: str = DEFAULT_MODEL) -> Tuple[str, str]:
    """``(config_file, weights_file)`` of a shipped model, as absolute paths."""
    if name not in SHIPPED_MODELS:
        raise KeyError(f"no shipped model {name!r}; shipped: {sorted(SHIPPED_MODELS)}")
    config, weights = SHIPPED_MODELS[name]
    return os.path.join(REPO_ROOT, config), os.path.join(REPO_ROOT, weights)
