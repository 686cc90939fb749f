#!/usr/bin/env python
"""Peak training memory of a config's model per face crop and per frame, in float32 and with AMP,
and the per-GPU peak it predicts at the config's per-GPU batch (commands and results: docs/tools.md).

Training steps (as ``QANetSimpleTrainer`` runs them) run on synthetic inputs for each trained
part at a few batch sizes, and forward plus backward memory, linear in the batch, is fitted: the
parser on 1-3 crops, the detector on 1-2 frames of the largest training size (``--frame-aspect``;
``--points F:K``: F frames of K faces instead). The fixed cost is the weights and optimizer state
plus each part's fit at batch 0 beyond them (for joint training a slight overestimate). Configs
whose part is the same network at the same sizes share one measurement. The optimizer step's own
peak is kept apart; the per-GPU peak is the larger one.

Measured: on CUDA, ``torch.cuda.max_memory_allocated``; on CPU, what a GPU would hold: the bytes
of every tensor storage alive during the step, followed op by op (:class:`LiveTensorMeter`),
plus the storages from before it. Not contained: workspaces a kernel frees inside one op (cuDNN's,
tens to a few hundred MiB) and the CUDA context. AMP, DDP's buckets and the GPU budget: docs/tools.md.
"""
import argparse
import json
import logging
import os
import sys
import time
import warnings
import weakref
from contextlib import nullcontext
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Library warnings a user cannot act on: fvcore's torch.jit.script at import, detectron2's
# anchor generator calling torch.meshgrid without ``indexing``.
warnings.filterwarnings("ignore", category=FutureWarning, message=".*torch.jit.script.*")
warnings.filterwarnings("ignore", category=UserWarning, message=".*torch.meshgrid.*")

from qanet_d2 import get_qanet_cfg  # noqa: E402  (also the compat shims, registrations)

GIB = 2**30


# ---------------------------------------------------------------------------- meters
def _storage_key(t: torch.Tensor) -> int:
    return t.untyped_storage()._cdata


def storage_bytes(tensors) -> int:
    """Bytes of the distinct storages behind ``tensors``."""
    return sum({_storage_key(t): t.untyped_storage().nbytes() for t in tensors}.values())


class LiveTensorMeter(TorchDispatchMode):
    """Bytes of tensor storages created inside the block and still alive: ``current`` now,
    ``peak`` the maximum so far. A storage an op returns that none of its inputs had counts until
    it is freed (weak reference); storages from before the block never count, views included.
    """

    def __init__(self):
        super().__init__()
        self._live: Dict[int, int] = {}  # storage key -> bytes
        self.current = 0
        self.peak = 0

    def _freed(self, key: int) -> None:
        self.current -= self._live.pop(key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        inputs = {_storage_key(t) for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)}
        out = func(*args, **kwargs)
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor) or t.device.type == "meta":
                continue
            storage = t.untyped_storage()
            key, nbytes = storage._cdata, storage.nbytes()
            if key in inputs or key in self._live or nbytes == 0:
                continue
            self._live[key] = nbytes
            weakref.finalize(storage, self._freed, key)
            self.current += nbytes
            self.peak = max(self.peak, self.current)
        return out


class SavedTensorMeter(torch.autograd.graph.saved_tensors_hooks):
    """Bytes of the distinct storages autograd saves for backward inside ``with meter:``,
    storages in ``exclude`` (e.g. the parameters') not counted."""

    def __init__(self, exclude: Sequence[torch.Tensor] = ()):
        self._exclude = {_storage_key(t) for t in exclude}
        self._seen: Dict[int, int] = {}
        super().__init__(self._pack, lambda t: t)

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        key = _storage_key(t)
        if key not in self._exclude:
            self._seen[key] = max(self._seen.get(key, 0), t.untyped_storage().nbytes())
        return t

    @property
    def bytes(self) -> int:
        return sum(self._seen.values())

    def __enter__(self):
        super().__enter__()
        return self


# ---------------------------------------------------------------------------- inputs
def training_frame_size(cfg, aspect: float = 16 / 9) -> Tuple[int, int]:
    """``(height, width)`` of the largest training frame (width/height ``aspect``) after
    ResizeShortestEdge; for configs that do not resize frames (``INPUT.MIN_SIZE_TRAIN`` 0) an image
    twice the crop size."""
    short = max(int(s) for s in cfg.INPUT.MIN_SIZE_TRAIN)
    if short <= 0:
        return tuple(2 * int(s) for s in cfg.MODEL.QANET.INPUT_SIZE)
    long = short * aspect
    scale = min(1.0, cfg.INPUT.MAX_SIZE_TRAIN / long)
    return int(round(short * scale)), int(round(long * scale))


def synthetic_inputs(cfg, frames: int, faces_per_frame: int, frame_size: Tuple[int, int], seed: int = 0) -> List[Dict]:
    """``frames`` training inputs as the mapper makes them: random uint8 images, ``faces_per_frame``
    boxes side by side, a label map with every class in each face (the Lovasz loss's cost grows
    with the classes present) and the faces' training crops."""
    from detectron2.structures import Boxes, Instances

    from qanet_d2.data.training_crops import TrainingCropper

    cropper = TrainingCropper(cfg)
    g = torch.Generator().manual_seed(seed)
    height, width = frame_size
    num_classes = cfg.MODEL.QANET.NUM_CLASSES
    cell = width / faces_per_frame
    box_w = min(height / 2, cell) * 0.8
    boxes = [[(k + 0.5) * cell - box_w / 2, height / 4, (k + 0.5) * cell + box_w / 2, height * 3 / 4]
             for k in range(faces_per_frame)]
    rows = torch.linspace(height / 4, height * 3 / 4, num_classes).round().long()  # bands of classes 1..C-1
    out = []
    for _ in range(frames):
        image = torch.randint(0, 256, (3, height, width), dtype=torch.uint8, generator=g)
        labels = torch.zeros((height, width), dtype=torch.int64)
        for x0, _, x1, _ in boxes:
            for c in range(1, num_classes):
                labels[rows[c - 1] : rows[c], int(x0) : int(x1)] = c
        inst = Instances((height, width))
        inst.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
        inst.gt_classes = torch.zeros(faces_per_frame, dtype=torch.int64)
        x = {"image": image, "height": height, "width": width, "instances": inst, "sem_seg": labels}
        with torch.no_grad():
            x["face_crops"], x["face_crop_sem_seg"], _ = cropper.training_crops([x], generator=g)
        out.append(x)
    return out


# ---------------------------------------------------------------------------- one step
def build_training(cfg):
    """The model and optimizer as ``QANetTrainer`` builds them, the optimizer's state allocated
    (one step on zero gradients) and its multi-tensor ("foreach") update, CUDA's default, selected."""
    from qanet_d2.engine import QANetTrainer

    model = QANetTrainer.build_model(cfg)
    model.train()
    optimizer = QANetTrainer.build_optimizer(cfg, model)
    for group in optimizer.param_groups:
        group["foreach"] = True
    for p in model.parameters():
        if p.requires_grad:
            p.grad = torch.zeros_like(p)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return model, optimizer


def fixed_tensors(model, optimizer) -> List[torch.Tensor]:
    """Parameters, buffers and optimizer state: what exists before a step."""
    state = [v for s in optimizer.state.values() for v in s.values() if isinstance(v, torch.Tensor)]
    return list(model.parameters()) + list(model.buffers()) + state


def measure_step(model, optimizer, inputs: List[Dict], amp: bool) -> Dict[str, int]:
    """Bytes of one training step: ``peak`` (forward and backward), ``optimizer_peak`` (the
    optimizer step; only the first grows with the batch), ``saved`` (for backward) and ``before``
    (weights, optimizer state)."""
    from detectron2.utils.events import EventStorage

    from qanet_d2.engine.trainer import autocast_settings

    device = next(model.parameters()).device
    saved = SavedTensorMeter(exclude=list(model.parameters()) + list(model.buffers()))
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    else:
        before = storage_bytes(fixed_tensors(model, optimizer))
    live = nullcontext() if cuda else LiveTensorMeter()
    autocast = torch.autocast(*autocast_settings(device)[:2]) if amp else nullcontext()  # (device type, dtype)

    def peak_and_reset() -> int:
        if cuda:
            torch.cuda.synchronize(device)
            peak = torch.cuda.max_memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
        else:
            peak = before + live.peak
            live.peak = live.current
        return int(peak)

    with EventStorage(), live, saved:
        with autocast:
            losses = model(inputs)
        sum(losses.values()).backward()
        del losses
        peak = peak_and_reset()
        optimizer.step()
        optimizer_peak = peak_and_reset()
    optimizer.zero_grad(set_to_none=True)
    return {"peak": peak, "optimizer_peak": optimizer_peak, "saved": int(saved.bytes), "before": int(before)}


# ---------------------------------------------------------------------------- fit
# (frames, faces per frame) measured per part
DEFAULT_POINTS = {"parser": [(1, 1), (2, 1), (3, 1)], "detector": [(1, 1), (2, 1)]}


def fit_line(xs: Sequence[float], ys: Sequence[float]) -> Dict[str, float]:
    """Least-squares ``y = intercept + slope * x``, and the largest residual."""
    x, y = np.asarray(xs, np.float64), np.asarray(ys, np.float64)
    if len(set(x.tolist())) < 2:
        raise ValueError(f"need at least two different batch sizes, got {list(xs)}")
    a = np.stack([np.ones_like(x), x], 1)
    coef, *_ = np.linalg.lstsq(a, y, rcond=None)
    return {"intercept": float(coef[0]), "slope": float(coef[1]), "max_residual": float(np.abs(a @ coef - y).max())}


def trained_parts(cfg) -> Tuple[str, ...]:
    return {"joint": ("detector", "parser"), "detector": ("detector",), "parser": ("parser",)}[cfg.MODEL.QANET.TRAIN_MODE]


def part_config(cfg, part: str):
    """``cfg`` training only ``part`` (for the parser the detector is not built)."""
    c = cfg.clone()
    c.defrost()
    c.MODEL.WEIGHTS = ""
    c.MODEL.QANET.TRAIN_MODE = part
    if part == "parser":
        c.MODEL.QANET.DETECTOR.NAME = ""
        c.MODEL.QANET.TEST_BOXES = "gt"
    c.freeze()
    return c


def part_key(cfg, part: str, frame_size, points, precisions) -> str:
    """Equal for configs whose ``part`` measures the same: network (the detector's does not depend
    on the frozen parser), sizes, optimizer and points."""
    c = part_config(cfg, part)
    model = c.MODEL.clone()
    model.defrost()
    if part == "detector":
        del model["QANET"]
    return "\n".join([part, model.dump(), c.SOLVER.OPTIMIZER, str(frame_size), str(list(points)), str(list(precisions))])


def measure_part(cfg, part: str, frame_size, points=None, precisions=("fp32", "amp"), seed: int = 0, log=print) -> Dict:
    """Memory of training ``part`` of ``cfg`` at ``points`` (frames, faces per frame). Per
    precision: the steps, the fits of peak and saved bytes against crops (parser) or frames
    (detector), ``extra`` (the fitted peak at batch 0 beyond weights and optimizer state) and
    ``optimizer_extra`` (the same for the optimizer step)."""
    points = list(points or DEFAULT_POINTS[part])
    c = part_config(cfg, part)
    torch.manual_seed(seed)
    model, optimizer = build_training(c)
    state_bytes = storage_bytes(fixed_tensors(model, optimizer))
    out = {"part": part, "frame_size": list(frame_size), "points": [list(p) for p in points], "precisions": {}}
    for precision in precisions:
        steps = []
        for frames, faces in points:
            torch.manual_seed(seed)
            inputs = synthetic_inputs(c, frames, faces, frame_size, seed=seed)
            start = time.perf_counter()
            step = measure_step(model, optimizer, inputs, amp=(precision == "amp"))
            step.update(frames=frames, faces_per_frame=faces, seconds=round(time.perf_counter() - start, 1))
            log(f"  {part} {precision}: {frames} frame(s) x {faces} face(s): peak {step['peak'] / GIB:.2f} GiB, "
                f"saved {step['saved'] / GIB:.2f} GiB ({step['seconds']} s)")
            steps.append(step)
        units = [f * k if part == "parser" else f for f, k in points]
        peak = fit_line(units, [s["peak"] for s in steps])
        saved = fit_line(units, [s["saved"] for s in steps])
        out["precisions"][precision] = {
            "steps": steps, "peak": peak, "saved": saved, "extra": peak["intercept"] - state_bytes,
            "optimizer_extra": max(s["optimizer_peak"] for s in steps) - state_bytes,
        }
    return out


def config_state(cfg) -> Dict[str, float]:
    """Bytes of ``cfg``'s weights and optimizer state, and of its trainable parameters."""
    torch.manual_seed(0)
    model, optimizer = build_training(cfg)
    trainable = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    return {"state": float(storage_bytes(fixed_tensors(model, optimizer))), "trainable": float(trainable)}


def config_memory(state: Dict[str, float], parts: Dict[str, Dict], precision: str) -> Dict[str, float]:
    """Bytes per crop, per frame and fixed (weights and optimizer state + each trained part's
    ``extra``: an upper bound when both parts train) in ``precision``; ``optimizer_step`` likewise."""
    out = {**state, "per_crop": 0.0, "per_frame": 0.0, "saved_per_crop": 0.0, "saved_per_frame": 0.0,
           "fixed": state["state"], "optimizer_step": state["state"], "fit_residual": 0.0}
    for part, measured in parts.items():
        m = measured["precisions"][precision]
        unit = "crop" if part == "parser" else "frame"
        out[f"per_{unit}"] = m["peak"]["slope"]
        out[f"saved_per_{unit}"] = m["saved"]["slope"]
        out["fixed"] += m["extra"]
        out["optimizer_step"] += m["optimizer_extra"]
        out["fit_residual"] = max(out["fit_residual"], m["peak"]["max_residual"])
    return out


def predict(memory: Dict[str, float], frames: int, faces_per_frame: int, ddp_bytes: float = 0.0) -> float:
    """Predicted peak bytes for ``frames`` frames of ``faces_per_frame`` faces: the larger of the
    forward/backward peak and the optimizer step's."""
    forward_backward = memory["fixed"] + frames * (memory["per_frame"] + faces_per_frame * memory["per_crop"])
    return max(forward_backward, memory["optimizer_step"]) + ddp_bytes


def largest_batch(memory: Dict[str, float], faces_per_frame: int, budget: float, ddp_bytes: float = 0.0) -> int:
    """Most frames per GPU whose predicted peak stays within ``budget`` bytes."""
    per_frame = memory["per_frame"] + faces_per_frame * memory["per_crop"]
    if per_frame <= 0 or memory["optimizer_step"] + ddp_bytes > budget:
        return 0
    return max(0, int((budget - memory["fixed"] - ddp_bytes) // per_frame))


def summary_row(name: str, cfg, memory: Dict[str, float], precision: str, faces_per_frame: int,
                gpu_memory_gib: float, usable_fraction: float) -> Dict:
    """Per crop, per frame, fixed, the per-GPU peak at the config's per-GPU batch and whether it fits."""
    batch = cfg.SOLVER.IMS_PER_BATCH // max(1, cfg.SOLVER.REFERENCE_WORLD_SIZE)
    ddp_bytes = memory["trainable"] if cfg.SOLVER.REFERENCE_WORLD_SIZE > 1 else 0.0
    budget = gpu_memory_gib * GIB * usable_fraction
    faces = faces_per_frame if cfg.MODEL.QANET.TRAIN_MODE != "detector" else 0
    peak = predict(memory, batch, faces, ddp_bytes)
    return {
        "config": name,
        "train_mode": cfg.MODEL.QANET.TRAIN_MODE,
        "precision": precision,
        "per_crop_gib": memory["per_crop"] / GIB,
        "per_frame_gib": memory["per_frame"] / GIB,
        "saved_per_crop_gib": memory["saved_per_crop"] / GIB,
        "saved_per_frame_gib": memory["saved_per_frame"] / GIB,
        "fixed_gib": (memory["fixed"] + ddp_bytes) / GIB,
        "optimizer_step_gib": (memory["optimizer_step"] + ddp_bytes) / GIB,
        "weights_and_optimizer_gib": memory["state"] / GIB,
        "ddp_buckets_gib": ddp_bytes / GIB,
        "fit_residual_gib": memory["fit_residual"] / GIB,
        "per_gpu_batch": batch,
        "faces_per_frame": faces,
        "per_gpu_peak_gib": peak / GIB,
        "fits": bool(peak <= budget),
        "largest_fitting_batch": largest_batch(memory, faces, budget, ddp_bytes),
    }


def markdown_table(rows: List[Dict]) -> str:
    head = ("| config | training | precision | per crop GiB (saved) | per frame GiB (saved) | fixed GiB | "
            "per-GPU batch | per-GPU peak GiB | fits | largest per-GPU batch that fits |")
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        crop = f"{r['per_crop_gib']:.3f} ({r['saved_per_crop_gib']:.3f})" if r["train_mode"] != "detector" else "-"
        frame = f"{r['per_frame_gib']:.3f} ({r['saved_per_frame_gib']:.3f})" if r["train_mode"] != "parser" else "-"
        unit = {"joint": f" frames x {r['faces_per_frame']} face", "detector": " frames", "parser": " crops"}[r["train_mode"]]
        lines.append(
            f"| {r['config']} | {r['train_mode']} | {r['precision']} | {crop} | {frame} | {r['fixed_gib']:.2f} | "
            f"{r['per_gpu_batch']}{unit} | {r['per_gpu_peak_gib']:.1f} | {'yes' if r['fits'] else 'no'} | "
            f"{r['largest_fitting_batch']} |"
        )
    return "\n".join(lines)


def get_parser():
    p = argparse.ArgumentParser(description="Peak training memory per crop and per frame (fp32 and AMP) and per GPU")
    p.add_argument("--config-file", required=True, nargs="+", metavar="FILE")
    p.add_argument("--points", nargs="+", default=None, metavar="F:K",
                   help="measure F frames with K faces each (default: by training mode, see the module doc)")
    p.add_argument("--precision", nargs="+", default=["fp32", "amp"], choices=["fp32", "amp"])
    p.add_argument("--faces-per-frame", type=int, default=1, help="faces per frame in the per-GPU prediction")
    p.add_argument("--frame-aspect", type=float, default=16 / 9, help="width/height of the training frames")
    p.add_argument("--gpu-memory-gib", type=float, default=24.0)
    p.add_argument("--usable-fraction", type=float, default=0.9, help="of the GPU memory, for PyTorch's tensors")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--json", help="also write the measurements and rows here")
    p.add_argument("--opts", default=[], nargs=argparse.REMAINDER, help="config KEY VALUE pairs")
    return p


def setup_cfg(config_file: str, opts=()):
    cfg = get_qanet_cfg()
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(list(opts))
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        cfg.MODEL.DEVICE = "cpu"
    # Memory does not depend on the weights: configs that differ only in the files they start
    # from measure the same (and nothing is read).
    cfg.merge_from_list(["MODEL.WEIGHTS", "", "MODEL.FCOS.BACKBONE_WEIGHTS", "", "MODEL.QANET.DETECTOR_WEIGHTS", "",
                         "MODEL.QANET.PARSER_WEIGHTS", "", "MODEL.QANET.BACKBONE.RESNET_WEIGHTS", "",
                         "MODEL.QANET.HRNET.PRETRAINED", False, "MODEL.QANET.HRNET.PRETRAINED_PATH", ""])
    cfg.freeze()
    return cfg


def main(argv: Optional[List[str]] = None) -> List[Dict]:
    args = get_parser().parse_args(argv)
    quiet = logging.getLogger("qanet_d2")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # warnings about the metadata of datasets that are not on this machine
    try:
        if args.threads > 0:
            torch.set_num_threads(args.threads)
        points = [tuple(int(v) for v in p.split(":")) for p in args.points] if args.points else None
        device = "cuda" if torch.cuda.is_available() else "cpu"
        print(f"device: {torch.cuda.get_device_name() if device == 'cuda' else 'cpu'}; torch {torch.__version__}; "
              f"fits = per-GPU peak <= {args.usable_fraction:g} x {args.gpu_memory_gib:g} GiB", flush=True)
        cache, rows, measurements = {}, [], {}
        for path in args.config_file:
            cfg = setup_cfg(path, args.opts)
            frame_size = training_frame_size(cfg, args.frame_aspect)
            parts = {}
            for part in trained_parts(cfg):
                part_points = points or DEFAULT_POINTS[part]
                key = part_key(cfg, part, frame_size, part_points, args.precision)
                if key not in cache:
                    print(f"{path}: measuring the {part} (frame {frame_size[0]}x{frame_size[1]}, crop "
                          f"{cfg.MODEL.QANET.INPUT_SIZE[0]}x{cfg.MODEL.QANET.INPUT_SIZE[1]})", flush=True)
                    cache[key] = measure_part(cfg, part, frame_size, part_points, args.precision,
                                              log=lambda line: print(line, flush=True))
                parts[part] = cache[key]
            measurements[path] = {"parts": parts, "memory": {}}
            state = config_state(cfg)
            for precision in args.precision:
                memory = config_memory(state, parts, precision)
                measurements[path]["memory"][precision] = memory
                rows.append(summary_row(path, cfg, memory, precision, args.faces_per_frame, args.gpu_memory_gib,
                                        args.usable_fraction))
        print("\n" + markdown_table(rows))
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"device": device, "torch": torch.__version__, "measurements": measurements, "rows": rows}, f,
                          indent=2)
        return rows
    finally:
        quiet.setLevel(level)


if __name__ == "__main__":
    main()
