"""QANet parts in isolation: losses (also the parser's own, from the config), IoU target, scoring,
neck, parser backbones."""
import pytest
import torch
import torch.nn.functional as F

import qanet_d2  # noqa: F401
from detectron2.layers import ShapeSpec
from qanet_d2 import get_qanet_cfg
from qanet_d2.modeling.backbone import TimmHRNetBackbone, build_parser_backbone
from qanet_d2.modeling.detectors import build_fcos_detector, group_norm
from qanet_d2.modeling.postprocessing import face_scores, pixel_scores_from_top
from qanet_d2.modeling.qanet import (
    QANetParser,
    SemanticFPNNeck,
    cross_entropy_loss,
    iou_loss,
    iou_targets,
    lovasz_softmax,
)
from qanet_d2.modeling.qanet.losses import at_least_float32


# The parser's losses on logits, composed as QANetParser.losses composes them.
def parsing_ce_loss(logits, labels, ignore_value=255):
    return cross_entropy_loss(F.log_softmax(at_least_float32(logits), dim=1), labels, ignore_value)


def lovasz_softmax_loss(logits, labels, ignore_value=255, per_crop=False):
    return lovasz_softmax(at_least_float32(logits).softmax(dim=1), labels, ignore_value, per_crop)


def parsing_iou_targets(logits, labels, ignore_value=255):
    return iou_targets(logits.argmax(dim=1), labels, logits.shape[1], ignore_value).to(
        torch.promote_types(logits.dtype, torch.float32))


def _logits_from_labels(labels, num_classes, confidence=10.0):
    return F.one_hot(labels.clamp(max=num_classes - 1), num_classes).permute(0, 3, 1, 2).float() * confidence


def test_iou_target_on_hand_made_masks():
    gt = torch.zeros(1, 4, 4, dtype=torch.long)
    gt[0, :2, :2] = 1  # 4 pixels of class 1
    pred = gt.clone()
    pred[0, 0, 2] = 1  # one extra pixel of class 1
    # class 0: inter 11, union 12; class 1: inter 4, union 5; class 2 absent from both -> skipped
    expected = (11 / 12 + 4 / 5) / 2
    t = parsing_iou_targets(_logits_from_labels(pred, 3), gt)
    assert t.shape == (1,)
    assert abs(float(t[0]) - expected) < 1e-6
    # ignored pixels count for nothing: ignoring the wrong pixel gives a perfect crop
    gt_ignore = gt.clone()
    gt_ignore[0, 0, 2] = 255
    assert abs(float(parsing_iou_targets(_logits_from_labels(pred, 3), gt_ignore)[0]) - 1.0) < 1e-6
    # a class only in the prediction counts with IoU 0; per-crop values in a batch
    pred2 = gt.clone()
    pred2[0, 3, 3] = 2
    batch = parsing_iou_targets(_logits_from_labels(torch.cat([pred, pred2]), 3), torch.cat([gt, gt]))
    assert abs(float(batch[0]) - expected) < 1e-6
    assert abs(float(batch[1]) - (11 / 12 + 1.0 + 0.0) / 3) < 1e-6


def test_iou_loss_uses_positive_targets_only():
    p = torch.tensor([0.5, 0.9, 0.1])
    t = torch.tensor([0.7, 0.0, 0.1])
    assert abs(float(iou_loss(p, t)) - 0.5 * (0.2**2 + 0.0) / 2) < 1e-7
    assert float(iou_loss(p, torch.zeros(3))) == 0.0


def _lovasz_reference(probs, labels):
    """Straightforward per-class loop of Berman et al.'s reference (classes="present")."""
    losses = []
    for c in range(probs.shape[1]):
        fg = (labels == c).float()
        if fg.sum() == 0:
            continue
        errors = (fg - probs[:, c]).abs()
        errors_sorted, perm = torch.sort(errors, descending=True)
        gt_sorted = fg[perm]
        gts = gt_sorted.sum()
        inter = gts - gt_sorted.cumsum(0)
        union = gts + (1 - gt_sorted).cumsum(0)
        jac = 1.0 - inter / union
        jac[1:] = jac[1:] - jac[:-1].clone()
        losses.append(torch.dot(errors_sorted, jac))
    return torch.stack(losses).mean()


def test_lovasz_softmax_matches_reference_and_ignores():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 6, 5)
    labels = torch.randint(0, 3, (2, 6, 5))  # class 3 absent
    labels[0, 0, :] = 255
    loss = lovasz_softmax_loss(logits, labels)
    probs = logits.softmax(1).permute(0, 2, 3, 1).reshape(-1, 4)
    flat = labels.reshape(-1)
    ref = _lovasz_reference(probs[flat != 255], flat[flat != 255])
    assert abs(float(loss) - float(ref)) < 1e-5
    # a confident correct prediction has (almost) no loss; gradients flow
    assert float(lovasz_softmax_loss(_logits_from_labels(labels, 4, 30.0), labels)) < 1e-6
    logits.requires_grad_(True)
    lovasz_softmax_loss(logits, labels).backward()
    assert logits.grad.abs().sum() > 0
    # all pixels ignored: zero, still differentiable
    assert float(lovasz_softmax_loss(logits, torch.full_like(labels, 255)).detach()) == 0.0


def test_cross_entropy_ignores_255():
    logits = torch.zeros(1, 3, 2, 2)
    labels = torch.tensor([[[0, 1], [255, 255]]])
    assert abs(float(parsing_ce_loss(logits, labels)) - torch.log(torch.tensor(3.0)).item()) < 1e-6


def test_pixel_and_face_scores():
    probs = torch.zeros(2, 4, 2, 2)
    probs[0, 1] = torch.tensor([[0.9, 0.7], [0.15, 0.5]])
    probs[0, 0] = 1 - probs[0, 1]  # max probs: 0.9, 0.7, 0.85, 0.5
    probs[1, :] = 0.1  # max 0.1 everywhere: below 0.2 -> score 0
    s = pixel_scores_from_top(probs.max(dim=1).values, thresh=0.2)
    assert abs(float(s[0]) - (0.9 + 0.7 + 0.85 + 0.5) / 4) < 1e-6 and float(s[1]) == 0.0
    q = face_scores(torch.tensor([0.8]), torch.tensor([0.6]), torch.tensor([0.9]), (1.0, 0.5, 3.0))
    expected = (0.8 * 0.6**0.5 * 0.9**3) ** (1 / 4.5)
    assert abs(float(q) - expected) < 1e-6
    # the (unbounded) IoU prediction is clamped to [0, 1]
    assert float(face_scores(torch.tensor([1.0]), torch.tensor([1.7]), torch.tensor([1.0]))) == pytest.approx(1.0)


def test_lovasz_per_crop_vs_batch_on_a_two_crop_case():
    """Two 1x2 crops, two classes. Crop A: labels (0, 1), class-1 probabilities (0.2, 0.6);
    crop B: labels (1, 1), class-1 probabilities (0.9, 0.5). Per crop (classes present in the
    crop, errors sorted in decreasing order, gradient of the Lovasz extension of the Jaccard loss):

    * A, class 0: errors 0.2 (fg), 0.4 (bg) -> sorted (bg, fg), Jaccard losses (1/2, 1),
      gradient (1/2, 1/2) -> 0.3; class 1: errors 0.2 (bg), 0.4 (fg) -> sorted (fg, bg),
      Jaccard losses (1, 1), gradient (1, 0) -> 0.4; mean 0.35.
    * B, class 1: errors 0.1, 0.5 (both fg) -> sorted (0.5, 0.1), gradient (1/2, 1/2) -> 0.3.

    Per crop: (0.35 + 0.3) / 2 = 0.325. Over the batch the four pixels are pooled (the
    reference implementation on the pooled pixels), which gives another value."""
    p1 = torch.tensor([[[0.2, 0.6]], [[0.9, 0.5]]])  # N x h x w, class-1 probability
    probs = torch.stack([1 - p1, p1], dim=1)  # N x C x h x w
    labels = torch.tensor([[[0, 1]], [[1, 1]]])
    flat_p = probs.permute(0, 2, 3, 1).reshape(-1, 2)
    flat_l = labels.reshape(-1)
    batch_ref = _lovasz_reference(flat_p, flat_l)
    crop_ref = (_lovasz_reference(flat_p[:2], flat_l[:2]) + _lovasz_reference(flat_p[2:], flat_l[2:])) / 2
    assert float(crop_ref) == pytest.approx(0.325)
    per_crop = lovasz_softmax(probs, labels, per_crop=True)
    batch = lovasz_softmax(probs, labels, per_crop=False)
    assert float(per_crop) == pytest.approx(0.325, abs=1e-6)
    assert float(batch) == pytest.approx(float(batch_ref), abs=1e-6)
    assert abs(float(batch) - float(per_crop)) > 0.01
    # a crop without valid pixels counts 0 in the per-crop mean (official QANet code)
    ignored = torch.cat([labels, torch.full_like(labels[:1], 255)])
    three = torch.cat([probs, probs[:1]])
    assert float(lovasz_softmax(three, ignored, per_crop=True)) == pytest.approx(0.65 / 3, abs=1e-6)


def test_parser_losses_from_config():
    cfg = get_qanet_cfg()
    cfg.merge_from_file("configs/quick_schedules/qanet_fcos_synth_instant_test.yaml")
    cfg.merge_from_list(["MODEL.QANET.PARSING.CE_WEIGHT", 2.0, "MODEL.QANET.PARSING.LOVASZ_WEIGHT", 3.0,
                         "MODEL.QANET.IOU.LOSS_WEIGHT", 0.5, "MODEL.QANET.PARSING.LOVASZ_PER_CROP", True])
    parser = QANetParser(cfg)
    assert parser.lovasz_per_crop and parser.ce_weight == 2.0
    torch.manual_seed(0)
    c = cfg.MODEL.QANET.NUM_CLASSES
    logits = torch.randn(2, c, 8, 6, requires_grad=True)
    labels = torch.randint(0, 4, (2, 8, 6))
    labels[0, 0] = 255
    pred_iou = torch.tensor([0.3, 0.9], requires_grad=True)
    losses = parser.losses(logits, pred_iou, labels)
    assert set(losses) == {"loss_parsing_ce", "loss_parsing_lovasz", "loss_iou"}
    value = {k: float(v.detach()) for k, v in losses.items()}
    with torch.no_grad():
        ce = torch.nn.functional.cross_entropy(logits, labels, ignore_index=255)
        lov = lovasz_softmax_loss(logits, labels, per_crop=True)
        # the IoU target is the IoU of the detached argmax parsing, and it reaches the IoU loss
        target = iou_targets(logits.argmax(1), labels, c)
        iou = iou_loss(pred_iou, target)
    assert value["loss_parsing_ce"] == pytest.approx(2.0 * float(ce), rel=1e-6)
    assert value["loss_parsing_lovasz"] == pytest.approx(3.0 * float(lov), rel=1e-6)
    assert value["loss_iou"] == pytest.approx(0.5 * float(iou), rel=1e-6)
    sum(losses.values()).backward()
    assert logits.grad.abs().sum() > 0 and pred_iou.grad.abs().sum() > 0
    # the losses are functions of (log-)probabilities: the CE of log-probabilities is the CE of logits
    with torch.no_grad():
        assert float(cross_entropy_loss(logits.log_softmax(1), labels)) == pytest.approx(float(parsing_ce_loss(logits, labels)))


def test_neck_brings_all_levels_to_stride_4():
    shapes = {f"hr{s}": ShapeSpec(channels=c, stride=s) for s, c in zip((4, 8, 16, 32), (8, 16, 32, 64))}
    neck = SemanticFPNNeck(shapes, list(shapes), conv_dim=24, norm="BN")
    # blocks per level: 1 (no upsampling), 1, 2, 3
    assert [len(h) for h in neck.scale_heads] == [1, 1, 2, 3]
    assert [h[0].upsample for h in neck.scale_heads] == [False, True, True, True]
    feats = {f"hr{s}": torch.randn(2, sh.channels, 64 // s, 48 // s) for s, sh in zip((4, 8, 16, 32), shapes.values())}
    assert neck(feats).shape == (2, 24, 16, 12)


def test_hrnet_backbone_raw_branches():
    backbone = TimmHRNetBackbone("hrnet_w18_small")
    shapes = backbone.output_shape()
    assert [(shapes[f].channels, shapes[f].stride) for f in ("hr4", "hr8", "hr16", "hr32")] == [
        (16, 4), (32, 8), (64, 16), (128, 32)
    ]
    out = backbone(torch.randn(1, 3, 64, 32))
    assert [tuple(out[f].shape) for f in ("hr4", "hr8", "hr16", "hr32")] == [
        (1, 16, 16, 8), (1, 32, 8, 4), (1, 64, 4, 2), (1, 128, 2, 1)
    ]


def test_hrnet_backbone_is_built_without_loading_weights(monkeypatch):
    """ImageNet weights are loaded by the checkpointer when training starts
    (tests/test_pretrained.py), never when the model is built: building needs no network."""
    import timm

    real = timm.create_model
    calls = []
    monkeypatch.setattr(timm, "create_model", lambda *a, **k: calls.append(k) or real(*a, **k))
    cfg = get_qanet_cfg()
    cfg.MODEL.QANET.HRNET.NAME = "hrnet_w18_small"
    cfg.MODEL.QANET.HRNET.PRETRAINED = True
    build_parser_backbone(cfg)
    assert calls and not any(k.get("pretrained") for k in calls)


def test_resnet_parser_backbone_and_fcos_detector_from_config():
    cfg = get_qanet_cfg()
    cfg.MODEL.QANET.BACKBONE.NAME = "build_qanet_resnet_backbone"
    cfg.MODEL.QANET.BACKBONE.RESNET_DEPTH = 18
    cfg.MODEL.QANET.BACKBONE.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    backbone = build_parser_backbone(cfg)
    assert {f: s.stride for f, s in backbone.output_shape().items()} == {"res2": 4, "res3": 8, "res4": 16, "res5": 32}
    assert cfg.MODEL.RESNETS.DEPTH == 50  # the detector's keys are untouched

    cfg.MODEL.BACKBONE.NAME = "build_fcos_resnet_fpn_backbone"
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res3", "res4", "res5"]
    cfg.MODEL.FPN.IN_FEATURES = ["res3", "res4", "res5"]
    cfg.MODEL.FPN.OUT_CHANNELS = 48
    det = build_fcos_detector(cfg)
    shapes = det.backbone.output_shape()
    assert {f: s.stride for f, s in shapes.items()} == {"p3": 8, "p4": 16, "p5": 32, "p6": 64, "p7": 128}
    assert det.backbone.top_block.in_feature == "p5"  # P6/P7 from P5
    assert det.head.cls_score.out_channels == 1
    assert isinstance(det.head.cls_subnet[1], torch.nn.GroupNorm) and det.head.cls_subnet[1].num_groups == 4
    assert group_norm(256).num_groups == 32 and group_norm(64).num_groups == 16


def test_narrow_resnet18_detector_backbone():
    from detectron2.modeling.backbone.resnet import build_resnet_backbone
    from qanet_d2.modeling.detectors import build_basic_resnet, build_fcos_resnet_fpn_backbone

    cfg = get_qanet_cfg()
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res3", "res4", "res5"]
    # at width 64 it is detectron2's ResNet-18, parameter for parameter
    ours = {k: v.shape for k, v in build_basic_resnet(cfg, ShapeSpec(channels=3)).state_dict().items()}
    upstream = {k: v.shape for k, v in build_resnet_backbone(cfg, ShapeSpec(channels=3)).state_dict().items()}
    assert ours == upstream

    cfg.MODEL.RESNETS.STEM_OUT_CHANNELS = 32
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 32
    cfg.MODEL.FPN.IN_FEATURES = ["res3", "res4", "res5"]
    cfg.MODEL.FPN.OUT_CHANNELS = 64
    fpn = build_fcos_resnet_fpn_backbone(cfg, ShapeSpec(channels=3))
    assert {f: s.channels for f, s in fpn.bottom_up.output_shape().items()} == {"res3": 64, "res4": 128, "res5": 256}
    n_params = sum(p.numel() for p in fpn.bottom_up.parameters())
    assert 2.7e6 < n_params < 2.9e6  # a quarter of ResNet-18's 11.2 M
    out = fpn(torch.zeros(1, 3, 128, 160))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "p3": (1, 64, 16, 20), "p4": (1, 64, 8, 10), "p5": (1, 64, 4, 5), "p6": (1, 64, 2, 3), "p7": (1, 64, 1, 2)}
    cfg.MODEL.RESNETS.DEPTH = 50
    with pytest.raises(ValueError, match="18/34"):
        build_basic_resnet(cfg, ShapeSpec(channels=3))
