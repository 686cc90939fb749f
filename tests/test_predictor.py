"""FaceParsingPredictor on the instant-test config (random weights: pipeline behaviour, not accuracy)."""
from pathlib import Path

import numpy as np
import pytest
import torch

import qanet_d2
from detectron2.structures import Instances
from qanet_d2 import get_qanet_cfg
from qanet_d2.data.synthetic import SyntheticVideo
from qanet_d2.predictor import FaceParsingPredictor, to_bgr_uint8
from qanet_d2.video import TemporalSmoother, VideoPredictor

from conftest import load_script

REPO = Path(__file__).resolve().parents[1]
INSTANT = REPO / "configs" / "quick_schedules" / "qanet_fcos_synth_instant_test.yaml"

# A random detector scores everything near its prior: threshold 0 keeps its top boxes as faces,
# and every face is painted whatever its (random) quality score.
RANDOM_MODEL_OPTS = [
    "MODEL.FCOS.SCORE_THRESH_TEST", 0.0,
    "MODEL.QANET.INFERENCE.BOX_SCORE_THRESH", 0.0,
    "MODEL.QANET.INFERENCE.MAX_PARSED_FACES", 4,
    "MODEL.DEVICE", "cpu",
]


def instant_cfg(*opts):
    cfg = get_qanet_cfg()
    cfg.merge_from_file(str(INSTANT))
    cfg.merge_from_list(RANDOM_MODEL_OPTS + list(opts))
    return cfg


@pytest.fixture(scope="module")
def predictor():
    torch.manual_seed(0)
    return FaceParsingPredictor(instant_cfg())


@pytest.fixture(scope="module")
def frames():
    video = SyntheticVideo((7, 1), 200, 150, 4)
    return [video.render(t).image for t in range(4)]


def test_exported_from_package():
    assert qanet_d2.FaceParsingPredictor is FaceParsingPredictor


def test_outputs(predictor, frames):
    image = frames[0]
    out = predictor(image, return_scores=True)
    h, w = image.shape[:2]
    labels, sem_seg, inst = out["labels"], out["sem_seg"], out["instances"]
    assert labels.shape == (h, w) and labels.dtype == np.uint8
    assert sem_seg.shape == (predictor.num_classes, h, w)
    assert np.array_equal(labels, sem_seg.argmax(0).numpy())
    assert labels.max() < predictor.num_classes
    n = len(inst)
    assert 1 <= n <= 4
    assert out["boxes"].shape == (n, 4) and out["scores"].shape == (n,)
    assert np.all(np.diff(out["scores"]) <= 0)  # best first
    assert np.all(out["boxes"][:, 0::2] <= w) and np.all(out["boxes"][:, 1::2] <= h) and np.all(out["boxes"] >= 0)
    assert inst.image_size == (h, w)
    assert (labels != 0).any() and out["painted"].all()  # all faces are painted (threshold 0)
    # each face's own parsing: the best face wins overlaps, so its foreground is in the label map
    faces = out["face_labels"]
    assert len(faces) == n
    x0, y0, x1, y1 = faces[0]["window"]
    best = faces[0]["labels"]
    assert best.shape == (y1 - y0, x1 - x0)
    fg = best != 0
    assert np.array_equal(labels[y0:y1, x0:x1][fg], best[fg])


def test_one_painting_path(predictor, frames):
    """The label map is the same whether class scores are asked for or not, whether painted in
    small tiles or not, and whether the model paints or the predictor paints its per-face results."""
    image = frames[1]
    full = predictor(image)
    assert "sem_seg" not in full
    scored = predictor(image, return_scores=True)
    assert np.array_equal(scored["labels"], full["labels"])
    assert np.array_equal(scored["sem_seg"].argmax(0).numpy(), full["labels"])
    torch.manual_seed(0)
    tiled = FaceParsingPredictor(instant_cfg("MODEL.QANET.INFERENCE.PASTE_TILE", 16))
    assert np.array_equal(tiled(image)["labels"], full["labels"])
    faces = predictor.run_model(image)
    assert faces.image_size == image.shape[:2] and not faces.has("scores")  # scored by postprocess
    painted = predictor.postprocess(faces)
    assert np.array_equal(painted["labels"], full["labels"])
    np.testing.assert_allclose(painted["scores"], full["scores"], rtol=1e-5)


def test_batch_equals_single_calls(predictor, frames):
    batch = predictor.predict_batch(frames[:3], batch_size=2)
    assert len(batch) == 3
    for image, result in zip(frames[:3], batch):
        single = predictor(image)
        assert np.array_equal(result["labels"], single["labels"])
        np.testing.assert_allclose(result["scores"], single["scores"], rtol=1e-4, atol=1e-6)


def test_input_conversions(predictor, frames):
    bgr = frames[0]
    ref = predictor(bgr)["labels"]
    # 16-bit and BGRA versions of the same picture parse identically
    assert np.array_equal(predictor(bgr.astype(np.uint16) * 257)["labels"], ref)
    bgra = np.concatenate([bgr, np.full(bgr.shape[:2] + (1,), 128, np.uint8)], axis=2)
    assert np.array_equal(predictor(bgra)["labels"], ref)
    gray = bgr.mean(axis=2).astype(np.uint8)
    out = predictor(gray)
    assert out["labels"].shape == gray.shape
    assert np.array_equal(to_bgr_uint8(gray), np.repeat(gray[:, :, None], 3, axis=2))
    assert np.array_equal(to_bgr_uint8(bgr[:, :, ::-1], channel_order="RGB"), bgr)
    assert to_bgr_uint8(np.ones((4, 5), np.float32)).max() == 1  # floats are 0..255 intensities
    with pytest.raises(ValueError):
        to_bgr_uint8(np.zeros((4, 5, 5), np.uint8))


def test_video_predictor_window_one_equals_predictor(predictor, frames):
    video = VideoPredictor(predictor, window=1)
    for image in frames[:2]:
        out = video(image)
        assert np.array_equal(out["labels"], predictor(image)["labels"])
        assert len(out["instances"].track_ids) == len(out["instances"])


def test_video_predictor_smooths_a_sequence(predictor, frames):
    video = VideoPredictor(predictor, window=3)
    for image in frames:
        out = video(image)
        assert out["labels"].shape == image.shape[:2]
        assert np.all(np.diff(out["scores"]) <= 0)
    # a still video: the same faces every frame, tracks continue, labels are the predictor's
    video.reset()
    still = [video(frames[0]) for _ in range(3)]
    ids = [sorted(o["instances"].track_ids.tolist()) for o in still]
    assert ids[0] == ids[1] == ids[2]
    single = predictor(frames[0])["labels"]
    for out in still:
        assert np.array_equal(out["labels"], single)


def test_what_gets_painted_is_the_smoothers_output(predictor, frames):
    """Two frames, the same two boxes: the second frame's label map is painted from the smoother's
    probabilities and scores (0.3 * first + 0.7 * second frame), not from the frame's own."""
    boxes = np.array([[20.0, 30.0, 80.0, 110.0], [120.0, 20.0, 170.0, 90.0]], np.float32)
    video = VideoPredictor(predictor, window=2, current_weight=0.7, align="box")
    raw = [predictor.run_model(image, boxes) for image in frames[:2]]
    video.process(raw[0])
    out = video.process(raw[1])
    # the smoother's output, computed independently, painted by the post-processor
    post = predictor.postprocessor
    smoother = TemporalSmoother(window=2, current_weight=0.7, align="box")
    for faces in raw:
        faces = post.score(Instances(faces.image_size, **faces.get_fields()))
        expected = smoother(faces.pred_boxes.tensor, faces.parsing_probs, faces.crop_affines,
                            torch.stack([faces.scores, faces.box_scores], 1))
    faces.parsing_probs = expected["probs"]
    faces.scores, faces.box_scores = expected["scores"][:, 0], expected["scores"][:, 1]
    assert np.array_equal(out["labels"], post.paint(faces)[0].numpy())
    np.testing.assert_allclose(out["scores"], faces.scores.sort(descending=True).values.numpy(), rtol=1e-6)
    # ... which differs from painting the second frame alone
    assert not np.array_equal(out["labels"], predictor.postprocess(predictor.run_model(frames[1], boxes))["labels"])


def test_benchmark_tool_reports_every_stage(capsys):
    """tools/benchmark.py on the instant model: every stage timed, N faces parsed per row."""
    tool = load_script("tools/benchmark.py", "qanet_benchmark_tool")
    image, boxes = tool.grid_image(4, 320, 240)
    assert image.shape == (240, 320, 3) and boxes.shape == (4, 4)
    assert np.all(boxes[:, 2] > boxes[:, 0]) and np.all(boxes[:, 3] > boxes[:, 1])
    results = tool.main(["--config-file", str(INSTANT), "--faces", "1", "4", "--repeats", "1", "--warmup", "0", "--size", "320", "240"])
    rows = results["batched"]
    assert [r["faces"] for r in rows] == [1, 4]
    for r in rows:
        assert all(r[f"{s}_ms"] > 0 for s in tool.STAGES)
        assert r["total_ms"] == pytest.approx(sum(r[f"{s}_ms"] for s in tool.STAGES))
        assert r["faces_per_s"] == pytest.approx(1000 * r["faces"] / r["total_ms"])
        assert r["peak_rss_mb"] > 100
    table = capsys.readouterr().out
    assert "| faces/image | resize ms | detector ms | crop ms | parser ms | rescale ms | score ms | paint ms | face_labels ms |" in table


def test_given_boxes_and_parser_only_model(predictor, frames):
    image = frames[0]
    boxes = np.array([[20.0, 30.0, 80.0, 110.0], [120.0, 20.0, 170.0, 90.0]], np.float32)
    out = predictor(image, boxes=boxes)
    assert len(out["scores"]) == 2
    assert torch.allclose(out["instances"].box_scores, torch.ones(2))
    order = np.argsort(out["boxes"][:, 0])
    np.testing.assert_allclose(out["boxes"][order], boxes, atol=1e-3)

    torch.manual_seed(0)
    parser_only = FaceParsingPredictor(_parser_only_cfg())
    with pytest.raises(ValueError, match="pass the face boxes"):
        parser_only(image)
    out = parser_only(image, boxes=boxes[:1])
    assert len(out["scores"]) == 1 and out["labels"].shape == image.shape[:2]


def _parser_only_cfg():
    cfg = get_qanet_cfg()
    cfg.merge_from_file(str(REPO / "configs" / "quick_schedules" / "qanet_parser_synth_instant_test.yaml"))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.QANET.INFERENCE.BOX_SCORE_THRESH", 0.0])
    return cfg


def test_predictor_uses_the_flip_test_like_evaluation(frames):
    from qanet_d2.modeling import QANetFaceParserWithTTA

    torch.manual_seed(0)
    plain = FaceParsingPredictor(instant_cfg())
    torch.manual_seed(0)
    flip = FaceParsingPredictor(instant_cfg("TEST.AUG.ENABLED", True, "TEST.AUG.FLIP", True))
    assert plain.test_model is plain.model
    assert isinstance(flip.test_model, QANetFaceParserWithTTA) and flip.test_model.views == [(1.0, False), (1.0, True)]
    a = plain(frames[0], return_scores=True)
    b = flip(frames[0], return_scores=True)
    # same faces, scores averaged with the mirrored view: exactly what the wrapper returns
    np.testing.assert_array_equal(a["boxes"], b["boxes"])
    assert not torch.allclose(a["sem_seg"], b["sem_seg"])
    h, w = frames[0].shape[:2]
    inputs = [{"image": torch.as_tensor(np.ascontiguousarray(
        flip.aug.get_transform(frames[0]).apply_image(frames[0]).transpose(2, 0, 1))), "height": h, "width": w,
        "original_image": torch.as_tensor(np.ascontiguousarray(frames[0].transpose(2, 0, 1)))}]
    with torch.no_grad():
        expected = flip.test_model.inference(inputs, class_scores=True)[0]["sem_seg"]
    torch.testing.assert_close(b["sem_seg"], expected)


def test_class_names_are_the_models_label_set():
    """The predictor names classes after the model's label set: the config's (no dataset
    needed), or, when the config names none, the one its datasets give (as in training)."""
    from qanet_d2.structures.label_sets import LABEL_SETS

    torch.manual_seed(0)
    p = FaceParsingPredictor(instant_cfg("DATASETS.TEST", (), "DATASETS.TRAIN", (), "MODEL.QANET.NUM_CLASSES", 6,
                                         "MODEL.QANET.LABEL_SET.NAME", "fasseg"))
    assert p.label_set.name == "fasseg" and p.class_names == list(LABEL_SETS["fasseg"].classes)
    p = FaceParsingPredictor(instant_cfg())
    assert p.label_set.name == "synthetic" and p.class_names == list(LABEL_SETS["synthetic"].classes)
