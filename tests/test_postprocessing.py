"""FacePostProcessor alone, built from the config: paint order, pixel-score region, paste-back
(the windowed label painter against a full-image reference and against the class-score path),
tiles, multi-view averaging and rescaling."""
from pathlib import Path

import pytest
import torch

import qanet_d2  # noqa: F401
from detectron2.structures import Boxes, Instances
from qanet_d2 import get_qanet_cfg
from qanet_d2.layers.crops import boxes_to_affines
from qanet_d2.modeling import FacePostProcessor

from paste_reference import reference_labels as _reference_labels

REPO = Path(__file__).resolve().parents[1]
INSTANT = REPO / "configs" / "quick_schedules" / "qanet_fcos_synth_instant_test.yaml"


def post(*opts) -> FacePostProcessor:
    cfg = get_qanet_cfg()
    cfg.merge_from_file(str(INSTANT))
    cfg.merge_from_list(["MODEL.QANET.NUM_CLASSES", 3, *opts])
    return FacePostProcessor(cfg)


def translation(x, y, views=1):
    """``V x 2 x 3`` affines mapping crop pixels 1:1 onto the image, crop origin at (x, y)."""
    return torch.tensor([[1.0, 0.0, x], [0.0, 1.0, y]]).expand(views, 2, 3).clone()


def constant_probs(values, h=8, w=6):
    return torch.tensor(values, dtype=torch.float32)[:, None, None].expand(len(values), h, w).clone()


def faces(image_size, probs, affines, boxes, box_scores, iou_scores=None, scores=None):
    n = len(probs)
    inst = Instances(image_size)
    inst.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
    inst.box_scores = torch.tensor(box_scores, dtype=torch.float32)
    inst.iou_scores = torch.ones(n) if iou_scores is None else torch.tensor(iou_scores, dtype=torch.float32)
    inst.parsing_probs = torch.stack(probs)
    inst.crop_affines = torch.stack(affines)
    if scores is not None:
        inst.scores = torch.tensor(scores, dtype=torch.float32)
    return inst


def test_built_from_config():
    p = post("MODEL.QANET.INFERENCE.PAINT_ORDER", "box", "MODEL.QANET.INFERENCE.PIXEL_SCORE_REGION", "image",
             "MODEL.QANET.INFERENCE.BOX_SCORE_THRESH", 0.4, "MODEL.QANET.INFERENCE.PASTE_TILE", 64)
    assert (p.paint_order, p.pixel_score_region, p.box_score_thresh, p.quality_score_thresh, p.paste_tile, p.num_classes) == (
        "box", "image", 0.4, 0.0, 64, 3)
    assert post().paint_order == "box" and post().pixel_score_region == "image"  # the official QANet code's, by default
    with pytest.raises(ValueError, match="PAINT_ORDER"):
        post("MODEL.QANET.INFERENCE.PAINT_ORDER", "score")
    with pytest.raises(ValueError, match="PIXEL_SCORE_REGION"):
        post("MODEL.QANET.INFERENCE.PIXEL_SCORE_REGION", "box")  # not a region name


def overlapping_faces():
    """Face A (all class 1) on x in [2, 8), y in [2, 10); face B (all class 2) on x in [5, 11),
    y in [4, 12); they overlap on x in [5, 8), y in [4, 10). A: quality 0.9, box score 0.4;
    B: quality 0.5, box score 0.8."""
    a = constant_probs([0.1, 0.8, 0.1])[None]
    b = constant_probs([0.1, 0.1, 0.8])[None]
    return faces((14, 16), [a, b], [translation(2, 2), translation(5, 4)], [[2, 2, 8, 10], [5, 4, 11, 12]],
                 box_scores=[0.4, 0.8], scores=[0.9, 0.5])


def expected_map(first, second, paint_a=True, paint_b=True):
    labels = torch.zeros(14, 16, dtype=torch.uint8)
    regions = {"a": ((slice(2, 10), slice(2, 8)), 1, paint_a), "b": ((slice(4, 12), slice(5, 11)), 2, paint_b)}
    for name in (first, second):
        sl, value, painted = regions[name]
        if painted:
            labels[sl] = value
    return labels


def test_paint_order_quality_vs_box_on_overlapping_faces():
    f = overlapping_faces()
    # quality order: B (0.5) then A (0.9): A wins the overlap
    labels, _ = post("MODEL.QANET.INFERENCE.PAINT_ORDER", "quality", "MODEL.QANET.INFERENCE.QUALITY_SCORE_THRESH", 0.0).paint(f)
    assert torch.equal(labels, expected_map("b", "a"))
    assert labels[6, 6] == 1
    # box order: A (0.4) then B (0.8): B wins the overlap
    labels, _ = post("MODEL.QANET.INFERENCE.PAINT_ORDER", "box", "MODEL.QANET.INFERENCE.BOX_SCORE_THRESH", 0.0).paint(f)
    assert torch.equal(labels, expected_map("a", "b"))
    assert labels[6, 6] == 2
    # each threshold applies to the score it names, whatever the paint order: 0.45 drops B by
    # quality, A by box score
    labels, _ = post("MODEL.QANET.INFERENCE.PAINT_ORDER", "quality", "MODEL.QANET.INFERENCE.QUALITY_SCORE_THRESH", 0.45).paint(f)
    assert torch.equal(labels, expected_map("b", "a"))
    labels, _ = post("MODEL.QANET.INFERENCE.PAINT_ORDER", "quality", "MODEL.QANET.INFERENCE.QUALITY_SCORE_THRESH", 0.6).paint(f)
    assert torch.equal(labels, expected_map("b", "a", paint_b=False))
    labels, _ = post("MODEL.QANET.INFERENCE.PAINT_ORDER", "box", "MODEL.QANET.INFERENCE.BOX_SCORE_THRESH", 0.45).paint(f)
    assert torch.equal(labels, expected_map("a", "b", paint_a=False))
    labels, _ = post("MODEL.QANET.INFERENCE.PAINT_ORDER", "box", "MODEL.QANET.INFERENCE.BOX_SCORE_THRESH", 0.0,
                     "MODEL.QANET.INFERENCE.QUALITY_SCORE_THRESH", 0.6).paint(f)
    assert torch.equal(labels, expected_map("a", "b", paint_b=False))
    labels, _ = post("MODEL.QANET.INFERENCE.PAINT_ORDER", "quality", "MODEL.QANET.INFERENCE.BOX_SCORE_THRESH", 0.45).paint(f)
    assert torch.equal(labels, expected_map("b", "a", paint_a=False))
    # class scores: background one-hot where nothing is painted, the winner's probabilities elsewhere
    labels, sem_seg = post("MODEL.QANET.INFERENCE.PAINT_ORDER", "quality", "MODEL.QANET.INFERENCE.QUALITY_SCORE_THRESH", 0.0).paint(f, class_scores=True)
    torch.testing.assert_close(sem_seg[:, 6, 6], torch.tensor([0.1, 0.8, 0.1]))
    torch.testing.assert_close(sem_seg[:, 0, 0], torch.tensor([1.0, 0.0, 0.0]))
    assert torch.equal(sem_seg.argmax(0).to(torch.uint8), labels)


def test_pixel_score_image_vs_crop_on_a_crop_over_the_image_border():
    """One 8 x 6 crop mapped 1:1 onto x in [-3, 3), y in [2, 10): its three left columns are
    outside the image. Max probability 0.9 in crop columns 0..2, 0.5 in columns 3..4, 0.4 in
    column 5, and 0.95 in row 0 of columns 3..5.
    "crop": mean over the whole crop = (3 * 8 * 0.9 + 2 * 7 * 0.5 + 7 * 0.4 + 3 * 0.95) / 48.
    "image": image pixels whose centres lie inside the box [-2, 3, 2, 9]: x in {0, 1} (x = -2, -1
    are outside the image), y in {3..8}: crop columns 3, 4, rows 1..6: 0.5. (The crop's part of
    the image, columns 3..5 and rows 0..7, would give another value.)
    "pasted" (the official QANet code's): that part of the crop, all of its image pixels:
    (3 * 0.95 + 2 * 7 * 0.5 + 7 * 0.4) / 24."""
    probs = constant_probs([0.05, 0.9, 0.05])
    probs[:, :, 3:5] = torch.tensor([0.25, 0.25, 0.5])[:, None, None]
    probs[:, :, 5] = torch.tensor([0.3, 0.3, 0.4])[:, None]
    probs[:, 0, 3:] = torch.tensor([0.025, 0.025, 0.95])[:, None]
    f = faces((12, 10), [probs[None]], [translation(-3, 2)], [[-2, 3, 2, 9]], box_scores=[0.64], iou_scores=[0.81])
    crop = post("MODEL.QANET.INFERENCE.PIXEL_SCORE_REGION", "crop").score(Instances(f.image_size, **f.get_fields()))
    image = post("MODEL.QANET.INFERENCE.PIXEL_SCORE_REGION", "image").score(Instances(f.image_size, **f.get_fields()))
    pasted = post("MODEL.QANET.INFERENCE.PIXEL_SCORE_REGION", "pasted").score(Instances(f.image_size, **f.get_fields()))
    assert float(pasted.pixel_scores[0]) == pytest.approx((3 * 0.95 + 2 * 7 * 0.5 + 7 * 0.4) / 24)
    crop_value = (3 * 8 * 0.9 + 2 * 7 * 0.5 + 7 * 0.4 + 3 * 0.95) / 48
    assert float(crop.pixel_scores[0]) == pytest.approx(crop_value)
    assert float(image.pixel_scores[0]) == pytest.approx(0.5)
    # quality = (box * iou^0.5 * pixel^3) ** (1 / 4.5)
    assert float(image.scores[0]) == pytest.approx((0.64 * 0.9 * 0.5**3) ** (1 / 4.5), rel=1e-5)
    assert float(crop.scores[0]) == pytest.approx((0.64 * 0.9 * crop_value**3) ** (1 / 4.5), rel=1e-5)
    # pixels under the threshold do not count: with 0.6, none of the box pixels -> 0
    zero = post("MODEL.QANET.INFERENCE.PIXEL_SCORE_REGION", "image", "MODEL.QANET.INFERENCE.PIXEL_SCORE_THRESH", 0.6)
    assert float(zero.score(Instances(f.image_size, **f.get_fields())).pixel_scores[0]) == 0.0


def test_score_reuses_the_faces_already_pasted():
    """score() pastes only the faces missing from ``pasted`` (those given with their maxima are
    used as they are), and the result equals a fresh score."""
    f = random_faces(0, views=2, height=40, width=50)
    p = post("MODEL.QANET.INFERENCE.PIXEL_SCORE_REGION", "image")
    fresh = p.score(Instances(f.image_size, **f.get_fields()))
    pasted = p.paste(f, [0, 2], with_top=True)
    calls = []
    original = p.paste
    p.paste = lambda faces, indices, **kw: calls.append(list(indices)) or original(faces, indices, **kw)
    again = p.score(Instances(f.image_size, **f.get_fields()), pasted=pasted)
    assert calls == [[i for i in range(len(f)) if i not in (0, 2)]]
    assert sorted(pasted) == list(range(len(f)))
    torch.testing.assert_close(again.pixel_scores, fresh.pixel_scores)
    # the reused pastes are what the score is computed from: a changed one changes the score
    pasted[0].top.mul_(0.5)
    halved = p.score(Instances(f.image_size, **f.get_fields()), pasted=pasted)
    assert float(halved.pixel_scores[0]) < float(fresh.pixel_scores[0])
    torch.testing.assert_close(halved.pixel_scores[1:], fresh.pixel_scores[1:])


def reference_labels(f: Instances, order):
    return _reference_labels(f.parsing_probs, f.crop_affines, f.image_size, order)


def random_faces(seed, views=2, rotated=False, height=70, width=90):
    """Faces with smooth random parsings (parts with boundaries) and 1 or 2 box-scale views."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(4, 2, generator=g) * torch.tensor([width, height])
    sizes = 10 + torch.rand(4, 1, generator=g) * 30
    boxes = torch.cat([centres - sizes / 2, centres + sizes / 2], 1)
    probs, affines = [], []
    for b in boxes:
        logits = torch.nn.functional.interpolate(torch.randn(views, 3, 4, 3, generator=g) * 4, size=(16, 12), mode="bilinear")
        probs.append(logits.softmax(1))
        rotation = torch.tensor([25.0] * views) if rotated else None
        regions = torch.stack([b * s + (1 - s) * torch.cat([(b[:2] + b[2:]) / 2] * 2) for s in (1.0, 1.3)[:views]])
        affines.append(boxes_to_affines(regions, (16, 12), rotation=rotation)[0])
    return faces((height, width), probs, affines, boxes.tolist(), box_scores=torch.rand(4, generator=g).tolist(),
                 scores=torch.rand(4, generator=g).tolist())


@pytest.mark.parametrize("views, rotated", [(1, False), (2, False), (2, True)])
def test_label_map_equals_the_full_image_reference_and_the_class_scores(views, rotated):
    p = post("MODEL.QANET.INFERENCE.BOX_SCORE_THRESH", 0.0)
    for seed in range(3):
        f = random_faces(seed, views, rotated)
        expected = reference_labels(f, p.order(f))
        assert (expected != 0).float().mean() > 0.1
        labels, _ = p.paint(f)
        assert torch.equal(labels, expected)
        # small tiles change nothing
        assert torch.equal(post("MODEL.QANET.INFERENCE.BOX_SCORE_THRESH", 0.0, "MODEL.QANET.INFERENCE.PASTE_TILE", 16).paint(f)[0], expected)
        # the class-score path paints the same labels, and its argmax is the label map
        labels_s, sem_seg = p.paint(f, class_scores=True)
        assert torch.equal(labels_s, expected)
        assert torch.equal(sem_seg.argmax(0).to(torch.uint8), expected)


def test_paste_face_windows_and_outside():
    f = random_faces(5, views=2)
    face = post("MODEL.QANET.INFERENCE.PASTE_TILE", 16).paste(f, [0], with_top=True)[0]
    x0, y0, x1, y1 = face.window
    assert face.labels.shape == (y1 - y0, x1 - x0) == face.inside.shape == face.top.shape
    assert (face.labels[~face.inside] == 0).all() and (face.top[~face.inside] == 0).all()
    assert (face.top[face.inside] >= 1 / 3 - 1e-6).all()
    # a face entirely outside the image has an empty window and paints nothing
    out = faces((20, 20), [f.parsing_probs[0]], [f.crop_affines[0] + torch.tensor([[0.0, 0.0, 500.0], [0.0, 0.0, 0.0]])],
                [[500, 0, 520, 20]], box_scores=[1.0], scores=[1.0])
    face = post().paste(out, [0])[0]
    assert face.labels.numel() == 0
    assert (post("MODEL.QANET.INFERENCE.BOX_SCORE_THRESH", 0.0).paint(out)[0] == 0).all()


def test_call_rescales_scores_sorts_and_paints():
    f = random_faces(1, views=1, height=35, width=45)
    f.remove("scores")
    f.pred_keypoints = torch.rand(4, 5, 3) * 30
    p = post("MODEL.QANET.INFERENCE.BOX_SCORE_THRESH", 0.3)
    out = p(Instances(f.image_size, **f.get_fields()), (70, 135), class_scores=True)  # x3 wide, x2 high
    inst = out["instances"]
    assert inst.image_size == (70, 135) and out["labels"].shape == (70, 135) and out["sem_seg"].shape == (3, 70, 135)
    assert len(inst) == 4 and (inst.scores[:-1] >= inst.scores[1:]).all()
    assert not inst.has("parsing_probs") and not inst.has("crop_affines")  # consumers use the stages' results
    # boxes, affines and landmarks scaled (x by 3, y by 2), boxes clipped to the image
    scale = torch.tensor([3.0, 2.0])
    scaled = f.pred_boxes.tensor * scale.repeat(2)
    scaled[:, 0::2] = scaled[:, 0::2].clamp(0, 135)
    scaled[:, 1::2] = scaled[:, 1::2].clamp(0, 70)
    order = [int(torch.nonzero((f.box_scores == s)).item()) for s in inst.box_scores]
    torch.testing.assert_close(inst.pred_boxes.tensor, scaled[order])
    torch.testing.assert_close(inst.pred_keypoints[..., :2], f.pred_keypoints[order][..., :2] * scale)
    rescaled = p.rescale(f, (70, 135))
    torch.testing.assert_close(rescaled.crop_affines, f.crop_affines * scale[:, None])
    scored = p.score(rescaled)
    assert torch.equal(out["labels"], reference_labels(scored, p.order(scored)))
    assert torch.equal(out["sem_seg"].argmax(0).to(torch.uint8), out["labels"])
    # painted: the faces whose box score passes the threshold, in the instances' order
    assert out["painted"].tolist() == (inst.box_scores >= 0.3).tolist() and 0 < int(out["painted"].sum()) < 4
    # face_labels: each face's own parsing, in the instances' order, at its place in the image
    for k, face in enumerate(out["face_labels"]):
        i = order[k]
        alone = reference_labels(scored, [i])
        x0, y0, x1, y1 = face["window"]
        assert torch.equal(face["labels"], alone[y0:y1, x0:x1]) and alone.sum() == face["labels"].sum()


def test_smooth_hook_runs_between_scoring_and_painting():
    """The hook sees the scored faces; what it returns is what is painted and returned."""
    f = random_faces(2, views=1, height=35, width=45)
    p = post("MODEL.QANET.INFERENCE.BOX_SCORE_THRESH", 0.0)
    seen = []

    def smooth(faces):
        seen.append(faces.scores.clone())
        out = Instances(faces.image_size, **faces.get_fields())
        out.parsing_probs = torch.flip(faces.parsing_probs, dims=[2])  # class 0 <-> class 2
        out.box_scores = faces.box_scores.flip(0)
        return out

    out = p(Instances(f.image_size, **f.get_fields()), smooth=smooth)
    scored = p.score(Instances(f.image_size, **f.get_fields()))
    torch.testing.assert_close(seen[0], scored.scores)
    changed = Instances(scored.image_size, **scored.get_fields())
    changed.parsing_probs = torch.flip(scored.parsing_probs, dims=[2])
    changed.box_scores = scored.box_scores.flip(0)
    assert torch.equal(out["labels"], reference_labels(changed, p.order(changed)))
    assert not torch.equal(out["labels"], p(Instances(f.image_size, **f.get_fields()))["labels"])


@pytest.mark.parametrize("shape, dim", [((17, 128, 96), 0), ((2, 1, 5, 70, 90), 2), ((300, 17), 1)])
def test_channel_max_is_torch_max_with_first_maximum_on_ties(shape, dim):
    from qanet_d2.modeling.postprocessing import channel_max

    g = torch.Generator().manual_seed(0)
    probs = torch.randint(0, 4, shape, generator=g).float() / 4  # many exact ties
    top, labels = channel_max(probs, dim)
    ref_top, ref_labels = probs.max(dim=dim)
    assert torch.equal(top, ref_top) and torch.equal(labels, ref_labels)
    assert torch.equal(labels, probs.argmax(dim=dim))
    assert torch.equal(channel_max(probs, dim, label_dtype=torch.uint8)[1], ref_labels.to(torch.uint8))
