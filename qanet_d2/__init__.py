"""qanet_d2: Quality-Aware Network face parsing (FCOS face detector + QANet parser) on detectron2."""
from . import compat

compat.apply()  # before any detectron2 module that needs a shim is imported

from .config import add_qanet_config, get_qanet_cfg  # noqa: E402
from .data.datasets import builtin as _  # noqa: E402,F401  (registers the datasets)
from .modeling import meta_arch as _  # noqa: E402,F401  (registers the model and backbones)
from .predictor import FaceParsingPredictor  # noqa: E402,F401

__version__ = "0.1.0"
