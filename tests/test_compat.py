"""Each compat shim: the failure it prevents happens without it, and is gone with it."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import qanet_d2  # noqa: F401
from qanet_d2 import compat


# Loads qanet_d2/compat.py on its own, without `import qanet_d2` (which applies every shim).
LOAD_COMPAT_ALONE = f"""
import importlib.util
_spec = importlib.util.spec_from_file_location("compat_alone", {compat.__file__!r})
compat = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(compat)
"""


def run_python(code: str) -> subprocess.CompletedProcess:
    code = LOAD_COMPAT_ALONE + textwrap.dedent(code)
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONWARNINGS": "ignore"}
    )


NEEDS_PLACEHOLDER = "detectron2._C placeholder" in compat.APPLIED_ITEMS
NEEDS_PIL = "PIL.Image.LINEAR" in compat.APPLIED_ITEMS


def test_import_is_idempotent():
    before = list(compat.APPLIED_ITEMS)
    compat.apply()
    compat.apply()
    assert compat.APPLIED_ITEMS == before


@pytest.mark.skipif(not NEEDS_PLACEHOLDER, reason="a compiled detectron2._C is installed: the shim is a no-op")
def test_c_extension_placeholder():
    without = run_python("import PIL.Image; PIL.Image.LINEAR = PIL.Image.BILINEAR\nimport detectron2.layers")
    assert without.returncode != 0 and "_C" in without.stderr

    with_shim = run_python(
        """
        import qanet_d2, detectron2.layers, detectron2.evaluation.fast_eval_api
        from detectron2 import _C
        from detectron2.utils.collect_env import collect_env_info
        assert "not built" in collect_env_info()
        assert _C.has_cuda() is False
        try:
            _C.deform_conv_forward(1, 2)
        except NotImplementedError as e:
            print(e)
        """
    )
    assert with_shim.returncode == 0, with_shim.stderr
    assert "detectron2._C.deform_conv_forward is a C++/CUDA op" in with_shim.stdout


@pytest.mark.skipif(not NEEDS_PIL, reason="this Pillow still has Image.LINEAR")
def test_pil_linear_restored():
    without = run_python(
        """
        compat._install_c_placeholder()
        import detectron2.data
        """
    )
    assert without.returncode != 0 and "LINEAR" in without.stderr
    with_shim = run_python("import qanet_d2, detectron2.data, PIL.Image; assert PIL.Image.LINEAR == PIL.Image.BILINEAR")
    assert with_shim.returncode == 0, with_shim.stderr


def test_fcos_head_group_norm():
    code = """
        compat._restore_pil_linear(); compat._install_c_placeholder()
        {fix}
        from detectron2.layers import ShapeSpec
        from detectron2.modeling.meta_arch.fcos import FCOSHead
        head = FCOSHead(input_shape=[ShapeSpec(channels=64)] * 2, conv_dims=[64, 64], num_classes=1, norm="GN")
        print(type(head.cls_subnet[1]).__name__)
    """
    needed = "FCOS head GroupNorm probe" in compat.APPLIED_ITEMS
    without = run_python(code.format(fix=""))
    if needed:
        assert without.returncode != 0 and "divisible by num_groups" in without.stderr
    with_shim = run_python(code.format(fix="compat._fix_fcos_head_norm_probe()"))
    assert with_shim.returncode == 0, with_shim.stderr
    assert with_shim.stdout.strip() == "GroupNorm"


def _anchors_and_targets():
    from detectron2.structures import Boxes, Instances

    anchors = [Boxes(torch.tensor([[0.0, 0.0, 8.0, 8.0], [8.0, 0.0, 16.0, 8.0]])), Boxes(torch.tensor([[0.0, 0.0, 16.0, 16.0]]))]
    empty = Instances((32, 32), gt_boxes=Boxes(torch.zeros(0, 4)), gt_classes=torch.zeros(0, dtype=torch.long))
    face = Instances((32, 32), gt_boxes=Boxes(torch.tensor([[0.0, 0.0, 16.0, 16.0]])), gt_classes=torch.zeros(1, dtype=torch.long))
    return anchors, empty, face


def test_fcos_images_without_faces():
    from detectron2.modeling.meta_arch.fcos import FCOS

    anchors, empty, face = _anchors_and_targets()
    fcos_cls = compat.build_fcos_class()
    if "FCOS on images without faces" in compat.APPLIED_ITEMS:
        probe = FCOS.__new__(FCOS)
        probe.center_sampling_radius, probe.num_classes = 1.5, 1
        with pytest.raises((IndexError, RuntimeError)):
            FCOS.label_anchors(probe, anchors, [empty])
        assert fcos_cls is compat.FCOSWithEmptyImages
    model = fcos_cls.__new__(fcos_cls)
    model.center_sampling_radius, model.num_classes = 1.5, 1
    labels, boxes = model.label_anchors(anchors, [empty, face])
    assert labels[0].tolist() == [1, 1, 1]  # all background
    assert boxes[0].tensor.shape == (3, 4)
    # The image with a face is labelled as plain FCOS labels it.
    ref_labels, _ = FCOS.label_anchors(model, anchors, [face])
    assert labels[1].tolist() == ref_labels[0].tolist()


def test_checkpoint_values_are_weights_only_safe(tmp_path):
    state = {"model": {"w": torch.ones(2)}, "iteration": np.int64(7), "lr": np.float32(0.5), "arr": np.arange(3), "t": (1, 2)}
    unsafe = tmp_path / "unsafe.pth"
    torch.save(state, unsafe)
    with pytest.raises(Exception):
        torch.load(unsafe, weights_only=True)
    safe = tmp_path / "safe.pth"
    torch.save(compat.to_weights_only_safe(state), safe)
    loaded = torch.load(safe, weights_only=True)
    assert loaded["iteration"] == 7 and isinstance(loaded["iteration"], int)
    assert loaded["lr"] == 0.5 and loaded["arr"].tolist() == [0, 1, 2] and loaded["t"] == (1, 2)

    class Opaque:
        pass

    with pytest.raises(TypeError, match=r"checkpoint\.hooks\.x"):
        compat.to_weights_only_safe({"hooks": {"x": Opaque()}})


def run_python_with_warnings(code: str) -> subprocess.CompletedProcess:
    """Like :func:`run_python`, with every warning turned into an error."""
    code = "import warnings\nwarnings.simplefilter('error')\n" + LOAD_COMPAT_ALONE + textwrap.dedent(code)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env, cwd=os.path.dirname(os.path.dirname(__file__)))


def test_imports_are_quiet():
    """fvcore and detectron2 script functions with ``torch.jit.script`` when imported; this torch
    warns about it. Without the shim the import warns (an error here), with it it is silent."""
    without = run_python_with_warnings(
        """
        compat._restore_pil_linear(); compat._install_c_placeholder()
        import detectron2.modeling
        """
    )
    if "torch.jit.script deprecation at import" in compat.APPLIED_ITEMS:
        assert without.returncode != 0 and "torch.jit.script" in without.stderr
    with_shim = run_python_with_warnings(
        """
        import qanet_d2, qanet_d2.engine.trainer, detectron2.modeling, detectron2.evaluation
        import train_net
        warnings.warn("still an error", UserWarning)
        """
    )
    assert with_shim.returncode != 0 and with_shim.stderr.strip().splitlines()[-1] == "UserWarning: still an error"


def test_fcos_anchor_grid_is_quiet_and_unchanged():
    """v0.6's anchor generator calls ``torch.meshgrid`` without ``indexing`` on every FCOS step."""
    code = """
        import torch
        compat._restore_pil_linear(); compat._install_c_placeholder(); compat._import_scripted_modules_quietly()
        from detectron2.modeling import anchor_generator
        original = anchor_generator._create_grid_offsets
        {fix}
        x, y = anchor_generator._create_grid_offsets([3, 4], 8, 0.5, torch.device("cpu"))
        print(x.tolist(), y.tolist())
    """
    needed = "anchor grid meshgrid indexing" in compat.APPLIED_ITEMS
    without = run_python_with_warnings(code.format(fix=""))
    if needed:
        assert without.returncode != 0 and "meshgrid" in without.stderr
    with_shim = run_python_with_warnings(code.format(fix="compat._fix_anchor_grid_meshgrid()"))
    assert with_shim.returncode == 0, with_shim.stderr
    xs = [4.0, 12.0, 20.0, 28.0]
    assert with_shim.stdout.strip() == f"{xs * 3} {[4.0] * 4 + [12.0] * 4 + [20.0] * 4}"


def test_cuda_home_notice_is_dropped(tmp_path):
    """torch.utils.cpp_extension (imported by detectron2's collect_env in every train_net run)
    logs a notice when a CUDA toolkit is found but no GPU: gone with the shim, other messages of
    that logger still printed."""
    code = """
        import logging
        {fix}
        import torch, torch.utils.cpp_extension
        print("gpu" if torch.cuda.is_available() else "cpu")
        logging.getLogger("torch.utils.cpp_extension").warning("another message")
    """
    env = {**os.environ, "CUDA_HOME": str(tmp_path), "PYTHONWARNINGS": "ignore"}

    def run(fix):
        return subprocess.run([sys.executable, "-c", LOAD_COMPAT_ALONE + textwrap.dedent(code.format(fix=fix))],
                              capture_output=True, text=True, timeout=120, env=env)

    without, with_shim = run(""), run("compat._quiet_cuda_home_notice()")
    assert with_shim.returncode == 0, with_shim.stderr
    if without.stdout.strip() == "cpu":
        assert "No CUDA runtime is found" in without.stderr
    assert "No CUDA runtime" not in with_shim.stderr and "another message" in with_shim.stderr
