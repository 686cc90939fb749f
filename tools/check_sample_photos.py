#!/usr/bin/env python
"""Face recall and false faces on the real photos installed with scikit-image and matplotlib,
and on mirrored, rotated, rescaled and collaged variants of them.

    python tools/check_sample_photos.py --config-file configs/real_faces/qanet_yunet_fasseg.yaml \\
        --opts MODEL.WEIGHTS models/qanet_yunet_real_faces_fasseg.pth

Photos with faces (head boxes by hand): the astronaut, the cameraman and Grace Hopper; seven
without. A face is found when a painted face's box centre lies in its head box and vice versa;
every other painted face is a false face. Prints one line per image and the totals.
"""
import argparse
import os
import sys
from typing import List, Tuple

import cv2
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

Box = Tuple[float, float, float, float]


def _bgr(rgb_or_grey: np.ndarray) -> np.ndarray:
    if rgb_or_grey.ndim == 2:
        return cv2.cvtColor(rgb_or_grey, cv2.COLOR_GRAY2BGR)
    return np.ascontiguousarray(rgb_or_grey[:, :, ::-1])


def sample_photos() -> List[Tuple[str, np.ndarray, List[Box]]]:
    """``(name, BGR image, head boxes)`` of the installed sample photos."""
    import matplotlib
    import skimage.data as d

    hopper = cv2.imread(os.path.join(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg"))
    return [
        ("astronaut", _bgr(d.astronaut()), [(155, 12, 300, 190)]),
        ("camera", _bgr(d.camera()), [(160, 65, 275, 205)]),
        ("grace_hopper", hopper, [(150, 25, 375, 330)]),
        ("cat", _bgr(d.chelsea()), []),
        ("coffee", _bgr(d.coffee()), []),
        ("clock", _bgr(d.clock()), []),
        ("rocket", _bgr(d.rocket()), []),
        ("motorcycle", _bgr(d.stereo_motorcycle()[0]), []),
        ("stars", _bgr(d.hubble_deep_field()), []),
        ("tissue", _bgr(d.immunohistochemistry()), []),
    ]


def mirrored(image, boxes):
    w = image.shape[1]
    return np.ascontiguousarray(image[:, ::-1]), [(w - x1, y0, w - x0, y1) for x0, y0, x1, y1 in boxes]


def rotated(image, boxes, degrees: float):
    h, w = image.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    out = cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=(128, 128, 128))
    new = []
    for x0, y0, x1, y1 in boxes:  # the rotated head's box: its size at the rotated centre
        cx, cy = m @ [(x0 + x1) / 2, (y0 + y1) / 2, 1]
        new.append((cx - (x1 - x0) / 2, cy - (y1 - y0) / 2, cx + (x1 - x0) / 2, cy + (y1 - y0) / 2))
    return out, new


def rescaled(image, boxes, factor: float):
    h, w = image.shape[:2]
    size = (max(1, int(round(w * factor))), max(1, int(round(h * factor))))
    interp = cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR
    return cv2.resize(image, size, interpolation=interp), [tuple(v * factor for v in b) for b in boxes]


def collage(items, height: int = 256, cols: int = 3):
    """Photos resized to ``height`` side by side in rows of ``cols`` on grey."""
    tiles, tile_boxes = zip(*(rescaled(image, boxes, height / image.shape[0]) for image, boxes in items))
    rows = [tiles[i:i + cols] for i in range(0, len(tiles), cols)]
    width = max(sum(t.shape[1] for t in r) for r in rows)
    canvas = np.full((height * len(rows), width, 3), 128, np.uint8)
    boxes, k = [], 0
    for r, row in enumerate(rows):
        x = 0
        for t in row:
            canvas[r * height:(r + 1) * height, x:x + t.shape[1]] = t
            boxes += [(x0 + x, y0 + r * height, x1 + x, y1 + r * height) for x0, y0, x1, y1 in tile_boxes[k]]
            x += t.shape[1]
            k += 1
    return canvas, boxes


def variants():
    """``(name, BGR image, head boxes)``: each photo, mirrored, rotated +-25 deg, at 0.25x, 0.5x and
    2x (face photos), and two collages (all photos; at 0.4x: heads of 30-50 px)."""
    photos = sample_photos()
    out = []
    for name, image, boxes in photos:
        out.append((name, image, boxes))
        out.append((name + " mirrored", *mirrored(image, boxes)))
        if boxes:
            out.append((name + " rotated +25", *rotated(image, boxes, 25)))
            out.append((name + " rotated -25", *rotated(image, boxes, -25)))
            for f in (0.25, 0.5, 2.0):
                out.append((f"{name} x{f:g}", *rescaled(image, boxes, f)))
    big = collage([(im, bx) for _, im, bx in photos], height=256, cols=5)
    out.append(("collage", *big))
    out.append(("collage x0.4", *rescaled(*big, 0.4)))
    return out


def match(pred: List[Box], gt: List[Box]) -> Tuple[int, int]:
    """``(found, false)``: ground-truth boxes matched by a predicted box (each centre inside the
    other box, one-to-one) and predicted boxes matched to none."""
    def centre_inside(a, b):
        return b[0] <= (a[0] + a[2]) / 2 <= b[2] and b[1] <= (a[1] + a[3]) / 2 <= b[3]

    used, found = set(), 0
    for g in gt:
        for i, p in enumerate(pred):
            if i not in used and centre_inside(p, g) and centre_inside(g, p):
                used.add(i)
                found += 1
                break
    return found, len(pred) - len(used)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True)
    p.add_argument("--verbose", action="store_true", help="print the scores of every face")
    p.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="config overrides KEY VALUE ...")
    args = p.parse_args(argv)

    from qanet_d2 import FaceParsingPredictor, get_qanet_cfg

    cfg = get_qanet_cfg()
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.MODEL.DEVICE = "cpu"
    predictor = FaceParsingPredictor(cfg)
    totals = np.zeros(3, int)
    images = variants()
    print(f"{'image':26s} {'size':>10s} {'faces':>5s} {'found':>5s} {'false':>5s}")
    for name, image, gt in images:
        out = predictor(image)
        inst = out["instances"]
        painted = out["painted"]
        pred = [tuple(box) for box in out["boxes"][painted].tolist()]
        found, false = match(pred, gt)
        totals += (len(gt), found, false)
        print(f"{name:26s} {image.shape[1]:>4d}x{image.shape[0]:<5d} {len(gt):5d} {found:5d} {false:5d}")
        if args.verbose:
            for i in range(len(inst)):
                b = [round(v) for v in inst.pred_boxes.tensor[i].tolist()]
                print(f"    box {b} box score {float(inst.box_scores[i]):.2f} quality {float(inst.scores[i]):.2f} "
                      f"iou {float(inst.iou_scores[i]):.2f} pixel {float(inst.pixel_scores[i]):.2f} "
                      f"{'painted' if painted[i] else 'not painted'}")
    faces, found, false = totals
    print(f"total: {found}/{faces} faces found ({100 * found / max(faces, 1):.1f} %), {false} false faces in "
          f"{len(images)} images ({false / len(images):.2f} per image)")


if __name__ == "__main__":
    main()
