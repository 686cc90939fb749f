"""Face detectors as registered parts of QANetFaceParser: YuNet written from the authors' facts
(strict loading of the released weights, parity with the authors' ONNX export on a real photo,
decoding on hand-made outputs), the registry, and the box adapter."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from qanet_d2 import get_qanet_cfg
from qanet_d2.modeling.detectors import (
    FACE_DETECTOR_REGISTRY, HeadBoxAdapter, YuNet, build_face_detector, decode_yunet, fit_head_box_adapter,
    load_yunet_state_dict,
)
from qanet_d2.modeling.detectors.yunet import YuNetFaceDetector, grid_priors

REPO = Path(__file__).resolve().parents[1]
YUNET_DIR = REPO / "models" / "yunet"
YUNET_CONFIG = REPO / "configs" / "real_faces" / "qanet_yunet_fasseg.yaml"


def released(variant="n"):
    return torch.load(YUNET_DIR / f"yunet_{variant}.pth", weights_only=True)


def astronaut_bgr():
    from skimage.data import astronaut

    return np.ascontiguousarray(astronaut()[:, :, ::-1])


# ---------------------------------------------------------------------------- strict loading
@pytest.mark.parametrize("variant,params", [("n", 75856), ("s", 54608)])
def test_released_weights_load_strictly(variant, params):
    net = YuNet(variant)
    load_yunet_state_dict(net, released(variant), source=f"yunet_{variant}.pth")
    assert sum(p.numel() for p in net.parameters()) == params
    assert torch.equal(net.state_dict()["bbox_head.multi_level_kps.2.conv1.weight"], released(variant)["bbox_head.multi_level_kps.2.conv1.weight"])


def test_renamed_key_fails_with_its_name():
    state = released("n")
    state["backbone.model3.conv1.conv9.weight"] = state.pop("backbone.model3.conv1.conv1.weight")
    with pytest.raises(RuntimeError, match=r"renamed\.pth: .*missing keys \(1\): backbone\.model3\.conv1\.conv1\.weight") as e:
        load_yunet_state_dict(YuNet("n"), state, source="renamed.pth")
    assert "conv9" in str(e.value) and "renamed.pth" in str(e.value)


def test_missing_key_fails_with_its_name():
    state = released("n")
    del state["neck.lateral_convs.1.bn.running_var"]
    with pytest.raises(RuntimeError, match=r"missing keys \(1\): neck\.lateral_convs\.1\.bn\.running_var"):
        load_yunet_state_dict(YuNet("n"), state)


def test_reshaped_key_fails_with_its_name():
    state = released("n")
    state["bbox_head.multi_level_cls.0.conv1.weight"] = torch.zeros(2, 64, 1, 1)
    with pytest.raises(RuntimeError, match=r"shapes differ \(file vs model\): bbox_head\.multi_level_cls\.0\.conv1\.weight \(2, 64, 1, 1\)"):
        load_yunet_state_dict(YuNet("n"), state)


def test_other_variant_weights_fail():
    with pytest.raises(RuntimeError, match="YuNet-n"):
        load_yunet_state_dict(YuNet("n"), released("s"))


# ---------------------------------------------------------------------------- ONNX parity
@pytest.fixture(scope="module")
def onnx_and_torch_outputs():
    import onnxruntime as ort

    image = astronaut_bgr()[:480, :448]  # not square: rows and columns must not be swapped
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    net = YuNet("n").eval()
    load_yunet_state_dict(net, released("n"))
    with torch.no_grad():
        ours = net(x)
    sess = ort.InferenceSession(str(YUNET_DIR / "yunet_n_dynamic.onnx"), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    theirs = dict(zip(names, sess.run(None, {"input": x.numpy()})))
    return ours, theirs, x.shape[-2:]


def test_raw_outputs_match_the_authors_onnx_export(onnx_and_torch_outputs):
    ours, theirs, _ = onnx_and_torch_outputs
    assert len(theirs) == 12
    for name, ref in theirs.items():
        key, stride = name.split("_")
        mine = ours[key][(8, 16, 32).index(int(stride))].numpy()
        assert mine.shape == ref.shape, name
        assert np.abs(mine - ref).max() < 1e-4, name


def test_same_faces_after_decoding_and_nms(onnx_and_torch_outputs):
    from torchvision.ops import nms

    ours, theirs, (h, w) = onnx_and_torch_outputs
    as_lists = {k: [torch.from_numpy(theirs[f"{k}_{s}"]) for s in (8, 16, 32)] for k in ("cls", "obj", "bbox", "kps")}
    results = []
    for outputs in (ours, as_lists):
        boxes, kps, scores = (t[0] for t in decode_yunet(outputs, h, w))
        keep = scores > 0.5
        boxes, kps, scores = boxes[keep], kps[keep], scores[keep]
        k = nms(boxes, scores, 0.45)
        results.append((boxes[k], kps[k], scores[k]))
    (b0, k0, s0), (b1, k1, s1) = results
    assert len(b0) == len(b1) == 1  # the astronaut's face
    assert torch.allclose(b0, b1, atol=1e-3) and torch.allclose(k0, k1, atol=1e-3) and torch.allclose(s0, s1, atol=1e-5)
    x0, y0, x1, y1 = b0[0].tolist()
    assert 160 < x0 < 200 and 50 < y0 < 80 and 250 < x1 < 290 and 160 < y1 < 195  # her face, brow to chin


# ---------------------------------------------------------------------------- decoding
def test_priors_are_row_major_cells_times_stride():
    p8, p16, p32 = grid_priors(64, 96)
    assert p8.shape == (8 * 12, 2) and p16.shape == (4 * 6, 2) and p32.shape == (2 * 3, 2)
    assert p8[:3].tolist() == [[0, 0], [8, 0], [16, 0]]
    assert p8[12].tolist() == [0, 8]  # second row
    assert p32[-1].tolist() == [64, 32]


def test_decoding_on_hand_made_outputs():
    h, w = 64, 64
    cells = [(h // s) * (w // s) for s in (8, 16, 32)]
    out = {
        "cls": [torch.full((1, n, 1), 0.5) for n in cells],
        "obj": [torch.full((1, n, 1), 0.1) for n in cells],
        "bbox": [torch.zeros(1, n, 4) for n in cells],
        "kps": [torch.zeros(1, n, 10) for n in cells],
    }
    i = 2 * 8 + 3  # stride 8, cell (x=3, y=2): prior (24, 16)
    out["bbox"][0][0, i] = torch.tensor([0.5, -0.25, float(np.log(2.0)), 0.0])
    out["kps"][0][0, i] = torch.tensor([1.0, 1.0, -1.0, 0.0, 0, 0, 0, 0, 0.25, 0.5])
    out["cls"][0][0, i] = 0.9
    out["obj"][0][0, i] = 0.8
    j = 1 * 4 + 2  # stride 16, cell (x=2, y=1): prior (32, 16)
    out["bbox"][1][0, j] = torch.tensor([0.0, 0.0, float(np.log(3.0)), float(np.log(0.5))])
    boxes, kps, scores = decode_yunet(out, h, w)
    assert boxes.shape == (1, sum(cells), 4) and kps.shape == (1, sum(cells), 5, 2)
    # centre (24 + 4, 16 - 2), size (16, 8)
    assert boxes[0, i].tolist() == pytest.approx([20.0, 10.0, 36.0, 18.0], abs=1e-5)
    assert kps[0, i, 0].tolist() == pytest.approx([32.0, 24.0]) and kps[0, i, 1].tolist() == pytest.approx([16.0, 16.0])
    assert kps[0, i, 4].tolist() == pytest.approx([26.0, 20.0])
    assert float(scores[0, i]) == pytest.approx(0.72)
    assert float(scores[0, 0]) == pytest.approx(0.05)
    # centre (32, 16), size (48, 8)
    assert boxes[0, cells[0] + j].tolist() == pytest.approx([8.0, 12.0, 56.0, 20.0], abs=1e-5)


# ---------------------------------------------------------------------------- the detector part
def yunet_cfg(*opts):
    cfg = get_qanet_cfg()
    cfg.merge_from_file(str(YUNET_CONFIG))
    cfg.merge_from_list(list(opts))
    return cfg


@pytest.fixture(scope="module")
def yunet_detector():
    return build_face_detector(yunet_cfg()).eval()


def test_registry_builds_each_detector_from_its_config():
    from qanet_d2.modeling.detectors.fcos import build_fcos_detector  # noqa: F401

    assert {"FCOS", "YuNet"} <= {name for name, _ in FACE_DETECTOR_REGISTRY}
    yunet = build_face_detector(yunet_cfg("MODEL.YUNET.VARIANT", "s", "MODEL.YUNET.WEIGHTS", "models/yunet/yunet_s.pth"))
    assert isinstance(yunet, YuNetFaceDetector) and yunet.net.variant == "s"
    assert not any(p.requires_grad for p in yunet.parameters())
    fcos = build_face_detector(yunet_cfg("MODEL.QANET.DETECTOR.NAME", "FCOS"))
    assert type(fcos).__name__.startswith("Checkpointable") and any(p.requires_grad for p in fcos.parameters())
    assert build_face_detector(yunet_cfg("MODEL.QANET.DETECTOR.NAME", "")) is None
    with pytest.raises(KeyError, match="RetinaFace.*registered: .*FCOS.*YuNet"):
        build_face_detector(yunet_cfg("MODEL.QANET.DETECTOR.NAME", "RetinaFace"))


def test_missing_weights_file_is_named():
    with pytest.raises(FileNotFoundError, match="nowhere/yunet.pth"):
        build_face_detector(yunet_cfg("MODEL.YUNET.WEIGHTS", "nowhere/yunet.pth"))


def test_box_adapter_needs_a_detector_with_landmarks():
    from detectron2.modeling import build_model

    with pytest.raises(ValueError, match="BOX_ADAPTER needs a detector with landmarks"):
        build_model(yunet_cfg("MODEL.QANET.DETECTOR.NAME", "FCOS", "MODEL.QANET.DETECTOR_WEIGHTS", ""))


def test_yunet_refuses_to_train():
    from detectron2.modeling import build_model

    with pytest.raises(ValueError, match="pretrained and frozen.*TRAIN_MODE 'parser'"):
        build_model(yunet_cfg("MODEL.QANET.TRAIN_MODE", "joint"))


def _detect(detector, image, out_size=None):
    x = {"image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))}
    if out_size is not None:
        x["height"], x["width"] = out_size
    with torch.no_grad():
        return detector([x])[0]["instances"]


def test_landmarks_eyes_nose_mouth_and_mirror(yunet_detector):
    """Landmark 0 is the eye on the image left (the person's right), 2 the nose tip, 3 and 4 the
    mouth corners (image left, image right); a mirrored photo mirrors the box and landmarks."""
    image = astronaut_bgr()
    det = _detect(yunet_detector, image)
    assert len(det) == 1 and det.pred_keypoints.shape == (1, 5, 3)
    k = det.pred_keypoints[0]
    assert k[0, 0] < k[2, 0] < k[1, 0] and k[3, 0] < k[4, 0]  # left to right in the image
    assert k[0, 1] < k[2, 1] < k[3, 1] and k[1, 1] < k[2, 1] < k[4, 1]  # eyes, nose, mouth downwards
    mirrored = _detect(yunet_detector, np.ascontiguousarray(image[:, ::-1]))
    assert len(mirrored) == 1
    w = image.shape[1]
    b, m = det.pred_boxes.tensor[0], mirrored.pred_boxes.tensor[0]
    assert torch.allclose(torch.stack([w - m[2], m[1], w - m[0], m[3]]), b, atol=4.0)
    km = mirrored.pred_keypoints[0]
    assert abs(float(w - km[1, 0] - k[0, 0])) < 4 and abs(float(w - km[0, 0] - k[1, 0])) < 4  # eyes swap places


def test_outputs_in_the_requested_frame_and_large_images_capped(yunet_detector):
    image = astronaut_bgr()
    det = _detect(yunet_detector, image)
    big = _detect(yunet_detector, image, out_size=(1024, 1024))  # same pixels, outputs in a 2x frame
    assert big.image_size == (1024, 1024)
    assert torch.allclose(big.pred_boxes.tensor, det.pred_boxes.tensor * 2, atol=1e-3)
    assert torch.allclose(big.pred_keypoints[..., :2], det.pred_keypoints[..., :2] * 2, atol=1e-3)
    capped = build_face_detector(yunet_cfg("MODEL.YUNET.MAX_SIZE_TEST", 256, "MODEL.YUNET.SCALES_TEST", "(1.0, 0.25, 2.0)"))
    assert capped.sizes(512, 384) == [(256, 192), (128, 96)]  # 2x is capped at 256 too
    det_small = _detect(capped.eval(), image)
    assert len(det_small) == 1 and float(pairwise_iou(det_small, det)) > 0.8


def pairwise_iou(a, b):
    from detectron2.structures import pairwise_iou as iou

    return iou(a.pred_boxes, b.pred_boxes)[0, 0]


def test_no_faces_in_a_photo_without_people(yunet_detector):
    from skimage.data import coffee

    assert len(_detect(yunet_detector, np.ascontiguousarray(coffee()[:, :, ::-1]))) == 0


# ---------------------------------------------------------------------------- box adapter
def test_box_adapter_on_hand_made_cases():
    w = torch.zeros(4, 11)
    w[:, 0] = torch.tensor([-0.6, -1.0, 0.6, 0.5])  # constant: a fixed margin around the face box
    adapter = HeadBoxAdapter(w.flatten().tolist())
    face = torch.tensor([[100.0, 100.0, 200.0, 220.0]])  # centre (150, 160), size 100 x 120
    lms = torch.tensor([[[130.0, 140], [170, 140], [150, 165], [135, 190], [165, 190]]])
    assert adapter(face, lms).tolist() == [pytest.approx([90.0, 40.0, 210.0, 220.0])]
    # the head follows the nose: t_x0 and t_x1 gain 1.0 * u_nose (u of landmark 2 = column 3)
    w[0, 3] = w[2, 3] = 1.0
    turned = lms.clone()
    turned[0, 2, 0] = 180.0  # nose 0.3 box widths right of the centre
    assert HeadBoxAdapter(w.flatten().tolist())(face, turned).tolist() == [pytest.approx([120.0, 40.0, 240.0, 220.0])]
    assert HeadBoxAdapter(w.flatten().tolist())(face.new_zeros(0, 4), lms[:0]).shape == (0, 4)
    with pytest.raises(ValueError, match="44 numbers"):
        HeadBoxAdapter([0.0] * 40)


def test_box_adapter_fit_recovers_a_known_mapping():
    g = torch.Generator().manual_seed(0)
    n = 200
    x0y0 = torch.rand(n, 2, generator=g) * 300
    size = 40 + torch.rand(n, 2, generator=g) * 100
    faces = torch.cat([x0y0, x0y0 + size], 1)
    lms = x0y0[:, None] + torch.rand(n, 5, 2, generator=g) * size[:, None]
    true = torch.randn(4, 11, generator=g) * 0.2
    true[:, 0] += torch.tensor([-0.7, -1.0, 0.7, 0.6])
    heads = HeadBoxAdapter(true.flatten().tolist())(faces, lms)
    fitted = fit_head_box_adapter(faces, lms, heads, ridge=0.0)
    assert torch.allclose(fitted.float(), true, atol=1e-3)


def test_meta_arch_applies_the_adapter_and_keeps_landmarks():
    """detect() returns the adapted head boxes of YuNet's faces (larger than the face boxes, with
    the hair above), and the predictor returns landmarks in the original frame."""
    from detectron2.modeling import build_model

    model = build_model(yunet_cfg()).eval()
    image = astronaut_bgr()
    x = {"image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))), "height": 512, "width": 512}
    faces = model.detect([x])[0]
    raw = model.detector([x])[0]["instances"]
    head, face = faces.pred_boxes.tensor[0], raw.pred_boxes.tensor[0]
    assert head[1] < face[1] - 15 and head[0] < face[0] and head[2] > face[2]  # hair above, ears beside
    assert (head[3] - face[3]).abs() < 25  # chin about where the face box ends
    assert torch.equal(faces.pred_keypoints, raw.pred_keypoints)
    model_no_adapter = build_model(yunet_cfg("MODEL.QANET.DETECTOR.BOX_ADAPTER", "[]")).eval()
    assert torch.allclose(model_no_adapter.detect([x])[0].pred_boxes.tensor, raw.pred_boxes.tensor)


def test_training_route_names_the_pretrained_detector():
    from qanet_d2.engine.route import training_route

    assert training_route(yunet_cfg()) == "the parser alone on face crops (epochs of faces), the pretrained YuNet detector frozen"
    fcos = yunet_cfg("MODEL.QANET.DETECTOR.NAME", "FCOS", "MODEL.QANET.DETECTOR.BOX_ADAPTER", "[]", "MODEL.QANET.DETECTOR_WEIGHTS", "d.pth")
    assert training_route(fcos).endswith("the detector of d.pth frozen")


# ---------------------------------------------------------------------------- the measuring tools
def test_sample_photo_matching_and_variants():
    from conftest import load_script

    tool = load_script("tools/check_sample_photos.py", "check_sample_photos")
    gt = [(100, 100, 200, 220)]
    # a box around the head matches; one on the torso below it and a second box on the head do not
    assert tool.match([(110, 120, 190, 230), (90, 260, 210, 400), (120, 110, 180, 200)], gt) == (1, 2)
    assert tool.match([], gt) == (0, 0) and tool.match([(0, 0, 5, 5)], []) == (0, 1)
    image = np.zeros((300, 400, 3), np.uint8)
    assert tool.mirrored(image, gt)[1] == [(200, 100, 300, 220)]
    rotated, boxes = tool.rotated(image, gt, 90)
    (x0, y0, x1, y1), = boxes  # the head's centre (150, 160) turned 90 deg counter-clockwise about (200, 150)
    assert ((x0 + x1) / 2, (y0 + y1) / 2) == pytest.approx((210.0, 200.0)) and rotated.shape == image.shape
    canvas, boxes = tool.collage([(image, gt), (np.zeros((150, 100, 3), np.uint8), [])], height=150, cols=2)
    assert canvas.shape == (150, 300, 3) and boxes == [pytest.approx((50, 50, 100, 110))]


def test_box_adapter_fit_matches_faces_inside_head_boxes():
    from conftest import load_script

    tool = load_script("tools/fit_box_adapter.py", "fit_box_adapter")
    gt = torch.tensor([[0.0, 0.0, 100.0, 120.0], [200.0, 0.0, 300.0, 120.0]])
    det = torch.tensor([[20.0, 30.0, 80.0, 110.0], [210.0, 20.0, 290.0, 110.0], [60.0, 60.0, 160.0, 160.0]])
    scores = torch.tensor([0.9, 0.8, 0.95])
    # the third detection straddles the first head: less than 0.6 of it inside, never matched
    assert tool.match_faces(gt, det, scores, 0.6) == [0, 1]
    assert tool.match_faces(gt, det[2:], scores[2:], 0.6) == [-1, -1]


def test_write_detector_boxes_gives_matched_faces_the_adapted_box(tmp_path, monkeypatch):
    """--write-boxes: a copy of the dataset JSON under DIR (other files linked) whose faces the
    detector finds carry its box through the adapter; a face it misses keeps its head box."""
    import cv2
    from conftest import load_script
    from detectron2.structures import Boxes, Instances
    from qanet_d2.data.datasets import register_face_video_dataset

    tool = load_script("tools/fit_box_adapter.py", "fit_box_adapter")
    root = tmp_path / "data" / "mine"
    (root / "images").mkdir(parents=True)
    cv2.imwrite(str(root / "images" / "0.png"), np.zeros((120, 300, 3), np.uint8))
    heads = [[0.0, 0.0, 100.0, 120.0], [200.0, 0.0, 300.0, 120.0]]
    frame = {"frame_index": 0, "file_name": "images/0.png", "height": 120, "width": 300, "faces": [{"bbox": b} for b in heads]}
    (root / "train.json").write_text(json.dumps({"label_set": "fasseg", "videos": [{"video_id": "v", "frames": [frame]}]}))
    (root / "test.json").write_text("{}")
    (tmp_path / "data" / "other").mkdir()
    original = (root / "train.json").read_text()
    (tmp_path / "out" / "mine").mkdir(parents=True)
    (tmp_path / "out" / "mine" / "train.json").symlink_to(root / "train.json")  # left by an earlier run
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path / "data"))
    register_face_video_dataset("test_write_detector_boxes", str(root / "train.json"), str(root), "fasseg")

    def detector(inputs):  # one face, inside the first head box
        inst = Instances((120, 300))
        inst.pred_boxes = Boxes(torch.tensor([[20.0, 30.0, 80.0, 110.0]]))
        inst.scores = torch.tensor([0.9])
        inst.pred_keypoints = torch.tensor([[[35.0, 55.0, 1], [65.0, 55.0, 1], [50.0, 70.0, 1], [38.0, 90.0, 1], [62.0, 90.0, 1]]])
        return [{"instances": inst}]

    # the constant adapter: 0.25 face widths / heights beyond each side
    m = torch.zeros(4, 11)
    m[:, 0] = torch.tensor([-0.75, -0.75, 0.75, 0.75])
    tool.write_detector_boxes(detector, HeadBoxAdapter(m.flatten().tolist()), ["test_write_detector_boxes"], str(tmp_path / "out"), 0.6)
    out = json.loads((tmp_path / "out" / "mine" / "train.json").read_text())
    boxes = [f["bbox"] for f in out["videos"][0]["frames"][0]["faces"]]
    assert boxes[0] == pytest.approx([5.0, 10.0, 95.0, 130.0]) and boxes[1] == heads[1]
    assert (tmp_path / "out" / "mine" / "images" / "0.png").exists()
    # a complete datasets root: the other split and dataset linked, the original JSON untouched
    assert (tmp_path / "out" / "mine" / "test.json").is_symlink() and (tmp_path / "out" / "other").is_dir()
    assert (root / "train.json").read_text() == original


def test_found_by_width_counts_faces_per_head_box_width():
    from conftest import load_script

    tool = load_script("tools/fit_box_adapter.py", "fit_box_adapter")
    widths = np.array([10.0, 23.9, 24.0, 31.0, 50.0, 200.0])
    hits = np.array([True, False, True, True, False, True])
    assert tool.found_by_width(widths, hits) == "<24 px 1/2, 24-32 px 2/2, 48-96 px 0/1, >=96 px 1/1"
