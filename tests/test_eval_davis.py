"""J and F (score_frame on binary masks) against the DAVIS 2017 definitions: hand-computed cases
and a literal reference."""
import numpy as np
import pytest

import qanet_d2  # noqa: F401
import cv2
from qanet_d2.evaluation import boundary_radius, davis_disk, label_boundaries, score_frame, seg_to_boundary


# ----------------------------------------------------------------------------- reference
def reference_boundary(seg):
    """DAVIS's _seg2bmap written out literally (same-size case)."""
    seg = seg.astype(bool)
    e = np.zeros_like(seg)
    s = np.zeros_like(seg)
    se = np.zeros_like(seg)
    e[:, :-1] = seg[:, 1:]
    s[:-1, :] = seg[1:, :]
    se[:-1, :-1] = seg[1:, 1:]
    b = (seg ^ e) | (seg ^ s) | (seg ^ se)
    b[-1, :] = seg[-1, :] ^ e[-1, :]
    b[:, -1] = seg[:, -1] ^ s[:, -1]
    b[-1, -1] = 0
    return b


def reference_disk(radius):
    """skimage.morphology.disk as DAVIS uses it (offsets arange(-r, r+1), x²+y² <= r²)."""
    offsets = np.arange(-radius, radius + 1)
    xx, yy = np.meshgrid(offsets, offsets)
    return (xx**2 + yy**2 <= radius**2).astype(np.uint8)


def reference_f(pred, gt, void=None, bound_th=0.008):
    """DAVIS's f_measure step by step: full-image boundary maps, cv2.dilate with the disk."""
    void = np.zeros(gt.shape, bool) if void is None else void.astype(bool)
    radius = bound_th if bound_th >= 1 else np.ceil(bound_th * np.linalg.norm(gt.shape))
    pb = reference_boundary(pred.astype(bool) & ~void)
    gb = reference_boundary(gt.astype(bool) & ~void)
    pd = cv2.dilate(pb.astype(np.uint8), reference_disk(radius))
    gd = cv2.dilate(gb.astype(np.uint8), reference_disk(radius))
    n_p, n_g = pb.sum(), gb.sum()
    if n_p == 0 and n_g > 0:
        precision, recall = 1, 0
    elif n_p > 0 and n_g == 0:
        precision, recall = 0, 1
    elif n_p == 0 and n_g == 0:
        precision, recall = 1, 1
    else:
        precision = (pb & (gd > 0)).sum() / n_p
        recall = (gb & (pd > 0)).sum() / n_g
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def reference_j(pred, gt, void=None):
    valid = np.ones(gt.shape, bool) if void is None else ~void.astype(bool)
    union = ((pred | gt) & valid).sum()
    return 1.0 if union == 0 else ((pred & gt) & valid).sum() / union


def _binary_scores(pred, gt, void, bound_th):
    """score_frame of binary masks: class 1 = foreground, void pixels ignored, absent -> 1 (DAVIS)."""
    gt = np.asarray(gt).astype(np.uint8)
    if void is not None:
        gt = np.where(np.asarray(void, bool), np.uint8(255), gt)
    return score_frame(np.asarray(pred).astype(np.uint8), gt, 2, 255, absent_class="one", bound_th=bound_th)


def region_similarity(pred, gt, void=None):
    return float(_binary_scores(pred, gt, void, 0.008).j[1])


def contour_accuracy(pred, gt, void=None, bound_th=0.008):
    return float(_binary_scores(pred, gt, void, bound_th).f[1])


def square(shape, y0, x0, size):
    m = np.zeros(shape, bool)
    m[y0 : y0 + size, x0 : x0 + size] = True
    return m


# ----------------------------------------------------------------------------- boundary maps
def test_single_pixel_boundary_is_offset_towards_origin():
    m = np.zeros((5, 5), bool)
    m[2, 2] = True
    b = seg_to_boundary(m)
    assert sorted(zip(*np.nonzero(b))) == [(1, 1), (1, 2), (2, 1), (2, 2)]


def test_boundary_at_the_bottom_right_corner():
    m = np.zeros((5, 5), bool)
    m[4, 4] = True
    # last row: right neighbour only; last column: lower neighbour only; the corner never.
    assert sorted(zip(*np.nonzero(seg_to_boundary(m)))) == [(3, 3), (3, 4), (4, 3)]


def test_boundary_of_a_one_row_image():
    m = np.array([[0, 1, 1, 0, 0]], bool)
    assert seg_to_boundary(m).astype(int).tolist() == [[1, 0, 1, 0, 0]]
    assert not seg_to_boundary(np.ones((1, 1), bool)).any()


def test_boundary_matches_reference_on_random_masks():
    rng = np.random.default_rng(0)
    for _ in range(50):
        h, w = rng.integers(1, 25, 2)
        m = rng.random((h, w)) < rng.random()
        assert (seg_to_boundary(m) == reference_boundary(m)).all()


def test_label_boundaries_equal_per_class_boundaries():
    rng = np.random.default_rng(1)
    labels = cv2.resize(rng.integers(0, 6, (7, 9)).astype(np.uint8), (37, 23), interpolation=cv2.INTER_NEAREST)
    labels[rng.random(labels.shape) < 0.05] = 255
    got = label_boundaries(labels, range(6))
    for c in range(6):
        ys, xs = np.nonzero(reference_boundary(labels == c))
        assert (got[c][0] == ys).all() and (got[c][1] == xs).all()


def test_disk_and_radius():
    assert davis_disk(1).tolist() == [[0, 1, 0], [1, 1, 1], [0, 1, 0]]
    for r in (1, 2, 2.5, 18):
        assert (davis_disk(r) == reference_disk(r)).all()
    assert boundary_radius(0.008, (1080, 1920)) == 18  # ceil(17.62)
    assert boundary_radius(0.008, (480, 854)) == 8  # ceil(7.84)
    assert boundary_radius(0.008, (20, 20)) == 1
    assert boundary_radius(3, (1080, 1920)) == 3  # >= 1: pixels
    assert boundary_radius(0.008, (2, 1080, 1920)) == 18  # a stack: the frame's diagonal


# ----------------------------------------------------------------------------- hand-computed J / F
def test_identical_single_pixels():
    m = square((5, 5), 2, 2, 1)
    assert region_similarity(m, m) == 1.0
    assert contour_accuracy(m, m) == 1.0


def test_single_pixels_apart_with_pixel_tolerance():
    pred, gt = square((30, 30), 10, 10, 1), square((30, 30), 10, 13, 1)
    # boundaries: 2x2 blocks at columns 9..10 and 12..13; column 10 <-> 12 is 2 px, 9 <-> 12 is 3 px.
    assert region_similarity(pred, gt) == 0.0
    assert contour_accuracy(pred, gt, bound_th=2) == pytest.approx(0.5)
    assert contour_accuracy(pred, gt, bound_th=3) == 1.0
    assert contour_accuracy(pred, gt, bound_th=1) == 0.0


def test_straight_edge_shifted_by_two_pixels():
    gt = np.zeros((20, 20), bool)
    gt[:, :10] = True
    pred = np.zeros((20, 20), bool)
    pred[:, :12] = True
    assert region_similarity(pred, gt) == pytest.approx(10 / 12)
    assert contour_accuracy(pred, gt, bound_th=2) == 1.0  # every boundary pixel is 2 px from the other
    assert contour_accuracy(pred, gt, bound_th=1) == 0.0
    assert contour_accuracy(pred, gt) == 0.0  # 0.008 * diagonal 28.3 -> 1 px


def test_shifted_squares():
    gt, pred = square((40, 40), 5, 5, 10), square((40, 40), 5, 8, 10)
    assert region_similarity(pred, gt) == pytest.approx(70 / 130)
    # Boundaries are the 11x11 outlines at [4, 14] x [4, 14] and [4, 14] x [7, 17] (40 px each).
    # Within 3 px every pixel matches; within 2 px, 16 of 40 do not on each side: the far vertical
    # edge (11) and 5 pixels in the middle of the near one.
    assert contour_accuracy(pred, gt, bound_th=3) == 1.0
    assert contour_accuracy(pred, gt, bound_th=2) == pytest.approx(0.6)
    assert contour_accuracy(pred, gt, bound_th=2) == pytest.approx(reference_f(pred, gt, bound_th=2))


def test_empty_masks():
    empty, blob = np.zeros((9, 11), bool), square((9, 11), 2, 3, 4)
    assert region_similarity(empty, empty) == 1.0 and contour_accuracy(empty, empty) == 1.0
    assert region_similarity(empty, blob) == 0.0 and contour_accuracy(empty, blob) == 0.0  # P=1, R=0
    assert region_similarity(blob, empty) == 0.0 and contour_accuracy(blob, empty) == 0.0  # P=0, R=1
    full = np.ones((9, 11), bool)
    assert contour_accuracy(full, full) == 1.0  # no boundary in either
    assert contour_accuracy(blob, full) == 0.0  # only the prediction has a boundary


def test_void_pixels_are_ignored():
    gt = square((20, 20), 4, 4, 6)
    pred = gt.copy()
    pred[12:18, 12:18] = True  # a false positive entirely inside the void region
    void = np.zeros_like(gt)
    void[11:19, 11:19] = True
    assert region_similarity(pred, gt) < 1 and contour_accuracy(pred, gt, bound_th=1) < 1
    assert region_similarity(pred, gt, void) == 1.0
    assert contour_accuracy(pred, gt, void, bound_th=1) == 1.0
    # everything void: empty union
    assert region_similarity(pred, gt, np.ones_like(gt)) == 1.0


@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (9, 1), (7, 5), (13, 2)])
def test_odd_image_sizes(shape):
    rng = np.random.default_rng(sum(shape))
    for _ in range(10):
        a, b = rng.random(shape) < 0.5, rng.random(shape) < 0.5
        assert region_similarity(a, b) == pytest.approx(reference_j(a, b))
        for th in (0.008, 1, 2):
            assert contour_accuracy(a, b, bound_th=th) == pytest.approx(reference_f(a, b, bound_th=th), abs=1e-12)


# ----------------------------------------------------------------------------- vs literal reference
def _blobby(rng, h, w, classes):
    k = int(rng.integers(2, 10))
    small = rng.integers(0, classes, (max(1, h // k), max(1, w // k))).astype(np.uint8)
    return cv2.resize(small, (int(w), int(h)), interpolation=cv2.INTER_NEAREST)


def test_binary_f_matches_reference_on_random_masks():
    rng = np.random.default_rng(4)
    for _ in range(60):
        h, w = rng.integers(2, 60, 2)
        gt = _blobby(rng, h, w, 2).astype(bool)
        pred = np.roll(gt, int(rng.integers(-4, 5)), axis=int(rng.integers(0, 2)))
        pred ^= rng.random((h, w)) < 0.03
        void = rng.random((h, w)) < 0.05 if rng.random() < 0.5 else None
        th = [0.008, 0.05, 0.2, 1, 2, 3, 5, 1.5, 2.5][rng.integers(0, 9)]
        assert contour_accuracy(pred, gt, void, th) == pytest.approx(reference_f(pred, gt, void, th), abs=1e-12)
        assert region_similarity(pred, gt, void) == pytest.approx(reference_j(pred, gt, void), abs=1e-12)


def test_per_class_f_matches_reference_on_random_label_maps():
    # Large enough tolerances to exercise the coarse-grid path as well as the k-d tree.
    rng = np.random.default_rng(5)
    for _ in range(15):
        h, w = rng.integers(40, 140, 2)
        gt = _blobby(rng, h, w, 5)
        pred = np.roll(gt, int(rng.integers(-6, 7)), axis=int(rng.integers(0, 2)))
        specks = rng.random((h, w)) < 0.01
        pred[specks] = rng.integers(0, 5, specks.sum())
        void = rng.random((h, w)) < 0.03 if rng.random() < 0.5 else None
        th = [3, 4, 7, 18, 0.05, 6.5][rng.integers(0, 6)]
        gt_void = np.where(void, 255, gt) if void is not None else gt
        got = score_frame(pred, gt_void, 5, 255, absent_class="one", bound_th=th).f[1:]
        want = [reference_f(pred == c, gt == c, void, th) for c in (1, 2, 3, 4)]
        np.testing.assert_allclose(got, want, atol=1e-12)


def test_shape_mismatch_raises():
    with pytest.raises(ValueError):
        contour_accuracy(np.zeros((3, 4), bool), np.zeros((4, 3), bool))
    with pytest.raises(ValueError):
        region_similarity(np.zeros((3, 4), bool), np.zeros((3, 4), bool), np.zeros((3, 3), bool))
