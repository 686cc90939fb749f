"""Shims that let detectron2 v0.6's Python code run on this stack (torch 2.x, numpy 2, Pillow >= 10)
and without its C++ extension.

Everything that deviates from detectron2's behaviour lives here. ``apply()`` applies each shim
once, before the detectron2 modules that need it are imported, and only where it is needed: with
a complete upstream detectron2 every item is a no-op. Items:

  * ``detectron2._C`` placeholder, if no compiled extension exists: calling an op raises.
  * ``PIL.Image.LINEAR``: removed in Pillow 10, a default argument in detectron2.
  * FCOS head GroupNorm probe: v0.6's RetinaNetHead builds ``get_norm(norm, 1)``.
  * FCOS on an image without faces: v0.6's anchor matching fails on zero boxes.
  * :func:`to_weights_only_safe`: checkpoints that ``torch.load(weights_only=True)`` can read.
  * ``torch.jit.script`` deprecation warning of the modules that script at import.
  * torch's CUDA_HOME notice ("No CUDA runtime is found", about building extensions, which this
    project never does).
  * ``torch.meshgrid`` indexing: v0.6's anchor grid omits ``indexing`` (a warning every step).
"""
from __future__ import annotations

import importlib.util
import inspect
import logging
import sys
import types

logger = logging.getLogger(__name__)

_APPLIED = False
# Names of the items that were actually needed (and patched) in this process.
APPLIED_ITEMS: list = []

_PLACEHOLDER_ANSWERS = {
    "get_compiler_version": lambda: "not built (Python-only detectron2)",
    "get_cuda_version": lambda: "not built (Python-only detectron2)",
    "has_cuda": lambda: False,
}


class _MissingExtension(types.ModuleType):
    """Stands in for ``detectron2._C``: import succeeds, using an op fails clearly."""

    __qanet_placeholder__ = True

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        if name in _PLACEHOLDER_ANSWERS:
            return _PLACEHOLDER_ANSWERS[name]

        def _unavailable(*args, **kwargs):
            raise NotImplementedError(
                f"detectron2._C.{name} is a C++/CUDA op, and this detectron2 was installed without "
                "its compiled extension. Use a model/option that does not need it (qanet_d2's own "
                "models do not), or install a detectron2 built from source."
            )

        _unavailable.__name__ = name
        return _unavailable


def compiled_extension_available() -> bool:
    """Whether detectron2's compiled extension exists (not the placeholder)."""
    if "detectron2._C" in sys.modules:
        return not getattr(sys.modules["detectron2._C"], "__qanet_placeholder__", False)
    try:
        return importlib.util.find_spec("detectron2._C") is not None
    except ModuleNotFoundError:  # no detectron2 at all
        return False


def _install_c_placeholder() -> bool:
    if compiled_extension_available():
        return False
    import detectron2

    module = _MissingExtension("detectron2._C")
    module.__file__ = "<detectron2._C placeholder registered by qanet_d2.compat>"
    sys.modules["detectron2._C"] = module
    detectron2._C = module
    return True


def _restore_pil_linear() -> bool:
    import PIL.Image

    if hasattr(PIL.Image, "LINEAR"):
        return False
    PIL.Image.LINEAR = PIL.Image.BILINEAR
    return True


def _fix_fcos_head_norm_probe() -> bool:
    from detectron2.modeling.meta_arch import retinanet

    source = inspect.getsource(retinanet.RetinaNetHead.__init__)
    if "get_norm(norm, 1)" not in source:
        return False
    original_get_norm = retinanet.get_norm
    if getattr(original_get_norm, "__qanet_shim__", False):
        return False

    def get_norm(norm, out_channels):
        # v0.6 probes the norm type with one channel; GroupNorm(32, 1) cannot be built.
        if norm == "GN" and out_channels == 1:
            import torch.nn as nn

            return nn.GroupNorm(1, 1)
        return original_get_norm(norm, out_channels)

    get_norm.__qanet_shim__ = True
    retinanet.get_norm = get_norm
    return True


def _fcos_handles_empty_images() -> bool:
    """Run v0.6's FCOS anchor matching on one image with zero boxes; True if it copes."""
    import torch
    from detectron2.modeling.meta_arch.fcos import FCOS
    from detectron2.structures import Boxes, Instances

    probe = FCOS.__new__(FCOS)
    probe.center_sampling_radius = 1.5
    probe.num_classes = 1
    anchors = [Boxes(torch.tensor([[0.0, 0.0, 8.0, 8.0]])), Boxes(torch.tensor([[0.0, 0.0, 16.0, 16.0]]))]
    empty = Instances((32, 32), gt_boxes=Boxes(torch.zeros(0, 4)), gt_classes=torch.zeros(0, dtype=torch.long))
    try:
        FCOS.label_anchors(probe, anchors, [empty])
    except (IndexError, RuntimeError):
        return False
    return True


def build_fcos_class():
    """detectron2's FCOS, or FCOSWithEmptyImages where that fails on images without faces."""
    from detectron2.modeling.meta_arch.fcos import FCOS

    return FCOSWithEmptyImages or FCOS


def _define_fcos_with_empty_images():
    import torch
    from detectron2.modeling.meta_arch.fcos import FCOS
    from detectron2.structures import Boxes

    class FCOSWithEmptyImages(FCOS):
        """FCOS whose anchor labelling gives an image without boxes background anchors and zero
        regression targets (as detectron2 after its later fix)."""

        @torch.no_grad()
        def label_anchors(self, anchors, gt_instances):
            num_anchors = sum(len(a) for a in anchors)
            nonempty = [i for i, g in enumerate(gt_instances) if len(g) > 0]
            labels, boxes = [None] * len(gt_instances), [None] * len(gt_instances)
            if nonempty:
                sub_labels, sub_boxes = super().label_anchors(anchors, [gt_instances[i] for i in nonempty])
                for i, lab, box in zip(nonempty, sub_labels, sub_boxes):
                    labels[i], boxes[i] = lab, box
            device = anchors[0].tensor.device
            for i, g in enumerate(gt_instances):
                if labels[i] is None:
                    labels[i] = torch.full((num_anchors,), self.num_classes, dtype=torch.long, device=device)
                    boxes[i] = Boxes(torch.zeros(num_anchors, 4, device=device))
            return labels, boxes

    return FCOSWithEmptyImages


_SCRIPTED_AT_IMPORT = ("fvcore.nn.focal_loss", "detectron2.modeling.box_regression")
_JIT_SCRIPT_DEPRECATION = r"`torch\.jit\.script` is deprecated"


def _import_scripted_modules_quietly() -> bool:
    """Import the modules that script at import time without that FutureWarning; True if any was."""
    import importlib
    import warnings

    pending = [m for m in _SCRIPTED_AT_IMPORT if m not in sys.modules]
    if not pending:
        return False
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_JIT_SCRIPT_DEPRECATION, category=FutureWarning)
        for name in pending:
            importlib.import_module(name)
    return True


def _not_cuda_home_notice(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("No CUDA runtime is found")


def _quiet_cuda_home_notice() -> bool:
    """Drop torch's CUDA_HOME notice from its logger; True if the filter was added here."""
    log = logging.getLogger("torch.utils.cpp_extension")
    if _not_cuda_home_notice in log.filters:
        return False
    log.addFilter(_not_cuda_home_notice)
    return True


def _fix_anchor_grid_meshgrid() -> bool:
    from detectron2.modeling import anchor_generator

    original = anchor_generator._create_grid_offsets
    if getattr(original, "__qanet_shim__", False):
        return False
    source = inspect.getsource(original)
    if "torch.meshgrid(shifts_y, shifts_x)" not in source:
        return False  # fixed upstream
    import torch

    def _create_grid_offsets(size, stride, offset, device):
        if isinstance(device, torch.Tensor):  # later versions pass a tensor on the target device
            device = device.device
        grid_height, grid_width = size
        shifts_x = torch.arange(offset * stride, grid_width * stride, step=stride, dtype=torch.float32, device=device)
        shifts_y = torch.arange(offset * stride, grid_height * stride, step=stride, dtype=torch.float32, device=device)
        shift_y, shift_x = torch.meshgrid(shifts_y, shifts_x, indexing="ij")
        return shift_x.reshape(-1), shift_y.reshape(-1)

    _create_grid_offsets.__qanet_shim__ = True
    anchor_generator._create_grid_offsets = _create_grid_offsets
    return True


def to_weights_only_safe(obj):
    """Recursively turn numpy scalars/arrays and other simple values into types that
    ``torch.load(weights_only=True)`` accepts; anything else raises TypeError naming its path."""
    import collections
    import numbers

    import numpy as np
    import torch

    def convert(value, path):
        if value is None or isinstance(value, (bool, int, float, str, bytes, torch.Tensor, torch.dtype, torch.device)):
            return value
        if isinstance(value, np.ndarray):
            return torch.from_numpy(np.ascontiguousarray(value))
        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, numbers.Number):
            return float(value) if not isinstance(value, numbers.Integral) else int(value)
        if isinstance(value, dict):  # an OrderedDict stays one
            items = ((k, convert(v, f"{path}.{k}")) for k, v in value.items())
            return collections.OrderedDict(items) if isinstance(value, collections.OrderedDict) else dict(items)
        if isinstance(value, (list, tuple)):
            converted = [convert(v, f"{path}[{i}]") for i, v in enumerate(value)]
            return converted if isinstance(value, list) else tuple(converted)
        raise TypeError(f"checkpoint entry {path} has type {type(value).__name__}, which torch.load(weights_only=True) cannot read")

    return convert(obj, "checkpoint")


FCOSWithEmptyImages = None  # defined by apply() where needed


def apply() -> None:
    """Apply every needed shim once. Called by ``import qanet_d2``."""
    global _APPLIED, FCOSWithEmptyImages
    if _APPLIED:
        return
    _APPLIED = True
    shims = [
        ("PIL.Image.LINEAR", _restore_pil_linear),
        ("detectron2._C placeholder", _install_c_placeholder),
        ("torch.jit.script deprecation at import", _import_scripted_modules_quietly),
        ("torch CUDA_HOME notice", _quiet_cuda_home_notice),
        ("anchor grid meshgrid indexing", _fix_anchor_grid_meshgrid),
        ("FCOS head GroupNorm probe", _fix_fcos_head_norm_probe),
    ]
    APPLIED_ITEMS.extend(name for name, shim in shims if shim())
    if not _fcos_handles_empty_images():
        FCOSWithEmptyImages = _define_fcos_with_empty_images()
        APPLIED_ITEMS.append("FCOS on images without faces")
    if APPLIED_ITEMS:
        logger.debug("qanet_d2.compat applied: %s", ", ".join(APPLIED_ITEMS))
