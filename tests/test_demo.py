"""demo/demo.py and image reading: real photos, bad files, EXIF, odd formats, huge images, video.

The model is the instant-test config with random weights (thresholds at 0 so that it paints
faces): these tests check the pipeline (files, sizes, layouts, exit codes), not parsing quality.
"""
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

import qanet_d2  # noqa: F401
from qanet_d2.data.synthetic import SyntheticVideo
from qanet_d2.predictor import ImageReadError, read_image_bgr

from conftest import load_script

REPO = Path(__file__).resolve().parents[1]
INSTANT = REPO / "configs" / "quick_schedules" / "qanet_fcos_synth_instant_test.yaml"
OPTS = [
    "--opts",
    "MODEL.FCOS.SCORE_THRESH_TEST", "0.0",
    "MODEL.QANET.INFERENCE.BOX_SCORE_THRESH", "0.0",
    "MODEL.QANET.INFERENCE.MAX_PARSED_FACES", "3",
    "MODEL.DEVICE", "cpu",
]


@pytest.fixture(scope="module")
def demo_module():
    module = load_script("demo/demo.py", "qanet_demo_main")
    return module


def run_demo(demo_module, *args):
    torch.manual_seed(0)
    return demo_module.main(["--config-file", str(INSTANT), "--random-weights", *map(str, args), *OPTS])


def astronaut_bgr():
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[:, :, ::-1])


# ---------------------------------------------------------------------------- image reading
def test_read_image_formats(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 255, (30, 40, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    assert np.array_equal(read_image_bgr(str(tmp_path / "rgb.png")), rgb[:, :, ::-1])

    gray = rgb[:, :, 0]
    Image.fromarray(gray).save(tmp_path / "gray.png")
    out = read_image_bgr(str(tmp_path / "gray.png"))
    assert out.shape == (30, 40, 3) and out.dtype == np.uint8 and np.array_equal(out[:, :, 1], gray)

    rgba = np.concatenate([rgb, np.full((30, 40, 1), 7, np.uint8)], axis=2)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    assert np.array_equal(read_image_bgr(str(tmp_path / "rgba.png")), rgb[:, :, ::-1])

    deep = gray.astype(np.uint16) * 257
    cv2.imwrite(str(tmp_path / "gray16.png"), deep)
    out = read_image_bgr(str(tmp_path / "gray16.png"))
    assert out.dtype == np.uint8 and np.array_equal(out[:, :, 0], gray)
    cv2.imwrite(str(tmp_path / "rgb16.png"), rgb[:, :, ::-1].astype(np.uint16) * 257)
    out = read_image_bgr(str(tmp_path / "rgb16.png"))
    assert out.dtype == np.uint8 and out.shape == (30, 40, 3)
    assert np.abs(out.astype(int) - rgb[:, :, ::-1]).max() <= 1


def test_read_image_applies_exif_orientation(tmp_path):
    rgb = np.zeros((20, 50, 3), np.uint8)
    rgb[:, :10] = 255  # a white band on the stored image's left side
    im = Image.fromarray(rgb)
    exif = im.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    im.save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    out = read_image_bgr(str(tmp_path / "rotated.jpg"))
    assert out.shape == (50, 20, 3)  # displayed upright: portrait
    assert out[:10].mean() > 200 and out[-10:].mean() < 50  # the band is now at the top


def test_read_image_errors_name_the_file(tmp_path):
    ok = tmp_path / "ok.jpg"
    cv2.imwrite(str(ok), astronaut_bgr())
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(ok.read_bytes()[:3000])
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    for path in (truncated, text, tmp_path / "missing.png"):
        with pytest.raises(ImageReadError, match=path.name):
            read_image_bgr(str(path))


# ---------------------------------------------------------------------------- demo on photos
def test_demo_on_real_photo_and_bad_files(demo_module, tmp_path, capsys):
    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    astronaut = astronaut_bgr()
    cv2.imwrite(str(photos / "astronaut.png"), astronaut)
    gray = cv2.cvtColor(astronaut, cv2.COLOR_BGR2GRAY)[::2, ::2]
    cv2.imwrite(str(photos / "sub" / "gray.jpg"), gray)
    rgba = Image.fromarray(np.concatenate([astronaut[::4, ::3, ::-1], np.full((128, 171, 1), 200, np.uint8)], 2), "RGBA")
    rgba.save(photos / "sub" / "rgba.png")
    good = (photos / "astronaut.png").read_bytes()
    (photos / "broken.png").write_bytes(good[: len(good) // 3])
    (photos / "readme.txt").write_text("a text file in the folder")
    out, labels = tmp_path / "out", tmp_path / "labels"

    status = run_demo(demo_module, "--input", photos, "--output", out, "--save-labels", labels)
    assert status == 1  # one bad file
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if "ERROR" in line]
    assert any("broken.png" in line and "truncated" in line for line in errors)
    assert not any("readme.txt" in line for line in errors)  # not an image by its extension: skipped
    assert "readme.txt" in captured.err + captured.out
    assert not any("astronaut.png" in line or "gray.jpg" in line for line in errors)

    # overlays keep the folder layout and the input sizes
    overlay = cv2.imread(str(out / "astronaut.png"))
    assert overlay.shape == astronaut.shape
    assert cv2.imread(str(out / "sub" / "gray.jpg")).shape[:2] == gray.shape
    assert cv2.imread(str(out / "sub" / "rgba.png")).shape[:2] == (128, 171)
    assert not (out / "broken.png").exists() and not (out / "readme.png").exists()

    # label PNGs: <labels>/<relative path>.png, uint8 class ids, full size
    label_map = np.asarray(Image.open(labels / "astronaut.png"))
    assert label_map.shape == astronaut.shape[:2] and label_map.dtype == np.uint8
    assert (labels / "sub" / "gray.png").exists() and (labels / "sub" / "rgba.png").exists()
    painted = label_map != 0
    assert painted.any()
    # the overlay differs from the photo where parts are painted, much less elsewhere
    diff = np.abs(overlay.astype(int) - astronaut.astype(int)).sum(axis=2)
    assert diff[painted].mean() > 20


def test_demo_single_file_to_file_and_missing_input(demo_module, tmp_path):
    src = tmp_path / "face.jpg"
    cv2.imwrite(str(src), astronaut_bgr()[100:400, 50:300])
    dst = tmp_path / "result.jpg"
    assert run_demo(demo_module, "--input", src, "--output", dst) == 0
    assert cv2.imread(str(dst)).shape == (300, 250, 3)
    assert run_demo(demo_module, "--input", tmp_path / "nothing_here.jpg", "--output", tmp_path / "o") == 1


def test_demo_respects_exif(demo_module, tmp_path):
    im = Image.fromarray(astronaut_bgr()[:300, :200, ::-1].copy())
    exif = im.getexif()
    exif[0x0112] = 8  # rotate 90 CCW to display
    im.save(tmp_path / "phone.jpg", exif=exif)
    assert run_demo(demo_module, "--input", tmp_path / "phone.jpg", "--output", tmp_path / "out.png") == 0
    assert cv2.imread(str(tmp_path / "out.png")).shape[:2] == (200, 300)


def test_huge_image_without_full_score_map(demo_module, tmp_path):
    """8000 x 6000: the label map is painted window by window and the overlay scaled down;
    the C x H x W score map (3.3 GB here) is never allocated."""
    big = np.full((6000, 8000, 3), 90, np.uint8)
    big[2000:4000, 3000:5000] = cv2.resize(astronaut_bgr(), (2000, 2000))
    cv2.imwrite(str(tmp_path / "big.jpg"), big, [cv2.IMWRITE_JPEG_QUALITY, 80])
    del big
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    status = run_demo(
        demo_module, "--input", tmp_path / "big.jpg", "--output", tmp_path / "out", "--save-labels", tmp_path / "labels",
        "--max-overlay-size", "1600",
    )
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert status == 0
    assert np.asarray(Image.open(tmp_path / "labels" / "big.png")).shape == (6000, 8000)
    assert cv2.imread(str(tmp_path / "out" / "big.jpg")).shape[:2] == (1200, 1600)
    assert grown_mb < 1500, f"peak memory grew by {grown_mb:.0f} MB"


# ---------------------------------------------------------------------------- demo on video
def test_demo_on_synthetic_video(demo_module, tmp_path):
    video = SyntheticVideo((3, 5), 160, 120, 4)
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 7.0, (160, 120))
    for t in range(4):
        writer.write(video.render(t).image)
    writer.release()
    out = tmp_path / "parsed.mp4"
    labels = tmp_path / "labels"
    status = run_demo(demo_module, "--video-input", path, "--output", out, "--save-labels", labels, "--temporal-window", 3)
    assert status == 0
    cap = cv2.VideoCapture(str(out))
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(7.0, abs=0.01)
    assert (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))) == (160, 120)
    count = 0
    while cap.read()[0]:
        count += 1
    cap.release()
    assert count == 4
    frames = sorted(p.name for p in (labels / "clip").glob("*.png"))
    assert frames == [f"{t:05d}.png" for t in range(4)]
    assert np.asarray(Image.open(labels / "clip" / "00000.png")).shape == (120, 160)


def test_demo_video_with_detection_every_k_frames(demo_module, tmp_path, monkeypatch):
    """The real-time path (VIDEO.DETECT_EVERY 2): one output frame and one label PNG per input
    frame, the detector run on frames 0, 2, 4 only, and the frames between parsed in the boxes
    of the tracks."""
    from qanet_d2.modeling.meta_arch import QANetFaceParser

    video = SyntheticVideo((3, 5), 96, 72, 5)
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (96, 72))
    for t in range(5):
        writer.write(video.render(t).image)
    writer.release()
    detect, calls = QANetFaceParser.detect, []

    def counting_detect(self, batched_inputs):
        calls.append(len(batched_inputs))
        return detect(self, batched_inputs)

    monkeypatch.setattr(QANetFaceParser, "detect", counting_detect)
    out, labels = tmp_path / "parsed.avi", tmp_path / "labels"
    torch.manual_seed(0)
    status = demo_module.main(
        ["--config-file", str(INSTANT), "--random-weights", "--video-input", str(path), "--output", str(out), "--save-labels", str(labels),
         "--overlay", "opencv", *OPTS, "VIDEO.DETECT_EVERY", "2"]
    )
    assert status == 0
    assert calls == [1, 1, 1]  # frames 0, 2, 4
    cap = cv2.VideoCapture(str(out))
    count = 0
    while cap.read()[0]:
        count += 1
    cap.release()
    assert count == 5
    assert sorted(p.name for p in (labels / "clip").glob("*.png")) == [f"{t:05d}.png" for t in range(5)]
    assert all(np.asarray(Image.open(labels / "clip" / f"{t:05d}.png")).shape == (72, 96) for t in range(5))


def test_opencv_overlay_blends_the_palette_and_keeps_background(demo_module):
    """--overlay opencv: a painted pixel is (1 - alpha) * image + alpha * its class colour, a
    background pixel is the image's (BGR, like the Visualizer's overlay)."""
    from predictor import VisualizationDemo  # demo/, on the path once demo.py is loaded
    from qanet_d2 import get_qanet_cfg
    from qanet_d2.predictor import FaceParsingPredictor

    cfg = get_qanet_cfg()
    cfg.merge_from_file(str(INSTANT))
    cfg.MODEL.DEVICE = "cpu"
    from detectron2.structures import Instances

    demo = VisualizationDemo(cfg, FaceParsingPredictor(cfg), alpha=0.5, overlay="opencv")
    image = np.full((4, 6, 3), (10, 20, 30), np.uint8)  # BGR
    labels = np.zeros((4, 6), np.uint8)
    labels[1, 2] = 3
    no_faces = {"boxes": np.zeros((0, 4), np.float32), "scores": np.zeros(0, np.float32), "painted": np.zeros(0, bool),
                "instances": Instances((4, 6), box_scores=torch.zeros(0))}
    drawn = demo.draw_opencv(image, {"labels": labels, **no_faces})
    r, g, b = demo.metadata.stuff_colors[3]
    assert tuple(drawn[1, 2]) == tuple(np.uint8(np.float32(0.5) * np.float32(v) + np.float32(0.5) * np.float32(c)) for v, c in ((10, b), (20, g), (30, r)))
    assert tuple(drawn[0, 0]) == (10, 20, 30)


def test_demo_sequence_layout_matches_evaluate_pngs(demo_module, tmp_path):
    """--input <root>/images --sequence --save-labels DIR writes DIR/<video_id>/<frame>.png,
    the layout tools/evaluate_pngs.py reads (qanet_d2.evaluation.label_png_path)."""
    from qanet_d2.evaluation import label_png_path

    images = tmp_path / "root" / "images"
    for vid in ("v0000", "v0001"):
        (images / vid).mkdir(parents=True)
        video = SyntheticVideo((int(vid[-1]), 9), 96, 80, 2)
        for t in range(2):
            cv2.imwrite(str(images / vid / f"{t:05d}.jpg"), video.render(t).image)
    labels = tmp_path / "pred"
    assert run_demo(demo_module, "--input", images, "--sequence", "--save-labels", labels, "--output", tmp_path / "vis") == 0
    for vid in ("v0000", "v0001"):
        for t in range(2):
            file_name = str(images / vid / f"{t:05d}.jpg")
            assert Path(label_png_path(str(labels), vid, file_name)).is_file()


# ---------------------------------------------------------------------------- the command line
def _errors(capsys):
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("ERROR")]


def test_help_is_fast_names_the_shipped_model_and_its_classes(tmp_path):
    """--help imports neither torch nor detectron2, shows examples, the shipped model and its classes."""
    from qanet_d2 import get_qanet_cfg
    from qanet_d2.model_zoo import shipped_model
    from qanet_d2.predictor import FaceParsingPredictor

    code = ("import runpy, sys, time\nsys.argv = ['demo.py', '--help']\nstart = time.perf_counter()\n"
            f"try:\n    runpy.run_path({str(REPO / 'demo' / 'demo.py')!r}, run_name='__main__')\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules and 'detectron2' not in sys.modules\n"
            "print('SECONDS', time.perf_counter() - start)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert float(proc.stdout.split("SECONDS")[1]) < 1.0
    config, weights = shipped_model()
    text = " ".join(proc.stdout.split())
    assert os.path.relpath(config, REPO) in text and os.path.relpath(weights, REPO) in text
    assert "examples:" in text and "--save-json" in text
    cfg = get_qanet_cfg()
    cfg.merge_from_file(config)
    cfg.MODEL.WEIGHTS = weights
    classes = FaceParsingPredictor(cfg).class_names
    assert ", ".join(f"{i} {n}" for i, n in enumerate(classes)) in text


@pytest.fixture(scope="module")
def shipped_run(demo_module, tmp_path_factory):
    """The shipped model (no --config-file) on the astronaut photo, with labels and JSON."""
    root = tmp_path_factory.mktemp("shipped")
    cv2.imwrite(str(root / "astronaut.jpg"), astronaut_bgr())
    status = demo_module.main(["--input", str(root / "astronaut.jpg"), "--output", str(root / "out"),
                               "--save-labels", "--save-json", "--json-class-masks"])
    return status, root / "out"


def test_shipped_model_by_default_writes_overlay_labels_json(shipped_run):
    status, out = shipped_run
    assert status == 0
    assert sorted(p.name for p in out.iterdir()) == ["astronaut.jpg", "astronaut.json", "astronaut_labels.png", "labels.json"]
    record = json.loads((out / "astronaut.json").read_text())
    assert record["classes"][0] == "background" and len(record["faces"]) >= 1  # a trained model finds her face
    face = record["faces"][0]
    assert {"box", "box_score", "quality_score", "mask"} <= set(face)
    # the shipped model paints faces from their quality score; every written face passes it
    assert record["score"] == "quality" and all(f["quality_score"] >= record["score_threshold"] for f in record["faces"])
    # its detector (YuNet) gives five landmarks per face, in the photo's frame: eyes above the mouth
    lm = np.asarray(face["landmarks"])
    assert lm.shape == (5, 3) and lm[0, 0] < lm[1, 0] and lm[:2, 1].max() < lm[3:, 1].min()
    x0, y0, x1, y1 = face["box"]
    assert ((lm[:, 0] > x0) & (lm[:, 0] < x1) & (lm[:, 1] > y0) & (lm[:, 1] < y1)).all()


def test_label_png_palette_matches_legend(shipped_run):
    _, out = shipped_run
    legend = json.loads((out / "labels.json").read_text())["classes"]
    image = Image.open(out / "astronaut_labels.png")
    assert image.mode == "P"
    palette = np.asarray(image.getpalette()[: 3 * len(legend)]).reshape(-1, 3)
    assert [c["id"] for c in legend] == list(range(len(legend)))
    np.testing.assert_array_equal(palette, [c["color"] for c in legend])
    assert len({tuple(c["color"]) for c in legend}) == len(legend)  # colours tell the classes apart
    ids = np.asarray(image)
    assert set(np.unique(ids)) <= set(range(len(legend))) and (ids != 0).any()


def test_json_masks_round_trip_to_the_label_map(shipped_run):
    """COCO RLE of each face decodes (pycocotools) to the label-map pixels it painted; the faces'
    masks are disjoint and cover every painted pixel; class masks give the label ids."""
    from pycocotools import mask as mask_util

    _, out = shipped_run
    record = json.loads((out / "astronaut.json").read_text())
    labels = np.asarray(Image.open(out / "astronaut_labels.png"))
    union = np.zeros(labels.shape, np.int32)
    for face in record["faces"]:
        mask = mask_util.decode({"size": face["mask"]["size"], "counts": face["mask"]["counts"].encode()}).astype(bool)
        assert mask.shape == labels.shape and mask.sum() == face["area"] > 0
        assert (labels[mask] != 0).all()
        union += mask
        for name, rle in face["class_masks"].items():
            part = mask_util.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool)
            np.testing.assert_array_equal(part, mask & (labels == record["classes"].index(name)))
    np.testing.assert_array_equal(union, labels != 0)


def test_missing_weights_and_typos_are_one_line_errors(demo_module, tmp_path, capsys):
    src = tmp_path / "face.jpg"
    cv2.imwrite(str(src), astronaut_bgr()[:200, :200])
    base = ["--input", str(src), "--output", str(tmp_path / "o")]
    assert demo_module.main(["--config-file", str(INSTANT), *base]) == 2  # no weights, not asked for random ones
    (line,) = _errors(capsys)
    assert "gives no weights" in line and "--random-weights" in line
    assert demo_module.main(["--config-file", str(tmp_path / "nope.yaml"), *base]) == 2
    (line,) = _errors(capsys)
    assert "nope.yaml: no such file" in line
    assert demo_module.main([*base, "--opts", "MODEL.WEIGHTS", str(tmp_path / "missing.pth")]) == 2
    (line,) = _errors(capsys)
    assert "MODEL.WEIGHTS" in line and "missing.pth: no such file" in line
    assert demo_module.main([*base, "--opts", "MODEL.WIEGHTS", "x.pth"]) == 2
    (line,) = _errors(capsys)
    assert "unknown config key MODEL.WIEGHTS; did you mean MODEL.WEIGHTS?" in line
    assert not (tmp_path / "o").exists()


def test_empty_input_folder_is_an_error(demo_module, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("x")
    for folder in ("empty", "notes"):
        assert run_demo(demo_module, "--input", tmp_path / folder, "--output", tmp_path / "o") == 1
        assert any("no image or video files" in line for line in _errors(capsys))


def test_same_stem_inputs_never_collide_and_outputs_are_not_overwritten(demo_module, tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    face = astronaut_bgr()[:200, 150:350]
    cv2.imwrite(str(photos / "person.jpg"), face)
    cv2.imwrite(str(photos / "person.png"), face[:, ::-1])
    out = tmp_path / "out"
    assert run_demo(demo_module, "--input", photos, "--output", out, "--save-labels", "--save-json") == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["labels.json", "person_jpg.jpg", "person_jpg.json", "person_jpg_labels.png",
                     "person_png.json", "person_png.png", "person_png_labels.png"]
    assert json.loads((out / "person_jpg.json").read_text())["file"].endswith("person.jpg")
    assert json.loads((out / "person_png.json").read_text())["file"].endswith("person.png")
    before = (out / "person_png.json").read_bytes()
    assert run_demo(demo_module, "--input", photos, "--output", out, "--save-json") == 1
    assert any("already exists" in line and "--overwrite" in line for line in _errors(capsys))
    assert (out / "person_png.json").read_bytes() == before
    assert run_demo(demo_module, "--input", photos, "--output", out, "--save-json", "--overwrite") == 0


def test_folder_takes_images_and_videos_by_extension_and_refuses_thin_images(demo_module, tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    cv2.imwrite(str(photos / "face.jpg"), astronaut_bgr()[:160, 160:320])
    cv2.imwrite(str(photos / "thin.png"), np.full((1, 5000, 3), 128, np.uint8))
    (photos / "notes.txt").write_text("x")
    (photos / "boxes.json").write_text("{}")
    video = SyntheticVideo((3, 5), 96, 72, 3)
    writer = cv2.VideoWriter(str(photos / "clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (96, 72))
    for t in range(3):
        writer.write(video.render(t).image)
    writer.release()
    out = tmp_path / "out"
    assert run_demo(demo_module, "--input", photos, "--output", out, "--overlay", "opencv") == 1  # the thin image
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("ERROR")]
    assert any("thin.png" in line and "5000x1" in line and "too thin to parse" in line for line in errors), errors
    assert "notes.txt" in captured.err and "boxes.json" in captured.err
    assert not any("notes.txt" in line or "boxes.json" in line or "clip.avi" in line for line in errors)
    assert (out / "face.jpg").is_file() and (out / "clip.mp4").is_file()
    cap = cv2.VideoCapture(str(out / "clip.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 3
    cap.release()


def test_truncated_video_is_reported(demo_module, tmp_path, capsys):
    video = SyntheticVideo((3, 5), 96, 72, 20)
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (96, 72))
    for t in range(20):
        writer.write(video.render(t).image)
    writer.release()
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.6)])
    out = tmp_path / "parsed.mp4"
    assert run_demo(demo_module, "--video-input", path, "--output", out, "--overlay", "opencv") == 1
    (line,) = _errors(capsys)
    assert "clip.avi" in line and "of its 20 frames" in line
    written = int(line.split("ended after ")[1].split()[0])
    assert 0 < written < 20 and f"{written} frames written" in line
    cap = cv2.VideoCapture(str(out))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == written
    cap.release()


def test_video_output_is_h264_with_the_input_audio(demo_module, tmp_path):
    import av

    path = tmp_path / "talk.mp4"
    video = SyntheticVideo((3, 5), 96, 72, 5)
    with av.open(str(path), "w") as container:
        vstream = container.add_stream("mpeg4", rate=5)
        vstream.width, vstream.height, vstream.pix_fmt = 96, 72, "yuv420p"
        astream = container.add_stream("aac", rate=16000)
        for t in range(5):
            for packet in vstream.encode(av.VideoFrame.from_ndarray(video.render(t).image, format="bgr24")):
                container.mux(packet)
        for packet in vstream.encode():
            container.mux(packet)
        tone = (0.2 * np.sin(np.arange(16000) * 2 * np.pi * 440 / 16000)).astype(np.float32)[None]
        for start in range(0, 16000, 1024):
            frame = av.AudioFrame.from_ndarray(tone[:, start:start + 1024], format="fltp", layout="mono")
            frame.sample_rate = 16000
            for packet in astream.encode(frame):
                container.mux(packet)
        for packet in astream.encode():
            container.mux(packet)
    out = tmp_path / "parsed.mp4"
    assert run_demo(demo_module, "--video-input", path, "--output", out, "--overlay", "opencv") == 0
    with av.open(str(out)) as result:
        (vstream,) = result.streams.video
        (astream,) = result.streams.audio
        assert vstream.codec_context.name == "h264" and vstream.codec_context.pix_fmt == "yuv420p"
        assert astream.codec_context.name == "aac"
        assert sum(1 for _ in result.decode(video=0)) == 5
