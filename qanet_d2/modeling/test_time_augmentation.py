"""Test-time augmentation and checkpoint ensembles for :class:`QANetFaceParser`: views of the
parser (flips averaged in the crop frame, ``TEST.AUG.BOX_SCALES`` after pasting back) and the
parsers of ``TEST.ENSEMBLE.WEIGHTS`` averaged; detection runs once.
"""
from __future__ import annotations

import copy
import logging
from typing import Dict, List, Sequence, Tuple

import torch
from torch import nn

from ..weights_io import load_part_weights

__all__ = ["QANetFaceParserWithTTA", "tta_views_from_config", "build_test_time_model"]

logger = logging.getLogger(__name__)


def tta_views_from_config(cfg) -> List[Tuple[float, bool]]:
    """``(box_scale, flip)`` views from ``TEST.AUG.BOX_SCALES`` and ``TEST.AUG.FLIP``
    (the plain view ``(1.0, False)`` when ``TEST.AUG.ENABLED`` is off)."""
    if not cfg.TEST.AUG.ENABLED:
        return [(1.0, False)]
    scales = [float(s) for s in cfg.TEST.AUG.BOX_SCALES] or [1.0]
    flips = [False, True] if cfg.TEST.AUG.FLIP else [False]
    return [(s, f) for s in scales for f in flips]


class QANetFaceParserWithTTA(nn.Module):
    """Wraps a :class:`QANetFaceParser` for inference with parser views and an ensemble, passed to
    its :meth:`QANetFaceParser.inference`."""

    def __init__(self, model, views: Sequence[Tuple[float, bool]] = ((1.0, False),), extra_parsers: Sequence[nn.Module] = ()):
        super().__init__()
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        self.model = model
        self.views = [(float(s), bool(f)) for s, f in views]
        self.extra_parsers = nn.ModuleList(extra_parsers)

    @classmethod
    def from_config(cls, cfg, model):
        extra = []
        for path in cfg.TEST.ENSEMBLE.WEIGHTS:
            parser = copy.deepcopy(model.parser if not isinstance(model, nn.parallel.DistributedDataParallel) else model.module.parser)
            load_part_weights(parser, "parser", path)  # strict; an untrained parser is refused
            extra.append(parser.eval())
            logger.info(f"Ensemble: parser weights from {path}")
        return cls(model, tta_views_from_config(cfg), extra)

    @property
    def parsers(self) -> List[nn.Module]:
        return [self.model.parser] + list(self.extra_parsers)

    def inference(self, batched_inputs: List[Dict], face_boxes=None, do_postprocess: bool = True, **kwargs):
        """:meth:`QANetFaceParser.inference` with this wrapper's views and parsers (``kwargs``:
        its ``class_scores`` and ``times``)."""
        return self.model.inference(batched_inputs, face_boxes, do_postprocess, views=self.views, parsers=self.parsers, **kwargs)

    def forward(self, batched_inputs: List[Dict]):
        return self.inference(batched_inputs)


def build_test_time_model(cfg, model):
    """The model to evaluate: ``model`` itself, or a :class:`QANetFaceParserWithTTA` when
    ``TEST.AUG.ENABLED`` or ``TEST.ENSEMBLE.WEIGHTS`` asks for views or extra checkpoints."""
    if not cfg.TEST.AUG.ENABLED and not len(cfg.TEST.ENSEMBLE.WEIGHTS):
        return model
    tta = QANetFaceParserWithTTA.from_config(cfg, model)
    logger.info(f"Test-time model: {1 + len(tta.extra_parsers)} parser(s), views (box scale, flip) {tta.views}")
    return tta
