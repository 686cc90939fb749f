"""tools/export.py and qanet_d2/runtime.py: ONNX graphs against eager mode, the NumPy/OpenCV/
ONNX Runtime pipeline against the torch pipeline (label maps, faces), its building blocks against
the libraries they mirror, and a run in a process that never imports torch."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import qanet_d2  # noqa: F401
from detectron2.structures import Boxes, Instances
from qanet_d2 import FaceParsingPredictor, get_qanet_cfg
from qanet_d2.data.synthetic import SyntheticVideo
from qanet_d2.modeling.postprocessing import FacePostProcessor

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "configs" / "quickstart" / "qanet_fcos_synth.yaml"
# The quickstart model at tiny test size; every face is painted, so that the label maps compare
# the parsings of all faces the detector finds.
OPTS = ["INPUT.MIN_SIZE_TEST", "192", "INPUT.MAX_SIZE_TEST", "256", "MODEL.QANET.INFERENCE.BOX_SCORE_THRESH", "0.0"]
FASSEG_PHOTO = Path("/work/shared/data/fasseg/V2/Test_RGB/1.png")


def _load(name):
    spec = importlib.util.spec_from_file_location(name, REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tools():
    from qanet_d2 import runtime

    sys.path.insert(0, str(REPO / "tools"))
    try:
        yield _load("export"), runtime, _load("onnx_infer")
    finally:
        sys.path.remove(str(REPO / "tools"))


def sharpened_weights(path):
    """Random quickstart weights whose outputs vary: parser logits and IoUs far from constant
    (BatchNorm statistics of random crops), detector scores and box sizes spread out, so that the
    detector finds faces of many sizes and their parsings are not uniform."""
    from detectron2.modeling import build_model

    cfg = get_qanet_cfg()
    cfg.merge_from_file(str(QUICKSTART))
    cfg.MODEL.DEVICE = "cpu"
    torch.manual_seed(0)
    model = build_model(cfg)
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
        parser.parsing_branch.predictor.weight.normal_(0.0, 0.5)
        parser.iou_branch.predictor.bias.fill_(0.5)
        parser.iou_branch.predictor.weight.normal_(0.0, 0.05)
        head = model.detector.head
        head.cls_score.weight.normal_(0.0, 0.05)
        head.cls_score.bias.fill_(-1.0)
        head.bbox_pred.weight.normal_(0.0, 0.05)
        head.bbox_pred.bias.fill_(2.0)
        head.ctrness.weight.normal_(0.0, 0.05)
    torch.save({"model": model.state_dict()}, path)
    return path


@pytest.fixture(scope="module")
def exported(tools, tmp_path_factory):
    export_tool = tools[0]
    out = tmp_path_factory.mktemp("exported")
    weights = sharpened_weights(out / "weights.pth")
    # the tracing exporter: seconds instead of minutes; test_dynamo_exporter covers the other
    argv = ["--config-file", str(QUICKSTART), "--output", str(out), "--exporter", "torchscript", *OPTS,
            "MODEL.WEIGHTS", str(weights)]
    meta = export_tool.main(argv)
    return out, meta, export_tool.setup_cfg(export_tool.parse_args(argv))


@pytest.fixture(scope="module")
def pipelines(tools, exported):
    out, _, cfg = exported
    return FaceParsingPredictor(cfg), tools[1].FaceParsingRuntime(str(out))


def synthetic_frame():
    return SyntheticVideo((2, 4), 320, 240, 1).render(0).image


def astronaut_bgr():
    from skimage.data import astronaut

    return np.ascontiguousarray(astronaut()[:, :, ::-1])


# ---------------------------------------------------------------------------- export
def test_files_metadata_and_graph_parity(exported):
    out, meta, _ = exported
    assert {p.name for p in out.iterdir()} >= {"detector.onnx", "parser.onnx", "metadata.json"}
    assert json.loads((out / "metadata.json").read_text()) == meta
    assert meta["exporter"]["parser"] in ("dynamo", "torchscript") and meta["exporter"]["detector"] in ("dynamo", "torchscript")
    assert meta["parity"]["parser"] <= 1e-3 and meta["parity"]["detector"] <= 1e-3, meta["parity"]
    det, parser, pp = meta["detector"], meta["parser"], meta["postprocessing"]
    # the quickstart config and model, written out
    assert meta["input"] == {"format": "BGR", "min_size_test": 192, "max_size_test": 256}
    assert det["input_scale"] == 0.5 and det["strides"] == [8, 16, 32, 64, 128] and det["size_divisibility"] == 32
    assert det["score_thresh"] == pytest.approx(0.3) and det["nms_thresh"] == pytest.approx(0.4)
    assert det["pixel_mean"] == pytest.approx([103.53, 116.28, 123.675])  # BGR, as INPUT.FORMAT
    assert parser["crop_size"] == [128, 96] and parser["aspect_ratio"] == 0.75 and parser["box_expand"] == 1.25
    assert parser["views"] == [[1.0, False], [1.0, True]]  # flip test (TEST.AUG)
    perm = parser["flip_permutation"]
    assert sorted(perm) == list(range(17)) and perm != list(range(17))
    assert pp["score_weights"] == [1.0, 0.5, 3.0] and pp["quality_score_thresh"] == 0.0 and pp["box_score_thresh"] == 0.0 and pp["score_eps"] == 1e-6
    assert len(meta["classes"]) == 17 and len(meta["colors"]) == 17


def test_command_line(tools):
    args = tools[0].parse_args(["--config-file", "c.yaml", "MODEL.WEIGHTS", "w.pth", "--output", "out", "TEST.AUG.FLIP", "False",
                                "--check-image", "a.png", "--check-image", "astronaut"])
    assert args.output == "out" and args.opts == ["MODEL.WEIGHTS", "w.pth", "TEST.AUG.FLIP", "False"]
    assert args.check_image == ["a.png", "astronaut"] and args.exporter == "auto" and args.opset == 18
    assert tools[0].parse_args(["--config-file", "c.yaml", "--output", "o", "--opts", "MODEL.WEIGHTS", "w"]).extra_opts == ["MODEL.WEIGHTS", "w"]


def test_exporter_choice_is_validated(tools, tmp_path):
    export_tool = tools[0]
    with pytest.raises(ValueError, match="--exporter"):
        export_tool.export_onnx(torch.nn.Identity(), torch.zeros(1), str(tmp_path / "x.onnx"), "x", ["y"], {}, exporter="jit")
    if importlib.util.find_spec("onnxscript") is None:
        with pytest.raises(RuntimeError, match="pip install onnxscript"):
            export_tool.export_onnx(torch.nn.Identity(), torch.zeros(1), str(tmp_path / "x.onnx"), "x", ["y"], {}, exporter="dynamo")


@pytest.mark.skipif(importlib.util.find_spec("onnxscript") is None, reason="the dynamo ONNX exporter needs onnxscript")
def test_dynamo_exporter(tools, exported, tmp_path):
    """The torch.export-based exporter on the parser (dynamic batch), checked in ONNX Runtime."""
    export_tool = tools[0]
    _, _, cfg = exported
    parser = export_tool.ParserForExport(export_tool.build_model_for_export(cfg).parser).eval()
    path = str(tmp_path / "parser.onnx")
    made = export_tool.export_onnx(parser, torch.randn(2, 3, 128, 96), path, "crops", ["probs", "iou"], {0: "N"}, exporter="dynamo")
    assert made == "dynamo"
    assert export_tool.onnx_parity(parser, path, [torch.randn(n, 3, 128, 96) for n in (1, 3)], ["probs", "iou"]) <= 1e-3


# ---------------------------------------------------------------------------- pipeline parity
def assert_parity(row):
    assert row["faces_torch"] > 0 and row["painted_pixels"] > 0.2, row  # a non-degenerate comparison
    assert row["faces_onnx"] == row["faces_torch"], row
    assert row["max_box_diff"] <= 1.0, row
    assert row["max_score_diff"] <= 1e-3, row
    assert row["pixel_agreement"] >= 0.995, row


def test_parity_synthetic(tools, pipelines):
    row = tools[0].pipeline_parity(*pipelines, synthetic_frame())
    print("synthetic:", row)
    assert_parity(row)


def test_parity_astronaut(tools, pipelines):
    row = tools[0].pipeline_parity(*pipelines, astronaut_bgr())
    print("astronaut:", row)
    assert_parity(row)


@pytest.mark.skipif(not FASSEG_PHOTO.is_file(), reason="FASSEG photos are not on this machine")
def test_parity_fasseg_photo(tools, pipelines):
    from qanet_d2.data.io import read_image_bgr

    row = tools[0].pipeline_parity(*pipelines, read_image_bgr(str(FASSEG_PHOTO)))
    print("FASSEG:", row)
    assert_parity(row)


def test_parity_with_given_boxes(pipelines):
    predictor, runtime = pipelines
    image = synthetic_frame()
    boxes = np.array([[40.0, 30.0, 110.0, 120.0], [150.0, 60.0, 260.0, 200.0], [250.0, 150.0, 330.0, 250.0]], np.float32)
    ref, out = predictor(image, boxes=boxes), runtime(image, boxes=boxes)
    assert len(out["boxes"]) == 3
    np.testing.assert_allclose(out["boxes"], ref["boxes"], atol=1e-3)
    np.testing.assert_allclose(out["scores"], ref["scores"], atol=1e-4)
    assert (out["labels"] == ref["labels"]).mean() >= 0.995 and (ref["labels"] != 0).mean() > 0.2


def test_no_faces(pipelines):
    predictor, runtime = pipelines
    image = synthetic_frame()
    out = runtime(image, boxes=np.zeros((0, 4), np.float32))
    assert out["boxes"].shape == (0, 4) and out["scores"].shape == (0,)
    assert out["labels"].shape == image.shape[:2] and not out["labels"].any()
    assert not predictor(image, boxes=np.zeros((0, 4), np.float32))["labels"].any()


def test_runtime_runs_without_torch(tools, exported, tmp_path):
    out, _, _ = exported
    image_path = tmp_path / "frame.npy"
    np.save(image_path, synthetic_frame())
    script = f"""
import sys
class BlockTorch:  # an environment without torch, detectron2 and torchvision
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "detectron2", "torchvision"):
            raise ImportError("no module named " + name)
sys.meta_path.insert(0, BlockTorch())
sys.path.insert(0, {str(REPO)!r})
import numpy as np
from qanet_d2.runtime import FaceParsingRuntime
result = FaceParsingRuntime({str(out)!r})(np.load({str(image_path)!r}))
np.save({str(tmp_path / 'labels.npy')!r}, result["labels"])
np.save({str(tmp_path / 'boxes.npy')!r}, result["boxes"])
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "detectron2", "torchvision"))
print("loaded:", loaded)
assert not loaded
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd="/")
    assert proc.returncode == 0 and "loaded: []" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert proc.stderr == "", proc.stderr  # a quiet run
    result = tools[1].FaceParsingRuntime(str(out))(synthetic_frame())
    np.testing.assert_array_equal(np.load(tmp_path / "labels.npy"), result["labels"])
    np.testing.assert_array_equal(np.load(tmp_path / "boxes.npy"), result["boxes"])


def test_onnx_infer_cli(tools, exported, tmp_path, capsys):
    """tools/onnx_infer.py takes inputs as the demo does: a folder walked by extension (other
    files skipped and listed), one bad file reported by name without stopping the batch (a
    truncated JPEG, a 1 x 5000 image with its size), outputs of same-stem inputs kept apart,
    palette label PNGs whose ids equal the runtime's labels, and no silent overwrite."""
    import cv2
    from PIL import Image

    out, meta, _ = exported
    image = synthetic_frame()
    photos = tmp_path / "photos"
    photos.mkdir()
    cv2.imwrite(str(photos / "frame.png"), image)
    cv2.imwrite(str(photos / "frame.jpg"), image)
    good = (photos / "frame.jpg").read_bytes()
    (photos / "broken.jpg").write_bytes(good[: len(good) // 2])
    cv2.imwrite(str(photos / "thin.png"), np.full((1, 5000, 3), 128, np.uint8))
    (photos / "notes.txt").write_text("not an image")
    parsed = tmp_path / "parsed"
    status = tools[2].main(["--export", str(out), "--input", str(photos), "--output", str(parsed)])
    captured = capsys.readouterr()
    assert status == 1
    errors = [line for line in captured.err.splitlines() if line.startswith("ERROR")]
    assert any("broken.jpg" in line and "truncated" in line for line in errors), errors
    assert any("thin.png" in line and "5000x1" in line and "too thin" in line for line in errors), errors
    assert "notes.txt" in captured.out and not any("notes.txt" in line for line in errors)
    names = sorted(p.name for p in parsed.iterdir())
    assert names == ["frame_jpg_labels.png", "frame_jpg_overlay.png", "frame_png_labels.png", "frame_png_overlay.png", "labels.json"]
    labels = Image.open(parsed / "frame_png_labels.png")
    assert labels.mode == "P"
    np.testing.assert_array_equal(np.asarray(labels), tools[1].FaceParsingRuntime(str(out))(image)["labels"])
    legend = json.loads((parsed / "labels.json").read_text())["classes"]
    assert [c["name"] for c in legend] == list(meta["classes"])
    overlay = cv2.imread(str(parsed / "frame_png_overlay.png"))
    assert overlay.shape == image.shape and (overlay != image).any()
    # a second run into the same folder refuses to overwrite, unless asked
    assert tools[2].main(["--export", str(out), "--input", str(photos / "frame.png"), "--output", str(parsed)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert tools[2].main(["--export", str(out), "--input", str(photos / "frame.png"), "--output", str(parsed), "--overwrite"]) == 0
    assert tools[2].main(["--export", str(out), "--input", str(tmp_path / "missing.png"), "--output", str(tmp_path / "o")]) == 2
    assert "missing.png" in capsys.readouterr().err


def test_onnx_infer_does_not_import_torch(exported, tmp_path):
    """The ONNX command line shares the demo's input handling without importing torch."""
    out, _, _ = exported
    code = ("import sys, runpy; sys.argv = ['onnx_infer.py', '--help']\n"
            "try:\n    runpy.run_path(%r, run_name='__main__')\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n" % str(REPO / "tools" / "onnx_infer.py"))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr


def test_export_folder_errors(tools, tmp_path):
    rt = tools[1]
    with pytest.raises(rt.ExportError, match="metadata.json: no such file"):
        rt.load_metadata(str(tmp_path))
    (tmp_path / "metadata.json").write_text(json.dumps({"format_version": 3, "parser": {"file": "parser.onnx"}, "detector": None}))
    with pytest.raises(rt.ExportError, match="parser.onnx: no such file"):
        rt.load_metadata(str(tmp_path))


# ---------------------------------------------------------------------------- building blocks
def test_resampling_mirrors_pil_and_torch(tools):
    from PIL import Image

    rt = tools[1]
    rng = np.random.RandomState(0)
    image = rng.randint(0, 256, (61, 83, 3)).astype(np.uint8)
    image[20:40, 30:60] = 255  # hard edges
    for size in [(97, 131), (25, 34), (61, 40), (200, 83)]:
        ref = np.asarray(Image.fromarray(image).resize((size[1], size[0]), Image.BILINEAR))
        np.testing.assert_array_equal(rt.resample_uint8(image, *size), ref)
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    for size in [(30, 41), (122, 166), (31, 83)]:
        ref = torch.nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)[0].permute(1, 2, 0).numpy()
        np.testing.assert_allclose(rt.resample_float(image, *size), ref, atol=1e-3)
    # ResizeShortestEdge: detectron2's output size and PIL's pixels
    from detectron2.data.transforms import ResizeShortestEdge

    for min_size, max_size in [(192, 256), (50, 1000)]:
        expected = ResizeShortestEdge([min_size, min_size], max_size).get_transform(image).apply_image(image)
        np.testing.assert_array_equal(rt.resize_shortest_edge(image, min_size, max_size), expected)


def test_nms_mirrors_torchvision(tools):
    from torchvision.ops import nms as tv_nms

    rng = np.random.RandomState(1)
    xy = rng.uniform(0, 100, (300, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(5, 40, (300, 2))], axis=1).astype(np.float32)
    scores = rng.uniform(0, 1, 300).astype(np.float32)
    for thresh in (0.3, 0.6):
        expected = tv_nms(torch.from_numpy(boxes), torch.from_numpy(scores), thresh).numpy()
        np.testing.assert_array_equal(tools[1].nms(boxes, scores, thresh), expected)


@pytest.mark.parametrize("region,order", [("crop", "quality"), ("image", "box"), ("pasted", "box")])
def test_postprocess_mirrors_face_postprocessor(tools, region, order):
    """Two box-scale views per face, overlapping faces, a face leaving the image, a rescale:
    the NumPy post-processing paints what FacePostProcessor paints and scores alike."""
    rt = tools[1]
    gen = torch.Generator().manual_seed(3)
    n, v, c, h, w = 4, 2, 5, 32, 24
    probs = torch.softmax(torch.randn(n, v, c, h, w, generator=gen) * 3, dim=2)
    boxes = np.array([[10, 12, 60, 70], [30, 20, 90, 95], [70, 50, 130, 130], [-10, -5, 40, 50]], np.float32)
    affines = np.stack([rt.crop_affines(rt.crop_regions(boxes, 0.75, 1.25, s), (h, w)) for s in (1.0, 1.2)], axis=1)
    box_scores = np.array([0.9, 0.5, 0.7, 0.6], np.float32)
    iou = np.array([0.8, 0.9, 0.4, 0.7], np.float32)
    faces = Instances((120, 110), pred_boxes=Boxes(torch.from_numpy(boxes)), box_scores=torch.from_numpy(box_scores),
                      iou_scores=torch.from_numpy(iou), parsing_probs=probs, crop_affines=torch.from_numpy(affines))
    pp = FacePostProcessor(num_classes=c, quality_score_thresh=0.2, box_score_thresh=0.55, pixel_score_region=region, paint_order=order)
    ref = pp(faces, (180, 150))
    meta = {"score_weights": [1.0, 0.5, 3.0], "score_eps": 1e-6, "pixel_score_thresh": 0.2, "pixel_score_region": region,
            "quality_score_thresh": 0.2, "box_score_thresh": 0.55, "paint_order": order}
    out = rt.postprocess({"boxes": boxes, "box_scores": box_scores, "iou_scores": iou, "probs": probs.numpy(), "affines": affines},
                         (120, 110), (180, 150), meta)
    np.testing.assert_allclose(out["scores"], ref["instances"].scores.numpy(), rtol=1e-5)
    np.testing.assert_allclose(out["boxes"], ref["instances"].pred_boxes.tensor.numpy(), atol=1e-4)
    labels = ref["labels"].numpy()
    assert (labels != 0).mean() > 0.3
    assert (out["labels"] == labels).mean() >= 0.999


def test_export_doc_snippet_runs(exported, tmp_path):
    """docs/export.md's Python example, run as written next to an export and a photo."""
    import re

    import cv2

    out, _, _ = exported
    (tmp_path / "tools").symlink_to(REPO / "tools")
    (tmp_path / "exported").symlink_to(out)
    cv2.imwrite(str(tmp_path / "photo.jpg"), astronaut_bgr())
    (code,) = re.findall(r"```python\n(.*?)```", (REPO / "docs" / "export.md").read_text(), flags=re.S)
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


# ---------------------------------------------------------------------------- YuNet pipeline
@pytest.fixture(scope="module")
def yunet_pipelines(tools, tmp_path_factory):
    """The shipped real-face model (YuNet + box adapter + parser) exported, with its torch predictor."""
    from qanet_d2.model_zoo import shipped_model

    config, weights = shipped_model("real_faces")
    out = tmp_path_factory.mktemp("exported_yunet")
    argv = ["--config-file", config, "--output", str(out), "--exporter", "torchscript", "MODEL.WEIGHTS", weights]
    meta = tools[0].main(argv)
    cfg = tools[0].setup_cfg(tools[0].parse_args(argv))
    return meta, FaceParsingPredictor(cfg), tools[1].FaceParsingRuntime(str(out))


def test_yunet_export_metadata_and_graph_parity(yunet_pipelines):
    meta = yunet_pipelines[0]
    assert meta["detector"]["type"] == "YuNet" and len(meta["detector"]["outputs"]) == 12
    assert np.asarray(meta["box_adapter"]).shape == (4, 11)
    assert meta["parity"]["detector"] < 1e-3


def test_yunet_pipeline_parity_on_real_photos(tools, yunet_pipelines):
    """The whole pipeline in ONNX Runtime (YuNet decoded and merged in NumPy, the box adapter,
    the parser) finds the same faces as torch and paints >= 99.5 % of the pixels alike: the
    astronaut, and her mirrored copy beside the cameraman (two faces, one grey)."""
    import cv2
    from skimage.data import camera

    _, predictor, runtime = yunet_pipelines
    face = astronaut_bgr()
    grey = cv2.cvtColor(camera(), cv2.COLOR_GRAY2BGR)
    pair = np.concatenate([np.ascontiguousarray(face[:, ::-1]), grey], axis=1)
    big = np.full((1600, 2400, 3), 90, np.uint8)  # resized to 512 x 768 for the parser's input; YuNet sees 1280 x 1920
    big[900:1028, 1500:1628] = cv2.resize(face, (128, 128), interpolation=cv2.INTER_AREA)
    for image, faces, painted in ((face, 1, 0.03), (pair, 2, 0.03), (big, 1, 2e-4)):
        row = tools[0].pipeline_parity(predictor, runtime, image)
        print(row)
        assert row["faces_torch"] == faces == row["faces_onnx"] and row["painted_pixels"] > painted, row
        assert row["max_box_diff"] <= 1.0 and row["max_score_diff"] <= 1e-3, row
        assert row["pixel_agreement"] >= 0.995, row
