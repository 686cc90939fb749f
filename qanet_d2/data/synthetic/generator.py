"""Deterministic renderer of the synthetic face-parsing videos of cartoon people (label set
``"synthetic"``; content: datasets/README.md).

Polygons are drawn at 1/16-pixel precision, antialiased into the image and nearest into the
labels. Left/right pairs have mirrored geometry and identical colours: ``l_*`` is the PERSON's
left, i.e. the IMAGE RIGHT of an unflipped frontal face. A face box is the XYXY_ABS pixel-edge
box of a face's visible pixels except neck and cloth; a face with fewer than
``MIN_VISIBLE_PIXELS`` of them or less than ``MIN_VISIBLE_FRACTION`` of its unoccluded area gets
none. Randomness comes from ``SeedSequence([seed, split, video, ...])``: the output does not
depend on the order or number of worker processes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np

from ...structures.label_sets import SYNTHETIC

__all__ = ["GENERATOR_VERSION", "FaceStyle", "FacePose", "Scene", "SyntheticVideo", "draw_face",
           "sample_face_style"]

GENERATOR_VERSION = 1
MIN_VISIBLE_PIXELS = 12
MIN_VISIBLE_FRACTION = 0.15
MAX_FACES = 4
FACE_COUNT_P = (0.35, 0.3, 0.2, 0.15)  # probabilities of 1..MAX_FACES faces in a video
MIN_FACE_HEIGHT = 24.0  # pixels, of the face box (hair top to chin) of an unoccluded face
MAX_ANGLE = 40.0  # degrees of in-plane rotation
# Appended to a video's seed key for the draws of its photo background (:mod:`.photos`).
_PHOTO_TAG = 0x9B07


C = {name: i for i, name in enumerate(SYNTHETIC.classes)}
_BODY = (C["neck"], C["cloth"])

SPLIT_IDS = {"train": 0, "val": 1, "test": 2}
SPLITS = tuple(SPLIT_IDS)


# ---------------------------------------------------------------------------- helpers
def _rgb2bgr(c) -> Tuple[float, float, float]:
    return (float(c[2]), float(c[1]), float(c[0]))


def _scale_color(c, f) -> Tuple[float, float, float]:
    return tuple(float(np.clip(v * f, 0, 255)) for v in c)


def _ellipse(cx, cy, ax, ay, rot=0.0, n=40, t0=0.0, t1=2 * math.pi) -> np.ndarray:
    t = np.linspace(t0, t1, n, endpoint=(t1 - t0) < 2 * math.pi - 1e-6)
    x, y = ax * np.cos(t), ay * np.sin(t)
    c, s = math.cos(rot), math.sin(rot)
    return np.stack([cx + c * x - s * y, cy + s * x + c * y], axis=1)


def _mirror(poly: np.ndarray) -> np.ndarray:
    return (poly * [-1.0, 1.0])[::-1]


# ---------------------------------------------------------------------------- people
@dataclass
class FaceStyle:
    """Appearance of one person (constant over a video), colours BGR 0..255. Canonical face
    coordinates: unit = half the skin ellipse's height, origin at its centre, x towards IMAGE RIGHT
    (the person's left), y down."""

    skin: Tuple[float, float, float]
    hair: Tuple[float, float, float]
    brow: Tuple[float, float, float]
    lip: Tuple[float, float, float]
    iris: Tuple[float, float, float]
    sclera: Tuple[float, float, float]
    cloth: Tuple[float, float, float]
    cloth2: Tuple[float, float, float]
    hat_color: Tuple[float, float, float]
    glasses_color: Tuple[float, float, float]
    hair_style: str = "short"  # "none", "short", "long"
    aspect: float = 0.76  # skin ellipse half-width
    eye_size: float = 1.0
    brow_thickness: float = 0.06
    brow_lift: float = 0.0
    nose_size: float = 1.0
    mouth_width: float = 0.25
    lip_thickness: float = 0.07
    ear_size: float = 1.0
    fringe: float = -0.55  # y of the fringe line (hair over the forehead)
    fringe_tilt: float = 0.0
    glasses: bool = False
    hat: bool = False
    lipstick: bool = False


@dataclass
class FacePose:
    """Where a face is in one frame: skin-ellipse centre ``(cx, cy)`` in pixels, ``scale`` pixels
    per canonical unit, ``angle`` degrees clockwise on screen, ``yaw`` in [-0.3, 0.3],
    ``mouth_open`` in canonical units, ``eye_open`` 0..1, ``gaze`` (iris offset) -1..1."""

    cx: float
    cy: float
    scale: float
    angle: float = 0.0
    yaw: float = 0.0
    mouth_open: float = 0.0
    eye_open: float = 1.0
    gaze: float = 0.0


# Face box height (hair top to chin) in canonical units, used to size faces.
FACE_BOX_UNITS = 2.15


def _pick(rng, items, p=None):
    return items[int(rng.choice(len(items), p=p))]


_HAIR_RGB = [(22, 18, 18), (55, 38, 28), (105, 72, 45), (196, 164, 108), (150, 62, 32),
             (165, 165, 165), (235, 228, 210)]


def sample_face_style(rng: np.random.Generator) -> FaceStyle:
    """A random person's appearance (see :class:`FaceStyle`)."""
    t = rng.uniform(0, 1)
    skin_rgb = np.array([85, 52, 36]) * (1 - t) + np.array([246, 214, 188]) * t
    skin_rgb = np.clip(skin_rgb + rng.normal(0, 8, 3), 20, 255)
    if rng.uniform() < 0.1:  # dyed hair
        hair_rgb = tuple(rng.uniform(30, 230, 3))
    else:
        hair_rgb = _pick(rng, _HAIR_RGB, p=[0.3, 0.25, 0.15, 0.12, 0.06, 0.07, 0.05])
    hair_rgb = np.clip(np.array(hair_rgb) * rng.uniform(0.85, 1.15), 0, 255)
    brow_rgb = np.minimum(hair_rgb * 0.75, skin_rgb * 0.55) + rng.normal(0, 5, 3)
    lipstick = bool(rng.uniform() < 0.2)
    if lipstick:
        lip_rgb = np.array(_pick(rng, [(170, 20, 40), (200, 60, 90), (120, 20, 40), (210, 90, 80)]))
    else:
        lip_rgb = skin_rgb * np.array([0.85, 0.52, 0.55]) + np.array([25, 0, 5])
    iris_rgb = _pick(rng, [(60, 35, 20), (35, 25, 20), (60, 95, 140), (70, 100, 60), (100, 70, 40)])
    sclera_rgb = np.array([236, 232, 226]) * rng.uniform(0.8, 1.0)
    cloth_rgb = rng.uniform(10, 245, 3)
    cloth2_rgb = np.clip(cloth_rgb * rng.uniform(0.4, 1.6, 3), 0, 255)
    hat_rgb = rng.uniform(10, 245, 3)
    glasses_rgb = _pick(rng, [(20, 20, 20), (60, 40, 30), (120, 120, 130), (150, 30, 30)])
    return FaceStyle(
        skin=_rgb2bgr(skin_rgb), hair=_rgb2bgr(hair_rgb), brow=_rgb2bgr(np.clip(brow_rgb, 0, 255)),
        lip=_rgb2bgr(np.clip(lip_rgb, 0, 255)), iris=_rgb2bgr(iris_rgb),
        sclera=_rgb2bgr(sclera_rgb), cloth=_rgb2bgr(cloth_rgb), cloth2=_rgb2bgr(cloth2_rgb),
        hat_color=_rgb2bgr(hat_rgb), glasses_color=_rgb2bgr(glasses_rgb),
        hair_style=_pick(rng, ["none", "short", "long"], p=[0.06, 0.54, 0.4]),
        aspect=float(rng.uniform(0.68, 0.82)), eye_size=float(rng.uniform(0.85, 1.2)),
        brow_thickness=float(rng.uniform(0.04, 0.08)), brow_lift=float(rng.uniform(-0.03, 0.04)),
        nose_size=float(rng.uniform(0.85, 1.15)), mouth_width=float(rng.uniform(0.2, 0.3)),
        lip_thickness=float(rng.uniform(0.05, 0.09)), ear_size=float(rng.uniform(0.85, 1.15)),
        fringe=float(rng.uniform(-0.78, -0.48)), fringe_tilt=float(rng.uniform(-0.15, 0.15)),
        glasses=bool(rng.uniform() < 0.25), hat=bool(rng.uniform() < 0.18), lipstick=lipstick)


class _FaceDrawer:
    """Draws one face (canonical polygons through the pose's similarity transform) into ``image``,
    ``label``, ``owner`` and, outside neck and cloth, ``scratch`` (the unoccluded area)."""

    def __init__(self, image, label, owner, scratch, owner_id: int, style: FaceStyle, pose: FacePose):
        self.image, self.label, self.owner, self.scratch = image, label, owner, scratch
        self.oid, self.st, self.pose = owner_id, style, pose
        a = math.radians(pose.angle)
        s = pose.scale
        self.m = np.array([[s * math.cos(a), -s * math.sin(a)], [s * math.sin(a), s * math.cos(a)]])
        self.t = np.array([pose.cx, pose.cy])

    def xf(self, pts: np.ndarray) -> np.ndarray:
        p = np.asarray(pts, dtype=np.float64) @ self.m.T + self.t
        return np.round(p * 16).astype(np.int32)

    def paint(self, polys, label: Optional[int], color):
        """Fill ``polys`` with ``color`` in the image and, unless ``label`` is None, in the maps."""
        pts = [self.xf(p) for p in polys]
        cv2.fillPoly(self.image, pts, color, cv2.LINE_AA, 4)
        if label is None:
            return
        cv2.fillPoly(self.label, pts, int(label), cv2.LINE_8, 4)
        cv2.fillPoly(self.owner, pts, int(self.oid), cv2.LINE_8, 4)
        if label not in _BODY:
            cv2.fillPoly(self.scratch, pts, 1, cv2.LINE_8, 4)

    def line(self, pts, color, thickness_units):
        th = max(1, int(round(thickness_units * self.pose.scale)))
        cv2.polylines(self.image, [self.xf(pts)], False, color, th, cv2.LINE_AA, 4)

    # ------------------------------------------------------------------ the face
    def draw(self):
        st, pose = self.st, self.pose
        ax = st.aspect
        yaw = float(np.clip(pose.yaw, -0.35, 0.35))
        fx = 0.22 * yaw  # sideways shift of the facial features

        # 1. hair behind the head
        if st.hair_style != "none":
            if st.hair_style == "long":
                back = [_ellipse(0, -0.1, ax + 0.12, 1.05),
                        np.array([[-(ax + 0.14), -0.1], [ax + 0.14, -0.1], [ax + 0.2, 1.35],
                                  [ax - 0.05, 1.5], [-(ax - 0.05), 1.5], [-(ax + 0.2), 1.35]])]
            else:
                back = [_ellipse(0, -0.22, ax + 0.1, 0.92)]
            self.paint(back, C["hair"], st.hair)
        # 2. neck (below and behind the chin)
        nw = 0.36 * ax / 0.76
        neck = np.array([[-nw, 0.4], [nw, 0.4], [nw * 1.12, 1.75], [-nw * 1.12, 1.75]])
        self.paint([neck], C["neck"], _scale_color(st.skin, 0.78))
        # 3. clothes with a V neckline
        cloth = np.array([[-0.42, 1.3], [-1.45, 1.55], [-1.95, 2.0], [-2.1, 3.4], [2.1, 3.4],
                          [1.95, 2.0], [1.45, 1.55], [0.42, 1.3], [0.0, 1.75]])
        self.paint([cloth], C["cloth"], st.cloth)
        self.paint([np.array([[-0.42, 1.3], [-0.52, 1.38], [0.0, 1.9], [0.52, 1.38],
                              [0.42, 1.3], [0.0, 1.75]])], C["cloth"], st.cloth2)
        # 4. ears (half hidden by the skin); the one turned away shrinks with yaw
        for side, lab in ((1, C["l_ear"]), (-1, C["r_ear"])):
            shrink = float(np.clip(1.0 - 1.6 * yaw * side, 0.35, 1.2))
            ex = side * (ax - 0.02 + 0.06 * shrink)
            ear = _ellipse(ex, 0.02, 0.11 * st.ear_size * shrink, 0.2 * st.ear_size, rot=side * 0.15)
            self.paint([ear], lab, _scale_color(st.skin, 0.9))
            inner = _ellipse(ex + side * 0.02, 0.02, 0.05 * st.ear_size * shrink,
                             0.12 * st.ear_size, rot=side * 0.15)
            self.paint([inner], None, _scale_color(st.skin, 0.72))
        # 5. skin: stepped shading (darker rim) painted inside the labelled ellipse
        face = _ellipse(0, 0, ax, 1.0, n=56)
        self.paint([face], C["skin"], _scale_color(st.skin, 0.86))
        self.paint([_ellipse(fx * 0.5, -0.03, ax * 0.88, 0.9, n=48)], None, _scale_color(st.skin, 0.95))
        self.paint([_ellipse(fx * 0.8, -0.08, ax * 0.66, 0.7, n=40)], None, _scale_color(st.skin, 1.03))
        # 6. nose
        ns = st.nose_size
        nx = fx * 1.4
        nose = np.array([[nx - 0.035, -0.12], [nx + 0.035, -0.12], [nx + 0.11 * ns, 0.25],
                         [nx + 0.07 * ns, 0.31], [nx - 0.07 * ns, 0.31], [nx - 0.11 * ns, 0.25]])
        self.paint([nose], C["nose"], _scale_color(st.skin, 0.97))
        side_shade = np.array([[nx + 0.01, -0.1], [nx + 0.035, -0.1], [nx + 0.11 * ns, 0.25],
                               [nx + 0.07 * ns, 0.31], [nx + 0.02, 0.29]])
        if yaw < 0:
            side_shade = _mirror(side_shade - [nx, 0]) + [nx, 0]
        self.paint([side_shade], None, _scale_color(st.skin, 0.82))
        for s in (-1, 1):
            self.paint([_ellipse(nx + s * 0.045 * ns, 0.275, 0.028 * ns, 0.017)], None, _scale_color(st.skin, 0.45))
        # 7. brows (mirrored geometry, same colour)
        xs = np.linspace(0.1, 0.5, 9)
        u = (xs - 0.1) / 0.4
        top = -0.34 - st.brow_lift - 0.07 * np.sin(np.pi * (0.35 + 0.65 * u))
        thick = st.brow_thickness * (1.15 - 0.55 * u)
        brow_l = np.concatenate([np.stack([xs, top], 1),
                                 np.stack([xs[::-1], (top + thick)[::-1]], 1)])
        for poly, lab in ((brow_l, C["l_brow"]), (_mirror(brow_l), C["r_brow"])):
            self.paint([poly + [fx, 0]], lab, st.brow)
        # 8./9. glasses lenses (eye_g) then the eyes seen through them
        ey, ex0 = -0.1, 0.32
        ea = 0.135 * st.eye_size
        eb = 0.062 * st.eye_size * float(np.clip(pose.eye_open, 0.15, 1.0))
        lens_a, lens_b = 0.2 * st.eye_size, 0.145 * st.eye_size
        if st.glasses:
            tint = tuple(float(np.clip(x * 0.75 + y * 0.25, 0, 255)) for x, y in zip(st.skin, (235, 225, 215)))
            for side in (1, -1):
                self.paint([_ellipse(side * ex0 + fx, ey, lens_a, lens_b, n=36)], C["eye_g"], tint)
        for side, lab in ((1, C["l_eye"]), (-1, C["r_eye"])):
            cx = side * ex0 + fx
            self.paint([_ellipse(cx, ey, ea, eb, n=28)], lab, st.sclera)
            r = min(eb * 0.95, ea * 0.45)
            gx = cx + 0.35 * ea * float(np.clip(pose.gaze + yaw, -1, 1))
            self.paint([_ellipse(gx, ey, r, r, n=20)], None, st.iris)
            self.paint([_ellipse(gx, ey, r * 0.45, r * 0.45, n=12)], None, (15, 15, 15))
            lid = _ellipse(cx, ey, ea, eb, n=15, t0=math.pi, t1=2 * math.pi)
            self.line(lid, _scale_color(st.brow, 0.7), 0.018)
        # 10. lips and the inner mouth
        self._mouth(fx * 1.2)
        # 11. glasses frames, bridge and arms
        if st.glasses:
            frame_t = 0.035
            col = st.glasses_color
            for side in (1, -1):
                c0 = side * ex0 + fx
                outer = _ellipse(c0, ey, lens_a, lens_b, n=36)
                inner = _ellipse(c0, ey, lens_a - frame_t, lens_b - frame_t, n=36)
                ring = np.concatenate([outer, outer[:1], inner[::-1], inner[-1:]])
                self.paint([ring], C["eye_g"], col)
                arm = np.array([[c0 + side * (lens_a - 0.01), ey - 0.03], [side * (ax + 0.03), ey - 0.01],
                                [side * (ax + 0.03), ey + 0.02], [c0 + side * (lens_a - 0.01), ey + 0.0]])
                self.paint([arm], C["eye_g"], col)
            bridge = np.array([[fx - ex0 + lens_a - 0.01, ey - 0.04], [fx + ex0 - lens_a + 0.01, ey - 0.04],
                               [fx + ex0 - lens_a + 0.01, ey - 0.01], [fx - ex0 + lens_a - 0.01, ey - 0.01]])
            self.paint([bridge], C["eye_g"], col)
        # 12. hair over the forehead (and locks over the shoulders for long hair)
        if st.hair_style != "none":
            xs = np.linspace(-(ax + 0.06), ax + 0.06, 15)
            fy = st.fringe + st.fringe_tilt * xs / ax + 0.03 * np.sin(xs * 9.0)
            # fringe: band between the top of the head and the fringe line
            top_arc = _ellipse(0, -0.05, ax + 0.07, 1.07, n=30, t0=math.pi, t1=2 * math.pi)
            top_y = np.interp(xs, top_arc[:, 0], top_arc[:, 1])
            fringe = np.concatenate([np.stack([xs, np.minimum(fy, top_y + 0.02)], 1),
                                     np.stack([xs[::-1], top_y[::-1]], 1)])
            self.paint([fringe], C["hair"], st.hair)
            if st.hair_style == "long":
                for side in (1, -1):
                    lock = np.array([[side * (ax - 0.04), -0.3], [side * (ax + 0.14), -0.3],
                                     [side * (ax + 0.24), 1.35], [side * (ax + 0.05), 1.55],
                                     [side * (ax - 0.02), 0.6]])
                    self.paint([lock], C["hair"], _scale_color(st.hair, 0.92))
        # 13. hat: crown and brim, over the hair
        if st.hat:
            crown = _ellipse(0, -0.6, ax + 0.1, 0.62, n=30, t0=math.pi, t1=2 * math.pi)
            brim = _ellipse(0, -0.6, ax + 0.32, 0.1, n=30)
            self.paint([crown, brim], C["hat"], st.hat_color)
            band = np.array([[-(ax + 0.08), -0.78], [ax + 0.08, -0.78], [ax + 0.1, -0.68],
                             [-(ax + 0.1), -0.68]])
            self.paint([band], None, _scale_color(st.hat_color, 0.6))

    def _mouth(self, mx):
        st, pose = self.st, self.pose
        mw = st.mouth_width
        o = float(max(0.0, pose.mouth_open))
        cy = 0.56
        xs = np.linspace(-mw, mw, 17)
        f = np.clip(1 - (xs / mw) ** 2, 0, 1)
        sq = np.sqrt(f)
        dip = 0.35 * np.exp(-((xs / (0.25 * mw)) ** 2))
        u_top = cy - o / 2 * f - st.lip_thickness * sq * (1 - dip)
        u_bot = cy - o / 2 * f
        l_top = cy + o / 2 * f
        l_bot = cy + o / 2 * f + st.lip_thickness * 1.25 * sq
        X = xs + mx
        upper = np.concatenate([np.stack([X, u_top], 1), np.stack([X[::-1], u_bot[::-1]], 1)])
        lower = np.concatenate([np.stack([X, l_top], 1), np.stack([X[::-1], l_bot[::-1]], 1)])
        if o > 0.004:
            inner = np.concatenate([np.stack([X, u_bot], 1), np.stack([X[::-1], l_top[::-1]], 1)])
            self.paint([inner], C["mouth"], (25, 22, 75))
            teeth_bot = u_bot + np.minimum(o * 0.45, 0.035) * f
            teeth = np.concatenate([np.stack([X[3:-3], u_bot[3:-3]], 1),
                                    np.stack([X[3:-3][::-1], teeth_bot[3:-3][::-1]], 1)])
            self.paint([teeth], None, (205, 215, 225))
        self.paint([upper], C["u_lip"], _scale_color(st.lip, 0.92))
        self.paint([lower], C["l_lip"], st.lip)
        if o <= 0.004:
            self.line(np.stack([X, u_bot], 1), _scale_color(st.lip, 0.5), 0.015)


def draw_face(image: np.ndarray, label: np.ndarray, owner: np.ndarray, owner_id: int,
              style: FaceStyle, pose: FacePose) -> None:
    """Paint one person in place over ``image`` (BGR uint8), ``label`` (synthetic ids) and ``owner``
    (int16, set to ``owner_id`` on the person's pixels)."""
    _FaceDrawer(image, label, owner, np.zeros(label.shape, np.uint8), owner_id, style, pose).draw()


# ---------------------------------------------------------------------------- scenes
def smooth_track(rng, start, end, frames, wobble):
    """Values at frames 0..T-1 of a smooth path from ``start`` to ``end`` with a sinusoidal
    wobble of amplitude ``wobble`` (scalars or arrays)."""
    u = np.linspace(0.0, 1.0, frames) if frames > 1 else np.zeros(1)
    start, end, wobble = (np.asarray(v, dtype=np.float64) for v in (start, end, wobble))
    phase = rng.uniform(0, 2 * np.pi, size=start.shape)
    freq = rng.uniform(0.5, 1.5, size=start.shape)
    u_ = u.reshape((-1,) + (1,) * start.ndim)
    return start + (end - start) * u_ + wobble * np.sin(2 * np.pi * freq * u_ + phase)


def _background(rng, h, w) -> np.ndarray:
    """Textured BGR uint8 background: gradient, stripes/checks/noise and clutter shapes (some in
    skin and hair tones, as distractors)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) / max(h, w)
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    a = rng.uniform(0, 2 * np.pi)
    g = xx * math.cos(a) + yy * math.sin(a)
    g = (g - g.min()) / max(1e-6, float(g.max() - g.min()))
    img = c0[None, None] * (1 - g[..., None]) + c1[None, None] * g[..., None]
    kind = rng.choice(["stripes", "checks", "noise", "plain"], p=[0.3, 0.15, 0.4, 0.15])
    if kind == "stripes":
        f = rng.uniform(3, 25)
        b = rng.uniform(0, np.pi)
        amp = rng.uniform(0.1, 0.35)
        img *= (1 + amp * np.sin(2 * np.pi * f * (xx * math.cos(b) + yy * math.sin(b))))[..., None]
    elif kind == "checks":
        s = rng.uniform(0.03, 0.15)
        chk = ((np.floor(xx / s) + np.floor(yy / s)) % 2) * 2 - 1
        img *= (1 + rng.uniform(0.1, 0.3) * chk)[..., None]
    elif kind == "noise":
        cells = int(rng.integers(3, 12))
        grid = rng.normal(0, 1, (cells, cells, 3)).astype(np.float32)
        noise = cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
        img += noise * rng.uniform(15, 45)
    img = np.clip(img, 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(0, 14))):
        t = rng.uniform()
        if t < 0.25:
            col = (np.array([85, 52, 36]) + rng.uniform() * np.array([160, 162, 152]))[::-1]  # skin tone
        elif t < 0.35:
            col = np.array(_HAIR_RGB[int(rng.integers(len(_HAIR_RGB)))])[::-1]
        else:
            col = rng.uniform(0, 255, 3)
        col = tuple(float(v) for v in col)
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        r = rng.uniform(0.02, 0.2) * max(h, w)
        shape = rng.integers(3)
        if shape == 0:
            cv2.ellipse(img, (int(cx), int(cy)), (int(r), int(r * rng.uniform(0.3, 1.0))),
                        float(rng.uniform(0, 180)), 0, 360, col, -1, cv2.LINE_AA)
        elif shape == 1:
            box = cv2.boxPoints(((cx, cy), (r * 2, r * rng.uniform(0.2, 1.5)),
                                 float(rng.uniform(0, 180))))
            cv2.fillPoly(img, [np.round(box * 16).astype(np.int32)], col, cv2.LINE_AA, 4)
        else:
            p2 = (int(cx + rng.uniform(-1, 1) * r * 2), int(cy + rng.uniform(-1, 1) * r * 2))
            cv2.line(img, (int(cx), int(cy)), p2, col, int(rng.integers(1, 6)), cv2.LINE_AA)
    return cv2.GaussianBlur(img, (0, 0), rng.uniform(0.5, 1.5))


def _blob(rng, n=24) -> np.ndarray:
    """A random smooth closed shape of radius ~1: a unit circle with random Fourier terms."""
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    r = np.ones(n)
    for k in range(2, 5):
        r += rng.uniform(-0.15, 0.15) * np.cos(k * t + rng.uniform(0, 2 * np.pi))
    return np.stack([r * np.cos(t), r * np.sin(t)], 1)


@dataclass
class _Person:
    style: FaceStyle
    cx: np.ndarray
    cy: np.ndarray
    scale: np.ndarray
    angle: np.ndarray
    yaw: np.ndarray
    mouth: np.ndarray
    eye: np.ndarray
    gaze: np.ndarray

    def pose(self, t: int) -> FacePose:
        return FacePose(*(float(v[t]) for v in (self.cx, self.cy, self.scale, self.angle, self.yaw,
                                                self.mouth, self.eye, self.gaze)))


@dataclass
class Occluder:
    shape: np.ndarray
    color: Tuple[float, float, float]
    cx: np.ndarray
    cy: np.ndarray
    radius: np.ndarray
    angle: np.ndarray


@dataclass
class FrameResult:
    """One rendered frame: ``image`` (BGR uint8, before JPEG), ``label``, ``owner`` (int16, face
    index or -1), ``boxes`` (XYXY_ABS of the faces that pass the visibility rule) and their
    ``box_owner``, ``poses`` (:class:`FacePose` or :class:`~.composite.FacePlacement` per face)."""

    image: np.ndarray
    label: np.ndarray
    owner: np.ndarray
    boxes: List[List[float]]
    box_owner: List[int]
    poses: List[FacePose]
    amodal_area: List[int]

    def instance_map(self) -> np.ndarray:
        """H x W uint8 face-instance map: k + 1 on every visible pixel of the person of box k
        (neck and cloth included), 0 on background, occluders and persons without a box."""
        inst = np.zeros(self.owner.shape, np.uint8)
        for k, person in enumerate(self.box_owner):
            inst[self.owner == person] = k + 1
        return inst


class Scene:
    """What a video shows around its faces, drawn from ``SeedSequence(seed_key)`` (subclasses go
    on drawing from ``self._rng``): a panned background, drifting lighting, blur, noise, a JPEG
    quality, and the helpers that size, place and move faces and occluders. With ``photos``
    (``[(name, path)]``), a share ``photo_share`` of the videos shows a crop of a real photo
    (``self.photo``), drawn from its own stream so that the rest of the video stays the same."""

    def __init__(self, seed_key: Sequence[int], width: int, height: int, frames: int,
                 photos: Optional[Sequence[Tuple[str, str]]] = None, photo_share: float = 0.0):
        self.seed_key = tuple(int(k) for k in seed_key)
        self.w, self.h, self.frames = int(width), int(height), int(frames)
        rng = self._rng = np.random.default_rng(np.random.SeedSequence(list(self.seed_key)))
        w, h, T = self.w, self.h, self.frames
        self.occluders: List[Occluder] = []

        # camera: a larger background panned smoothly
        self.margin = int(round(0.08 * max(w, h)))
        bw, bh = w + 2 * self.margin, h + 2 * self.margin
        self.background = _background(rng, bh, bw)
        self.photo = None
        if photos and photo_share > 0:
            from .photos import render_photo_background, sample_photo_background

            prng = np.random.default_rng(np.random.SeedSequence(list(self.seed_key) + [_PHOTO_TAG]))
            if prng.uniform() < photo_share:
                self.photo = sample_photo_background(prng, photos, bw, bh)
                self.background = render_photo_background(self.photo, bw, bh)
        pan0, pan1 = rng.uniform(0, 2 * self.margin, 2), rng.uniform(0, 2 * self.margin, 2)
        self.pan = np.clip(smooth_track(rng, pan0, pan1, T, 0.0), 0, 2 * self.margin)

        # lighting: gain, a directional gradient and a colour cast, all drifting
        self.gain = smooth_track(rng, rng.uniform(0.75, 1.15), rng.uniform(0.75, 1.15), T, 0.05)
        self.light_dir = smooth_track(rng, rng.uniform(0, 2 * np.pi),
                                       rng.uniform(0, 2 * np.pi), T, 0.2)
        self.light_amp = smooth_track(rng, rng.uniform(0, 0.35), rng.uniform(0, 0.35), T, 0.03)
        self.cast = smooth_track(rng, rng.uniform(0.9, 1.1, 3), rng.uniform(0.9, 1.1, 3), T, 0.0)
        self.blur = float(rng.uniform(0.3, 0.9))
        self.noise = float(rng.uniform(2.0, 7.0))
        self.jpeg_quality = int(rng.integers(75, 96))

    def _face_heights(self, n: int) -> np.ndarray:
        """Face-box heights (pixels) of ``n`` faces, log-uniform from ``MIN_FACE_HEIGHT`` to most of the frame."""
        max_box = 0.92 * self.h / (1.0 if n == 1 else n ** 0.5)
        return np.exp(self._rng.uniform(math.log(MIN_FACE_HEIGHT * 1.05),
                                        math.log(max(max_box, MIN_FACE_HEIGHT * 1.2)), n))

    def _place_face(self, hb0: float, placed: list):
        """``(hb1, c0, c1, a0, a1)`` of a face of start height ``hb0``: end height, start and end
        centres (kept apart from the faces in ``placed``, which it joins) and angles."""
        rng, w, h = self._rng, self.w, self.h
        hb1 = float(np.clip(hb0 * math.exp(rng.uniform(-0.3, 0.3)), MIN_FACE_HEIGHT * 1.05, 0.95 * h))
        c0 = c1 = None
        for _ in range(25):
            c0 = np.array([rng.uniform(0.12, 0.88) * w, rng.uniform(0.2, 0.75) * h])
            c1 = np.clip(c0 + rng.normal(0, 0.12, 2) * [w, h], [0.1 * w, 0.15 * h], [0.9 * w, 0.8 * h])
            if all(np.linalg.norm(c0 - p0) > 0.45 * (hb0 + q)
                   and np.linalg.norm(c1 - p1) > 0.45 * (hb1 + q) for p0, p1, q in placed):
                break
        placed.append((c0, c1, max(hb0, hb1)))
        a0 = rng.uniform(-30, 30)
        return hb1, c0, c1, a0, float(np.clip(a0 + rng.uniform(-20, 20), -34, 34))

    def _motion(self, c0, c1, s0, s1, a0, a1):
        """``(cx, cy, scale, angle)`` tracks over the frames; ``scale`` is not clipped."""
        rng, T = self._rng, self.frames
        cx = smooth_track(rng, c0[0], c1[0], T, rng.uniform(0, 0.03) * self.w)
        cy = smooth_track(rng, c0[1], c1[1], T, rng.uniform(0, 0.03) * self.h)
        scale = smooth_track(rng, s0, s1, T, 0.03 * s0)
        angle = np.clip(smooth_track(rng, a0, a1, T, rng.uniform(0, 5)), -MAX_ANGLE, MAX_ANGLE)
        return cx, cy, scale, angle

    def _add_occluders(self, tracks) -> None:
        """0-2 blobs of radius 0.12-0.3 face-box heights (40% skin-coloured: a hand), each moving
        across the face of one of ``tracks`` (``(cx, cy, face-box height)``)."""
        rng, T = self._rng, self.frames
        for _ in range(int(rng.choice([0, 1, 2], p=[0.45, 0.4, 0.15]))):
            cx, cy, hb = tracks[int(rng.integers(len(tracks)))]
            d0, d1 = rng.normal(0, 0.5, 2) * hb, rng.normal(0, 0.5, 2) * hb
            col = rng.uniform(0, 255, 3)
            if rng.uniform() < 0.4:
                col = (np.array([85, 52, 36]) + rng.uniform() * np.array([160, 162, 152]))[::-1]
            self.occluders.append(Occluder(
                shape=_blob(rng) * [1.0, rng.uniform(0.35, 1.0)],
                color=tuple(float(v) for v in col),
                cx=cx + smooth_track(rng, d0[0], d1[0], T, 0.0),
                cy=cy + smooth_track(rng, d0[1], d1[1], T, 0.0),
                radius=np.full(T, rng.uniform(0.12, 0.3) * hb),
                angle=smooth_track(rng, rng.uniform(0, 180), rng.uniform(0, 180), T, 10.0),
            ))

    def _blank_maps(self, t: int):
        """``(image, label, owner)`` of frame ``t`` before the faces (labels 0, owners -1)."""
        return (self.background_view(t), np.zeros((self.h, self.w), np.uint8),
                np.full((self.h, self.w), -1, np.int16))

    @staticmethod
    def _boxes(visible, amodal):
        """``(boxes, box_owner)`` of the faces whose visible-pixel mask (``visible[k]``, None
        when outside the frame) passes the visibility rule against the unoccluded area."""
        boxes, box_owner = [], []
        for k, vis in enumerate(visible):
            n = 0 if vis is None else int(np.count_nonzero(vis))
            if n >= MIN_VISIBLE_PIXELS and n >= MIN_VISIBLE_FRACTION * max(amodal[k], 1):
                rows, cols = np.flatnonzero(vis.any(axis=1)), np.flatnonzero(vis.any(axis=0))
                boxes.append([float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)])
                box_owner.append(k)
        return boxes, box_owner

    def frame_rng(self, t: int) -> np.random.Generator:
        """The random stream of frame ``t`` (noise), independent of the other frames."""
        return np.random.default_rng(np.random.SeedSequence(list(self.seed_key) + [1000 + t]))

    def background_view(self, t: int) -> np.ndarray:
        """A writable copy of the camera's view of the background at frame ``t``."""
        ox, oy = (int(round(v)) for v in self.pan[t])
        return np.ascontiguousarray(self.background[oy:oy + self.h, ox:ox + self.w])

    def paint_occluders(self, image: np.ndarray, label: np.ndarray, owner: np.ndarray, t: int) -> None:
        """Paint the occluders of frame ``t``: antialiased into the image, label 0 / owner -1 in the maps."""
        for occ in self.occluders:
            a = math.radians(float(occ.angle[t]))
            rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
            pts = occ.shape @ rot.T * float(occ.radius[t]) + [occ.cx[t], occ.cy[t]]
            ipts = np.round(pts * 16).astype(np.int32)
            cv2.fillPoly(image, [ipts], occ.color, cv2.LINE_AA, 4)
            inner = (occ.shape * 0.6) @ rot.T * float(occ.radius[t]) + [occ.cx[t], occ.cy[t]]
            cv2.fillPoly(image, [np.round(inner * 16).astype(np.int32)],
                         _scale_color(occ.color, 1.12), cv2.LINE_AA, 4)
            cv2.fillPoly(label, [ipts], 0, cv2.LINE_8, 4)
            cv2.fillPoly(owner, [ipts], -1, cv2.LINE_8, 4)

    def light_blur_noise(self, img: np.ndarray, t: int, rng: np.random.Generator) -> np.ndarray:
        """Lighting (gain, directional gradient, colour cast), blur and noise on a float32 image -> uint8."""
        h, w = img.shape[:2]
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        a = float(self.light_dir[t])
        grad = ((xx - w / 2) * math.cos(a) + (yy - h / 2) * math.sin(a)) / (0.5 * max(h, w))
        light = float(self.gain[t]) * (1 + float(self.light_amp[t]) * grad)
        img *= light[..., None] * self.cast[t].astype(np.float32)[None, None]
        img = cv2.GaussianBlur(img, (0, 0), self.blur)
        img += rng.normal(0, self.noise, img.shape).astype(np.float32)
        return np.clip(img, 0, 255).astype(np.uint8)


class SyntheticVideo(Scene):
    """Cartoon people in a :class:`Scene`; ``render(t)`` draws frame ``t`` (in any order of frames)."""

    def __init__(self, seed_key: Sequence[int], width: int, height: int, frames: int,
                 force_glasses: bool = False, force_hat: bool = False,
                 force_open_mouth: bool = False,
                 photos: Optional[Sequence[Tuple[str, str]]] = None, photo_share: float = 0.0):
        super().__init__(seed_key, width, height, frames, photos, photo_share)
        rng, T = self._rng, self.frames
        self.hair_kernel = self._line_kernel(rng)
        self.cloth_freq = float(rng.uniform(0.08, 0.35))
        self.cloth_dir = float(rng.uniform(0, np.pi))
        self.cloth_amp = float(rng.choice([0.0, 0.12, 0.25]))

        # people
        n = int(rng.choice(np.arange(1, MAX_FACES + 1), p=FACE_COUNT_P))
        heights = self._face_heights(n)
        order = np.argsort(heights + rng.uniform(0, 0.25, n) * heights)  # small = far = first
        heights = heights[order]
        self.people: List[_Person] = []
        placed = []
        for i in range(n):
            style = sample_face_style(rng)
            front = i == n - 1  # the front person carries the forced attributes
            if front:
                style.glasses = style.glasses or force_glasses
                style.hat = style.hat or force_hat
            hb0 = heights[i]
            hb1, c0, c1, a0, a1 = self._place_face(hb0, placed)
            talking = force_open_mouth and front or rng.uniform() < 0.6
            mouth_amp = rng.uniform(0.04, 0.14) if talking else 0.0
            mouth_phase = math.pi / 2 if (force_open_mouth and front) else rng.uniform(0, 2 * np.pi)
            u = np.arange(T) / max(T - 1, 1)
            mouth = mouth_amp * np.maximum(
                0.0, np.sin(2 * np.pi * rng.uniform(0.7, 2.0) * u + mouth_phase))
            eye = np.ones(T)
            if T > 2 and rng.uniform() < 0.3:
                eye[int(rng.integers(T))] = rng.uniform(0.15, 0.5)  # a blink
            cx, cy, scale, angle = self._motion(c0, c1, hb0 / FACE_BOX_UNITS, hb1 / FACE_BOX_UNITS, a0, a1)
            self.people.append(_Person(
                style=style, cx=cx, cy=cy, scale=np.maximum(scale, MIN_FACE_HEIGHT / FACE_BOX_UNITS),
                angle=angle,
                yaw=np.clip(smooth_track(rng, rng.uniform(-0.25, 0.25),
                                          rng.uniform(-0.25, 0.25), T, 0.03), -0.3, 0.3),
                mouth=mouth, eye=eye,
                gaze=smooth_track(rng, rng.uniform(-0.5, 0.5), rng.uniform(-0.5, 0.5), T, 0.1),
            ))
        self._add_occluders([(p.cx, p.cy, float(p.scale[0] * FACE_BOX_UNITS)) for p in self.people])

    @staticmethod
    def _line_kernel(rng) -> np.ndarray:
        k = np.zeros((9, 9), np.float32)
        a = rng.uniform(0, np.pi)
        c = 4.0
        d = np.array([math.cos(a), math.sin(a)]) * c
        cv2.line(k, (int(round(c - d[0])), int(round(c - d[1]))),
                 (int(round(c + d[0])), int(round(c + d[1]))), 1.0, 1)
        return k / k.sum()

    def render(self, t: int) -> FrameResult:
        """Frame ``t`` (0-based): image before JPEG, label map, owner map and face boxes."""
        rng = self.frame_rng(t)
        image, label, owner = self._blank_maps(t)
        scratch = np.zeros(label.shape, np.uint8)
        poses = [person.pose(t) for person in self.people]
        amodal = []
        for k, (person, pose) in enumerate(zip(self.people, poses)):
            scratch[:] = 0
            _FaceDrawer(image, label, owner, scratch, k, person.style, pose).draw()
            amodal.append(int(np.count_nonzero(scratch)))
        self.paint_occluders(image, label, owner, t)

        face_region = ~np.isin(label, _BODY)  # boxes: neck and cloth excluded
        boxes, box_owner = self._boxes([(owner == k) & face_region for k in range(len(self.people))], amodal)
        return FrameResult(self._photometric(image, label, t, rng), label, owner, boxes, box_owner, poses,
                           amodal)

    def _photometric(self, image, label, t, rng) -> np.ndarray:
        h, w = label.shape
        img = image.astype(np.float32)
        # hair strands: noise smeared along one direction
        strands = cv2.filter2D(rng.normal(0, 1, (h, w)).astype(np.float32), -1, self.hair_kernel)
        strands *= 0.5 / max(1e-6, float(strands.std()))
        hair = label == C["hair"]
        img[hair] *= (1 + 0.45 * strands[hair])[:, None]
        # cloth pattern: stripes
        if self.cloth_amp > 0:
            yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
            st = np.sign(np.sin(self.cloth_freq * (xx * math.cos(self.cloth_dir)
                                                   + yy * math.sin(self.cloth_dir))))
            cloth = label == C["cloth"]
            img[cloth] *= (1 + self.cloth_amp * st[cloth])[:, None]
        # skin pores / fine texture
        skin = label == C["skin"]
        img[skin] *= (1 + rng.normal(0, 0.03, int(skin.sum())).astype(np.float32))[:, None]
        return self.light_blur_noise(img, t, rng)
