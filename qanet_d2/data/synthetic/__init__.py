"""The synthetic face-parsing video datasets: cartoon people (label set ``"synthetic"``) and
real labelled faces composited into the same scenes (the label set of the faces' dataset).

:mod:`.generator` draws the cartoon people and renders the videos; :mod:`.composite` cuts real
faces out of a registered dataset and places them in the generator's scenes; :mod:`.dataset`
writes both as datasets in the format of :mod:`qanet_d2.data.video_format`; :mod:`.photos` lists the real
photos without people that can replace the scenes' textured backgrounds. This package is imported only when it is used
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
    FacePose,
    FaceStyle,
    SyntheticVideo,
    draw_face,
    sample_face_style,
)
from .dataset import (  # noqa: F401
    PRESETS,
    default_synthetic_root,
    generate_preset,
    generate_synthetic_dataset,
    preset_params,
    synthetic_dataset_present,
)
from .composite import CompositeVideo, FacePlacement, SourceFace, collect_source_faces  # noqa: F401
from .dataset import __all__ as _dataset_all
from .generator import __all__ as _generator_all
from .photos import BACKGROUND_PHOTOS, PEOPLE_PHOTOS, available_background_photos  # noqa: F401

__all__ = list(_generator_all) + list(_dataset_all) + ["CompositeVideo", "FacePlacement", "SourceFace",
                                  "collect_source_faces", "BACKGROUND_PHOTOS", "PEOPLE_PHOTOS",
                                  "available_background_photos"]
