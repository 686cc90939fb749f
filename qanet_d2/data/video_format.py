"""The on-disk format shared by every face dataset of this project (datasets/README.md, "The common
format"), and its loader and writer.

``<root>/images|labels|instances/<video_id>/<frame>`` and one ``<root>/<split>.json`` per split
(``label_set``, optional ``classes``, ``videos`` of ``frames`` with ``file_name``, ``height``,
``width`` and optional ``label_file``, ``instance_file``, ``faces`` boxes, ``pose``). Boxes are
XYXY_ABS in pixel-edge coordinates: the box of the pixels in columns ``c0..c1`` and rows
``r0..r1`` is ``[c0, r0, c1 + 1, r1 + 1]``. A face-instance map gives each pixel its face:
0 = none, k + 1 = ``faces[k]`` (neck and cloth included, although the box leaves them out).
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any, Dict, Iterable, List, Optional, Sequence

import cv2
import numpy as np

from ..structures.label_sets import IGNORE_LABEL, LABEL_SETS, LabelSet, get_label_set

__all__ = [
    "DatasetFormatError",
    "BODY_CLASS_NAMES",
    "face_box_excluded_ids",
    "boxes_from_label_map",
    "union_box_from_label_map",
    "read_face_video_json",
    "resolve_json_label_set",
    "load_face_video_json",
    "write_face_video_json",
    "make_frame_record",
]

logger = logging.getLogger(__name__)

# Classes that are not part of the face box (see boxes_from_label_map).
BODY_CLASS_NAMES = frozenset({"neck", "cloth", "neck_l", "necklace", "clothes"})


class DatasetFormatError(ValueError):
    """A dataset file is missing, unreadable or does not follow the format; the message names
    the file."""


def face_box_excluded_ids(label_set: Optional[LabelSet]) -> tuple:
    """Ids that do not belong to a face box: background, 255 and the body classes (neck, cloth,
    necklace) of ``label_set``. With no label set: background and 255 only."""
    ids = [0, IGNORE_LABEL]
    if label_set is not None:
        ids += [i for i, c in enumerate(label_set.classes) if c.lower() in BODY_CLASS_NAMES]
    return tuple(ids)


def _foreground(label_map: np.ndarray, exclude_ids: Iterable[int]) -> np.ndarray:
    label_map = np.asarray(label_map)
    if label_map.ndim != 2:
        raise ValueError(f"label map must be H x W, got shape {label_map.shape}")
    lut = np.ones(256, dtype=bool)
    lut[list(exclude_ids)] = False
    return lut[label_map.astype(np.int64).clip(0, 255)]


def boxes_from_label_map(label_map: np.ndarray, min_area: int = 16,
                         exclude_ids: Iterable[int] = (0, IGNORE_LABEL)) -> List[List[float]]:
    """Face boxes ``[x0, y0, x1, y1]`` (XYXY_ABS, by decreasing area) of an ``H x W`` label map:
    one per 8-connected component of at least ``min_area`` pixels whose ids are not in
    ``exclude_ids`` (:func:`face_box_excluded_ids` leaves out neck and cloth). Touching faces
    merge and occluded ones split, so the JSON's ``"faces"`` are preferred where they exist."""
    fg = _foreground(label_map, exclude_ids).astype(np.uint8)
    stats = cv2.connectedComponentsWithStats(fg, connectivity=8)[2][1:].astype(int)
    stats = stats[stats[:, 4] >= min_area]
    stats = stats[np.argsort(-stats[:, 4], kind="stable")]
    return [[float(x), float(y), float(x + w), float(y + h)] for x, y, w, h, _ in stats]


def union_box_from_label_map(label_map: np.ndarray,
                             exclude_ids: Iterable[int] = (0, IGNORE_LABEL)) -> Optional[List[float]]:
    """One box around all foreground pixels (single-face crops such as CelebAMask-HQ, LaPa and
    Helen, where hair or ears may be disconnected from the skin). ``None`` if there is none."""
    fg = _foreground(label_map, exclude_ids)
    rows = np.flatnonzero(fg.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(fg.any(axis=0))
    return [float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)]


# ---------------------------------------------------------------------------- reading
def read_face_video_json(json_file: str) -> dict:
    """Parse and validate the structure of a split JSON (no file access beyond it).
    DatasetFormatError names the file and the key's path (``videos[3].frames[0].height``)."""
    if not os.path.isfile(json_file):
        raise FileNotFoundError(f"dataset json not found: {json_file}")
    try:
        with open(json_file, "r", encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise DatasetFormatError(f"{json_file}: malformed JSON: {e}") from e
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetFormatError(f"{json_file}: cannot read: {e}") from e

    def fail(msg):
        raise DatasetFormatError(f"{json_file}: {msg}")

    def require(obj, keys, where=""):
        for key in keys:
            if key not in obj:
                fail(f"{where}{': ' if where else ''}missing key '{key}'")

    if not isinstance(data, dict):
        fail("top level must be an object with keys 'label_set' and 'videos'")
    require(data, ("label_set", "videos"))
    if not isinstance(data["label_set"], str):
        fail("'label_set' must be a string")
    if "classes" in data and (not isinstance(data["classes"], list)
                              or not all(isinstance(c, str) for c in data["classes"])):
        fail("'classes' must be a list of strings")
    if not isinstance(data["videos"], list):
        fail("'videos' must be a list")
    seen_videos = set()
    for vi, video in enumerate(data["videos"]):
        where = f"videos[{vi}]"
        if not isinstance(video, dict):
            fail(f"{where} must be an object")
        require(video, ("video_id", "frames"), where)
        vid = video["video_id"]
        if not isinstance(vid, str) or not vid:
            fail(f"{where}.video_id must be a non-empty string")
        if vid in seen_videos:
            fail(f"{where}: duplicate video_id '{vid}'")
        seen_videos.add(vid)
        if not isinstance(video["frames"], list):
            fail(f"{where}.frames must be a list")
        seen_frames = set()
        for fi, frame in enumerate(video["frames"]):
            fwhere = f"{where}.frames[{fi}] (video '{vid}')"
            if not isinstance(frame, dict):
                fail(f"{fwhere} must be an object")
            require(frame, ("frame_index", "file_name", "height", "width"), fwhere)
            for key in ("frame_index", "height", "width"):
                if not isinstance(frame[key], int) or isinstance(frame[key], bool) or frame[key] < 0:
                    fail(f"{fwhere}.{key} must be a non-negative integer, got {frame[key]!r}")
            if frame["height"] == 0 or frame["width"] == 0:
                fail(f"{fwhere}: height and width must be positive")
            if frame["frame_index"] in seen_frames:
                fail(f"{fwhere}: duplicate frame_index {frame['frame_index']}")
            seen_frames.add(frame["frame_index"])
            for key in ("file_name", "label_file", "instance_file"):
                if key in frame and (not isinstance(frame[key], str) or not frame[key]):
                    fail(f"{fwhere}.{key} must be a non-empty string")
            if "pose" in frame and (not isinstance(frame["pose"], (int, float))
                                    or isinstance(frame["pose"], bool)):
                fail(f"{fwhere}.pose must be a number (degrees), got {frame['pose']!r}")
            faces = frame.get("faces")
            if faces is not None:
                if not isinstance(faces, list):
                    fail(f"{fwhere}.faces must be a list")
                for k, face in enumerate(faces):
                    box = face.get("bbox") if isinstance(face, dict) else None
                    if (not isinstance(box, list) or len(box) != 4
                            or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                       for v in box)):
                        fail(f"{fwhere}.faces[{k}] needs 'bbox': [x0, y0, x1, y1] numbers")
    return data


def resolve_json_label_set(data: dict, json_file: str,
                           expected: Optional[str] = None) -> LabelSet:
    """The :class:`LabelSet` a parsed split JSON declares (checked against ``classes`` and
    against ``expected``, the set the dataset was registered with)."""
    name = data["label_set"]
    if expected is not None and name != expected:
        raise DatasetFormatError(
            f"{json_file}: label_set mismatch: the file says '{name}' but the dataset is "
            f"registered with label set '{expected}'"
        )
    try:
        return get_label_set(name, data.get("classes"))
    except (KeyError, ValueError) as e:
        raise DatasetFormatError(f"{json_file}: label_set mismatch: {e}") from e


def load_face_video_json(json_file: str, dataset_root: str, dataset_name: Optional[str] = None,
                         label_set: Optional[str] = None, min_box_area: int = 16
                         ) -> List[Dict[str, Any]]:
    """Load a split JSON into detectron2 dataset dicts, one per frame, ordered by video then frame
    index, with absolute paths, ``image_id`` ``"<video_id>/<index>"`` and ``annotations`` (XYXY_ABS
    boxes, ``category_id`` 0). ``label_set``: if given, the JSON's must equal it. ``min_box_area``:
    for frames without ``"faces"`` (:func:`boxes_from_label_map`).
    """
    from detectron2.structures import BoxMode

    data = read_face_video_json(json_file)
    ls = resolve_json_label_set(data, json_file, label_set)
    excluded = face_box_excluded_ids(ls)
    root = os.path.abspath(dataset_root)
    dicts = []
    derived = 0
    for video in data["videos"]:
        vid = video["video_id"]
        for frame in sorted(video["frames"], key=lambda f: f["frame_index"]):
            record = {
                "file_name": os.path.join(root, frame["file_name"]),
                "height": frame["height"],
                "width": frame["width"],
                "image_id": f"{vid}/{frame['frame_index']}",
                "video_id": vid,
                "frame_index": frame["frame_index"],
            }
            if frame.get("label_file"):
                record["sem_seg_file_name"] = os.path.join(root, frame["label_file"])
            if frame.get("instance_file"):
                record["instance_file_name"] = os.path.join(root, frame["instance_file"])
            if "pose" in frame:
                record["pose"] = frame["pose"]
            if "faces" in frame:
                boxes = [[float(v) for v in face["bbox"]] for face in frame["faces"]]
            elif "sem_seg_file_name" in record:
                label = cv2.imread(record["sem_seg_file_name"], cv2.IMREAD_UNCHANGED)
                if label is None:
                    raise DatasetFormatError(
                        f"{record['sem_seg_file_name']}: cannot read label map (listed in "
                        f"{json_file}), needed to derive face boxes")
                if label.ndim != 2:
                    raise DatasetFormatError(
                        f"{record['sem_seg_file_name']}: label map must be single-channel, "
                        f"got shape {label.shape}")
                boxes = boxes_from_label_map(label, min_box_area, excluded)
                derived += 1
            else:
                boxes = []
            record["annotations"] = [
                {"bbox": b, "bbox_mode": BoxMode.XYXY_ABS, "category_id": 0} for b in boxes
            ]
            dicts.append(record)
    logger.info(
        "Loaded %d frames of %d videos from %s%s (label set '%s')%s", len(dicts),
        len(data["videos"]), json_file, f" for '{dataset_name}'" if dataset_name else "",
        ls.name, f"; face boxes derived from {derived} label maps" if derived else "",
    )
    return dicts


# ---------------------------------------------------------------------------- writing
def make_frame_record(frame_index: int, file_name: str, height: int, width: int,
                      label_file: Optional[str] = None,
                      boxes: Optional[Sequence[Sequence[float]]] = None,
                      instance_file: Optional[str] = None) -> dict:
    """One ``frames[]`` entry of a split JSON (paths relative to the dataset root)."""
    rec = {"frame_index": int(frame_index), "file_name": file_name,
           "height": int(height), "width": int(width)}
    if label_file is not None:
        rec["label_file"] = label_file
    if instance_file is not None:
        rec["instance_file"] = instance_file
    if boxes is not None:
        rec["faces"] = [{"bbox": [round(float(v), 2) for v in b]} for b in boxes]
    return rec


def write_face_video_json(json_file: str, label_set, videos: Sequence[dict],
                          classes: Optional[Sequence[str]] = None, extra: Optional[dict] = None
                          ) -> str:
    """Write a split JSON atomically (temporary file + rename); returns ``json_file``.
    ``label_set``: a :class:`LabelSet` or a set name (``classes`` defaults to a known set's);
    ``videos``: ``[{"video_id": str, "frames": [make_frame_record(...), ...]}, ...]``."""
    if isinstance(label_set, str) and label_set in LABEL_SETS:
        label_set = LABEL_SETS[label_set]
    if isinstance(label_set, LabelSet):
        name = label_set.name
        classes = list(label_set.classes) if classes is None else list(classes)
    else:
        name = str(label_set)
    data = {"label_set": name}
    if classes is not None:
        data["classes"] = list(classes)
    if extra:
        data.update(extra)
    data["videos"] = [{"video_id": v["video_id"], "frames": list(v["frames"])} for v in videos]
    os.makedirs(os.path.dirname(os.path.abspath(json_file)), exist_ok=True)
    tmp = f"{json_file}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, separators=(",", ":"))
    os.replace(tmp, json_file)
    return json_file
