"""Real labelled faces composited into the synthetic generator's scenes: labels and boxes
consistent with the source face, occlusion, flip pairs, sizes, determinism, instance maps, the
label set recorded, the preset and its registered datasets (on a tiny fake "real" dataset made
here, and on the shared FASSEG copy when present)."""
import dataclasses
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

import qanet_d2  # noqa: F401
from detectron2.data import DatasetCatalog, MetadataCatalog
from qanet_d2.data.datasets import DatasetNotFoundError, register_face_video_dataset
from qanet_d2.data.datasets import set_synthetic_auto_generate
from qanet_d2.structures.label_sets import LabelSet, make_palette
from qanet_d2.data.synthetic import (MAX_ANGLE, MIN_FACE_HEIGHT, PRESETS, CompositeVideo,
                                     collect_source_faces, default_synthetic_root,
                                     generate_synthetic_dataset)
from qanet_d2.data.synthetic.composite import COMPOSITE_TAG, assign_source_faces
from qanet_d2.data.synthetic.dataset import params_record
from qanet_d2.data.synthetic.generator import Occluder
from qanet_d2.data.video_format import make_frame_record, write_face_video_json

from conftest import load_script

REPO = Path(__file__).resolve().parents[1]
_CANDIDATES = [Path(os.environ["FASSEG_DIR"])] if os.environ.get("FASSEG_DIR") else []
_CANDIDATES += [REPO.parent / "shared" / "data" / "fasseg", REPO.parent.parent / "shared" / "data" / "fasseg"]
REAL = next((p for p in _CANDIDATES if (p / "V2").is_dir()), _CANDIDATES[0])

# A toy "real" label set with a left/right pair; l_eye is the person's left (image right).
CLASSES = ("background", "skin", "l_eye", "r_eye", "hair", "mouth")
TOY = LabelSet("toyface", CLASSES, make_palette(CLASSES), ((2, 3),))
BG, SKIN, LEYE, REYE, HAIR, MOUTH = range(6)
# BGR colours of the source photo: the eyes differ so that a flip shows in the image
COLORS = {BG: (128, 128, 128), SKIN: (120, 160, 210), LEYE: (220, 60, 40), REYE: (40, 60, 220),
          HAIR: (30, 40, 60), MOUTH: (80, 60, 170)}
OTHER = LabelSet("toyface_other", CLASSES, make_palette(CLASSES), ())
SRC_NAME, OTHER_NAME = "toyface_composite_src", "toyface_composite_other"
CHIN = 160


def toy_face(dx=0, dy=0):
    """A 160x200 photo of one face (hair, skin, eyes, mouth; the neck's skin runs to the bottom
    edge like FASSEG's) and its label map, box from hair top to chin."""
    lab = np.zeros((200, 160), np.uint8)
    cv2.ellipse(lab, (80 + dx, 70 + dy), (55, 60), 0, 180, 360, HAIR, -1)
    cv2.ellipse(lab, (80 + dx, 100 + dy), (45, 60), 0, 0, 360, SKIN, -1)
    lab[150 + dy:, 62 + dx:98 + dx] = SKIN
    lab[88 + dy:98 + dy, 92 + dx:110 + dx] = LEYE
    lab[88 + dy:98 + dy, 50 + dx:68 + dx] = REYE
    lab[128 + dy:138 + dy, 66 + dx:94 + dx] = MOUTH
    img = np.zeros((200, 160, 3), np.uint8)
    for c, col in COLORS.items():
        img[lab == c] = col
    head = np.isin(lab[:CHIN + dy], [SKIN, HAIR])
    cols = np.flatnonzero(head.any(axis=0))
    box = [float(cols[0]), float(10 + dy), float(cols[-1] + 1), float(CHIN + dy)]
    return img, lab, box


@pytest.fixture(scope="module")
def toy_source(tmp_path_factory):
    """Registered dataset ``toyface_composite_src``: three one-face photos."""
    root = tmp_path_factory.mktemp("toy_src")
    videos = []
    for i, (dx, dy) in enumerate([(0, 0), (-6, 4), (5, -3)]):
        img, lab, box = toy_face(dx, dy)
        vid = f"face{i}"
        os.makedirs(root / "images" / vid)
        os.makedirs(root / "labels" / vid)
        cv2.imwrite(str(root / "images" / vid / "00000.png"), img)
        cv2.imwrite(str(root / "labels" / vid / "00000.png"), lab)
        videos.append({"video_id": vid, "frames": [make_frame_record(
            0, f"images/{vid}/00000.png", 200, 160, f"labels/{vid}/00000.png", [box])]})
    write_face_video_json(str(root / "train.json"), TOY, videos)
    write_face_video_json(str(root / "other.json"), OTHER, videos)  # same faces, another set
    if SRC_NAME not in DatasetCatalog.list():
        register_face_video_dataset(SRC_NAME, str(root / "train.json"), str(root), TOY,
                                    single_face=True)
        register_face_video_dataset(OTHER_NAME, str(root / "other.json"), str(root), OTHER,
                                    single_face=True)
    return root


def alone(face, label_set=TOY, seed=0, scale=0.9, angle=0.0, size=(320, 240), flip=None):
    """A one-face video with the face at the frame's centre, a given scale and angle and no
    occluder; with ``flip`` set, the first seed from ``seed`` whose draw has that flip."""
    for s in range(seed, seed + 50):
        vid = CompositeVideo([s, 0, 0, COMPOSITE_TAG], size[0], size[1], 2, [face], label_set)
        if flip is None or vid.faces[0].flip == flip:
            break
    p = vid.faces[0]
    p.scale[:], p.angle[:] = scale, angle
    p.cx[:], p.cy[:] = size[0] / 2, size[1] / 2 - 20
    vid.occluders = []
    return vid


def warped_source_labels(vid, k, t, src_label):
    """The source label map warped by face k's known transform (nearest), flip pairs swapped
    when the face is flipped."""
    pl = vid.placement(k, t)
    out = cv2.warpAffine(src_label, pl.matrix, (vid.w, vid.h), flags=cv2.INTER_NEAREST,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return TOY.flip_lut()[out] if pl.flip else out


def source_rows(vid, k, t):
    """Row coordinate (source image) of every frame pixel under face k's transform."""
    m = np.vstack([vid.placement(k, t).matrix, [0, 0, 1]])
    inv = np.linalg.inv(m)
    yy, xx = np.mgrid[0:vid.h, 0:vid.w]
    return inv[1, 0] * xx + inv[1, 1] * yy + inv[1, 2]


# --------------------------------------------------------------------------- one face
@pytest.mark.parametrize("scale,angle", [(0.9, 0.0), (0.9, 25.0), (0.45, -30.0)])
@pytest.mark.parametrize("flip", [False, True])
def test_labels_are_the_source_labels_warped(toy_source, scale, angle, flip):
    """Inside a pasted, unoccluded face (above the chin, where the neckline cannot cut), every
    pixel away from class edges has the source label at the place the transform maps it from;
    a flipped face has its flip pairs swapped."""
    _, faces = collect_source_faces([SRC_NAME])
    _, src_label, _ = toy_face()
    vid = alone(faces[0], scale=scale, angle=angle, flip=flip)
    assert vid.faces[0].flip == flip
    fr = vid.render(0)
    expected = warped_source_labels(vid, 0, 0, src_label)
    uniform = cv2.erode(expected, np.ones((3, 3), np.uint8)) == cv2.dilate(expected, np.ones((3, 3), np.uint8))
    sel = uniform & (expected > 0) & (source_rows(vid, 0, 0) < CHIN - 3)
    assert sel.sum() > (4000 if scale > 0.5 else 900)
    assert (fr.label[sel] == expected[sel]).all()
    assert (fr.owner[sel] == 0).all()
    # and nothing of the face outside the warped source's face pixels, up to one edge pixel
    face_px = (fr.owner == 0) & (fr.label != 0)
    near = cv2.dilate((expected > 0).view(np.uint8), np.ones((3, 3), np.uint8)) > 0
    above_chin = source_rows(vid, 0, 0) < CHIN - 3
    assert not (face_px & above_chin & ~near).any()
    # every class of the source made it into the frame
    assert set(np.unique(fr.label[fr.owner == 0])) == {SKIN, LEYE, REYE, HAIR, MOUTH}


@pytest.mark.parametrize("flip", [False, True])
def test_flip_swaps_left_and_right(toy_source, flip):
    """l_eye (the person's left) lies on the image right of an upright face whether it is
    flipped or not; a flipped face's l_eye pixels show the source's r_eye (red), mirrored."""
    _, faces = collect_source_faces([SRC_NAME])
    vid = alone(faces[0], flip=flip)
    fr = vid.render(0)
    lm, rm = fr.label == LEYE, fr.label == REYE
    assert lm.sum() > 80 and rm.sum() > 80
    assert np.nonzero(lm)[1].mean() > vid.w / 2 > np.nonzero(rm)[1].mean()
    blue, red = fr.image[lm].mean(0)[[0, 2]]
    assert (red > blue) if flip else (blue > red), (flip, blue, red)


def test_box_is_the_source_box_transformed(toy_source):
    _, faces = collect_source_faces([SRC_NAME])
    _, _, src_box = toy_face()
    for flip in (False, True):
        for angle in (0.0, 20.0):
            vid = alone(faces[0], scale=0.8, angle=angle, flip=flip)
            fr = vid.render(0)
            assert fr.box_owner == [0]
            m = vid.placement(0, 0).matrix
            x0, y0, x1, y1 = src_box
            corners = np.array([[x0, y0, 1], [x1, y0, 1], [x1, y1, 1], [x0, y1, 1]], float)
            corners[:, :2] -= 0.5  # pixel edges -> pixel-centre coordinates
            q = corners @ m.T + 0.5
            quad_box = [q[:, 0].min(), q[:, 1].min(), q[:, 0].max(), q[:, 1].max()]
            box = fr.boxes[0]
            if angle == 0.0:  # the source box, scaled and moved (the face fills it)
                assert np.abs(np.array(box) - quad_box).max() <= 1.01, (flip, box, quad_box)
            else:  # visible face pixels inside the rotated box: within its bounding box
                assert quad_box[0] - 1 <= box[0] and box[2] <= quad_box[2] + 1
                assert quad_box[1] - 1 <= box[1] and box[3] <= quad_box[3] + 1
            # the box's border rows and columns hold face pixels (tight)
            inst = fr.instance_map()[int(box[1]):int(box[3]), int(box[0]):int(box[2])] == 1
            assert inst[0].any() and inst[-1].any() and inst[:, 0].any() and inst[:, -1].any()
            # the neck below the chin is the face's, outside its box
            below = (fr.owner == 0) & (np.arange(vid.h)[:, None] >= box[3] + 1)
            assert below.any() and (fr.label[below] == SKIN).all()


def test_torso_label_is_the_sets_cloth_class_or_background(toy_source):
    _, faces = collect_source_faces([SRC_NAME])
    vid = alone(faces[0], scale=0.5)
    fr = vid.render(0)
    p = vid.faces[0]
    pts = np.c_[p.cut.torso, np.ones(len(p.cut.torso))] @ vid._crop_to_frame(p, 0)[:2].T
    inside = np.zeros(fr.label.shape, np.uint8)
    cv2.fillPoly(inside, [np.round(pts * 16).astype(np.int32)], 1, cv2.LINE_8, 4)
    torso = cv2.erode(inside, np.ones((5, 5), np.uint8)) > 0  # away from its edge
    assert torso.sum() > 2000
    assert (fr.label[torso] == BG).all() and (fr.owner[torso] == -1).all()
    with_cloth = LabelSet("toyface_cloth", CLASSES + ("cloth",), make_palette(CLASSES + ("cloth",)), ((2, 3),))
    vid = alone(faces[0], label_set=with_cloth, scale=0.5)
    fr2 = vid.render(0)
    assert (fr2.label[torso] == 6).all() and (fr2.owner[torso] == 0).all()
    assert fr2.boxes == fr.boxes  # cloth is a body class: not in the face box


# --------------------------------------------------------------------------- occlusion
def test_occlusion_removes_labels_and_shrinks_boxes(toy_source):
    _, faces = collect_source_faces([SRC_NAME])
    vid = alone(faces[0], scale=0.8)
    free = vid.render(0)
    x0, y0, x1, y1 = free.boxes[0]
    # a square occluder over the upper 40% of the face box
    cover_h = 0.4 * (y1 - y0)
    square = np.array([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])
    half_w = (x1 - x0) / 2 + 6
    vid.occluders = [Occluder(shape=square * [1.0, cover_h / 2 / half_w], color=(0.0, 255.0, 0.0),
                               cx=np.full(2, (x0 + x1) / 2), cy=np.full(2, y0 - 4 + cover_h / 2),
                               radius=np.full(2, half_w), angle=np.zeros(2))]
    occ = vid.render(0)
    hidden = np.zeros(occ.label.shape, bool)
    hidden[int(y0) + 1:int(y0 - 4 + cover_h) - 1, int(x0) - 4:int(x1) + 4] = True
    assert (free.label[hidden] > 0).sum() > 500
    assert (occ.label[hidden] == BG).all() and (occ.owner[hidden] == -1).all()
    bx0, by0, bx1, by1 = occ.boxes[0]
    assert by0 >= y0 - 4 + cover_h - 2 and by1 == y1  # the box starts below the occluder
    assert abs(bx0 - x0) <= 12 and abs(bx1 - x1) <= 12
    assert (occ.instance_map()[hidden] == 0).all()
    # hidden but for the lowest 8% of its box: the face keeps its visible labels but, with
    # less than MIN_VISIBLE_FRACTION of its box area visible, gets no box
    big = x1 - x0
    vid.occluders[0].shape = square
    vid.occluders[0].radius[:] = big
    vid.occluders[0].cy[:] = y1 - 0.08 * (y1 - y0) - big
    gone = vid.render(0)
    assert gone.boxes == [] and gone.instance_map().max() == 0
    assert (gone.owner == 0).any()  # some of the face (its neck at least) is still visible


def test_faces_occlude_each_other_in_painting_order(toy_source):
    _, faces = collect_source_faces([SRC_NAME])
    vid = CompositeVideo([3, 0, 0, COMPOSITE_TAG], 320, 240, 1, faces[:2], TOY)
    vid.occluders = []
    for k, p in enumerate(vid.faces):
        p.scale[:], p.angle[:], p.cy[:] = 0.7, 0.0, 100.0
    vid.faces[0].cx[:] = 130.0
    vid.faces[1].cx[:] = 400.0  # out of the frame: face 0 alone
    alone0 = vid.render(0)
    vid.faces[1].cx[:] = 175.0  # overlapping face 0 from the right
    both = vid.render(0)
    overlap = (alone0.owner == 0) & (both.owner == 1)
    assert overlap.sum() > 300
    assert (both.label[overlap] > 0).all()
    assert both.box_owner == [0, 1]
    b_alone, b_both = alone0.boxes[0], both.boxes[0]
    assert b_both[2] < b_alone[2] - 10  # face 0 lost its right part to face 1
    assert b_both[0] == b_alone[0] and b_both[1] == b_alone[1]


def test_frames_keep_each_faces_labels_and_boxes_consistent(toy_source):
    """In drawn scenes (1-4 faces at random sizes, angles and flips, moving occluders), for
    every frame and face: the pixels the face owns carry its own source's labels at the place
    its transform maps them from (flip pairs swapped), its box (if it has one) is the tight box
    of its visible pixels inside its transformed source box, and the instance map is k + 1
    exactly on the face of box k."""
    _, faces = collect_source_faces([SRC_NAME])
    src = {f.image_id: cv2.imread(f.label_file, cv2.IMREAD_UNCHANGED) for f in faces}
    k5 = np.ones((5, 5), np.uint8)
    checked_px = checked_boxes = multi = 0
    for i, ids in enumerate(assign_source_faces(len(faces), 10, [0, 0, 11])):
        vid = CompositeVideo([i, 0, 11, COMPOSITE_TAG], 320, 240, 3, [faces[j] for j in ids], TOY)
        multi += len(vid.faces) > 1
        for t in (0, 2):
            fr = vid.render(t)
            inst = fr.instance_map()
            assert fr.box_owner == sorted(set(fr.box_owner)) and len(fr.boxes) == len(fr.box_owner)
            for k, p in enumerate(vid.faces):
                pl = vid.placement(k, t)
                inv = np.linalg.inv(np.vstack([pl.matrix, [0, 0, 1]]))
                yy, xx = np.mgrid[0:vid.h, 0:vid.w]
                u = inv[0, 0] * xx + inv[0, 1] * yy + inv[0, 2]  # source pixel centres
                v = inv[1, 0] * xx + inv[1, 1] * yy + inv[1, 2]
                # labels: the source's, warped; checked where the source is uniform around
                # the mapped point and above the chin (below it the neckline cuts)
                lab = src[p.face.image_id]
                exp = cv2.warpAffine(lab, pl.matrix, (vid.w, vid.h), flags=cv2.INTER_NEAREST,
                                     borderMode=cv2.BORDER_CONSTANT, borderValue=0)
                exp = TOY.flip_lut()[exp] if pl.flip else exp
                uniform = cv2.erode(exp, k5) == cv2.dilate(exp, k5)
                own = fr.owner == k
                sel = own & uniform & (exp > 0) & (v < p.face.box[3] - 3)
                assert (fr.label[sel] == exp[sel]).all(), (i, t, k)
                assert set(np.unique(fr.label[own])) <= set(np.unique(lab)) - {BG}
                checked_px += int(sel.sum())
                # box: tight on the face's visible pixels inside its source box (pixel-edge
                # XYXY -> pixel-centre bounds), up to 1.5 frame pixels at the box's border
                x0, y0, x1, y1 = p.face.box
                tol = 1.5 / pl.scale

                def in_box(d):
                    return ((u >= x0 - 0.5 + d) & (u <= x1 - 0.5 - d)
                            & (v >= y0 - 0.5 + d) & (v <= y1 - 0.5 - d))

                if k not in fr.box_owner:
                    assert np.count_nonzero(own & in_box(tol)) < max(
                        12, 0.15 * fr.amodal_area[k]) + 3 * (x1 - x0 + y1 - y0) * pl.scale
                    assert not np.isin(inst[own], range(1, len(fr.boxes) + 1)).any()
                    continue
                j = fr.box_owner.index(k)
                assert ((inst == j + 1) == own).all()
                bx0, by0, bx1, by1 = fr.boxes[j]
                inner, outer = own & in_box(tol), own & in_box(-tol)
                ys, xs = np.nonzero(outer)  # the box lies within these pixels' extent
                assert xs.min() <= bx0 and ys.min() <= by0 and bx1 <= xs.max() + 1 and by1 <= ys.max() + 1
                ys, xs = np.nonzero(inner)  # and holds all of these
                if xs.size:
                    assert bx0 <= xs.min() and by0 <= ys.min() and xs.max() < bx1 and ys.max() < by1
                checked_boxes += 1
    assert checked_px > 40000 and checked_boxes >= 30 and multi >= 4


# --------------------------------------------------------------------------- scenes
def test_sizes_angles_and_face_counts(toy_source):
    _, faces = collect_source_faces([SRC_NAME])
    heights, angles, counts = [], [], []
    for i, ids in enumerate(assign_source_faces(len(faces), 40, [0, 0, 7])):
        vid = CompositeVideo([0, 0, i, COMPOSITE_TAG], 320, 240, 3, [faces[j] for j in ids], TOY)
        counts.append(len(vid.faces))
        for p in vid.faces:
            heights += (p.scale * (p.cut.box[3] - p.cut.box[1])).tolist()
            angles += p.angle.tolist()
    heights = np.array(heights)
    assert heights.min() >= MIN_FACE_HEIGHT - 1e-6 and heights.max() <= 0.95 * 240 + 1e-6
    assert heights.min() < 32 and heights.max() > 150  # from tiny faces to most of the frame
    assert 40 < np.median(heights) < 110  # log-uniform: the median is far below the middle
    assert max(abs(a) for a in angles) <= MAX_ANGLE and max(abs(a) for a in angles) > 20
    assert set(counts) == {1, 2, 3, 4}


def test_assignment_uses_every_source_before_repeating():
    a = assign_source_faces(10, 8, [1, 2, 3])
    flat = [j for v in a for j in v]
    assert all(1 <= len(v) <= 4 for v in a)
    assert sorted(flat[:10]) == list(range(10)) if len(flat) >= 10 else len(set(flat)) == len(flat)
    assert a == assign_source_faces(10, 8, [1, 2, 3]) and a != assign_source_faces(10, 8, [1, 2, 4])


def test_faces_move_smoothly(toy_source):
    _, faces = collect_source_faces([SRC_NAME])
    vid = CompositeVideo([5, 0, 1, COMPOSITE_TAG], 320, 240, 10, faces[:1], TOY)
    centres = np.array([[vid.placement(0, t).cx, vid.placement(0, t).cy] for t in range(10)])
    steps = np.linalg.norm(np.diff(centres, axis=0), axis=1)
    assert steps.max() < 0.1 * 320  # no jumps between consecutive frames
    frames = [vid.render(t) for t in (0, 1)]
    assert frames[0].boxes and frames[1].boxes
    assert np.abs(np.array(frames[0].boxes[0]) - frames[1].boxes[0]).max() < 25


# --------------------------------------------------------------------------- datasets
def _files(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(Path(root).rglob("*"))
            if p.is_file() and p.name != "params.json"}


def test_generated_dataset(toy_source, tmp_path):
    paths = generate_synthetic_dataset(str(tmp_path / "a"), 3, 2, 2, (160, 120), seed=0,
                                       face_source=[SRC_NAME])
    root = Path(paths["root"])
    assert set(paths) == {"root", "train", "val", "params"}
    rec = json.load(open(paths["params"]))
    assert rec["label_set"] == "toyface" and rec["source_faces"] == {"train": 3, "val": 3}
    assert rec["params"]["face_source"] == {"train": [SRC_NAME], "val": [SRC_NAME]}
    n_faces = 0
    for split in ("train", "val"):
        data = json.load(open(root / f"{split}.json"))
        assert data["label_set"] == "toyface" and data["classes"] == list(CLASSES)
        assert data["face_source"] == [SRC_NAME]
        for v in data["videos"]:
            for f in v["frames"]:
                lab = cv2.imread(str(root / f["label_file"]), cv2.IMREAD_UNCHANGED)
                inst = cv2.imread(str(root / f["instance_file"]), cv2.IMREAD_UNCHANGED)
                assert lab.shape == inst.shape == (120, 160) and lab.max() <= MOUTH
                assert (lab[inst > 0] > 0).all()
                assert set(np.unique(inst)) <= set(range(len(f["faces"]) + 1))
                for k, face in enumerate(f["faces"]):
                    x0, y0, x1, y1 = (int(v) for v in face["bbox"])
                    assert 0 <= x0 < x1 <= 160 and 0 <= y0 < y1 <= 120
                    own = inst[y0:y1, x0:x1] == k + 1  # the box is tight on its face's pixels
                    assert own[0].any() and own[-1].any() and own[:, 0].any() and own[:, -1].any()
                    ys, xs = np.nonzero(inst == k + 1)
                    assert xs.min() <= x0 and ys.min() <= y0 and xs.max() + 1 >= x1 and ys.max() + 1 >= y1
                    n_faces += 1
    assert n_faces >= 10
    # the loader reads it with the source's label set
    again = generate_synthetic_dataset(str(tmp_path / "b"), 3, 2, 2, (160, 120), seed=0,
                                       face_source=[SRC_NAME], workers=2)
    assert _files(root) == _files(again["root"])  # byte-identical, whatever the workers
    other = generate_synthetic_dataset(str(tmp_path / "c"), 3, 2, 2, (160, 120), seed=1,
                                       face_source=[SRC_NAME])
    f0 = Path("labels/train_0000/00000.png")
    assert _files(root)[f0] != _files(other["root"])[f0]
    # idempotent; other parameters need force
    assert generate_synthetic_dataset(str(root), 3, 2, 2, (160, 120), seed=0,
                                      face_source=[SRC_NAME]) == paths
    with pytest.raises(ValueError, match="other parameters"):
        generate_synthetic_dataset(str(root), 3, 2, 2, (160, 120), seed=0)


def test_splits_by_mapping(toy_source, tmp_path):
    paths = generate_synthetic_dataset(str(tmp_path / "m"), 2, 0, 1, (96, 64), seed=0,
                                       num_test_videos=1,
                                       face_source={"train": [SRC_NAME], "test": [SRC_NAME]})
    assert set(paths) == {"root", "train", "test", "params"}
    assert not (tmp_path / "m" / "val.json").exists()
    assert len(json.load(open(paths["test"]))["videos"]) == 1
    with pytest.raises(ValueError, match="split 'val'"):
        generate_synthetic_dataset(str(tmp_path / "x"), 2, 0, 1, (96, 64),
                                   face_source={"train": [SRC_NAME], "val": [SRC_NAME]})
    with pytest.raises(ValueError, match="names no faces"):
        generate_synthetic_dataset(str(tmp_path / "x"), 2, 1, 1, (96, 64),
                                   face_source={"train": [SRC_NAME]})
    with pytest.raises(ValueError, match="unknown split"):
        generate_synthetic_dataset(str(tmp_path / "x"), 2, 1, 1, (96, 64),
                                   face_source={"train": [SRC_NAME], "dev": [SRC_NAME]})


def test_face_source_errors(toy_source, tmp_path, monkeypatch):
    with pytest.raises(KeyError, match="'no_such_faces' is not a registered dataset"):
        collect_source_faces(["no_such_faces"])
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path / "empty"))
    with pytest.raises(DatasetNotFoundError, match=r"face source 'fasseg_frontal_test' is not available.*prepare_fasseg\.py"):
        collect_source_faces(["fasseg_frontal_test"])
    with pytest.raises(ValueError, match="share one label set"):
        collect_source_faces([SRC_NAME, OTHER_NAME])


def test_cartoon_sets_keep_their_parameters():
    """Datasets generated before face_source existed keep a valid params.json."""
    assert set(params_record(40, 10, 10, (320, 240), 0)) == {
        "generator", "version", "label_set", "num_train_videos", "num_val_videos", "frames",
        "width", "height", "seed"}


def test_preset_and_registered_datasets(tmp_path, monkeypatch):
    p = PRESETS["composite_fasseg"]
    assert p["face_source"] == {"train": ("fasseg_frontal_train", "fasseg_multipose_dev_train"),
                                "test": ("fasseg_frontal_test",)}
    assert p["size"] == (320, 240) and p["num_val_videos"] == 0
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    assert default_synthetic_root("composite_fasseg") == os.path.join(str(tmp_path), "face_composite_fasseg")
    for split in ("train", "test"):
        meta = MetadataCatalog.get(f"face_composite_fasseg_{split}")
        assert meta.label_set == "fasseg" and meta.stuff_classes[0] == "background"
    # generated on first use when the sources exist; a clear error naming them otherwise
    with pytest.raises(DatasetNotFoundError, match=r"fasseg_frontal_train.*prepare_fasseg\.py"):
        DatasetCatalog.get("face_composite_fasseg_train")
    set_synthetic_auto_generate(False)
    try:
        with pytest.raises(DatasetNotFoundError, match=r"prepare_synthetic\.py --preset composite_fasseg"):
            DatasetCatalog.get("face_composite_fasseg_test")
    finally:
        set_synthetic_auto_generate(True)


def test_prepare_synthetic_cli(toy_source, tmp_path, capsys, monkeypatch):
    mod = load_script("datasets/prepare_synthetic.py", "prepare_synthetic")
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path / "ds"))
    args = ["--face-source", SRC_NAME, "--root", str(tmp_path / "toy"), "--num-train-videos", "1",
            "--num-val-videos", "1", "--frames", "1", "--size", "96x64", "--workers", "1"]
    assert mod.main(args) == 0
    out = capsys.readouterr().out
    assert "1 train + 1 val videos x 1 frames of 96x64 (real faces)" in out and "generated in" in out
    assert json.load(open(tmp_path / "toy" / "train.json"))["label_set"] == "toyface"
    photo_args = args[:3] + [str(tmp_path / "toy_photos")] + args[4:] + ["--photo-backgrounds", "1"]
    assert mod.main(photo_args) == 0
    assert "(real faces, 100 % over real photos)" in capsys.readouterr().out
    rec = json.load(open(tmp_path / "toy_photos" / "params.json"))["params"]
    assert rec["photo_backgrounds"]["share"] == 1.0
    with pytest.raises(SystemExit):
        mod.main(["--face-source", SRC_NAME])  # would write real faces into face_synth
    assert "--face-source needs --root" in capsys.readouterr().err
    assert mod.main(["--preset", "composite_fasseg", "--workers", "1"]) == 2
    err = capsys.readouterr().err
    assert "face source 'fasseg_frontal_train' is not available" in err and "prepare_fasseg.py" in err


# --------------------------------------------------------------------------- the real data
@pytest.mark.skipif(not (REAL / "V2").is_dir(), reason=f"no FASSEG copy at {REAL}")
def test_real_fasseg_composites(tmp_path, monkeypatch):
    """A small composite_fasseg set from (part of) the shared FASSEG copy: counts, labels and
    boxes plausible, every box holding a real face's parts."""
    from qanet_d2.data import check_json
    from qanet_d2.data.datasets import convert_fasseg

    src = tmp_path / "src"  # frontal photos and two head poses of the multipose set
    for part in ("Train_RGB", "Train_Labels", "Test_RGB", "Test_Labels"):
        (src / "V2").mkdir(parents=True, exist_ok=True)
        os.symlink(REAL / "V2" / part, src / "V2" / part)
    for part in ("Train_RGB", "Train_labels"):
        for pose in ("-90", "+45"):
            (src / "V3" / part).mkdir(parents=True, exist_ok=True)
            os.symlink(REAL / "V3" / part / pose, src / "V3" / part / pose)
    datasets = tmp_path / "datasets"
    convert_fasseg(str(src), str(datasets / "fasseg"), workers=2)
    monkeypatch.setenv("DETECTRON2_DATASETS", str(datasets))
    from qanet_d2.data.synthetic import generate_preset

    paths = generate_preset("composite_fasseg", num_train_videos=4, num_test_videos=3, frames=2,
                            workers=2)
    assert paths["root"] == str(datasets / "face_composite_fasseg")
    rec = json.load(open(paths["params"]))
    assert rec["label_set"] == "fasseg" and rec["source_faces"] == {"train": 20 + 20, "test": 50}  # two poses of persons 01-05
    for split, n_videos in (("train", 4), ("test", 3)):
        report = check_json(paths[split])
        assert report.ok, str(report)
        data = json.load(open(paths[split]))
        assert data["label_set"] == "fasseg" and len(data["videos"]) == n_videos
        heights, part_in_box, part_all = [], 0, 0
        for v in data["videos"]:
            for f in v["frames"]:
                assert 1 <= len(f["faces"]) <= 4
                lab = cv2.imread(str(Path(paths["root"]) / f["label_file"]), cv2.IMREAD_UNCHANGED)
                assert lab.max() <= 5
                in_box = np.zeros(lab.shape, bool)
                for face in f["faces"]:
                    x0, y0, x1, y1 = (int(round(c)) for c in face["bbox"])
                    in_box[y0:y1, x0:x1] = True
                    heights.append(y1 - y0)
                    inside = lab[y0:y1, x0:x1]
                    if (y1 - y0) > 60:  # a big face: skin and hair are much of its box
                        assert np.isin(inside, [1, 2]).mean() > 0.3
                parts = np.isin(lab, [3, 4, 5])  # eyes, nose, mouth
                part_in_box += int((parts & in_box).sum())
                part_all += int(parts.sum())
        # face parts lie inside face boxes (but for faces too hidden to have one)
        assert part_all > 0 and part_in_box / part_all > 0.9
        assert min(heights) < 80 and max(heights) >= 24
    # the same faces over real photos
    paths = generate_preset("composite_fasseg_photos", num_train_videos=3, frames=1, workers=1)
    assert paths["root"] == str(datasets / "face_composite_fasseg_photos") and "test" not in paths
    rec = json.load(open(paths["params"]))
    assert rec["label_set"] == "fasseg" and rec["source_faces"] == {"train": 40}
    assert rec["params"]["photo_backgrounds"]["share"] == 1.0
    assert check_json(paths["train"]).ok


# --------------------------------------------------------------------------- photo backgrounds
from qanet_d2.data.synthetic.generator import Scene  # noqa: E402
from qanet_d2.data.synthetic.photos import (BACKGROUND_PHOTOS, PEOPLE_PHOTOS,  # noqa: E402
                                            available_background_photos)


def _photo(name):
    return [p for p in available_background_photos() if p[0] == name]


def _resized_crop(photo, width, height):
    """The scene's photo crop rebuilt from the file with OpenCV: crop, matte under alpha, flip,
    resize (area when shrinking, bilinear when enlarging); float32 BGR."""
    raw = cv2.imread(photo.path, cv2.IMREAD_UNCHANGED)
    if raw.ndim == 2:
        raw = cv2.cvtColor(raw, cv2.COLOR_GRAY2BGRA)
    elif raw.shape[2] == 3:
        raw = cv2.cvtColor(raw, cv2.COLOR_BGR2BGRA)
    x0, y0, x1, y1 = photo.box
    c = raw[y0:y1, x0:x1].astype(np.float32)
    a = c[..., 3:] / 255.0
    c = c[..., :3] * a + np.array(photo.matte, np.float32) * (1 - a)
    if photo.flip:
        c = c[:, ::-1]
    shrink = width < c.shape[1] or height < c.shape[0]
    return cv2.resize(np.ascontiguousarray(c), (width, height),
                      interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def _colour_fit_residual(src, dst):
    """Largest residual of the best affine colour map src -> dst (least squares, per output
    channel over the pixels where that channel is not clipped)."""
    src, dst = src.reshape(-1, 3).astype(np.float64), dst.reshape(-1, 3).astype(np.float64)
    x = np.c_[src, np.ones(len(src))]
    worst = 0.0
    for c in range(3):
        ok = (dst[:, c] > 0) & (dst[:, c] < 255)
        assert ok.sum() > 200
        coef, *_ = np.linalg.lstsq(x[ok], dst[ok, c], rcond=None)
        worst = max(worst, float(np.abs(x[ok] @ coef - dst[ok, c]).max()))
    return worst


def test_photo_sources_exclude_people():
    """The one list of background photos: installed here (scikit-image and matplotlib are
    pinned), each with origin and licence, none of the people photos (the held-out checks)."""
    people = ("astronaut", "camera", "grace_hopper", "lfw")
    for p in BACKGROUND_PHOTOS:
        assert p.origin and p.licence and p.package in ("skimage", "matplotlib")
        assert not any(w in p.path.lower() or w in p.name.lower() for w in people), p
    assert {"astronaut.png", "camera.png", "grace_hopper.jpg", "lfw_subset.npy"} <= set(PEOPLE_PHOTOS)
    avail = available_background_photos()
    assert len(avail) == len(BACKGROUND_PHOTOS) >= 15
    assert not {os.path.basename(path) for _, path in avail} & set(PEOPLE_PHOTOS)
    assert all(os.path.isfile(path) for _, path in avail)
    with pytest.raises(KeyError, match="unknown background photo"):
        available_background_photos(["astronaut"])


@pytest.mark.parametrize("name", ["coffee", "clock", "logo", "rocket"])  # RGB, grey, RGBA, JPEG
def test_photo_background_is_a_resized_crop_of_the_photo(name):
    """A scene's background is a crop of its photo of the background's aspect, resized, under a
    linear colour jitter: an affine colour map of the crop rebuilt from the file reproduces it
    up to rounding; a crop shifted by a few pixels does not."""
    photo = _photo(name)
    seen_flip = set()
    for s in range(3, 7):
        sc = Scene([s, 0, 5], 160, 120, 2, photos=photo, photo_share=1.0)
        assert sc.photo is not None and sc.photo.name == name
        bh, bw = sc.background.shape[:2]
        x0, y0, x1, y1 = sc.photo.box
        assert abs((x1 - x0) / (y1 - y0) - bw / bh) < 0.05
        ref = _resized_crop(sc.photo, bw, bh)
        assert _colour_fit_residual(ref, sc.background) <= 1.0, (name, s)
        shifted = dataclasses.replace(sc.photo, box=(x0 + 6, y0 + 6, x1 + 6, y1 + 6))
        raw_h, raw_w = cv2.imread(photo[0][1], cv2.IMREAD_UNCHANGED).shape[:2]
        if x1 + 6 <= raw_w and y1 + 6 <= raw_h:
            assert _colour_fit_residual(_resized_crop(shifted, bw, bh), sc.background) > 8
        seen_flip.add(sc.photo.flip)
    assert seen_flip == {False, True}
    sc = Scene([0, 0, 5], 160, 120, 2, photos=photo, photo_share=0.0)
    assert sc.photo is None


def test_photo_share_and_determinism():
    photos = available_background_photos()
    chosen = [Scene([7, 0, i], 96, 64, 1, photos=photos, photo_share=0.4).photo
              for i in range(60)]
    n = sum(p is not None for p in chosen)
    assert 12 <= n <= 36  # about 40 % of the videos
    assert len({p.name for p in chosen if p is not None}) >= 8
    again = [Scene([7, 0, i], 96, 64, 1, photos=photos, photo_share=0.4).photo for i in range(60)]
    assert again == chosen


def test_frames_show_the_photo_outside_faces(toy_source):
    """Over a photo background, frame pixels away from the faces and their torsos are the
    photo's crop (camera steps off): the same affine colour map of the rebuilt crop, panned."""
    _, faces = collect_source_faces([SRC_NAME])
    photo = _photo("coffee")
    for s in (2, 3):  # not flipped, flipped
        vid = CompositeVideo([s, 0, 9, COMPOSITE_TAG], 320, 240, 2, faces[:2], TOY,
                             photos=photo, photo_share=1.0)
        vid.occluders = []
        vid.light_blur_noise = lambda img, t, rng: np.clip(np.round(img), 0, 255).astype(np.uint8)
        for t in (0, 1):
            fr = vid.render(t)
            near = np.zeros(fr.label.shape, np.uint8)
            near[fr.owner >= 0] = 1
            for p in vid.faces:
                pts = np.c_[p.cut.torso, np.ones(len(p.cut.torso))] @ vid._crop_to_frame(p, t)[:2].T
                cv2.fillPoly(near, [np.round(pts * 16).astype(np.int32)], 1, cv2.LINE_8, 4)
            near = cv2.dilate(near, np.ones((7, 7), np.uint8)) > 0
            assert 0.05 < near.mean() < 0.9
            ox, oy = (int(round(v)) for v in vid.pan[t])
            ref = _resized_crop(vid.photo, vid.background.shape[1], vid.background.shape[0])
            ref = ref[oy:oy + vid.h, ox:ox + vid.w]
            assert (fr.image[~near] == vid.background_view(t)[~near]).all()
            assert _colour_fit_residual(ref[~near], fr.image[~near]) <= 1.0
            assert (fr.label[~near] == 0).all()


def test_photo_backgrounds_keep_labels_boxes_and_placements(toy_source):
    """A photo background changes the background only: the faces, their labels, owners, boxes
    and placements are those of the textured video of the same key."""
    _, faces = collect_source_faces([SRC_NAME])
    photos = available_background_photos()
    differs = 0
    for i, ids in enumerate(assign_source_faces(len(faces), 6, [0, 0, 13])):
        fs = [faces[j] for j in ids]
        plain = CompositeVideo([i, 0, 13, COMPOSITE_TAG], 160, 120, 2, fs, TOY)
        photo = CompositeVideo([i, 0, 13, COMPOSITE_TAG], 160, 120, 2, fs, TOY, photos=photos,
                               photo_share=1.0)
        assert plain.photo is None and photo.photo is not None
        for t in (0, 1):
            a, b = plain.render(t), photo.render(t)
            assert (a.label == b.label).all() and (a.owner == b.owner).all()
            assert a.boxes == b.boxes and a.box_owner == b.box_owner
            assert all(np.allclose(p.matrix, q.matrix) for p, q in zip(a.poses, b.poses))
            differs += int(np.abs(a.image.astype(int) - b.image).mean() > 10)
    assert differs >= 10


def test_generated_dataset_with_photo_backgrounds(toy_source, tmp_path):
    kw = dict(num_train_videos=4, num_val_videos=0, frames=2, size=(96, 64), seed=0,
              face_source={"train": [SRC_NAME]}, photo_backgrounds=0.5)
    paths = generate_synthetic_dataset(str(tmp_path / "a"), **kw)
    rec = json.load(open(paths["params"]))["params"]
    assert rec["photo_backgrounds"]["share"] == 0.5
    assert rec["photo_backgrounds"]["photos"] == [p.name for p in BACKGROUND_PHOTOS]
    again = generate_synthetic_dataset(str(tmp_path / "b"), workers=2, **kw)
    assert _files(paths["root"]) == _files(again["root"])  # byte-identical, whatever the workers
    plain = generate_synthetic_dataset(str(tmp_path / "c"), **{**kw, "photo_backgrounds": 0.0})
    assert "photo_backgrounds" not in json.load(open(plain["params"]))["params"]
    a, c = _files(paths["root"]), _files(plain["root"])
    labels = [k for k in a if k.parts[0] in ("labels", "instances")]
    assert labels and all(a[k] == c[k] for k in labels)  # faces as without photos
    assert json.load(open(paths["train"]))["videos"] == json.load(open(plain["train"]))["videos"]
    images = [k for k in a if k.parts[0] == "images"]
    assert 0 < sum(a[k] != c[k] for k in images) < len(images)  # some videos over photos
    with pytest.raises(ValueError, match="other parameters"):
        generate_synthetic_dataset(str(tmp_path / "c"), **kw)
    with pytest.raises(ValueError, match="photo_backgrounds"):
        generate_synthetic_dataset(str(tmp_path / "d"), **{**kw, "photo_backgrounds": 1.5})


def test_photo_preset_and_registered_dataset(tmp_path, monkeypatch):
    p, base = PRESETS["composite_fasseg_photos"], PRESETS["composite_fasseg"]
    assert p["face_source"] == {"train": base["face_source"]["train"]}
    assert p["photo_backgrounds"] == 1.0 and p["seed"] != base["seed"] and p["size"] == base["size"]
    assert "photo_backgrounds" not in base  # the textured composites stay as they are
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    assert default_synthetic_root("composite_fasseg_photos") == os.path.join(
        str(tmp_path), "face_composite_fasseg_photos")
    assert MetadataCatalog.get("face_composite_fasseg_photos_train").label_set == "fasseg"
    assert "face_composite_fasseg_photos_test" not in DatasetCatalog.list()
    with pytest.raises(DatasetNotFoundError, match=r"fasseg_frontal_train.*prepare_fasseg\.py"):
        DatasetCatalog.get("face_composite_fasseg_photos_train")
