"""The trainer used by ``train_net.py``: detectron2's DefaultTrainer with this project's loaders,
evaluators, optimizer and checkpointer, plus what an interrupted or multi-process CPU run needs
(each deviation is explained where it is made).
"""
import contextlib
import itertools
import logging
import os
import random
import time
import weakref
from typing import List, NamedTuple, Optional

import numpy as np
import torch
from detectron2.data import build_detection_test_loader, build_detection_train_loader, get_detection_dataset_dicts
from detectron2.data.samplers import TrainingSampler
from detectron2.engine import DefaultTrainer, SimpleTrainer, TrainerBase, create_ddp_model, hooks
from detectron2.solver.build import get_default_optimizer_params, maybe_add_gradient_clipping
from detectron2.utils import comm
from detectron2.utils.events import CommonMetricPrinter, JSONWriter, TensorboardXWriter
from detectron2.utils.logger import setup_logger

from ..data.instance_mapper import FaceInstanceDatasetMapper, face_instance_dicts
from ..data.mapper import FaceParsingDatasetMapper
from ..data.mixed_label_sets import dataset_label_sets, fill_model_label_set
from ..evaluation import build_face_parsing_evaluators
from ..modeling import build_test_time_model
from .checkpoint import QANetCheckpointer
from .epochs import schedule_in_iterations
from .route import training_route
from .validation import OPTIMIZERS, validate_config
from .world_size import scale_config_to_world_size

logger = logging.getLogger(__name__)


class ResumableTrainingSampler(TrainingSampler):
    """detectron2's TrainingSampler (same stream for the same seed) starting ``start_index``
    samples into the global stream (all processes together), so a resumed run continues it."""

    def __init__(self, size: int, seed: Optional[int] = None, start_index: int = 0):
        super().__init__(size, seed=seed)
        self._start_index = int(start_index)

    def __iter__(self):
        start = self._start_index + self._rank
        yield from itertools.islice(self._infinite_indices(), start, None, self._world_size)


class WeightedTrainingSampler(ResumableTrainingSampler):
    """Infinite stream of indices into the concatenation of several datasets, each drawn at its
    ratio whatever its size, each dataset's samples in a fresh random order per pass. The stream
    depends only on ``seed``; ``start_index`` and the sharding over processes are as in
    :class:`ResumableTrainingSampler`."""

    _CHUNK = 4096  # dataset draws per call of the generator

    def __init__(self, sizes, ratios, seed: Optional[int] = None, start_index: int = 0):
        sizes, ratios = [int(s) for s in sizes], [float(r) for r in ratios]
        if len(sizes) != len(ratios) or not sizes:
            raise ValueError(f"one ratio per dataset: {len(ratios)} ratios for {len(sizes)} datasets")
        if any(s <= 0 for s in sizes):
            raise ValueError(f"every dataset needs samples; sizes {sizes}")
        if any(not r > 0 for r in ratios):
            raise ValueError(f"ratios must be positive; got {ratios}")
        super().__init__(sum(sizes), seed=seed, start_index=start_index)
        self._sizes = sizes
        self._weights = torch.tensor(ratios, dtype=torch.float64) / sum(ratios)
        self._offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64).tolist()

    def _infinite_indices(self):
        g = torch.Generator()
        g.manual_seed(self._seed)
        orders = [[] for _ in self._sizes]
        positions = [0 for _ in self._sizes]
        while True:
            for d in torch.multinomial(self._weights, self._CHUNK, replacement=True, generator=g).tolist():
                if positions[d] == len(orders[d]):
                    orders[d] = torch.randperm(self._sizes[d], generator=g).tolist()
                    positions[d] = 0
                yield self._offsets[d] + orders[d][positions[d]]
                positions[d] += 1


class TrainingSamples(NamedTuple):
    """The datasets' names, their sample lists, all samples in one list, and the unit ("frames" or "faces")."""

    names: List[str]
    parts: List[list]
    dataset: list
    unit: str


def iteration_seed(base_seed: int, iteration: int, rank: int) -> int:
    """A seed that depends only on (base seed, iteration, rank)."""
    return (base_seed * 1_000_003 + iteration * 9_176 + rank * 7_919) % (2**31 - 1)


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def autocast_settings(device: torch.device):
    """``(device_type, dtype, needs_grad_scaler)`` of mixed precision training on ``device``:
    float16 with loss scaling on CUDA, bfloat16 without on CPU."""
    if device.type == "cuda":
        return "cuda", torch.float16, True
    if device.type == "cpu":
        return "cpu", torch.bfloat16, False
    raise ValueError(f"SOLVER.AMP.ENABLED: mixed precision is supported on CUDA and CPU, not on {device.type}")


class QANetSimpleTrainer(SimpleTrainer):
    """SimpleTrainer with per-iteration reseeding (an interrupted run draws the same crops), a
    per-term finiteness check and optional mixed precision (:func:`autocast_settings`); not
    AMPTrainer, which requires CUDA and has neither of the first two."""

    def __init__(self, model, data_loader, optimizer, base_seed: int, amp: bool = False):
        super().__init__(model, data_loader, optimizer)
        self.base_seed = int(base_seed)
        self.amp = bool(amp)
        self.grad_scaler = None
        if self.amp:
            device = next(model.parameters()).device
            self.autocast_device, self.autocast_dtype, scaled = autocast_settings(device)
            if scaled:
                self.grad_scaler = torch.amp.GradScaler(device.type)
            logger.info(f"Mixed precision: {str(self.autocast_dtype).replace('torch.', '')} autocast on {device.type}, "
                        + ("GradScaler" if scaled else "no loss scaling"))

    def run_step(self):
        assert self.model.training, "[QANetSimpleTrainer] model was changed to eval mode!"
        seed = iteration_seed(self.base_seed, self.iter, comm.get_rank())
        _seed_all(seed)  # randomness of the mapper when it runs in this process
        start = time.perf_counter()
        data = next(self._data_loader_iter)
        data_time = time.perf_counter() - start
        # Reseed after loading: a loader that starts its workers on this call draws from the
        # global generator, which would otherwise shift the model's random draws after a resume.
        _seed_all(seed + 1)

        with torch.autocast(self.autocast_device, dtype=self.autocast_dtype) if self.amp else contextlib.nullcontext():
            loss_dict = self.model(data)
        if isinstance(loss_dict, torch.Tensor):
            loss_dict = {"total_loss": loss_dict}
        for name, value in loss_dict.items():
            if not torch.isfinite(value).all():
                shown = value.item() if value.numel() == 1 else value.detach().cpu().tolist()
                raise FloatingPointError(
                    f"Loss term '{name}' is {shown} at iteration {self.iter}: "
                    "training stopped. Lower SOLVER.BASE_LR, enable SOLVER.CLIP_GRADIENTS, or check "
                    "the inputs of this iteration."
                )
        losses = sum(loss_dict.values())

        self.optimizer.zero_grad()
        scaler = self.grad_scaler
        (losses if scaler is None else scaler.scale(losses)).backward()
        self._write_metrics(loss_dict, data_time)
        if scaler is None:
            self.optimizer.step()
        else:
            # step() unscales the gradients first (so gradient clipping sees true values) and
            # skips the update when they overflowed.
            scaler.step(self.optimizer)
            scaler.update()

    def state_dict(self):
        ret = super().state_dict()
        if self.grad_scaler is not None:
            ret["grad_scaler"] = self.grad_scaler.state_dict()
        return ret

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        if self.grad_scaler is not None:
            if "grad_scaler" in state_dict:
                self.grad_scaler.load_state_dict(state_dict["grad_scaler"])
            else:
                logger.info("The checkpoint has no GradScaler state (trained without AMP): the loss scale starts afresh.")


class QANetTrainer(DefaultTrainer):
    """DefaultTrainer for qanet_d2 (see module doc)."""

    def __init__(self, cfg):
        TrainerBase.__init__(self)
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()
        validate_config(cfg, for_training=True)
        logger.info(f"Training route: {training_route(cfg)}")
        if not len(cfg.MODEL.QANET.LABEL_SET.CLASSES):  # a config that train_net.py did not set up
            cfg = cfg.clone()
            cfg.defrost()
            fill_model_label_set(cfg)
            cfg.freeze()
        cfg = self.auto_scale_workers(cfg, comm.get_world_size())
        self._train_samples = self.training_samples(cfg)
        cfg = schedule_in_iterations(cfg, len(self._train_samples.dataset), self._train_samples.unit)
        self.cfg = cfg
        self.base_seed = int(cfg.SEED) if cfg.SEED >= 0 else int(comm.shared_random_seed())

        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg, seed=self.base_seed, start_iter=0, samples=self._train_samples)
        # v0.6 passes a GPU index as device_ids, which DDP refuses on CPU.
        device_ids = [comm.get_local_rank()] if next(model.parameters()).is_cuda else None
        model = create_ddp_model(model, device_ids=device_ids, broadcast_buffers=False, find_unused_parameters=True)
        self._trainer = QANetSimpleTrainer(
            model, data_loader, optimizer, base_seed=self.base_seed, amp=cfg.SOLVER.AMP.ENABLED
        )

        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        # cfg: the part checkpoints and ImageNet initialisation of a run that is not resumed.
        self.checkpointer = QANetCheckpointer(model, cfg.OUTPUT_DIR, cfg=cfg, imagenet_init=True, trainer=weakref.proxy(self))
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.register_hooks(self.build_hooks())

    # Not DefaultTrainer's: that one lacks the square-root LR rule Adam needs (see world_size.py).
    auto_scale_workers = staticmethod(scale_config_to_world_size)

    # ---------------------------------------------------------------- state
    def state_dict(self):
        ret = super().state_dict()
        # v0.6 does not save the optimizer (Adam's moments); later versions do, under "_trainer".
        ret["_trainer"] = self._trainer.state_dict()
        ret["base_seed"] = self.base_seed
        return ret

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        if "_trainer" in state_dict:
            self._trainer.load_state_dict(state_dict["_trainer"])
        if "base_seed" in state_dict:
            self.base_seed = int(state_dict["base_seed"])
            self._trainer.base_seed = self.base_seed

    def resume_or_load(self, resume=True):
        """DefaultTrainer's; a resumed run also continues the seed and data order of the original."""
        super().resume_or_load(resume)
        if resume and self.checkpointer.has_checkpoint():
            # Rebuild the loader so its stream continues where the checkpoint stopped.
            loader = self.build_train_loader(self.cfg, seed=self.base_seed, start_iter=self.start_iter,
                                             samples=self._train_samples)
            self._trainer.data_loader = loader
            self._trainer._data_loader_iter = iter(loader)

    # ---------------------------------------------------------------- hooks
    def build_hooks(self):
        ret = super().build_hooks()
        for hook in ret:
            if isinstance(hook, hooks.PeriodicWriter):
                hook._period = self.cfg.SOLVER.LOG_PERIOD
        return ret

    def build_writers(self):
        # detectron2's default_writers, with metrics.json medians over SOLVER.LOG_PERIOD iterations
        return [
            CommonMetricPrinter(self.max_iter),
            JSONWriter(os.path.join(self.cfg.OUTPUT_DIR, "metrics.json"), window_size=self.cfg.SOLVER.LOG_PERIOD),
            TensorboardXWriter(self.cfg.OUTPUT_DIR),
        ]

    # ---------------------------------------------------------------- builders
    @classmethod
    def build_optimizer(cls, cfg, model):
        params = get_default_optimizer_params(
            model,
            base_lr=cfg.SOLVER.BASE_LR,
            weight_decay_norm=cfg.SOLVER.WEIGHT_DECAY_NORM,
            bias_lr_factor=cfg.SOLVER.BIAS_LR_FACTOR,
            weight_decay_bias=cfg.SOLVER.WEIGHT_DECAY_BIAS,
        )
        name = cfg.SOLVER.OPTIMIZER.upper()
        if name not in OPTIMIZERS:
            raise ValueError(f"SOLVER.OPTIMIZER = {cfg.SOLVER.OPTIMIZER!r}: expected one of {', '.join(OPTIMIZERS)}")
        if name == "SGD":
            optim_cls = torch.optim.SGD
            kwargs = dict(lr=cfg.SOLVER.BASE_LR, momentum=cfg.SOLVER.MOMENTUM, nesterov=cfg.SOLVER.NESTEROV)
        else:  # ADAM, ADAMW
            optim_cls = torch.optim.Adam if name == "ADAM" else torch.optim.AdamW
            kwargs = dict(lr=cfg.SOLVER.BASE_LR, betas=tuple(cfg.SOLVER.BETAS))
        return maybe_add_gradient_clipping(cfg, optim_cls)(params, weight_decay=cfg.SOLVER.WEIGHT_DECAY, **kwargs)

    @classmethod
    def training_samples(cls, cfg) -> "TrainingSamples":
        """The dataset dicts of ``DATASETS.TRAIN``, each with its label set, one per frame or (with
        ``DATALOADER.SAMPLE_UNIT "face"``) one per face."""
        names = list(cfg.DATASETS.TRAIN)
        label_sets = dataset_label_sets(names)
        face_unit = cfg.DATALOADER.SAMPLE_UNIT == "face"
        parts = []
        frames = 0
        for name in names:
            dicts = get_detection_dataset_dicts([name], filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS)
            ls = label_sets[name] or dataset_label_sets([name])[name]  # files present once loaded
            if ls is not None:  # the samples' label set, for the mapper (a dict may state its own)
                dicts = [d if "label_set" in d else {**d, "label_set": ls.name} for d in dicts]
            frames += len(dicts)
            parts.append(face_instance_dicts(dicts) if face_unit else dicts)
        dataset = [d for dicts in parts for d in dicts]
        if face_unit:
            if not dataset:
                raise ValueError(f"DATASETS.TRAIN {tuple(cfg.DATASETS.TRAIN)}: no labelled face to train on (DATALOADER.SAMPLE_UNIT face)")
            logger.info(
                f"Training on face instances: {len(dataset)} faces of {frames} frames, "
                f"{len(dataset) / cfg.SOLVER.IMS_PER_BATCH:.1f} iterations per epoch"
            )
        return TrainingSamples(names, parts, dataset, "faces" if face_unit else "frames")

    @classmethod
    def build_train_loader(cls, cfg, seed: Optional[int] = None, start_iter: int = 0,
                           samples: Optional["TrainingSamples"] = None):
        """detectron2's train loader on :meth:`training_samples` (``samples``: already counted)."""
        if cfg.DATALOADER.SAMPLER_TRAIN != "TrainingSampler":
            raise ValueError(f"DATALOADER.SAMPLER_TRAIN = {cfg.DATALOADER.SAMPLER_TRAIN!r}: only TrainingSampler is supported")
        if samples is None:
            samples = cls.training_samples(cfg)
        names, parts, dataset = samples.names, samples.parts, samples.dataset
        faces = samples.unit == "faces"
        mapper = FaceInstanceDatasetMapper(cfg) if faces else FaceParsingDatasetMapper(cfg, is_train=True)
        start_index = start_iter * cfg.SOLVER.IMS_PER_BATCH
        if cfg.DATALOADER.TRAIN_RATIOS:
            sampler = WeightedTrainingSampler([len(p) for p in parts], cfg.DATALOADER.TRAIN_RATIOS, seed=seed, start_index=start_index)
            logger.info("Training datasets drawn at ratios: " + ", ".join(
                f"{n} {r / sum(cfg.DATALOADER.TRAIN_RATIOS):.3f} ({len(p)} samples)"
                for n, r, p in zip(names, cfg.DATALOADER.TRAIN_RATIOS, parts)))
        else:
            sampler = ResumableTrainingSampler(len(dataset), seed=seed, start_index=start_index)
        return build_detection_train_loader(cfg, mapper=mapper, dataset=dataset, sampler=sampler)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_detection_test_loader(cfg, dataset_name, mapper=FaceParsingDatasetMapper(cfg, is_train=False))

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        return build_face_parsing_evaluators(cfg, dataset_name, output_folder)

    # ---------------------------------------------------------------- evaluation
    last_test_seconds = 0.0

    @classmethod
    def test(cls, cfg, model, evaluators=None):
        """DefaultTrainer.test on the test-time model (``TEST.AUG`` views and
        ``TEST.ENSEMBLE.WEIGHTS`` checkpoints, see :func:`build_test_time_model`), timed
        (``last_test_seconds``) for the summary line."""
        start = time.perf_counter()
        results = super().test(cfg, build_test_time_model(cfg, model), evaluators)
        QANetTrainer.last_test_seconds = time.perf_counter() - start
        return results


def _format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s"


def format_summary_line(dataset_name, results, train_seconds=None, eval_seconds=None, note=None) -> str:
    """One line with the headline numbers of an evaluation (README.md shows one): ``J&F``, ``J``,
    ``F``, then the other absent-class convention's, mIoU, mean F1, the instance-level and
    detection metrics where present, ``note`` in brackets and the times. ``results`` is what
    ``DefaultTrainer.test`` returns, for one or several test datasets."""
    if dataset_name in results and isinstance(results[dataset_name], dict):
        results = results[dataset_name]
    fp = results.get("face_parsing", {})
    parts = [dataset_name]

    def same(a, b):
        return a == b or (a != a and b != b)  # NaN (no objects) equals NaN

    # The convention that J&F / J / F do not show: "one", unless they are not the "skip" numbers.
    other = "one" if all(same(fp.get(f"{k}(skip)"), fp.get(k)) for k in ("J&F", "J", "F")) else "skip"
    for key in ("J&F", "J", "F", f"J&F({other})", f"J({other})", f"F({other})", "mIoU", "mean_F1"):
        if key in fp:
            parts.append(f"{key.replace('mean_F1', 'mean-F1')} {fp[key]:.1f}")
    inst = results.get("instance_parsing", {})
    parts += [f"{key} {inst[key]:.1f}" for key in ("APp50", "APvol", "PCP50") if key in inst]
    box = results.get("bbox", {})
    if "AP" in box:
        parts.append(f"face-AP {box['AP']:.1f}")
    if "missed_faces" in box:
        parts.append(f"missed faces {box['missed_faces']}/{box['num_gt_faces']}")
    times = [f"{name} {_format_duration(t)}" for name, t in (("train", train_seconds), ("eval", eval_seconds))
             if t is not None]
    if note:
        parts.append(f"[{note}]")
    line = "  ".join(parts)
    return f"{line}  ({', '.join(times)})" if times else line


def add_solver_config(cfg) -> None:
    """The solver keys detectron2 lacks: optimizer, betas, log period, learning-rate rule, schedules in epochs."""
    cfg.SOLVER.OPTIMIZER = "ADAM"  # SGD, ADAM or ADAMW
    cfg.SOLVER.BETAS = (0.9, 0.999)  # Adam/AdamW
    # No weight decay by default: the official QANet code's Adam gets none (its yaml's 1e-4 is
    # never passed to the optimizer). SGD configs (the FCOS detector stage) set detectron2's 1e-4.
    cfg.SOLVER.WEIGHT_DECAY = 0.0
    # Iterations between metric writes; metrics.json holds the median over this many iterations.
    cfg.SOLVER.LOG_PERIOD = 20
    # LR rule when the number of processes differs from SOLVER.REFERENCE_WORLD_SIZE
    # (qanet_d2/engine/world_size.py): "linear" (SGD), "sqrt" (Adam), or "auto" (by SOLVER.OPTIMIZER).
    cfg.SOLVER.LR_SCALING = "auto"
    # SOLVER.EPOCHS > 0: the schedule in epochs of the training samples (frames, or faces); the
    # iteration keys are computed from the *_EPOCHS keys at start-up (qanet_d2/engine/epochs.py).
    cfg.SOLVER.EPOCHS = 0
    cfg.SOLVER.STEPS_EPOCHS = ()
    cfg.SOLVER.WARMUP_EPOCHS = 0.0
    cfg.SOLVER.CHECKPOINT_PERIOD_EPOCHS = 0
    cfg.TEST.EVAL_PERIOD_EPOCHS = 0
