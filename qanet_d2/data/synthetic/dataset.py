"""Writing the synthetic datasets (presets, parameter records, videos rendered in worker
processes) in the format of :mod:`qanet_d2.data.video_format`."""
from __future__ import annotations

import copy
import fcntl
import json
import logging
import os
import shutil
import time
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import cv2

from ...structures.label_sets import SYNTHETIC
from ..datasets.common import parallel_map, write_image
from ..video_format import make_frame_record, write_face_video_json
from .composite import COMPOSITE_TAG, COMPOSITE_VERSION, CompositeVideo, assign_source_faces, collect_source_faces
from .generator import GENERATOR_VERSION, SPLIT_IDS, SPLITS, SyntheticVideo

__all__ = ["PRESETS", "default_synthetic_root", "generate_preset", "generate_synthetic_dataset",
           "preset_params", "synthetic_dataset_present"]

logger = logging.getLogger(__name__)

PRESETS: Dict[str, dict] = {
    # ~500 frames of 320x240; the quick-start dataset.
    "quickstart": dict(num_train_videos=40, num_val_videos=10, frames=10, size=(320, 240), seed=0),
    # What face_synth_{train,val} generate on first use: the quickstart's files.
    "default": dict(num_train_videos=40, num_val_videos=10, frames=10, size=(320, 240), seed=0),
    # For tests: 15 frames of 160x120.
    "tiny": dict(num_train_videos=3, num_val_videos=2, frames=3, size=(160, 120), seed=0),
    # Real FASSEG faces (face_composite_fasseg_{train,test}; datasets/README.md): train faces
    # without the people of fasseg_multipose_dev_val, test faces only from the frontal test
    # photos (never train on them).
    "composite_fasseg": dict(
        num_train_videos=100, num_val_videos=0, num_test_videos=24, frames=5, size=(320, 240),
        seed=0, face_source={"train": ("fasseg_frontal_train", "fasseg_multipose_dev_train"),
                             "test": ("fasseg_frontal_test",)}),
    # The same faces over real photos without people (face_composite_fasseg_photos_train):
    # another seed (other placements), more and shorter videos, train split only.
    "composite_fasseg_photos": dict(
        num_train_videos=150, num_val_videos=0, frames=4, size=(320, 240), seed=1,
        face_source={"train": ("fasseg_frontal_train", "fasseg_multipose_dev_train")},
        photo_backgrounds=1.0),
}


# ---------------------------------------------------------------------------- datasets
def default_synthetic_root(preset: str = "default") -> str:
    """``$DETECTRON2_DATASETS/`` (default ``./datasets``, read now) + ``face_synth`` (quickstart
    and default), ``face_<preset>`` (``composite_*``) or ``face_synth_<preset>``."""
    name = ("face_synth" if preset in ("default", "quickstart")
            else f"face_{preset}" if preset.startswith("composite_") else f"face_synth_{preset}")
    return os.path.join(os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets")), name)


def preset_params(preset: str) -> dict:
    """Keyword arguments of :func:`generate_synthetic_dataset` for a preset (without root)."""
    if preset not in PRESETS:
        raise KeyError(f"unknown synthetic preset '{preset}'; choose from {sorted(PRESETS)}")
    return copy.deepcopy(PRESETS[preset])


def _split_sources(counts: Dict[str, int], face_source) -> Dict[str, List[str]]:
    """``{split: source dataset names}`` of the splits to write, in the order train, val, test."""
    if not isinstance(face_source, Mapping):
        face_source = {s: face_source for s in SPLITS if counts[s] > 0}
    unknown = sorted(set(face_source) - set(SPLITS))
    if unknown:
        raise ValueError(f"face_source: unknown split(s) {unknown}; splits are {SPLITS}")
    out = {}
    for split in SPLITS:
        if split in face_source:
            if counts[split] < 1:
                raise ValueError(f"face_source names faces for split '{split}' but its "
                                 f"number of videos is {counts[split]}")
            out[split] = [str(n) for n in face_source[split]]
        elif counts[split] > 0:
            raise ValueError(f"split '{split}' has {counts[split]} videos but face_source "
                             f"names no faces for it")
    if not out or any(not names for names in out.values()):
        raise ValueError(f"face_source needs at least one dataset name for a split with videos, "
                         f"got {face_source!r} for videos {counts}")
    return out


def params_record(num_train_videos, num_val_videos, frames, size, seed, num_test_videos=0,
                   face_source=None, photo_backgrounds=0.0) -> dict:
    w, h = (int(v) for v in size)
    rec = {"generator": "qanet_d2.data.synthetic", "version": GENERATOR_VERSION,
           "label_set": SYNTHETIC.name, "num_train_videos": int(num_train_videos),
           "num_val_videos": int(num_val_videos), "frames": int(frames), "width": w,
           "height": h, "seed": int(seed)}
    # keys only where they differ from a cartoon set of train and val, so that the records
    # of datasets generated before these options existed stay valid
    if num_test_videos:
        rec["num_test_videos"] = int(num_test_videos)
    if face_source is not None:
        del rec["label_set"]  # the face sources' set, recorded in params.json
        rec["composite_version"] = COMPOSITE_VERSION
        rec["face_source"] = _split_sources(_counts(rec), face_source)
    share = float(photo_backgrounds or 0.0)
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"photo_backgrounds is the share of videos with a photo background, "
                         f"0..1, got {photo_backgrounds!r}")
    if share > 0:
        from .photos import PHOTO_BACKGROUND_VERSION, available_background_photos

        rec["photo_backgrounds"] = {
            "share": share, "version": PHOTO_BACKGROUND_VERSION,
            "photos": [name for name, _ in available_background_photos()]}
    return rec


def _counts(params: dict) -> Dict[str, int]:
    return {"train": params["num_train_videos"], "val": params["num_val_videos"],
            "test": params.get("num_test_videos", 0)}


def _record_splits(params: dict) -> List[str]:
    """The splits a dataset with these parameters holds."""
    if "face_source" in params:
        return list(params["face_source"])
    return ["train", "val"] + (["test"] if params.get("num_test_videos") else [])


def _render_video(args) -> dict:
    """Render and write one video (in a worker process); returns its JSON entry. ``composite``:
    None or ``(source faces, label set)``; ``photos``: the video's photo-background arguments."""
    out_root, split, index, seed, frames, w, h, n_videos, composite, photos = args
    video_id = f"{split}_{index:04d}"
    if composite is None:
        # Coverage of the rare classes in every split: the first video's front person wears
        # glasses and talks from frame 0, the second's (or the first's) wears a hat.
        vid = SyntheticVideo([seed, SPLIT_IDS[split], index], w, h, frames,
                             force_glasses=index == 0, force_open_mouth=index == 0,
                             force_hat=index == min(1, n_videos - 1), **photos)
    else:
        faces, label_set = composite
        vid = CompositeVideo([seed, SPLIT_IDS[split], index, COMPOSITE_TAG], w, h, frames,
                             faces, label_set, **photos)
    records = []
    for t in range(frames):
        fr = vid.render(t)
        img_rel = f"images/{video_id}/{t:05d}.jpg"
        lab_rel = f"labels/{video_id}/{t:05d}.png"
        inst_rel = f"instances/{video_id}/{t:05d}.png"
        for rel, array, flags in ((img_rel, fr.image, [cv2.IMWRITE_JPEG_QUALITY, vid.jpeg_quality]),
                                  (lab_rel, fr.label, []), (inst_rel, fr.instance_map(), [])):
            write_image(os.path.join(out_root, rel), array, flags)
        records.append(make_frame_record(t, img_rel, h, w, lab_rel, fr.boxes, inst_rel))
    return {"video_id": video_id, "frames": records}


def _read_params(root: str) -> Optional[dict]:
    try:
        with open(os.path.join(root, "params.json"), "r", encoding="utf-8") as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError):
        return None


def _is_complete(root: str, params: dict) -> bool:
    rec = _read_params(root)
    return (rec is not None and rec.get("params") == params
            and all(os.path.isfile(os.path.join(root, f"{s}.json"))
                    for s in _record_splits(params)))


def synthetic_dataset_present(root: str, **params) -> bool:
    """Whether ``root`` holds a complete dataset generated with exactly these parameters (those
    of :func:`generate_synthetic_dataset`, which would leave it untouched)."""
    return _is_complete(os.path.abspath(os.path.expanduser(root)), params_record(**params))


def generate_synthetic_dataset(root: str, num_train_videos: int = 40, num_val_videos: int = 10,
                               frames: int = 10, size: Tuple[int, int] = (320, 240),
                               seed: int = 0, force: bool = False, workers: int = 1,
                               num_test_videos: int = 0,
                               face_source: Union[None, Sequence[str],
                                                  Mapping[str, Sequence[str]]] = None,
                               photo_backgrounds: float = 0.0,
                               ) -> Dict[str, str]:
    """Generate the synthetic dataset under ``root``, or reuse the one there with the same
    parameters; one with other parameters is replaced only with ``force``, a directory of anything
    else never. Written to ``<root>.tmp-<pid>`` and renamed, under ``<parent>/.locks/<name>.lock``.

    Args:
        size: ``(width, height)`` in pixels; ``workers``: processes (the output does not depend on it).
        face_source: None for cartoon people; else registered datasets whose faces are composited
            (their label set): names for every split with videos, or ``{split: [names]}``.
        photo_backgrounds: share (0..1) of the videos over a real photo (:mod:`.photos`).
    Returns ``{"root", "params", <split>: path of its JSON}`` (absolute paths).
    """
    root = os.path.abspath(os.path.expanduser(root))
    params = params_record(num_train_videos, num_val_videos, frames, size, seed,
                            num_test_videos, face_source, photo_backgrounds)
    if (params["frames"] < 1 or params["num_train_videos"] < 0 or params["num_val_videos"] < 0
            or int(num_test_videos) < 0):
        raise ValueError(f"invalid synthetic dataset parameters: {params}")
    if params["width"] < 32 or params["height"] < 32:
        raise ValueError(f"synthetic frames must be at least 32x32, got {size}")
    splits = _record_splits(params)
    paths = {"root": root, **{s: os.path.join(root, f"{s}.json") for s in splits},
             "params": os.path.join(root, "params.json")}
    if not force and _is_complete(root, params):
        return paths
    lock = os.path.join(os.path.dirname(root), ".locks", os.path.basename(root) + ".lock")
    os.makedirs(os.path.dirname(lock), exist_ok=True)
    with open(lock, "a+") as lock_file:
        # several processes (e.g. training workers) may start at once; released on close
        fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX)
        if _is_complete(root, params) and not force:
            return paths
        if os.path.exists(root):
            rec = _read_params(root)
            if rec is None or rec.get("params", {}).get("generator") != params["generator"]:
                if os.listdir(root):
                    raise ValueError(f"refusing to write the synthetic dataset into {root}: the directory exists "
                                     f"and is not a dataset of this generator (no params.json)")
            elif not force:
                raise ValueError(f"{root} holds a synthetic dataset with other parameters ({rec.get('params')}); "
                                 f"pass force=True (--force) to replace it, or choose another root")
        counts = _counts(params)
        label_set, composite = SYNTHETIC, {s: None for s in splits}
        record = {"params": params}
        if "face_source" in params:
            label_set, composite, record = _resolve_face_sources(params, counts)
        photos = {}
        if "photo_backgrounds" in params:
            from .photos import available_background_photos

            pb = params["photo_backgrounds"]
            photos = dict(photo_share=pb["share"], photos=available_background_photos(pb["photos"]))
        start = time.perf_counter()
        tmp = f"{root}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        try:
            w, h = params["width"], params["height"]
            all_jobs = [(tmp, split, i, params["seed"], params["frames"], w, h, counts[split],
                         None if composite[split] is None else (composite[split][i], label_set),
                         photos)
                        for split in splits for i in range(counts[split])]
            videos = parallel_map(_render_video, all_jobs, workers)
            pos = 0
            for split in splits:
                extra = None if composite[split] is None else {"face_source": params["face_source"][split]}
                write_face_video_json(os.path.join(tmp, f"{split}.json"), label_set,
                                      videos[pos:pos + counts[split]], extra=extra)
                pos += counts[split]
            seconds = time.perf_counter() - start
            with open(os.path.join(tmp, "params.json"), "w", encoding="utf-8") as f:
                json.dump({**record, "seconds": round(seconds, 2)}, f, indent=1)
            if os.path.exists(root):
                shutil.rmtree(root)
            os.replace(tmp, root)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    logger.info("Generated %s face-video dataset at %s: %s videos x %d frames of %dx%d in %.1f s",
                "composite" if "face_source" in params else "synthetic", root,
                "+".join(f"{counts[s]} {s}" for s in splits), params["frames"], params["width"], params["height"],
                seconds)
    return paths


def _resolve_face_sources(params: dict, counts: Dict[str, int]):
    """``(label set, {split: [source faces of each video]}, params.json record)`` of a
    composite dataset: the sources are read and each video's faces drawn here, in the parent
    process, so that the output does not depend on the number of workers."""
    label_set, composite, n_faces = None, {}, {}
    for split, names in params["face_source"].items():
        ls, faces = collect_source_faces(names)
        if label_set is not None and ls != label_set:
            raise ValueError(f"face sources must share one label set: split '{split}' "
                             f"({names}) has '{ls.name}', the other splits '{label_set.name}'")
        label_set = ls
        key = [params["seed"], SPLIT_IDS[split], COMPOSITE_TAG, 0xFACE]
        composite[split] = [[faces[j] for j in ids]
                            for ids in assign_source_faces(len(faces), counts[split], key)]
        n_faces[split] = len(faces)
    record = {"params": params, "label_set": label_set.name, "source_faces": n_faces}
    return label_set, composite, record


def generate_preset(preset: str, root: Optional[str] = None, **overrides) -> Dict[str, str]:
    """:func:`generate_synthetic_dataset` with a preset's parameters, replaced by the ``overrides``
    that are not None; ``root`` defaults to :func:`default_synthetic_root`."""
    kw = preset_params(preset)
    kw.update({k: v for k, v in overrides.items() if v is not None})
    return generate_synthetic_dataset(root or default_synthetic_root(preset), **kw)
