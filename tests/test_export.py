"""tools/export.py: TorchScript and ONNX parity with eager mode, running without detectron2, and
the documented NumPy/OpenCV pre/post-processing against the model's own crop and paint code."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import qanet_d2  # noqa: F401
from detectron2.structures import Instances
from qanet_d2 import get_qanet_cfg
from qanet_d2.data.synthetic import SyntheticVideo
from qanet_d2.layers.crops import boxes_to_affines, crop_images
from qanet_d2.modeling.postprocessing import FacePostProcessor, face_scores, pixel_scores

REPO = Path(__file__).resolve().parents[1]
INSTANT = REPO / "configs" / "quick_schedules" / "qanet_fcos_synth_instant_test.yaml"


@pytest.fixture(scope="module")
def export_tool():
    spec = importlib.util.spec_from_file_location("qanet_export_tool", REPO / "tools" / "export.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sharpened_weights(path):
    """A random instant-test model whose parsing logits and IoU are far from constant, so that
    parity is measured on outputs that vary (the default init makes them nearly uniform)."""
    from detectron2.modeling import build_model

    cfg = get_qanet_cfg()
    cfg.merge_from_file(str(INSTANT))
    cfg.MODEL.DEVICE = "cpu"
    torch.manual_seed(0)
    model = build_model(cfg)
    # BatchNorm statistics of random crops keep the activations in range (with the default
    # running statistics a random HRNet saturates the softmax to one class)
    parser = model.parser
    for m in parser.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = None
            m.reset_running_stats()
    parser.train()
    with torch.no_grad():
        for _ in range(3):
            parser(torch.randn(8, 3, 128, 96))
    parser.eval()
    with torch.no_grad():
        model.parser.parsing_branch.predictor.weight.normal_(0.0, 0.5)
        model.parser.iou_branch.predictor.bias.fill_(0.5)
        model.parser.iou_branch.predictor.weight.normal_(0.0, 0.05)
    torch.save({"model": model.state_dict()}, path)
    return path


@pytest.fixture(scope="module")
def exported(export_tool, tmp_path_factory):
    out = tmp_path_factory.mktemp("exported")
    weights = sharpened_weights(out / "weights.pth")
    diffs = export_tool.main(["--config-file", str(INSTANT), "--output", str(out), "--opts", "MODEL.WEIGHTS", str(weights)])
    return out, diffs


def test_files_and_parity(exported):
    out, diffs = exported
    assert (out / "parser.ts").is_file() and (out / "parser.onnx").is_file()
    assert set(diffs) == {"torchscript_probs", "torchscript_iou", "onnx_probs", "onnx_iou"}
    assert max(diffs.values()) <= 1e-4, diffs
    print("export parity (max abs diff):", diffs)
    contract = json.loads((out / "parser.json").read_text())
    assert contract["input"]["shape"] == ["N", 3, 128, 96]
    assert contract["crop"]["box_expand"] == 1.25 and contract["crop"]["aspect_ratio_w_over_h"] == 0.75
    assert len(contract["classes"]) == 17
    assert contract["flip_pairs"]  # the synthetic set's left/right pairs (from the dataset metadata)


def test_runs_without_detectron2(exported):
    out, _ = exported
    script = f"""
import sys, json
import numpy as np, torch, onnxruntime as ort
x = torch.randn(4, 3, 128, 96)
with torch.no_grad():
    probs, iou = torch.jit.load({str(out / 'parser.ts')!r})(x)
assert probs.shape == (4, 17, 128, 96) and iou.shape == (4,)
assert torch.allclose(probs.sum(1), torch.ones(4, 128, 96), atol=1e-5)
sess = ort.InferenceSession({str(out / 'parser.onnx')!r}, providers=["CPUExecutionProvider"])
p2, i2 = sess.run(["probs", "iou"], {{"crops": x.numpy()}})
assert np.abs(p2 - probs.numpy()).max() <= 1e-4 and np.abs(i2 - iou.numpy()).max() <= 1e-4
assert not [m for m in sys.modules if m.startswith(("detectron2", "qanet_d2"))]
print("ok")
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd="/")
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-3000:]


def test_reference_preprocessing_matches_model_crops(export_tool, exported):
    out, _ = exported
    contract = json.loads((out / "parser.json").read_text())
    frame = SyntheticVideo((2, 4), 200, 150, 1).render(0)
    image_rgb = np.ascontiguousarray(frame.image[:, :, ::-1])
    boxes = np.array([[40.0, 30.0, 90.0, 100.0], [150.0, 90.0, 215.0, 160.0]])  # the second leaves the image
    crops, affines = export_tool.crop_faces_numpy(image_rgb, boxes, contract)

    from qanet_d2.layers.crops import expand_box_to_aspect

    mean = torch.tensor(contract["input"]["pixel_mean"]).view(3, 1, 1)
    std = torch.tensor(contract["input"]["pixel_std"]).view(3, 1, 1)
    normalised = ((torch.from_numpy(image_rgb).permute(2, 0, 1).float() - mean) / std)[None]
    regions = expand_box_to_aspect(torch.from_numpy(boxes).float(), 0.75, 1.25)
    ref_affines, _ = boxes_to_affines(regions, (128, 96))
    ref = crop_images(normalised, torch.zeros(2, dtype=torch.long), ref_affines, (128, 96)).numpy()
    np.testing.assert_allclose(affines, ref_affines.numpy(), atol=1e-4)
    assert np.abs(crops - ref).mean() < 0.01  # OpenCV's fixed-point bilinear vs grid_sample
    assert np.abs(crops - ref).max() < 0.1


def test_reference_postprocessing_matches_model_painting(export_tool, exported):
    out, _ = exported
    contract = json.loads((out / "parser.json").read_text())
    contract["scoring"]["face_score_thresh"] = 0.0
    boxes = torch.tensor([[40.0, 30.0, 90.0, 100.0], [60.0, 50.0, 120.0, 120.0]])
    from qanet_d2.layers.crops import expand_box_to_aspect

    affines, _ = boxes_to_affines(expand_box_to_aspect(boxes, 0.75, 1.25), (128, 96))
    model = torch.jit.load(str(out / "parser.ts"))
    with torch.no_grad():
        probs, iou = model(torch.randn(2, 3, 128, 96, generator=torch.Generator().manual_seed(1)))
    scores = np.array([0.4, 0.7], np.float32)
    faces = Instances((150, 200), parsing_probs=probs[:, None], crop_affines=affines[:, None],
                      scores=torch.from_numpy(scores), box_scores=torch.ones(2))
    ref = FacePostProcessor(num_classes=17, face_score_thresh=0.0).paint(faces)[0].numpy()
    labels = export_tool.paint_faces_numpy(probs.numpy(), affines.numpy(), scores, (150, 200), contract)
    assert (ref != 0).mean() > 0.1
    assert (labels == ref).mean() > 0.98
    face = export_tool.face_scores_numpy(probs.numpy(), iou.numpy(), np.array([0.9, 0.8]), contract)
    expected = face_scores(torch.tensor([0.9, 0.8]), iou, pixel_scores(probs, 0.2), (1.0, 0.5, 3.0))
    np.testing.assert_allclose(face, expected.numpy(), rtol=1e-4)
