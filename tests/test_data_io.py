"""One image conversion for every path: the pixels evaluation sees (FaceParsingDatasetMapper on a
dataset dict) equal those the demo and the predictor see for the same file, and equal the values
computed by hand from the rules of qanet_d2.data.io."""
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

import qanet_d2  # noqa: F401
from qanet_d2 import get_qanet_cfg
from qanet_d2.data import DataReadError, FaceParsingDatasetMapper
from qanet_d2.data.io import ImageNotFoundError, ImageReadError, as_uint8_image, read_image
from qanet_d2.predictor import FaceParsingPredictor
from qanet_d2.predictor import ImageReadError as PredictorImageReadError


REPO = Path(__file__).resolve().parents[1]
INSTANT = REPO / "configs" / "quick_schedules" / "qanet_fcos_synth_instant_test.yaml"


class _Captured(Exception):
    pass


@pytest.fixture(scope="module")
def paths():
    """(evaluation, demo, predictor-on-arrays): each maps a file (or an array) to the
    ``H x W x 3`` uint8 BGR pixels handed to the model. No resizing (INPUT.MIN_SIZE_TEST 0), so
    the pixels are the decoded ones."""
    cfg = get_qanet_cfg()
    cfg.merge_from_file(str(INSTANT))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "INPUT.MIN_SIZE_TEST", 0, "TEST.AUG.ENABLED", False])
    torch.manual_seed(0)
    predictor = FaceParsingPredictor(cfg)
    seen = []

    def capture(batched_inputs, *args, **kwargs):
        seen.append(batched_inputs[0]["image"])
        raise _Captured

    assert predictor.test_model is predictor.model
    predictor.model.inference = capture  # the predictor's entry into the model

    def model_pixels(image):
        seen.clear()
        with pytest.raises(_Captured):
            predictor(image)
        return seen[0].permute(1, 2, 0).numpy()  # BGR (INPUT.FORMAT)

    mapper = FaceParsingDatasetMapper(cfg, is_train=False)
    assert mapper.augmentations.augs == []

    def evaluation(path):
        return mapper({"file_name": str(path), "image_id": "x"})["image"].permute(1, 2, 0).numpy()

    def demo_path(path):
        from qanet_d2.data.inputs import read_image_bgr

        return model_pixels(read_image_bgr(str(path)))  # demo/demo.py's reader of a file

    return evaluation, demo_path, model_pixels


def _gray3(values):
    v = np.asarray(values, np.uint8)
    return np.repeat(v[:, :, None], 3, axis=2)


def _files(tmp):
    """(file, expected BGR uint8 computed by hand, raw array for the predictor or None)."""
    cases = {}
    # float (mode F): 0..255 intensities, rounded and clipped, whatever the range of the data
    unit = np.array([[0.0, 0.4, 0.6, 1.0]], np.float32)
    Image.fromarray(unit, "F").save(tmp / "float01.tif")
    cases["float [0,1]"] = (tmp / "float01.tif", _gray3([[0, 0, 1, 1]]), unit)
    full = np.array([[0.0, 1.0, 100.4, 254.6], [300.0, -3.0, np.nan, 17.5]], np.float32)
    Image.fromarray(full, "F").save(tmp / "float255.tif")
    cases["float [0,255]"] = (tmp / "float255.tif", _gray3([[0, 1, 100, 255], [255, 0, 0, 18]]), full)
    # 16-bit gray PNG: round(x / 257)
    deep = np.array([[0, 128, 129, 385], [257 * 100, 65535, 65407, 1000]], np.uint16)
    cv2.imwrite(str(tmp / "gray16.png"), deep)
    cases["16-bit gray PNG"] = (tmp / "gray16.png", _gray3([[0, 0, 1, 1], [100, 255, 255, 4]]), deep)
    # 32-bit int (mode I) TIFF: 16-bit intensities, clipped to 0..65535
    wide = np.array([[0, 257 * 10, 65535, 70000, -5, 1000]], np.int32)
    Image.fromarray(wide, "I").save(tmp / "int32.tif")
    cases["32-bit int TIFF"] = (tmp / "int32.tif", _gray3([[0, 10, 255, 255, 0, 4]]), wide)
    # 16-bit colour PNG: Pillow keeps the high byte
    rgb16 = np.array([[[1000, 30000, 65535], [255, 256, 65280]]], np.uint16)
    cv2.imwrite(str(tmp / "rgb16.png"), rgb16[:, :, ::-1])
    cases["16-bit colour PNG"] = (tmp / "rgb16.png", (rgb16 >> 8).astype(np.uint8)[:, :, ::-1], None)
    # palette PNG with transparency: the palette colours, transparency dropped
    pal = Image.fromarray(np.array([[0, 1], [2, 3]], np.uint8), "P")
    pal.putpalette([10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110, 120])
    pal.info["transparency"] = bytes([0, 255, 128, 255])
    pal.save(tmp / "palette.png")
    colours = np.array([[[10, 20, 30], [40, 50, 60]], [[70, 80, 90], [100, 110, 120]]], np.uint8)
    cases["palette PNG"] = (tmp / "palette.png", colours[:, :, ::-1], None)
    # CMYK TIFF (lossless): R = 255 - C (K = 0), pure K darkens all channels
    cmyk = Image.new("CMYK", (2, 1))
    cmyk.putpixel((0, 0), (10, 100, 200, 0))
    cmyk.putpixel((1, 0), (0, 0, 0, 100))
    cmyk.save(tmp / "cmyk.tif")
    cases["CMYK TIFF"] = (tmp / "cmyk.tif", np.array([[[55, 155, 245], [155, 155, 155]]], np.uint8), None)
    # LA and RGBA PNG: alpha dropped, no compositing
    la = np.stack([np.array([[5, 250]], np.uint8), np.array([[0, 100]], np.uint8)], axis=2)
    Image.fromarray(la, "LA").save(tmp / "la.png")
    cases["LA PNG"] = (tmp / "la.png", _gray3([[5, 250]]), la)
    rgba = np.array([[[1, 2, 3, 0], [200, 150, 100, 77]]], np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp / "rgba.png")
    cases["RGBA PNG"] = (tmp / "rgba.png", rgba[:, :, 2::-1], rgba[:, :, [2, 1, 0, 3]])  # array: BGRA
    # 1-bit PNG: 0 / 255
    bits = np.array([[True, False, True]])
    Image.fromarray(bits).save(tmp / "bits.png")
    cases["1-bit PNG"] = (tmp / "bits.png", _gray3([[255, 0, 255]]), bits)
    return cases


def test_every_path_sees_the_same_pixels(paths, tmp_path):
    evaluation, demo, predictor = paths
    for name, (path, expected, array) in _files(tmp_path).items():
        seen = evaluation(path)
        assert seen.dtype == np.uint8 and seen.shape == expected.shape, name
        assert np.array_equal(seen, expected), (name, seen[..., 0], expected[..., 0])
        assert np.array_equal(demo(path), seen), name
        assert np.array_equal(read_image(str(path), "RGB"), seen[:, :, ::-1]), name
        if array is not None:  # the same data handed to the predictor as an array
            assert np.array_equal(predictor(array), expected), name


def test_lossy_files_read_alike(paths, tmp_path):
    evaluation, demo, _ = paths
    # CMYK JPEG: lossy, so the hand-computed colour holds within a few levels
    cmyk = Image.new("CMYK", (16, 16), (10, 100, 200, 0))
    cmyk.save(tmp_path / "cmyk.jpg", quality=100)
    seen = evaluation(tmp_path / "cmyk.jpg")
    assert np.array_equal(demo(tmp_path / "cmyk.jpg"), seen)
    assert np.abs(seen.astype(int) - [55, 155, 245]).max() <= 3

    # EXIF orientation 6 ("rotate 90 degrees clockwise to display"): the stored pixels, rotated
    stored = np.zeros((20, 50, 3), np.uint8)
    stored[:, :10] = (255, 128, 0)
    im = Image.fromarray(stored)
    exif = im.getexif()
    exif[0x0112] = 6
    im.save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    decoded = np.asarray(Image.open(tmp_path / "rotated.jpg").convert("RGB"))  # as stored, no EXIF
    expected = np.ascontiguousarray(np.rot90(decoded, k=-1)[:, :, ::-1])
    seen = evaluation(tmp_path / "rotated.jpg")
    assert seen.shape == (50, 20, 3) and np.array_equal(seen, expected)
    assert np.array_equal(demo(tmp_path / "rotated.jpg"), seen)
    assert seen[:10].mean() > 100 and seen[-10:].mean() < 10  # the band is now at the top


def test_array_rules():
    # dtype decides, not the values: a dark float image stays dark, a dark int32 one is 16-bit
    assert as_uint8_image(np.full((2, 2), 0.9, np.float32)).max() == 1
    assert as_uint8_image(np.full((2, 2), 200, np.int64)).max() == 1
    assert as_uint8_image(np.full((2, 2), -4, np.int8)).max() == 0
    rgb = np.array([[[1, 2, 3]]], np.uint8)
    assert as_uint8_image(rgb, "RGB", "BGR").tolist() == [[[3, 2, 1]]]
    assert as_uint8_image(rgb, "rgb", "RGB").tolist() == [[[1, 2, 3]]]
    bgr = np.zeros((3, 4, 3), np.uint8)
    assert as_uint8_image(bgr) is bgr  # already what the model takes: no copy
    for bad in (np.zeros((4, 5, 5), np.uint8), np.zeros((0, 5), np.uint8), np.zeros((2, 2), np.complex64)):
        with pytest.raises(ValueError):
            as_uint8_image(bad)


def test_read_errors_name_the_file_and_keep_their_classes(tmp_path):
    assert PredictorImageReadError is ImageReadError
    assert issubclass(ImageReadError, DataReadError) and issubclass(ImageReadError, OSError)
    with pytest.raises(ImageNotFoundError, match="missing.png") as err:
        read_image(str(tmp_path / "missing.png"))
    assert isinstance(err.value, FileNotFoundError) and isinstance(err.value, ImageReadError)
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(ImageReadError, match="notes.txt: cannot decode image"):
        read_image(str(tmp_path / "notes.txt"))
