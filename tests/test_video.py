"""Temporal smoothing (qanet_d2.video): association, averaging, flicker measure, video parsing."""
import numpy as np
import pytest
import torch

import qanet_d2  # noqa: F401
from qanet_d2.layers.crops import boxes_to_affines, compose_affines, crop_images
from qanet_d2.video import TemporalSmoother, associate_boxes, label_change_rate

from conftest import INSTANT_CONFIG, load_script


def _labels(probs):
    """Argmax labels of ``... x C x h x w`` crop probabilities."""
    return probs.argmax(dim=-3)

C, H, W = 4, 16, 12


def _probs(seed, n=1):
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(n, C, H, W, generator=g) * 3, dim=1)


def _affines(boxes):
    return boxes_to_affines(torch.as_tensor(boxes, dtype=torch.float32), (H, W))[0]


def test_label_change_rate():
    a = np.zeros((4, 5), np.uint8)
    b = a.copy()
    b[0, :2] = 1  # 2 of 20 pixels change
    assert label_change_rate([a, a, a]) == 0.0
    assert label_change_rate([a, b]) == pytest.approx(0.1)
    assert label_change_rate([a, b, a]) == pytest.approx(0.1)
    assert label_change_rate([a]) == 0.0
    c = b.copy()
    c[0, :2] = 255  # ignored pixels do not count
    assert label_change_rate([a, c]) == 0.0
    assert label_change_rate([a, c], ignore_label=None) == pytest.approx(0.1)


def test_associate_boxes_follows_overlap_not_order():
    prev = torch.tensor([[0, 0, 10, 10], [50, 50, 70, 70]], dtype=torch.float32)
    cur = torch.tensor([[52, 51, 72, 71], [200, 200, 210, 210], [1, 0, 11, 10]], dtype=torch.float32)
    assert sorted(associate_boxes(prev, cur, 0.3)) == [(0, 2), (1, 0)]
    assert associate_boxes(prev, cur[:0], 0.3) == []


@pytest.mark.parametrize("align", ["box", "image"])
def test_static_sequence_is_unchanged(align):
    boxes = torch.tensor([[10.0, 10.0, 34.0, 42.0], [60.0, 5.0, 84.0, 37.0]])
    probs, affines = _probs(0, 2), _affines(boxes)
    smoother = TemporalSmoother(window=3, align=align)
    for _ in range(5):
        out = smoother(boxes, probs, affines, torch.tensor([0.9, 0.8]))
        assert torch.allclose(out["probs"], probs, atol=1e-5)
        assert out["track_ids"].tolist() == [0, 1]
        assert torch.allclose(out["scores"], torch.tensor([0.9, 0.8]))
    assert out["track_lengths"].tolist() == [3, 3]  # the window bounds the history


def test_window_one_is_identity():
    boxes = torch.tensor([[10.0, 10.0, 34.0, 42.0]])
    smoother = TemporalSmoother(window=1)
    for seed in range(3):
        probs = _probs(seed)
        assert torch.equal(smoother(boxes, probs, _affines(boxes))["probs"], probs)


@pytest.mark.parametrize("current_weight, bad", [(0.7, 0.48), (None, 0.45)])
def test_occasional_flip_becomes_stable(current_weight, bad):
    """A pixel that is confidently class 1 but every other frame slightly prefers class 2
    flips without smoothing and keeps class 1 with a window of 3."""
    boxes = torch.tensor([[10.0, 10.0, 34.0, 42.0]])
    affines = _affines(boxes)
    good_p = torch.zeros(1, C, H, W)
    good_p[:, 1], good_p[:, 2] = 0.7, 0.3
    bad_p = torch.zeros(1, C, H, W)
    bad_p[:, 1], bad_p[:, 2] = bad, 1.0 - bad
    frames = [good_p if t % 2 == 0 else bad_p for t in range(8)]
    raw = [_labels(p)[0].numpy() for p in frames]
    smoother = TemporalSmoother(window=3, current_weight=current_weight)
    smoothed = [_labels(smoother(boxes, p, affines)["probs"])[0].numpy() for p in frames]
    assert label_change_rate(raw) == 1.0
    assert label_change_rate(smoothed) == 0.0
    assert (smoothed[-1] == 1).all()


def test_scores_count_missed_frames_as_zero():
    """A face that enters keeps its own score in its first frame (a new track is painted at once);
    a face present throughout keeps its mean score; at the start of a video there is no penalty;
    a track missed in a frame counts that frame as 0."""
    steady = torch.tensor([[10.0, 10.0, 34.0, 42.0]])
    blip = torch.tensor([[100.0, 10.0, 124.0, 42.0]])
    smoother = TemporalSmoother(window=3)
    out = smoother(steady, _probs(0), _affines(steady), torch.tensor([0.6]))
    assert out["scores"].tolist() == pytest.approx([0.6])  # first frame: no history, no penalty
    smoother(steady, _probs(0), _affines(steady), torch.tensor([0.8]))
    both = torch.cat([steady, blip])
    out = smoother(both, _probs(0, 2), _affines(both), torch.tensor([0.7, 0.9]))
    assert out["scores"].tolist() == pytest.approx([0.7, 0.9])  # (0.6+0.8+0.7)/3; the new face's own 0.9
    assert out["track_lengths"].tolist() == [3, 1]
    out = smoother(blip, _probs(0), _affines(blip), torch.tensor([0.6]))  # the steady face is missed
    assert out["scores"].tolist() == pytest.approx([0.75])  # (0.9+0.6)/2: two frames since it entered
    out = smoother(steady, _probs(0), _affines(steady), torch.tensor([0.9]))
    assert out["scores"].tolist() == pytest.approx([(0.7 + 0 + 0.9) / 3])  # missed frame counts 0


def test_frames_without_faces_keep_the_tracks_going():
    """A frame where nothing is found (no detection, an empty frame) returns empty outputs of the
    right shapes, and a face found again within the window continues its track."""
    box = torch.tensor([[10.0, 10.0, 34.0, 42.0]])
    none = torch.zeros((0, 4))
    for scores_shape in ((), (2,)):
        smoother = TemporalSmoother(window=3)
        first = smoother(box, _probs(0), _affines(box), torch.full((1,) + scores_shape, 0.6))
        empty = smoother(none, _probs(0, 0), _affines(none), torch.zeros((0,) + scores_shape))
        assert empty["probs"].shape == (0,) + tuple(_probs(0).shape[1:])
        assert empty["scores"].shape == (0,) + scores_shape and empty["track_ids"].shape == (0,)
        again = smoother(box, _probs(0), _affines(box), torch.full((1,) + scores_shape, 0.6))
        assert again["track_ids"].tolist() == first["track_ids"].tolist()
        assert again["track_lengths"].tolist() == [2]  # seen in 2 of the 3 frames
        assert again["scores"].flatten().tolist() == pytest.approx([0.4] * max(1, sum(scores_shape)))  # 1.2 / 3


def test_tracks_follow_faces_and_expire():
    a = torch.tensor([[10.0, 10.0, 34.0, 42.0]])
    b = torch.tensor([[100.0, 10.0, 124.0, 42.0]])
    pa, pb = _probs(1), _probs(2)
    smoother = TemporalSmoother(window=2, current_weight=0.7, align="box")  # mean in crop coordinates
    out = smoother(torch.cat([a, b]), torch.cat([pa, pb]), _affines(torch.cat([a, b])))
    assert out["track_ids"].tolist() == [0, 1]
    # next frame: order swapped, face a moved slightly -> same tracks, averaged with its own past
    a2 = a + 2.0
    pa2 = _probs(3)
    out = smoother(torch.cat([b, a2]), torch.cat([pb, pa2]), _affines(torch.cat([b, a2])))
    assert out["track_ids"].tolist() == [1, 0]
    assert torch.allclose(out["probs"][1], 0.3 * pa[0] + 0.7 * pa2[0], atol=1e-6)
    assert torch.allclose(out["probs"][0], pb[0], atol=1e-6)
    # face b disappears for 2 frames (window 2): its track expires, it returns as a new track
    smoother(a2, pa2, _affines(a2))
    smoother(a2, pa2, _affines(a2))
    out = smoother(torch.cat([a2, b]), torch.cat([pa2, pb]), _affines(torch.cat([a2, b])))
    assert out["track_ids"].tolist() == [0, 2]
    assert out["track_lengths"].tolist() == [2, 1]


def test_a_track_lasts_exactly_its_window_and_follows_the_latest_box():
    """A face missing for ``window - 1`` frames comes back as a new track (its last observation
    left the window); a face moving steadily keeps its track although its oldest box in the window
    no longer overlaps (association uses each track's latest box)."""
    box = torch.tensor([[10.0, 10.0, 20.0, 30.0]])
    none = torch.zeros((0, 4))
    smoother = TemporalSmoother(window=3)
    first = smoother(box, _probs(0), _affines(box))["track_ids"].tolist()
    smoother(none, _probs(0, 0), _affines(none))
    smoother(none, _probs(0, 0), _affines(none))
    assert smoother(box, _probs(0), _affines(box))["track_ids"].tolist() != first
    # 3 px a frame on a 10 px wide box: IoU 0.54 with the last frame, 0.25 with the one before
    smoother = TemporalSmoother(window=5)
    ids = [smoother(b, _probs(i), _affines(b))["track_ids"].item()
           for i, b in enumerate(box + torch.tensor([3.0 * k, 0.0, 3.0 * k, 0.0]) for k in range(5))]
    assert ids == [ids[0]] * 5


def test_image_alignment_undoes_box_jitter():
    """A still face seen through jittering boxes: averaging after warping into the current crop
    (align="image") reproduces the current crop; averaging in crop coordinates blurs it."""
    img_h, img_w = 80, 80
    yy, xx = torch.meshgrid(torch.arange(img_h), torch.arange(img_w), indexing="ij")
    label_map = ((xx // 6 + yy // 6) % C).long()  # a checkerboard of classes, fixed in the image
    image_probs = torch.nn.functional.one_hot(label_map, C).permute(2, 0, 1).float()[None]
    box = torch.tensor([[20.0, 16.0, 50.0, 56.0]])
    results = {}
    for align in ("box", "image"):
        smoother = TemporalSmoother(window=3, align=align, current_weight=None)  # a plain mean shows it
        for shift in (0.0, 5.0, -4.0):
            aff = _affines(box + torch.tensor([shift, shift / 2, shift, shift / 2]))
            crop = crop_images(image_probs, torch.zeros(1, dtype=torch.long), aff, (H, W), mode="nearest")
            out = smoother(box, crop, aff)["probs"]
        results[align] = (out, crop)
    out, crop = results["image"]
    agree_image = (_labels(out) == _labels(crop)).float().mean()
    out, crop = results["box"]
    agree_box = (_labels(out) == _labels(crop)).float().mean()
    assert agree_image > 0.9
    assert agree_image > agree_box + 0.2


@pytest.mark.parametrize("align", ["box", "image"])
def test_views_and_score_columns_are_smoothed_alike(align):
    """``N x V x C x h x w`` probabilities (box-scale views) and ``N x K`` scores: each view and
    each score column is smoothed as a single one would be."""
    boxes = torch.tensor([[10.0, 10.0, 34.0, 42.0]])
    regions = [boxes, boxes * 1.1]
    affines = torch.stack([_affines(r) for r in regions], dim=1)  # N x V x 2 x 3
    multi = TemporalSmoother(window=3, align=align)
    singles = [TemporalSmoother(window=3, align=align) for _ in regions]
    for t in range(3):
        probs = torch.stack([_probs(10 * t + v) for v in range(2)], dim=1)  # 1 x 2 x C x H x W
        shifted = affines + t  # the crops move a little
        out = multi(boxes, probs, shifted, torch.tensor([[0.5 + 0.1 * t, 0.9]]))
        for v, single in enumerate(singles):
            ref = single(boxes, probs[:, v], shifted[:, v], torch.tensor([0.5 + 0.1 * t]))
            torch.testing.assert_close(out["probs"][:, v], ref["probs"])
            torch.testing.assert_close(out["scores"][:, 0], ref["scores"])
        assert out["probs"].shape == probs.shape and out["scores"].shape == (1, 2)
    torch.testing.assert_close(out["scores"][:, 1], torch.tensor([0.9]))


def test_compose_affines():
    a = torch.tensor([[[2.0, 0.0, 1.0], [0.0, 3.0, -1.0]]])
    b = torch.tensor([[[0.0, 1.0, 5.0], [1.0, 0.0, 0.0]]])
    p = torch.tensor([1.5, -2.0, 1.0])
    expected = a[0] @ torch.cat([b[0] @ p, torch.ones(1)])
    assert torch.allclose(compose_affines(a, b)[0] @ p, expected)


def test_measure_flicker_on_tiny_synthetic_videos(synth_datasets_root, monkeypatch):
    """tools/measure_flicker.py's measurement: one model run per frame serves every setting; the
    no-smoothing row scores exactly the predictor's own label maps."""
    from detectron2.data import DatasetCatalog
    from qanet_d2 import FaceParsingPredictor, get_qanet_cfg
    from qanet_d2.data.io import read_image, read_label_map
    from qanet_d2.evaluation import FaceParsingEvaluator

    tool = load_script("tools/measure_flicker.py", "qanet_measure_flicker")

    monkeypatch.setenv("DETECTRON2_DATASETS", str(synth_datasets_root))
    cfg = get_qanet_cfg()
    cfg.merge_from_file(str(INSTANT_CONFIG))
    cfg.merge_from_list(["MODEL.FCOS.SCORE_THRESH_TEST", 0.0, "MODEL.QANET.INFERENCE.BOX_SCORE_THRESH", 0.0, "MODEL.DEVICE", "cpu"])
    torch.manual_seed(0)
    predictor = FaceParsingPredictor(cfg)
    settings = [
        {"window": 1, "align": "box"},
        {"window": 3, "align": "box", "current_weight": 0.7},
        {"window": 3, "align": "image", "current_weight": None},
        {"window": 1, "align": "box", "detect_every": 2},
    ]
    rows = tool.measure(predictor, "face_synth_val", settings, max_videos=1)
    assert [r["setting"] for r in rows] == [
        "no smoothing",
        "window 3, box-aligned, current frame 0.7",
        "window 3, image-aligned, plain mean",
        "no smoothing, detector every 2 frames (velocity tracks)",
        "ground truth",
    ]
    for r in rows:
        assert 0.0 <= r["flicker_pct"] <= 100.0
    assert rows[-1]["flicker_pct"] > 0.0  # the synthetic faces move

    # the no-smoothing row equals scoring the predictor's labels directly, with label_change_rate
    evaluator = FaceParsingEvaluator("face_synth_val", distributed=False)
    flicker = []
    for frames in tool.group_videos(DatasetCatalog.get("face_synth_val"), max_videos=1).values():
        labels = [predictor(read_image(d["file_name"], "BGR"))["labels"] for d in frames]
        for d, lab in zip(frames, labels):
            evaluator.process_label_map(d, lab)
        flicker.append(label_change_rate(labels, ignore_label=None))
        assert read_label_map(frames[0]["sem_seg_file_name"]).shape == labels[0].shape
    res = evaluator.evaluate()["face_parsing"]
    assert rows[0]["J&F"] == pytest.approx(float(res["J&F"]))
    assert rows[0]["flicker_pct"] == pytest.approx(100 * float(np.mean(flicker)))

    # the detection-every-2 row is the VideoPredictor's own output (the model run on its frames)
    from qanet_d2.video import VideoPredictor

    video = VideoPredictor(predictor, window=1, detect_every=2)
    for frames in tool.group_videos(DatasetCatalog.get("face_synth_val"), max_videos=1).values():
        labels = [video(read_image(d["file_name"], "BGR"))["labels"] for d in frames]
    assert rows[3]["flicker_pct"] == pytest.approx(100 * label_change_rate(labels, ignore_label=None))


# ---------------------------------------------------------------------------- detection every k frames
class _RecordingPredictor:
    """A predictor whose "detector" returns one face moving 2 px per frame to the right (box score
    0.9) and a second face that is only detected on frame 0; records every model call."""

    def __init__(self):
        self.calls = []  # (frame, "detector" | boxes given, box scores given)
        self.frame = -1

    @staticmethod
    def detected_boxes(frame):
        moving = [10.0 + 2 * frame, 10.0, 34.0 + 2 * frame, 42.0]
        return [moving, [60.0, 5.0, 84.0, 37.0]] if frame == 0 else [moving]

    def run_model(self, image, boxes=None, box_scores=None, times=None):
        from detectron2.structures import Boxes, Instances

        self.frame += 1
        if boxes is None:
            self.calls.append((self.frame, "detector", None))
            b = torch.tensor(self.detected_boxes(self.frame))
            s = torch.full((len(b),), 0.9)
        else:
            self.calls.append((self.frame, np.asarray(boxes).tolist(), np.asarray(box_scores).tolist()))
            b = torch.as_tensor(np.asarray(boxes), dtype=torch.float32).reshape(-1, 4)
            s = torch.as_tensor(np.asarray(box_scores), dtype=torch.float32)
        n = len(b)
        return Instances(image.shape[:2], pred_boxes=Boxes(b), scores=s.clone(), box_scores=s, parsing_probs=_probs(self.frame, n), crop_affines=_affines(b))

    def postprocess(self, faces, return_scores=False, smooth=None, times=None):
        return {"instances": smooth(faces) if smooth is not None else faces}


@pytest.mark.parametrize("motion", ["velocity", "still"])
def test_detector_runs_every_k_frames_and_tracks_fill_the_gaps(motion):
    """k = 3: the detector runs on frames 0, 3, 6; frames 1, 2 parse the face in its box of frame 0
    (one detection: no velocity yet); frames 4, 5 in its box of frame 3 moved by the velocity
    between frames 0 and 3 (2 px per frame), or kept still. A face the detector finds on frame 0
    only is followed until frame 3's detection, then dropped."""
    from qanet_d2.video import VideoPredictor

    fake = _RecordingPredictor()
    video = VideoPredictor(fake, window=3, detect_every=3, track_motion=motion)
    image = np.zeros((120, 160, 3), np.uint8)
    results = [video(image) for _ in range(8)]
    assert [c[0] for c in fake.calls if c[1] == "detector"] == [0, 3, 6]
    calls = {c[0]: c for c in fake.calls}
    still_face = [60.0, 5.0, 84.0, 37.0]
    for frame in (1, 2):
        assert calls[frame][1] == [[10.0, 10.0, 34.0, 42.0], still_face]
        assert calls[frame][2] == pytest.approx([0.9, 0.9])
    for frame in (4, 5, 7):
        last = 3 if frame < 6 else 6
        shift = 2.0 * (frame if motion == "velocity" else last)
        assert calls[frame][1] == [pytest.approx([10.0 + shift, 10.0, 34.0 + shift, 42.0])]
    # the moving face keeps one track through detected and tracked frames
    assert [r["instances"].track_ids.tolist()[0] for r in results] == [0] * 8
    video.reset()
    video(image)
    assert fake.calls[-1][1] == "detector"


def test_detect_every_one_always_detects():
    from qanet_d2.video import VideoPredictor

    fake = _RecordingPredictor()
    video = VideoPredictor(fake, window=3)
    for _ in range(4):
        video(np.zeros((120, 160, 3), np.uint8))
    assert [c[1] for c in fake.calls] == ["detector"] * 4


def test_video_predictor_from_config():
    from qanet_d2 import get_qanet_cfg
    from qanet_d2.video import VideoPredictor

    cfg = get_qanet_cfg()
    cfg.merge_from_list(["VIDEO.DETECT_EVERY", 4, "VIDEO.TEMPORAL_WINDOW", 2, "VIDEO.TRACK_MOTION", "still"])
    video = VideoPredictor(cfg, _RecordingPredictor(), align="box")
    assert (video.detect_every, video.smoother.window, video.track_motion, video.smoother.align) == (4, 2, "still", "box")
    with pytest.raises(ValueError, match="DETECT_EVERY"):
        VideoPredictor(_RecordingPredictor(), detect_every=0)


class _PaintingPredictor(_RecordingPredictor):
    """The recording predictor's faces (unscored), painted by a real post-processor whose box
    score threshold is 0.5: what the video path paints is what the smoother returns."""

    def __init__(self):
        from qanet_d2.modeling.postprocessing import FacePostProcessor

        super().__init__()
        self.post = FacePostProcessor(num_classes=C, box_score_thresh=0.5, pixel_score_region="crop")

    def run_model(self, image, boxes=None, box_scores=None, times=None):
        faces = super().run_model(image, boxes, box_scores)
        faces.remove("scores")
        faces.iou_scores = torch.ones(len(faces))
        faces.parsing_probs, faces.crop_affines = faces.parsing_probs[:, None], faces.crop_affines[:, None]  # one view
        return faces

    def postprocess(self, faces, return_scores=False, smooth=None, times=None):
        out = self.post(faces, smooth=smooth, times=times)
        return {**out, "labels": out["labels"].numpy(), "painted": out["painted"].numpy()}


def test_a_new_face_is_painted_in_its_first_frame_and_tracks_keep_their_identity():
    """Frame 0 finds two faces (box score 0.9 each); frame 1 is parsed in their tracks' boxes,
    frame 2 finds only the moving face. Each face is painted from its first frame on (a new track
    keeps its own score: 0.9 / 3 would fall under the 0.5 threshold), a face keeps its track id
    from frame to frame, and the label map is painted from the smoothed probabilities."""
    from qanet_d2.video import VideoPredictor

    fake = _PaintingPredictor()
    video = VideoPredictor(fake, window=3, detect_every=2, align="box")
    image = np.zeros((120, 160, 3), np.uint8)
    first = video(image)
    assert first["painted"].tolist() == [True, True]  # both new, both painted at once
    ids = {round(float(b[0])): t for b, t in zip(first["instances"].pred_boxes.tensor, first["instances"].track_ids.tolist())}
    assert sorted(ids.values()) == [0, 1]
    second = video(image)
    by_box = {round(float(b[0])): t for b, t in zip(second["instances"].pred_boxes.tensor, second["instances"].track_ids.tolist())}
    assert by_box == ids and second["painted"].all()  # the tracked frame: same faces, same ids
    third = video(image)
    assert third["instances"].track_ids.tolist() == [ids[10]] and third["painted"].tolist() == [True]
    assert (first["labels"] != 0).any()


def test_benchmark_video_times_every_stage_of_the_video_path():
    """tools/benchmark_video.py: the stages come from the post-processing's StageTimes (no wrapped
    methods); with --boxes gt the detector runs (and is timed) on detection frames only."""
    tool = load_script("tools/benchmark_video.py", "qanet_benchmark_video_tool")
    rows = tool.main(["--config-file", str(INSTANT_CONFIG), "--faces", "1", "--frames", "3", "--warmup", "0",
                      "--size", "160", "120", "--boxes", "gt", "--threads", "1", "--opts", "VIDEO.DETECT_EVERY", "2"])
    (row,) = rows
    assert row["faces"] == 1 and row["frames"] == 3
    assert all(row[f"{s}_ms"] > 0 for s in tool.STAGES if s != "rescale"), row
    assert row["other_ms"] >= 0 and row["ms_mean"] >= sum(row[f"{s}_ms"] for s in tool.STAGES)
