"""The shipped real-face models (qanet_d2.model_zoo): the default one (YuNet pretrained on WIDER
FACE + box adapter + the real-face parser, models/qanet_yunet_real_faces_fasseg.pth) and the FCOS
one (models/qanet_fcos_real_faces_fasseg.pth). Each loads from the repository alone (no dataset
needed) and parses real photos into plausible regions."""
import os
from pathlib import Path

import numpy as np
import pytest

from qanet_d2.model_zoo import DEFAULT_MODEL, shipped_model

REPO = Path(__file__).resolve().parents[1]
FASSEG = next((p for p in (REPO.parent / "shared" / "data" / "fasseg", REPO.parent.parent / "shared" / "data" / "fasseg")
               if (p / "V2").is_dir()), None)
BG, SKIN, HAIR, EYES, NOSE, MOUTH = range(6)
MODELS = ("real_faces", "real_faces_fcos")
# hand-drawn head boxes (hair top to chin) against the model's boxes: YuNet's adapted boxes are
# fitted head boxes, a little tighter on big hair than FCOS's
MIN_HEAD_IOU = {"real_faces": 0.6, "real_faces_fcos": 0.7}


@pytest.fixture(scope="module", params=MODELS)
def predictor(request):
    from qanet_d2 import FaceParsingPredictor, get_qanet_cfg

    config, weights = shipped_model(request.param)
    cfg = get_qanet_cfg()
    cfg.merge_from_file(config)
    cfg.MODEL.WEIGHTS = weights
    cfg.MODEL.DEVICE = "cpu"
    cfg.freeze()
    p = FaceParsingPredictor(cfg)
    p.shipped_name = request.param
    return p


def _inside(mask, box, margin=0):
    x0, y0, x1, y1 = box
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return 1.0
    ok = (xs >= x0 - margin) & (xs < x1 + margin) & (ys >= y0 - margin) & (ys < y1 + margin)
    return ok.mean()


def _iou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_default_model_is_the_pretrained_detector_in_fine_classes():
    assert DEFAULT_MODEL == "real_faces_fine" and "yunet" in shipped_model()[0]


@pytest.mark.parametrize("name,parts", [("real_faces", ["parser"]), ("real_faces_realtime", ["parser"]),
                                        ("real_faces_fcos", ["detector", "parser"])])
def test_file_is_small_half_precision_weights(name, parts):
    import torch

    weights = Path(shipped_model(name)[1])
    assert weights.stat().st_size < 20 * 1024 * 1024
    state = torch.load(weights, weights_only=True)
    assert set(state) == {"model", "trained_parts"} and state["trained_parts"] == parts
    assert {k.split(".")[0] for k in state["model"]} == set(parts)
    assert state["model"]["parser.iou_branch.predictor.weight"].dtype == torch.float16


def test_astronaut_face_found_and_its_parts_in_place(predictor):
    """scikit-image's astronaut (public domain): her head is the one face found, eyes, nose and
    mouth are drawn there, and nothing outside it is labelled (the suit, its patches, the flag and
    the shuttle stay background)."""
    from skimage.data import astronaut

    out = predictor(np.ascontiguousarray(astronaut()[:, :, ::-1]))
    labels = np.asarray(out["labels"])
    head = (155, 12, 300, 190)  # hair top to chin, by hand, XYXY in the 512x512 photo
    best = out["instances"].pred_boxes.tensor[0].tolist()
    assert _iou(best, head) > MIN_HEAD_IOU[predictor.shipped_name], best
    assert _inside(labels == NOSE, head) > 0.9
    assert _inside(labels == EYES, head) > 0.6 and (labels[12:190, 155:300] == EYES).sum() > 50
    assert (labels[12:190, 155:300] == SKIN).sum() > 0.25 * 145 * 178  # the face is mostly skin
    assert (labels[12:190, 155:300] == HAIR).sum() > 1500
    assert len(out["boxes"]) == 1, out["boxes"]
    assert _inside(labels != BG, head, margin=30) == 1.0  # hair and neck reach a little past the box
    assert (labels[240:] != BG).sum() == 0 and (labels[:, :100] != BG).sum() == 0  # suit, patches, flag


def test_grey_camera_photo_has_one_face_and_no_coat(predictor):
    """scikit-image's grey "camera" photo (public domain): the cameraman's head is the one face
    found (his dark coat is not a face), and nothing below or beside his head is labelled."""
    from skimage.data import camera

    out = predictor(np.ascontiguousarray(np.repeat(camera()[:, :, None], 3, axis=2)))
    labels = np.asarray(out["labels"])
    head = (160, 65, 275, 205)  # hair top to chin, the eyepiece included, by hand
    assert len(out["boxes"]) == 1, out["boxes"]
    assert _iou(out["boxes"][0].tolist(), head) > MIN_HEAD_IOU[predictor.shipped_name]
    assert _inside(labels != BG, head, margin=30) == 1.0
    assert (labels[260:] != BG).sum() == 0  # the coat and the tripod
    assert (labels[65:205, 160:275] == SKIN).sum() > 1500 and (labels[65:205, 160:275] == HAIR).sum() > 3000


@pytest.mark.skipif(FASSEG is None, reason="no FASSEG copy next to the repository")
def test_fasseg_test_photo_regions(predictor):
    """A FASSEG frontal test photo: one face; skin inside it (the neck below it); parts in it;
    nothing labelled far outside the head."""
    import cv2

    img_dir = FASSEG / "V2" / "Test_RGB"
    for name in ("1", "25", "50"):
        path = next(img_dir.glob(f"{name}.*"))
        image = cv2.imread(str(path))
        out = predictor(image)
        labels = np.asarray(out["labels"])
        boxes = out["instances"].pred_boxes.tensor.tolist()
        assert len(boxes) == 1, (path, boxes)
        x0, y0, x1, y1 = boxes[0]
        below = (x0, y0, x1, image.shape[0])  # FASSEG's skin includes the neck, below the face box
        assert _inside(labels == SKIN, below, margin=10) > 0.95, path
        for part in (EYES, NOSE, MOUTH):
            assert (labels == part).sum() > 30 and _inside(labels == part, boxes[0]) > 0.98, (path, part)
        assert _inside(labels != BG, below, margin=20) > 0.97, path


def test_grace_hopper_portrait_box_on_the_head_not_the_uniform(predictor):
    """matplotlib's Grace Hopper portrait (U.S. Navy photo, public domain), a head-and-torso
    portrait in uniform before a flag: her head is the one face found, its box stays on the head
    (not the uniform below it), both eyes are found, and the uniform's lower part and the flag at
    the left edge stay background."""
    import cv2
    import matplotlib

    image = cv2.imread(os.path.join(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg"))
    out = predictor(image)
    labels = np.asarray(out["labels"])
    head = (150, 25, 375, 330)  # cap top to chin, by hand, XYXY in the 512x600 photo
    assert len(out["boxes"]) == 1, out["boxes"]
    assert _iou(out["boxes"][0].tolist(), head) > 0.5, out["boxes"]
    for part in (NOSE, MOUTH):
        assert (labels == part).sum() > 300 and _inside(labels == part, head) == 1.0, part
    # one eye on each side of the nose
    assert (labels[150:230, 170:265] == EYES).sum() > 200 and (labels[150:230, 265:360] == EYES).sum() > 200
    assert (labels[480:] != BG).sum() == 0  # the uniform, its badges and buttons
    assert (labels[:, :80] != BG).sum() == 0  # the flag


@pytest.mark.parametrize("predictor", ["real_faces"], indirect=True)  # FCOS boxes the mirrored collar too
def test_mirrored_astronaut_is_one_face_with_her_parts(predictor):
    """The astronaut mirrored: one face (not her suit's collar or patches), on the mirrored head."""
    from skimage.data import astronaut

    image = np.ascontiguousarray(astronaut()[:, ::-1, ::-1])
    out = predictor(image)
    labels = np.asarray(out["labels"])
    head = (512 - 300, 12, 512 - 155, 190)
    assert len(out["boxes"]) == 1, out["boxes"]
    assert _iou(out["boxes"][0].tolist(), head) > MIN_HEAD_IOU[predictor.shipped_name]
    assert _inside(labels != BG, head, margin=30) == 1.0
    assert (labels[12:190, 212:357] == EYES).sum() > 50 and (labels[12:190, 212:357] == NOSE).sum() > 50


def test_landmarks_returned_in_the_original_frame():
    """The default model's faces carry YuNet's five landmarks in the original image's frame, also
    when the model input is a resized copy (a 1024 x 1024 photo, the parser's input at 512)."""
    import cv2
    from qanet_d2 import FaceParsingPredictor, get_qanet_cfg
    from skimage.data import astronaut

    config, weights = shipped_model()
    cfg = get_qanet_cfg()
    cfg.merge_from_file(config)
    cfg.MODEL.WEIGHTS = weights
    p = FaceParsingPredictor(cfg)
    small = np.ascontiguousarray(astronaut()[:, :, ::-1])
    big = cv2.resize(small, (1024, 1024), interpolation=cv2.INTER_LINEAR)
    k_small = p(small)["instances"].pred_keypoints[0, :, :2].numpy()
    k_big = p(big)["instances"].pred_keypoints[0, :, :2].numpy()
    # YuNet sees each photo at its own resolution, so its landmarks differ by a few pixels; a frame
    # mix-up (landmarks left in the 512 x 512 model-input frame) is off by ~200 px
    assert np.abs(k_big - 2 * k_small).max() < 12.0
    assert 190 < k_small[0, 0] < 215 and 235 < k_small[1, 0] < 260  # eyes at x ~203 and ~247


@pytest.mark.parametrize("predictor", ["real_faces"], indirect=True)
def test_small_face_in_a_large_photo_is_found(predictor):
    """A 2560 x 1920 photo with one face of about 30 px (the astronaut at 128 x 128): the model
    input is resized to 683 x 512, where the face would be 8 px; the detector sees the photo at
    its own resolution (capped at 1920) and finds it, and the parser paints it."""
    import cv2
    from skimage.data import astronaut

    canvas = np.full((1920, 2560, 3), 120, np.uint8)
    small = cv2.resize(np.ascontiguousarray(astronaut()[:, :, ::-1]), (128, 128), interpolation=cv2.INTER_AREA)
    canvas[1500:1628, 700:828] = small
    out = predictor(canvas)
    head = (700 + 155 / 4, 1500 + 12 / 4, 700 + 300 / 4, 1500 + 190 / 4)
    painted = predictor.postprocessor.order(out["instances"])
    assert len(painted) == 1, out["boxes"]
    assert out["painted"].tolist() == [i in painted for i in range(len(out["boxes"]))]
    assert _iou(out["instances"].pred_boxes.tensor[painted[0]].tolist(), head) > 0.5
    labels = np.asarray(out["labels"])
    assert (labels[1500:1628, 700:828] == SKIN).sum() > 300 and (labels != BG).sum() == (labels[1480:1648, 680:848] != BG).sum()


def test_realtime_model_parses_the_astronaut():
    """The real-time model (YuNet on a half-size copy, 160 x 128 crops, one view): her head is the
    one face, with its parts inside it and nothing on the suit."""
    from qanet_d2 import FaceParsingPredictor, get_qanet_cfg
    from skimage.data import astronaut

    config, weights = shipped_model("real_faces_realtime")
    cfg = get_qanet_cfg()
    cfg.merge_from_file(config)
    cfg.MODEL.WEIGHTS = weights
    p = FaceParsingPredictor(cfg)
    assert tuple(p.model.cropper.crop_size) == (160, 128)
    out = p(np.ascontiguousarray(astronaut()[:, :, ::-1]))
    labels = np.asarray(out["labels"])
    head = (155, 12, 300, 190)
    assert len(p.postprocessor.order(out["instances"])) == 1
    assert _iou(out["boxes"][0].tolist(), head) > 0.6
    for part in (EYES, NOSE, MOUTH):
        assert (labels[12:190, 155:300] == part).sum() > 50 and _inside(labels == part, head) > 0.95, part
    assert (labels[240:] != BG).sum() == 0
