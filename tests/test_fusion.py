"""Batch norms folded into convolutions for inference (qanet_d2.modeling.fusion, TEST.FUSE_CONV_BN)."""
import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import qanet_d2  # noqa: F401  (before detectron2: qanet_d2.compat)
from detectron2.layers import Conv2d, FrozenBatchNorm2d
from detectron2.modeling import build_model

from qanet_d2 import get_qanet_cfg
from qanet_d2.data.synthetic import SyntheticVideo
from qanet_d2.modeling.fusion import fuse_conv_bn
from qanet_d2.predictor import FaceParsingPredictor

REPO = Path(__file__).resolve().parents[1]
INSTANT = REPO / "configs" / "quick_schedules" / "qanet_fcos_synth_instant_test.yaml"


def _cfg(*opts):
    cfg = get_qanet_cfg()
    cfg.merge_from_file(str(INSTANT))
    cfg.merge_from_list(["MODEL.FCOS.SCORE_THRESH_TEST", 0.0, "MODEL.QANET.INFERENCE.BOX_SCORE_THRESH", 0.0,
                         "MODEL.QANET.INFERENCE.MAX_PARSED_FACES", 4] + list(opts))
    return cfg


def _randomise_norms(model, seed=0):
    """Batch-norm statistics and affine parameters far from the identity, so that folding them
    wrongly changes the outputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d)):
                c = m.running_mean.numel()
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(c, generator=g) * 2 + 0.25)
                m.weight.copy_(torch.rand(c, generator=g) + 0.5)
                m.bias.copy_(torch.randn(c, generator=g) * 0.2)


def _count_norms(module):
    return sum(isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d)) for m in module.modules())


@pytest.mark.parametrize("channels_last", [False, True])
def test_fused_model_gives_the_same_outputs_without_batch_norms(channels_last):
    torch.manual_seed(0)
    cfg = _cfg("MODEL.CHANNELS_LAST", channels_last)
    model = build_model(cfg).eval()
    _randomise_norms(model)
    fused = copy.deepcopy(model)
    norms_before = _count_norms(fused.parser) + _count_norms(fused.detector.backbone)
    folded = fuse_conv_bn(fused)
    assert norms_before > 20 and folded == norms_before
    assert _count_norms(fused.parser) == 0 and _count_norms(fused.detector.backbone) == 0
    assert all(m.norm is None for m in fused.parser.neck.modules() if isinstance(m, Conv2d))

    crops = torch.rand(3, 3, 128, 96) * 4 - 2
    with torch.no_grad():
        logits, iou = model.parser(crops)
        logits_f, iou_f = fused.parser(crops)
        assert logits.abs().max() > 0.1
        torch.testing.assert_close(logits_f, logits, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(iou_f, iou, atol=1e-4, rtol=1e-4)

        image = SyntheticVideo((3, 2), 200, 150, 1).render(0).image
        inputs = [{"image": torch.as_tensor(image.transpose(2, 0, 1).copy()), "height": 150, "width": 200}]
        out, out_f = model.inference(inputs)[0], fused.inference(inputs)[0]
    torch.testing.assert_close(out_f["instances"].pred_boxes.tensor, out["instances"].pred_boxes.tensor, atol=1e-3, rtol=0)
    assert (out_f["labels"] == out["labels"]).float().mean() > 0.999
    assert fuse_conv_bn(fused) == 0  # nothing left to fold


def test_fusing_needs_eval_mode():
    model = build_model(_cfg())
    with pytest.raises(RuntimeError, match="eval"):
        fuse_conv_bn(model)


def test_predictor_fuses_unless_told_not_to():
    torch.manual_seed(0)
    plain = FaceParsingPredictor(_cfg("TEST.FUSE_CONV_BN", False))
    torch.manual_seed(0)
    fused = FaceParsingPredictor(_cfg())  # TEST.FUSE_CONV_BN defaults to True
    assert _count_norms(fused.model.parser) == 0 and _count_norms(fused.model.detector.backbone) == 0
    assert _count_norms(plain.model.parser) > 20
    image = SyntheticVideo((5, 1), 160, 120, 1).render(0).image
    a, b = plain(image), fused(image)
    assert len(a["boxes"]) > 0
    np.testing.assert_allclose(b["boxes"], a["boxes"], atol=1e-3)
    assert (a["labels"] == b["labels"]).mean() > 0.999
