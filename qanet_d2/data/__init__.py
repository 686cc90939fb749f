"""Data layer: the on-disk face-video format, dataset registration, the
synthetic generator (imported on first use), the dataset mappers (frames, face instances)
and dataset checks."""
from .video_format import (  # noqa: F401
    DatasetFormatError,
    boxes_from_label_map,
    load_face_video_json,
    union_box_from_label_map,
    write_face_video_json,
)
from .io import DataReadError, ImageReadError, read_image, read_label_map  # noqa: F401
from .datasets.face_video import (  # noqa: F401
    DatasetNotFoundError,
    dataset_label_set,
    get_dataset_label_set,
    register_face_video_dataset,
    set_synthetic_auto_generate,
)
from .training_crops import TrainingCropper  # noqa: F401
from .mapper import FaceParsingDatasetMapper  # noqa: F401
from .instance_mapper import SAMPLE_UNITS, FaceInstanceDatasetMapper, face_instance_dicts  # noqa: F401
from .checks import check_dataset, check_json  # noqa: F401


# The synthetic generator (qanet_d2.data.synthetic) is imported on first use only.
_SYNTHETIC_NAMES = ("generate_preset", "generate_synthetic_dataset")


def __getattr__(name):
    if name in _SYNTHETIC_NAMES:
        from . import synthetic

        return getattr(synthetic, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
