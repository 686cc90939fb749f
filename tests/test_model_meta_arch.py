"""QANetFaceParser end to end on hand-built tensors: training losses and modes, the inference
output contract and its stages (detector, given boxes, per-face results), test-time views and
ensembles."""
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import qanet_d2  # noqa: F401
from paste_reference import paste_to_image
from detectron2.data import MetadataCatalog
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage
from qanet_d2 import get_qanet_cfg
from qanet_d2.data import TrainingCropper
from qanet_d2.data.mixed_label_sets import fill_model_label_set
from qanet_d2.modeling import QANetFaceParserWithTTA, build_test_time_model

REPO = Path(__file__).resolve().parents[1]
INSTANT = REPO / "configs" / "quick_schedules" / "qanet_fcos_synth_instant_test.yaml"

# The synthetic label set of the contract; registered here under a test-only name so the
# model's label set comes from dataset metadata into the config, as train_net.py sets it up.
CLASSES = ["background", "skin", "nose", "eye_g", "l_eye", "r_eye", "l_brow", "r_brow", "l_ear", "r_ear",
           "mouth", "u_lip", "l_lip", "hair", "hat", "neck", "cloth"]
FLIP_PAIRS = [(4, 5), (6, 7), (8, 9)]
DATASET = "qanet_model_test_faces"
MetadataCatalog.get(DATASET).set(stuff_classes=CLASSES, flip_pairs=FLIP_PAIRS)
C = len(CLASSES)


def tiny_cfg(*opts):
    cfg = get_qanet_cfg()
    cfg.merge_from_file(str(INSTANT))
    cfg.DATASETS.TRAIN = (DATASET,)
    cfg.DATASETS.TEST = (DATASET,)
    cfg.MODEL.DEVICE = "cpu"
    cfg.merge_from_list(list(opts))
    fill_model_label_set(cfg)
    return cfg


TRAINING_CROPPER = TrainingCropper(tiny_cfg("MODEL.QANET.AUG.ENABLED", "False"))


def tiny_model(*opts):
    torch.manual_seed(0)
    return build_model(tiny_cfg(*opts))


def face_input(boxes, height=96, width=128, scale=1.0, seed=0):
    """A BGR uint8 image with one drawn face per box, its label map and gt boxes (input frame);
    ``height``/``width`` of the original image are ``scale`` times the input size."""
    g = torch.Generator().manual_seed(seed)
    image = torch.randint(0, 60, (3, height, width), generator=g, dtype=torch.uint8)
    labels = torch.zeros(height, width, dtype=torch.long)
    for x0, y0, x1, y1 in boxes:
        x0, y0, x1, y1 = int(x0), int(y0), int(x1), int(y1)
        image[:, y0:y1, x0:x1] = torch.tensor([90, 140, 200], dtype=torch.uint8)[:, None, None]
        labels[y0:y1, x0:x1] = 1
        cy, cx, w = (y0 + y1) // 2, (x0 + x1) // 2, max(1, (x1 - x0) // 6)
        labels[cy - w : cy, cx - 2 * w : cx - w] = 5  # r_eye on the image left
        labels[cy - w : cy, cx + w : cx + 2 * w] = 4  # l_eye on the image right
        image[:, cy - w : cy, cx - 2 * w : cx - w] = 20
        image[:, cy - w : cy, cx + w : cx + 2 * w] = 20
    inst = Instances((height, width))
    inst.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    inst.gt_classes = torch.zeros(len(boxes), dtype=torch.long)
    sample = {"image": image, "sem_seg": labels, "instances": inst,
              "height": int(round(height * scale)), "width": int(round(width * scale))}
    # the parser's training crops, cut as the data loader cuts them (no augmentation)
    sample["face_crops"], sample["face_crop_sem_seg"], _ = TRAINING_CROPPER.training_crops([sample])
    return sample


class ConstantParser(nn.Module):
    """Stands in for the parser: class ``label`` everywhere with high confidence, IoU 1."""

    def __init__(self, label=1, flip_pairs=FLIP_PAIRS):
        super().__init__()
        self.label = label
        self.dummy = nn.Parameter(torch.zeros(()))
        self.flip_permutation = torch.arange(C)
        for a, b in flip_pairs:
            self.flip_permutation[a], self.flip_permutation[b] = b, a

    def flip_back(self, probs):
        return probs.flip(-1)[:, self.flip_permutation]

    def forward(self, crops):
        logits = torch.zeros(crops.shape[0], C, *crops.shape[-2:])
        logits[:, self.label] = 10.0
        return logits, torch.ones(crops.shape[0])


def test_training_losses_and_they_decrease():
    model = tiny_model("MODEL.QANET.AUG.ENABLED", "False")
    model.train()
    batch = [face_input([[20, 10, 60, 60], [80, 30, 110, 70]]), face_input([[30, 20, 90, 90]], seed=1)]
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=2e-3)
    totals = []
    with EventStorage():
        for _ in range(12):
            losses = model(batch)
            assert set(losses) == {"loss_fcos_cls", "loss_fcos_loc", "loss_fcos_ctr",
                                   "loss_parsing_ce", "loss_parsing_lovasz", "loss_iou"}
            total = sum(losses.values())
            opt.zero_grad()
            total.backward()
            opt.step()
            totals.append({k: float(v.detach()) for k, v in losses.items()})
    first, last = totals[0], totals[-1]
    assert last["loss_parsing_ce"] < 0.7 * first["loss_parsing_ce"]
    assert last["loss_parsing_lovasz"] < first["loss_parsing_lovasz"]
    assert last["loss_fcos_cls"] < first["loss_fcos_cls"]
    assert sum(last.values()) < 0.8 * sum(first.values())


def test_training_modes():
    batch = [face_input([[20, 10, 60, 60]]), face_input([])]  # second image has no face
    model = tiny_model("MODEL.QANET.TRAIN_MODE", "parser")
    model.train()
    assert not model.detector.training and not any(p.requires_grad for p in model.detector.parameters())
    with EventStorage():
        losses = model(batch)
    assert set(losses) == {"loss_parsing_ce", "loss_parsing_lovasz", "loss_iou"}
    sum(losses.values()).backward()

    model = tiny_model("MODEL.QANET.TRAIN_MODE", "detector")
    model.train()
    with EventStorage():
        losses = model(batch)
    assert set(losses) == {"loss_fcos_cls", "loss_fcos_loc", "loss_fcos_ctr"}
    assert not any(p.requires_grad for p in model.parser.parameters())

    # parser-only model without detector; a batch without any face still gives (zero) losses
    model = tiny_model("MODEL.QANET.DETECTOR.NAME", "", "MODEL.QANET.TRAIN_MODE", "parser", "MODEL.QANET.TEST_BOXES", "gt")
    assert model.detector is None
    model.train()
    with EventStorage():
        losses = model([face_input([]), face_input([])])
    assert all(float(v.detach()) == 0.0 for v in losses.values())
    sum(losses.values()).backward()
    with pytest.raises(ValueError, match="without detector"):
        tiny_model("MODEL.QANET.DETECTOR.NAME", "")


def test_inference_output_contract_and_coordinate_frame():
    model = tiny_model("MODEL.QANET.TEST_BOXES", "gt", "MODEL.QANET.INFERENCE.BOX_SCORE_THRESH", "0.0")
    model.eval()
    boxes = [[20, 10, 60, 60], [80, 30, 110, 70]]
    inputs = [face_input(boxes, scale=2.0), face_input([], scale=1.5)]
    out = model(inputs)
    assert len(out) == 2 and set(out[0]) == {"labels", "instances", "painted", "face_labels"}  # no C x H x W map unless asked
    r0, r1 = out
    assert r0["labels"].shape == (192, 256) and r1["labels"].shape == (144, 192) and r0["labels"].dtype == torch.uint8
    inst = r0["instances"]
    assert inst.image_size == (192, 256) and len(inst) == 2
    for field in ("pred_boxes", "scores", "pred_classes", "box_scores", "iou_scores", "pixel_scores"):
        assert inst.has(field), field
    assert r0["painted"].tolist() == [True, True] and [len(f["window"]) for f in r0["face_labels"]] == [4, 4]
    raw = model.postprocessor.rescale(model.inference(inputs[:1], do_postprocess=False)[0]["instances"], (192, 256))
    assert raw.parsing_probs.shape == (2, 1, C, 128, 96) and raw.crop_affines.shape == (2, 1, 2, 3)
    torch.testing.assert_close(raw.parsing_probs.sum(2), torch.ones(2, 1, 128, 96))
    assert (inst.scores[:-1] >= inst.scores[1:]).all()  # sorted by quality score
    assert (inst.pred_classes == 0).all() and torch.equal(inst.box_scores, torch.ones(2))
    # boxes in the original frame (x2), in score order
    got = sorted(inst.pred_boxes.tensor.tolist())
    torch.testing.assert_close(torch.tensor(got), torch.tensor(sorted(boxes)) * 2.0)
    # crop affines map the crop onto the 3:4, x1.25 region around each box, original frame
    for b, a in zip(raw.pred_boxes.tensor, raw.crop_affines[:, 0]):
        centre = a @ torch.tensor([48.0, 64.0, 1.0])
        torch.testing.assert_close(centre, (b[:2] + b[2:]) / 2, atol=1e-3, rtol=0)
        height = (a @ torch.tensor([0.0, 128.0, 1.0]) - a @ torch.tensor([0.0, 0.0, 1.0]))[1]
        bw, bh = b[2] - b[0], b[3] - b[1]
        assert abs(float(height) - 1.25 * max(float(bh), float(bw) / 0.75)) < 1e-3
    # no face: all background, empty instances
    assert len(r1["instances"]) == 0 and (r1["labels"] == 0).all()
    assert r1["painted"].shape == (0,) and r1["face_labels"] == []

    # class scores when asked for: C x H x W, argmax = the label map
    scored = model.inference(inputs, class_scores=True)
    assert scored[0]["sem_seg"].shape == (C, 192, 256) and scored[1]["sem_seg"].shape == (C, 144, 192)
    assert torch.equal(scored[0]["sem_seg"].argmax(0).to(torch.uint8), r0["labels"])
    assert torch.equal(scored[0]["labels"], r0["labels"])

    # painted where the crops are: with a parser that says "skin" everywhere, the label map is
    # skin exactly on the union of the crop regions pasted into the original frame
    model.parser = ConstantParser(label=1)
    out = model([face_input(boxes, scale=2.0)])[0]
    inst = out["instances"]
    raw = model.postprocessor.rescale(model.inference([face_input(boxes, scale=2.0)], do_postprocess=False)[0]["instances"], (192, 256))
    _, inside = paste_to_image(raw.parsing_probs[:, 0], raw.crop_affines[:, 0], (192, 256))
    painted = out["labels"] == 1
    assert torch.equal(painted, inside.any(0))
    assert painted[70, 80] and not painted[5, 250]
    assert torch.allclose(inst.iou_scores, torch.ones(2)) and torch.allclose(inst.pixel_scores, torch.ones(2), atol=1e-3)


def test_given_boxes_and_per_face_results():
    """``face_boxes`` replaces the detector like detectron2's ``detected_instances``; with
    ``do_postprocess=False`` the per-face results stay in the input frame, unscored, and the
    post-processor turns them into exactly the outputs of a full call."""
    model = tiny_model("MODEL.QANET.INFERENCE.BOX_SCORE_THRESH", "0.0")  # detector boxes by default
    model.eval()
    boxes = [[20, 10, 60, 60], [80, 30, 110, 70]]
    inputs = [face_input(boxes, scale=2.0)]
    given = [Instances((96, 128), pred_boxes=Boxes(torch.tensor(boxes, dtype=torch.float32)), scores=torch.tensor([0.9, 0.6]))]
    out = model.inference(inputs, face_boxes=given)[0]
    assert sorted(out["instances"].box_scores.tolist()) == pytest.approx([0.6, 0.9])
    torch.testing.assert_close(out["instances"].pred_boxes.tensor[out["instances"].box_scores.argsort(descending=True)],
                               torch.tensor(boxes, dtype=torch.float32) * 2)
    # the same boxes as ground truth give the same parsing (box score 1)
    gt = tiny_model("MODEL.QANET.TEST_BOXES", "gt", "MODEL.QANET.INFERENCE.BOX_SCORE_THRESH", "0.0").eval()(inputs)[0]
    torch.testing.assert_close(gt["instances"].iou_scores.sort().values, out["instances"].iou_scores.sort().values)
    raw = model.inference(inputs, face_boxes=given, do_postprocess=False)[0]
    assert set(raw) == {"instances"}
    faces = raw["instances"]
    assert faces.image_size == (96, 128) and not faces.has("scores") and not faces.has("pixel_scores")
    torch.testing.assert_close(faces.pred_boxes.tensor, torch.tensor(boxes, dtype=torch.float32))
    post = model.postprocessor(faces, (192, 256))
    assert torch.equal(post["labels"], out["labels"])
    torch.testing.assert_close(post["instances"].scores, out["instances"].scores)
    with pytest.raises(ValueError, match="face_boxes"):
        model.inference(inputs, face_boxes=given * 2)


def test_detector_boxes_come_from_fcos_own_inference():
    """detect() is FCOS's own eval-mode call on the (half-size) detector input, asked for boxes
    in the frame of the model input."""
    model = tiny_model("MODEL.FCOS.SCORE_THRESH_TEST", "0.0", "MODEL.QANET.INFERENCE.MAX_PARSED_FACES", "500",
                       "MODEL.FCOS.INPUT_SCALE", "0.5")
    model.eval()
    inputs = [face_input([[20, 10, 60, 60]], scale=2.0)]
    faces = model.detect(inputs)[0]
    half = F.interpolate(inputs[0]["image"].float()[None], size=(48, 64), mode="bilinear", align_corners=False, antialias=True)[0]
    with torch.no_grad():
        direct = model.detector([{"image": half, "height": 96, "width": 128}])[0]["instances"]
    assert faces.image_size == (96, 128) and len(faces) == len(direct) > 0
    torch.testing.assert_close(faces.pred_boxes.tensor, direct.pred_boxes.tensor)
    torch.testing.assert_close(faces.scores, direct.scores)
    assert float(faces.pred_boxes.tensor[:, 2].max()) > 70  # the input frame, not the half-size one
    out = model(inputs)[0]["instances"]
    assert len(out) == len(direct)
    torch.testing.assert_close(out.box_scores.sort().values, direct.scores.sort().values)


def test_inference_with_detector_boxes_no_face_and_many_faces():
    model = tiny_model("MODEL.FCOS.SCORE_THRESH_TEST", "1.01")  # the detector finds nothing
    model.eval()
    out = model([face_input([[20, 10, 60, 60]], scale=1.0)])
    assert len(out[0]["instances"]) == 0 and out[0]["labels"].shape == (96, 128)
    assert (out[0]["labels"] == 0).all()

    model = tiny_model("MODEL.FCOS.SCORE_THRESH_TEST", "0.0")  # untrained: many low-score boxes
    model.eval()
    out = model([face_input([[20, 10, 60, 60]])])[0]
    assert len(out["instances"]) == len(out["face_labels"]) == model.max_parsed_faces

    # many faces, chunked parsing and tiled pasting give the same result as one big chunk
    opts = ["MODEL.QANET.TEST_BOXES", "gt", "MODEL.QANET.INFERENCE.MAX_PARSED_FACES", "100",
            "MODEL.QANET.INFERENCE.BOX_SCORE_THRESH", "0.0"]
    boxes = [[x, y, x + 14, y + 18] for x in range(0, 120, 12) for y in range(0, 80, 20)]
    inp = [face_input(boxes, scale=1.25)]
    small = tiny_model(*opts, "MODEL.QANET.INFERENCE.PARSER_BATCH", "7", "MODEL.QANET.INFERENCE.PASTE_TILE", "16").eval()
    big = tiny_model(*opts, "MODEL.QANET.INFERENCE.PARSER_BATCH", "64", "MODEL.QANET.INFERENCE.PASTE_TILE", "1024").eval()
    small, big = small.inference(inp, class_scores=True)[0], big.inference(inp, class_scores=True)[0]
    assert len(small["instances"]) == len(boxes) == 40
    assert torch.equal(small["labels"], big["labels"])
    torch.testing.assert_close(small["sem_seg"], big["sem_seg"])
    torch.testing.assert_close(small["instances"].scores, big["instances"].scores)


def test_box_scale_views_are_taken_at_their_scales():
    """Each box-scale view's crop is the 3:4, x1.25 region around the box times the view's scale
    (not all at scale 1), and views are kept per face in the order of the views."""
    model = tiny_model("MODEL.QANET.TEST_BOXES", "gt", "MODEL.QANET.INFERENCE.BOX_SCORE_THRESH", "0.0")
    model.eval()
    boxes = [[20, 10, 60, 60], [80, 30, 110, 70]]
    inputs = [face_input(boxes, scale=2.0)]
    scales = (0.8, 1.0, 1.5)
    tta = QANetFaceParserWithTTA(model, views=[(s, f) for s in scales for f in (False, True)])
    inst = tta.inference(inputs, do_postprocess=False)[0]["instances"]  # per-face results, not pasted
    assert inst.parsing_probs.shape == (2, 3, C, 128, 96) and inst.crop_affines.shape == (2, 3, 2, 3)
    for b, affines in zip(inst.pred_boxes.tensor, inst.crop_affines):
        base = 1.25 * max(float(b[3] - b[1]), float(b[2] - b[0]) / 0.75)
        for a, s in zip(affines, scales):
            height = float((a @ torch.tensor([0.0, 128.0, 1.0]) - a @ torch.tensor([0.0, 0.0, 1.0]))[1])
            assert height == pytest.approx(base * s, rel=1e-4)
            torch.testing.assert_close(a @ torch.tensor([48.0, 64.0, 1.0]), (b[:2] + b[2:]) / 2, atol=1e-3, rtol=0)
    # the views differ, so the label map averages different pastes
    assert not torch.allclose(inst.parsing_probs[:, 0], inst.parsing_probs[:, 2])


def test_tta_and_ensemble(tmp_path):
    model = tiny_model("MODEL.QANET.TEST_BOXES", "gt", "MODEL.QANET.INFERENCE.BOX_SCORE_THRESH", "0.0")
    model.eval()
    inputs = [face_input([[20, 10, 60, 60], [80, 30, 110, 70]], scale=2.0), face_input([])]
    plain = model.inference(inputs, class_scores=True)

    # one model, no augmentation: exactly plain inference
    cfg = tiny_cfg()
    assert build_test_time_model(cfg, model) is model
    same = QANetFaceParserWithTTA(model, views=[(1.0, False)]).inference(inputs, class_scores=True)
    for a, b in zip(plain, same):
        torch.testing.assert_close(a["sem_seg"], b["sem_seg"])
        assert torch.equal(a["labels"], b["labels"])
        torch.testing.assert_close(a["instances"].scores, b["instances"].scores)
    for a, b in zip(model.inference(inputs, do_postprocess=False), QANetFaceParserWithTTA(model, views=[(1.0, False)]).inference(inputs, do_postprocess=False)):
        torch.testing.assert_close(a["instances"].parsing_probs, b["instances"].parsing_probs)

    # flip + box scales: same faces, one crop per box scale
    cfg = tiny_cfg("TEST.AUG.ENABLED", "True", "TEST.AUG.FLIP", "True", "TEST.AUG.BOX_SCALES", "(0.9, 1.0, 1.2)")
    tta = build_test_time_model(cfg, model)
    assert isinstance(tta, QANetFaceParserWithTTA) and len(tta.views) == 6
    aug = tta.inference(inputs, class_scores=True)
    for a, b in zip(plain, aug):
        assert a["sem_seg"].shape == b["sem_seg"].shape and a["labels"].shape == b["labels"].shape
        assert len(a["instances"]) == len(b["instances"])
    assert all(b["instances"].parsing_probs.shape[1] == 3 for b in tta.inference(inputs, do_postprocess=False))
    assert not torch.allclose(plain[0]["sem_seg"], aug[0]["sem_seg"])
    assert torch.equal(aug[0]["sem_seg"].argmax(0).to(torch.uint8), aug[0]["labels"])
    assert torch.equal(tta(inputs)[0]["labels"], aug[0]["labels"])  # forward = inference

    # flip alone is exact for a parser that mirrors correctly: the constant one
    model.parser = ConstantParser(label=4)
    flip_only = QANetFaceParserWithTTA(model, views=[(1.0, False), (1.0, True)]).inference(inputs, do_postprocess=False)[0]
    probs = flip_only["instances"].parsing_probs[:, 0]
    assert torch.allclose(probs[:, 4], torch.full_like(probs[:, 4], 0.5), atol=1e-3)  # l_eye, mirrored to r_eye
    assert torch.allclose(probs[:, 5], torch.full_like(probs[:, 5], 0.5), atol=1e-3)


def test_ensemble_from_checkpoints(tmp_path):
    model = tiny_model("MODEL.QANET.TEST_BOXES", "gt")
    model.eval()
    inputs = [face_input([[20, 10, 60, 60]], scale=2.0)]
    plain = model.inference(inputs, class_scores=True)[0]
    # the same weights twice: the average equals the single model
    torch.save({"model": model.state_dict()}, tmp_path / "same.pth")
    cfg = tiny_cfg("TEST.ENSEMBLE.WEIGHTS", [str(tmp_path / "same.pth")])
    ens = build_test_time_model(cfg, model)
    assert isinstance(ens, QANetFaceParserWithTTA) and len(ens.extra_parsers) == 1
    out = ens.inference(inputs, class_scores=True)[0]
    torch.testing.assert_close(ens.inference(inputs, do_postprocess=False)[0]["instances"].parsing_probs,
                               model.inference(inputs, do_postprocess=False)[0]["instances"].parsing_probs)
    torch.testing.assert_close(out["sem_seg"], plain["sem_seg"])
    # other weights: same shapes, averaged probabilities
    other = tiny_model("MODEL.QANET.TEST_BOXES", "gt")
    with torch.no_grad():
        for p in other.parser.parsing_branch.parameters():
            p.add_(torch.randn_like(p))
    torch.save({"model": other.state_dict()}, tmp_path / "other.pth")
    ens = build_test_time_model(tiny_cfg("TEST.ENSEMBLE.WEIGHTS", [str(tmp_path / "other.pth")]), model)
    out = ens.inference(inputs, do_postprocess=False)[0]
    other.eval()
    alone = other.inference(inputs, do_postprocess=False)[0]
    plain = model.inference(inputs, do_postprocess=False)[0]
    torch.testing.assert_close(
        out["instances"].parsing_probs,
        (plain["instances"].parsing_probs + alone["instances"].parsing_probs) / 2, atol=1e-5, rtol=0)
    # a checkpoint of another architecture is refused clearly
    torch.save({"model": {"parser.foo": torch.zeros(1)}}, tmp_path / "bad.pth")
    with pytest.raises(RuntimeError, match="do not match"):
        build_test_time_model(tiny_cfg("TEST.ENSEMBLE.WEIGHTS", [str(tmp_path / "bad.pth")]), model)


def test_detector_input_scale():
    model = tiny_model("MODEL.FCOS.INPUT_SCALE", "0.5", "MODEL.FCOS.SCORE_THRESH_TEST", "0.0")
    batch = [face_input([[20, 10, 60, 60]], height=96, width=130)]
    small = model.detector_inputs(batch)[0]
    assert small["image"].shape == (3, 48, 65) and small["instances"].image_size == (48, 65)
    torch.testing.assert_close(small["instances"].gt_boxes.tensor, torch.tensor([[10.0, 5.0, 30.0, 30.0]]))
    model.train()
    with EventStorage():
        losses = model(batch)
    assert "loss_fcos_cls" in losses and "loss_parsing_ce" in losses
    model.eval()
    out = model([face_input([[20, 10, 60, 60]], height=96, width=130, scale=2.0)])[0]
    boxes = out["instances"].pred_boxes.tensor
    assert len(boxes) > 0 and out["labels"].shape == (192, 260)
    # detections come back in the full-size frames: they span the whole original image
    assert float(boxes[:, 2].max()) > 200 and float(boxes[:, 3].max()) > 150


def test_detector_test_scale_applies_in_eval_mode_only():
    model = tiny_model("MODEL.FCOS.INPUT_SCALE", "0.5", "MODEL.FCOS.INPUT_SCALE_TEST", "0.25", "MODEL.FCOS.SCORE_THRESH_TEST", "0.0")
    batch = [face_input([[20, 10, 60, 60]], height=96, width=130)]
    model.train()
    assert model.detector_inputs(batch)[0]["image"].shape == (3, 48, 65)
    model.eval()
    assert model.detector_inputs(batch, output_frame=True)[0]["image"].shape == (3, 24, 32)
    seen = []
    model.detector.register_forward_pre_hook(lambda m, args: seen.append(tuple(args[0][0]["image"].shape)))
    model([face_input([[20, 10, 60, 60]], height=96, width=130)])
    assert seen == [(3, 24, 32)]
    # 0: the training scale
    assert tiny_model("MODEL.FCOS.INPUT_SCALE", "0.5").eval().detector_inputs(batch, output_frame=True)[0]["image"].shape == (3, 48, 65)


def test_channels_last_gives_the_same_losses_gradients_and_outputs():
    # in float64, so that equal maths shows as equal numbers (float32 summation-order noise
    # compounds through BN on tiny batches)
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        plain = tiny_model("MODEL.QANET.AUG.ENABLED", "False").double()
        fast = tiny_model("MODEL.QANET.AUG.ENABLED", "False", "MODEL.CHANNELS_LAST", "True").double()
        fast.load_state_dict(plain.state_dict())
        convs = [p for p in fast.parameters() if p.dim() == 4]
        assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
        batch = [face_input([[20, 10, 60, 60], [80, 30, 110, 70]]), face_input([[30, 20, 90, 90]], seed=1)]
        results = []
        for model in (plain, fast):
            model.train()
            torch.manual_seed(3)
            with EventStorage():
                losses = model(batch)
            sum(losses.values()).backward()
            grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
            model.eval()
            with torch.no_grad():
                out = model.inference([face_input([[20, 10, 60, 60]], scale=2.0)], class_scores=True)[0]
            results.append((losses, grads, out))
    finally:
        torch.set_default_dtype(default_dtype)
    (l0, g0, o0), (l1, g1, o1) = results
    assert l0.keys() == l1.keys() and g0.keys() == g1.keys() and len(g0) > 100
    for k in l0:
        torch.testing.assert_close(l1[k], l0[k], atol=1e-10, rtol=1e-9)
    for k in g0:
        assert float((g1[k] - g0[k]).norm()) <= 1e-6 * float(g0[k].norm()) + 1e-12, k
    torch.testing.assert_close(o1["sem_seg"], o0["sem_seg"], atol=1e-9, rtol=1e-8)
    assert torch.equal(o1["labels"], o0["labels"])


class PixelParser(nn.Module):
    """Stands in for the parser: per-pixel logits from the crop's first channel (no spatial
    mixing), so a mirrored crop gives mirrored logits; IoU the crop mean."""

    def __init__(self):
        super().__init__()
        self.weights = torch.linspace(-2.0, 2.0, C).view(1, C, 1, 1)
        self.flip_permutation = ConstantParser().flip_permutation

    def forward(self, crops):
        return crops[:, :1] * self.weights, crops.mean(dim=(1, 2, 3))

    def flip_back(self, probs):
        return probs.flip(-1)[:, self.flip_permutation]


def test_flip_view_parses_the_mirrored_crop_and_mirrors_it_back():
    model = tiny_model()
    crops = torch.rand(2, 3, 16, 12, generator=torch.Generator().manual_seed(0))  # not symmetric
    parser = PixelParser()
    plain = parser(crops)[0].softmax(1)
    probs, _ = model.parse_crops(crops, [False, True], [parser])
    # the flipped view of a per-pixel parser is the plain view with left and right swapped
    torch.testing.assert_close(probs, (plain + plain[:, parser.flip_permutation]) / 2)
