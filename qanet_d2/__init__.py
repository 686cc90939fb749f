"""qanet_d2: Quality-Aware Network face parsing (FCOS face detector + QANet parser) on detectron2."""
__version__ = "0.1.0"

try:
    import torch  # noqa: F401
except ImportError:
    # Without torch only the exported-model runtime (qanet_d2.runtime: NumPy, OpenCV, ONNX
    # Runtime) and qanet_d2.model_zoo are usable.
    def __getattr__(name):
        raise ImportError(f"qanet_d2.{name} needs torch and detectron2; without them only qanet_d2.runtime works")

else:
    from . import compat

    compat.apply()  # before any detectron2 module that needs a shim is imported

    from .config import add_qanet_config, get_qanet_cfg  # noqa: F401
    from .data.datasets import builtin as _  # noqa: F401  (registers the datasets)
    from .modeling import meta_arch as _  # noqa: F401,F811  (registers the model and backbones)
    from .predictor import FaceParsingPredictor  # noqa: F401
