"""Dataset registration (``builtin``) and converters from the original releases."""
from .face_video import (  # noqa: F401
    DatasetNotFoundError,
    datasets_root,
    get_dataset_label_set,
    register_face_video_dataset,
    registered_face_video_datasets,
    set_synthetic_auto_generate,
)
