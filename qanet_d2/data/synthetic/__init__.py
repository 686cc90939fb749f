"""The synthetic face-parsing video datasets: cartoon people (:mod:`.generator`, label set
``"synthetic"``) and real labelled faces composited into the same scenes (:mod:`.composite`),
optionally over real photos (:mod:`.photos`), written as datasets by :mod:`.dataset`. Imported
only when used, not by ``import qanet_d2``.
"""
from .generator import (  # noqa: F401
    FACE_BOX_UNITS,
    MAX_ANGLE,
    MAX_FACES,
    MIN_FACE_HEIGHT,
    FacePose,
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
from .composite import CompositeVideo, collect_source_faces  # noqa: F401
