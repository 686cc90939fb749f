"""Dataset registration (``builtin``) and converters from the original releases."""
from .face_video import (  # noqa: F401
    DatasetNotFoundError,
    dataset_label_set,
    datasets_root,
    get_dataset_label_set,
    register_face_video_dataset,
    set_synthetic_auto_generate,
)
from .celebamask_hq import convert_celebamask_hq  # noqa: F401
from .fasseg import convert_fasseg  # noqa: F401
from .helen import convert_helen  # noqa: F401
from .lapa import convert_lapa  # noqa: F401
from .sfp import convert_sfp  # noqa: F401
