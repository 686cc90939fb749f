"""The synthetic face-parsing video dataset (label set ``"synthetic"``).

:mod:`.generator` draws the cartoon people, renders the videos and writes datasets in the
format of :mod:`qanet_d2.data.video_format`. This package is imported only when it is used
(dataset generation, ``datasets/prepare_synthetic.py``, the ``face_synth_*`` datasets on first
load), not by ``import qanet_d2``.
"""
from .generator import (  # noqa: F401
    FACE_BOX_UNITS,
    GENERATOR_VERSION,
    MAX_ANGLE,
    MAX_FACES,
    MIN_FACE_HEIGHT,
    MIN_VISIBLE_FRACTION,
    MIN_VISIBLE_PIXELS,
    PRESETS,
    FacePose,
    FaceStyle,
    SyntheticVideo,
    default_synthetic_root,
    draw_face,
    generate_preset,
    generate_synthetic_dataset,
    preset_params,
    sample_face_style,
    synthetic_dataset_present,
)
from .generator import __all__  # noqa: F401
