"""ImageNet initialisation and checkpoint assembly, offline, with files made here in the release
formats: detectron2's MSRA model-zoo .pkl (Caffe2 blob names), torchvision resnet*.pth, timm's
HRNet state dicts; pickles that would run code; stage-wise checkpoints and part assembly."""
import logging
import os
import pickle
import pickletools
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

import qanet_d2  # noqa: F401
from detectron2.modeling import build_model
from qanet_d2 import get_qanet_cfg
from qanet_d2.engine.checkpoint import QANetCheckpointer, load_model_part
from qanet_d2.weights_io import UnsafeCheckpointError, load_checkpoint_file, load_part_weights, load_pickle_safely
from qanet_d2.engine.imagenet import (
    HRNET_HEAD_PREFIXES,
    ImageNetWeightsError,
    detector_input_problems,
    imagenet_sources,
    load_hrnet_imagenet_weights,
    load_imagenet_weights,
    parser_input_problems,
)
from qanet_d2.modeling.backbone import TimmHRNetBackbone
from qanet_d2.modeling.detectors import build_fcos_detector

REPO = Path(__file__).resolve().parents[1]
INSTANT = REPO / "configs" / "quick_schedules" / "qanet_fcos_synth_instant_test.yaml"
SFP = REPO / "configs" / "sfp" / "qanet_hrnet_w48_fcos_r50_512x384.yaml"
MSRA_URL = "detectron2://ImageNetPretrained/MSRA/R-50.pkl"


def _cfg(path=INSTANT, *opts):
    cfg = get_qanet_cfg()
    cfg.merge_from_file(str(path))
    cfg.MODEL.DEVICE = "cpu"
    cfg.DATASETS.TRAIN = ()
    cfg.DATASETS.TEST = ()
    cfg.merge_from_list([str(o) for o in opts])
    return cfg


def _tiny_model(*opts, seed=0):
    torch.manual_seed(seed)
    return build_model(_cfg(INSTANT, *opts))


def _state(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


def _assert_same(module, state):
    got = module.state_dict()
    assert set(got) == set(state)
    for k, v in state.items():
        torch.testing.assert_close(got[k], v, rtol=0, atol=0, msg=k)


def _differs(module, state):
    return any(not torch.equal(v, state[k]) for k, v in module.state_dict().items() if v.is_floating_point())


# ---------------------------------------------------------------------- the MSRA .pkl format
def caffe2_blob_name(d2_key: str) -> str:
    """detectron2 ResNet key -> the blob name of detectron2's MSRA ImageNet files."""
    if d2_key == "stem.conv1.weight":
        return "conv1_w"
    m = re.fullmatch(r"stem\.conv1\.norm\.(weight|bias)", d2_key)
    if m:
        return "res_conv1_bn_" + {"weight": "s", "bias": "b"}[m.group(1)]
    m = re.fullmatch(r"res(\d)\.(\d+)\.(conv1|conv2|conv3|shortcut)(\.norm)?\.(weight|bias)", d2_key)
    assert m, d2_key
    stage, block, conv, norm, kind = m.groups()
    branch = {"conv1": "branch2a", "conv2": "branch2b", "conv3": "branch2c", "shortcut": "branch1"}[conv]
    suffix = ("bn_s" if kind == "weight" else "bn_b") if norm else "w"
    return f"res{stage}_{block}_{branch}_{suffix}"


def write_msra_pkl(path: Path, resnet: nn.Module, seed=0) -> dict:
    """A model-zoo ImageNet .pkl made from ``resnet``'s keys with random values: a flat dict of
    float32 numpy blobs named as in R-50.pkl (BatchNorm fused: scale ``_bn_s`` and bias ``_bn_b``
    only), plus the blobs the real files have that a detectron2 ResNet does not use (``conv1_b``,
    ``fc1000_w``, ``fc1000_b``), pickled with protocol 2 and numpy-1 module names as those files
    are. Returns {detectron2 key: tensor} of what was written."""
    g = torch.Generator().manual_seed(seed)
    values, blobs = {}, {}
    for k, v in resnet.state_dict().items():
        if k.endswith(("running_mean", "running_var", "num_batches_tracked")):
            continue
        values[k] = torch.randn(v.shape, generator=g) * 0.1 + (1.0 if k.endswith("norm.weight") else 0.0)
        blobs[caffe2_blob_name(k)] = values[k].numpy().astype(np.float32)
    width = values["stem.conv1.weight"].shape[0]
    blobs["conv1_b"] = np.full((width,), 1e-9, np.float32)
    blobs["fc1000_w"] = np.zeros((1000, 2048), np.float32)
    blobs["fc1000_b"] = np.zeros((1000,), np.float32)
    data = pickle.dumps(blobs, protocol=2).replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return values


def _sfp_detector_cfg(**overrides):
    cfg = _cfg(SFP)
    for key, value in overrides.items():
        node = cfg
        *parents, last = key.split(".")
        for p in parents:
            node = node[p]
        node[last] = value
    return cfg


@pytest.fixture(scope="module")
def msra_cache(tmp_path_factory):
    """detectron2's download cache holding an MSRA-format R-50.pkl at the place where
    ``detectron2://ImageNetPretrained/MSRA/R-50.pkl`` is looked up, and the values written."""
    cache = tmp_path_factory.mktemp("fvcore_cache")
    resnet = build_fcos_detector(_cfg(SFP)).backbone.bottom_up
    values = write_msra_pkl(cache / "detectron2" / "ImageNetPretrained" / "MSRA" / "R-50.pkl", resnet)
    return cache, values


def test_msra_pkl_loads_into_the_fcos_backbone_of_the_sfp_config(msra_cache, monkeypatch):
    cache, values = msra_cache
    monkeypatch.setenv("FVCORE_CACHE", str(cache))  # offline: the URL resolves to the cached file
    cfg = _cfg(SFP)
    assert cfg.MODEL.FCOS.BACKBONE_WEIGHTS == MSRA_URL and cfg.MODEL.RESNETS.NORM == "FrozenBN"
    detector = build_fcos_detector(cfg)
    resnet = detector.backbone.bottom_up
    before_fpn = _state(detector.backbone.fpn_lateral3)
    described = load_imagenet_weights(cfg, SimpleNamespace(detector=detector), "detector")
    assert "detector.backbone.bottom_up" in described
    loaded = resnet.state_dict()
    # every weight of the ResNet came from the file, with its value; BatchNorm fused in the file
    # means FrozenBN's statistics are the identity
    weights = {k for k in loaded if not k.endswith(("running_mean", "running_var"))}
    assert weights == set(values)
    for k in weights:
        torch.testing.assert_close(loaded[k], values[k], rtol=0, atol=0, msg=k)
    for k in set(loaded) - weights:
        expected = torch.zeros_like(loaded[k]) if k.endswith("running_mean") else torch.ones_like(loaded[k])
        assert torch.equal(loaded[k], expected), k
    _assert_same(detector.backbone.fpn_lateral3, before_fpn)  # the FPN is not part of the file


def test_url_offline_says_where_the_file_goes(tmp_path, monkeypatch):
    from detectron2.utils.file_io import PathManager

    def offline(path, **kwargs):
        raise OSError("<urlopen error [Errno -2] Name or service not known>")

    monkeypatch.setenv("FVCORE_CACHE", str(tmp_path))
    monkeypatch.setattr(PathManager, "get_local_path", offline)
    cfg = _cfg(SFP)
    expected = tmp_path / "detectron2" / "ImageNetPretrained" / "MSRA" / "R-50.pkl"
    with pytest.raises(FileNotFoundError) as err:
        load_imagenet_weights(cfg, SimpleNamespace(detector=build_fcos_detector(cfg)), "detector")
    message = str(err.value)
    assert "https://dl.fbaipublicfiles.com/detectron2/ImageNetPretrained/MSRA/R-50.pkl" in message
    assert f"put the file at {expected}" in message


def test_msra_pkl_refused_for_a_mismatched_config(msra_cache, monkeypatch):
    cache, _ = msra_cache
    monkeypatch.setenv("FVCORE_CACHE", str(cache))
    cfg = _sfp_detector_cfg(**{"INPUT.FORMAT": "RGB", "MODEL.PIXEL_STD": [57.375, 57.12, 58.395]})
    with pytest.raises(ImageNetWeightsError, match=r"R-50\.pkl.*\n.*INPUT\.FORMAT.*\n.*PIXEL_STD"):
        load_imagenet_weights(cfg, SimpleNamespace(detector=build_fcos_detector(cfg)), "detector")
    # trainable BatchNorm cannot hold BatchNorm fused into scale and bias
    cfg = _sfp_detector_cfg(**{"MODEL.RESNETS.NORM": "BN"})
    with pytest.raises(ImageNetWeightsError, match=r"fused.*set the ResNet's NORM to FrozenBN"):
        load_imagenet_weights(cfg, SimpleNamespace(detector=build_fcos_detector(cfg)), "detector")


def test_msra_pkl_as_model_weights_matches_by_name(msra_cache):
    """detectron2's habit, MODEL.WEIGHTS = an ImageNet .pkl: read safely, renamed with detectron2's
    Caffe2 heuristics; the detector's backbone gets the file, the parser keeps its weights."""
    _, values = msra_cache
    cfg = _cfg(SFP, "MODEL.QANET.HRNET.NAME", "hrnet_w18_small", "MODEL.QANET.INPUT_SIZE", "(128, 96)")
    model = build_model(cfg)
    parser_before = _state(model.parser)
    pkl = msra_cache[0] / "detectron2" / "ImageNetPretrained" / "MSRA" / "R-50.pkl"
    QANetCheckpointer(model).load(str(pkl))
    resnet = model.detector.backbone.bottom_up.state_dict()
    for k, v in values.items():
        torch.testing.assert_close(resnet[k], v, rtol=0, atol=0, msg=k)
    _assert_same(model.parser, parser_before)


# ---------------------------------------------------------------------- torchvision .pth
def _torchvision_rgb_cfg(path, norm="FrozenBN"):
    return _sfp_detector_cfg(**{
        "INPUT.FORMAT": "RGB", "MODEL.PIXEL_MEAN": [123.675, 116.28, 103.53], "MODEL.PIXEL_STD": [58.395, 57.12, 57.375],
        "MODEL.RESNETS.STRIDE_IN_1X1": False, "MODEL.RESNETS.NORM": norm, "MODEL.FCOS.BACKBONE_WEIGHTS": str(path),
    })


def test_torchvision_resnet50_loads_with_every_key_and_computes_the_same(tmp_path):
    import torchvision

    torch.manual_seed(0)
    tv = torchvision.models.resnet50()  # random weights, no download
    for m in tv.modules():  # non-trivial BatchNorm statistics, so that they must be carried over
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    path = tmp_path / "resnet50-0676ba61.pth"
    torch.save(tv.state_dict(), path)

    # the shipped GPU config is set up for the MSRA weights: refused, with the keys to set
    with pytest.raises(ImageNetWeightsError) as err:
        cfg = _sfp_detector_cfg(**{"MODEL.FCOS.BACKBONE_WEIGHTS": str(path)})
        load_imagenet_weights(cfg, SimpleNamespace(detector=build_fcos_detector(cfg)), "detector")
    for key in ("INPUT.FORMAT", "MODEL.PIXEL_MEAN", "MODEL.RESNETS.STRIDE_IN_1X1"):
        assert key in str(err.value)

    cfg = _torchvision_rgb_cfg(path)
    detector = build_fcos_detector(cfg)
    load_imagenet_weights(cfg, SimpleNamespace(detector=detector), "detector")
    resnet = detector.backbone.bottom_up
    # every torchvision weight (classifier aside) landed in the detectron2 ResNet: same features
    tv.eval()
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        ref = tv.layer4(tv.layer3(tv.layer2(tv.layer1(tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))))))
        out = resnet(x)["res5"]
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    n_tv = sum(1 for k in tv.state_dict() if not k.startswith("fc.") and not k.endswith("num_batches_tracked"))
    assert n_tv == len(resnet.state_dict())


def test_torchvision_weights_for_the_resnet_parser_backbone(tmp_path):
    import torchvision

    torch.manual_seed(1)
    tv = torchvision.models.resnet50()
    path = tmp_path / "resnet50.pth"
    torch.save(tv.state_dict(), path)
    cfg = _cfg(REPO / "configs" / "lapa" / "qanet_resnet50_512x384.yaml", "MODEL.QANET.INPUT_SIZE", "(128, 96)")
    assert cfg.MODEL.QANET.BACKBONE.RESNET_WEIGHTS.endswith("resnet50-0676ba61.pth")
    cfg.MODEL.QANET.BACKBONE.RESNET_WEIGHTS = str(path)
    model = build_model(cfg)
    load_imagenet_weights(cfg, model, "parser")
    got = model.parser.backbone.state_dict()
    torch.testing.assert_close(got["res5.2.conv3.weight"], tv.layer4[2].conv3.weight, rtol=0, atol=0)
    torch.testing.assert_close(got["res2.0.shortcut.norm.running_var"], tv.layer1[0].downsample[1].running_var, rtol=0, atol=0)
    torch.testing.assert_close(got["stem.conv1.norm.weight"], tv.bn1.weight, rtol=0, atol=0)
    # Caffe2 (BGR, std 1, fused BatchNorm) weights do not fit the parser's RGB crops
    blobs = tmp_path / "R-50.pkl"
    blobs.write_bytes(pickle.dumps({"conv1_w": np.zeros((64, 3, 7, 7), np.float32), "res_conv1_bn_s": np.ones(64, np.float32)}, protocol=2))
    cfg.MODEL.QANET.BACKBONE.RESNET_WEIGHTS = str(blobs)
    with pytest.raises(ImageNetWeightsError, match="Caffe2 format.*use torchvision's"):
        load_imagenet_weights(cfg, model, "parser")
    torch.testing.assert_close(model.parser.backbone.stem.conv1.norm.weight, tv.bn1.weight, rtol=0, atol=0)  # untouched


# ---------------------------------------------------------------------- timm HRNet
@pytest.fixture(scope="module")
def hrnet_file(tmp_path_factory):
    """timm's ImageNet checkpoint layout for hrnet_w18_small (the classification model's state
    dict, head included), random values."""
    import timm

    torch.manual_seed(3)
    state = timm.create_model("hrnet_w18_small").state_dict()
    path = tmp_path_factory.mktemp("timm") / "hrnet_w18_small.pth"
    torch.save(state, path)
    return path, state


def test_timm_hrnet_state_dict_loads_strictly(hrnet_file, tmp_path):
    path, state = hrnet_file
    backbone = TimmHRNetBackbone("hrnet_w18_small")
    assert load_hrnet_imagenet_weights(backbone, str(path)).startswith("ImageNet hrnet_w18_small")
    body = backbone.body.state_dict()
    assert {k for k in state if k not in body} == {k for k in state if k.startswith(HRNET_HEAD_PREFIXES)}
    for k, v in body.items():
        torch.testing.assert_close(v, state[k], rtol=0, atol=0, msg=k)
    # the same weights as safetensors and as saved from a features_only model (timm's "incre" layout)
    from safetensors.torch import save_file

    features = {k: v.contiguous() for k, v in state.items() if not k.startswith(("downsamp_modules.", "final_layer.", "classifier."))}
    save_file(features, str(tmp_path / "hrnet.safetensors"))
    other = TimmHRNetBackbone("hrnet_w18_small")
    load_hrnet_imagenet_weights(other, str(tmp_path / "hrnet.safetensors"))
    torch.testing.assert_close(other.body.stage4[0].fuse_layers[0][1][0].weight, backbone.body.stage4[0].fuse_layers[0][1][0].weight)


def test_truncated_or_extended_hrnet_state_dict_fails_naming_keys(hrnet_file, tmp_path):
    _, state = hrnet_file
    truncated = {k: v for k, v in state.items() if not k.startswith("stage4.0.branches.3.")}
    torch.save(truncated, tmp_path / "truncated.pth")
    backbone = TimmHRNetBackbone("hrnet_w18_small")
    with pytest.raises(ImageNetWeightsError, match=r"truncated\.pth.*missing keys.*stage4\.0\.branches\.3\.0\.conv1\.weight"):
        load_hrnet_imagenet_weights(backbone, str(tmp_path / "truncated.pth"))
    extended = dict(state)
    extended["stage5.extra.weight"] = torch.zeros(3)
    torch.save(extended, tmp_path / "extended.pth")
    with pytest.raises(ImageNetWeightsError, match=r"extended\.pth.*unexpected keys \(1\): stage5\.extra\.weight"):
        load_hrnet_imagenet_weights(backbone, str(tmp_path / "extended.pth"))
    # another width: shapes differ
    import timm

    torch.save(timm.create_model("hrnet_w18").state_dict(), tmp_path / "w18.pth")
    with pytest.raises(ImageNetWeightsError, match=r"w18\.pth.*shapes differ"):
        load_hrnet_imagenet_weights(backbone, str(tmp_path / "w18.pth"))


def test_hrnet_from_the_hub_offline_fails_with_how_to_get_the_file(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ImageNetWeightsError, match=r"pretrained=True\)\.state_dict\(\).*set MODEL\.QANET\.HRNET\.PRETRAINED_PATH"):
        load_hrnet_imagenet_weights(TimmHRNetBackbone("hrnet_w18_small"))
    with pytest.raises(FileNotFoundError, match="missing.pth: no such file"):
        load_hrnet_imagenet_weights(TimmHRNetBackbone("hrnet_w18_small"), "missing.pth")


def test_hrnet_hub_weights_go_through_the_strict_loader(monkeypatch, hrnet_file):
    """What timm.create_model(pretrained=True) returns is checked like a file: a head-less or
    renamed download fails instead of loading half the keys as timm would."""
    import timm

    _, state = hrnet_file
    real = timm.create_model

    def fake_create_model(name, pretrained=False, **kwargs):
        model = real(name, **kwargs)
        if pretrained:
            model.load_state_dict(state)
            model.pretrained_cfg = {"hf_hub_id": "timm/hrnet_w18_small.gluon_in1k"}
        return model

    monkeypatch.setattr(timm, "create_model", fake_create_model)
    backbone = TimmHRNetBackbone("hrnet_w18_small")
    assert "timm hub timm/hrnet_w18_small.gluon_in1k" in load_hrnet_imagenet_weights(backbone)
    torch.testing.assert_close(backbone.body.conv1.weight, state["conv1.weight"])


# ---------------------------------------------------------------------- unpickling
class Marker:
    """Unpickling it runs a shell command that creates a file."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


class Evaluates:
    def __reduce__(self):
        return (eval, ("__import__('os').getpid()",))


def test_pickle_that_would_run_code_is_refused_and_does_not_run(tmp_path, monkeypatch):
    marker = tmp_path / "marker"
    bad = tmp_path / "ImageNetPretrained" / "MSRA" / "R-50.pkl"
    bad.parent.mkdir(parents=True)
    data = pickle.dumps({"conv1_w": np.zeros((2, 3, 1, 1), np.float32), "x": Marker(marker)}, protocol=2)
    assert any(op.name == "GLOBAL" and "system" in str(arg) for op, arg, _ in pickletools.genops(data))
    bad.write_bytes(data)
    with pytest.raises(UnsafeCheckpointError, match=r"R-50\.pkl: refused to unpickle: it refers to '(posix|os)\.system'"):
        load_pickle_safely(str(bad))
    # through every loader that reads .pkl: MODEL.WEIGHTS, the detector's ImageNet weights
    with pytest.raises(UnsafeCheckpointError, match="refused to unpickle"):
        QANetCheckpointer(_tiny_model()).load(str(bad))
    cfg = _cfg(SFP, "MODEL.FCOS.BACKBONE_WEIGHTS", str(bad))
    with pytest.raises(UnsafeCheckpointError, match="refused to unpickle"):
        load_imagenet_weights(cfg, SimpleNamespace(detector=build_fcos_detector(cfg)), "detector")
    evaluates = tmp_path / "eval.pkl"
    evaluates.write_bytes(pickle.dumps({"a": Evaluates()}, protocol=4))
    with pytest.raises(UnsafeCheckpointError, match=r"eval\.pkl: refused to unpickle: it refers to 'builtins\.eval'"):
        load_checkpoint_file(str(evaluates))
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_safe_unpickler_reads_numpy_pickles(tmp_path, protocol):
    import collections

    blobs = collections.OrderedDict(
        w=np.arange(24, dtype=np.float32).reshape(2, 3, 4), i=np.array([1, 2], np.int64), s=np.float32(2.5),
        n=7, f=0.5, t="text", b=b"\x00\x01", nested={"l": [1, (2, 3)], "set": {4, 5}},
    )
    path = tmp_path / "blobs.pkl"
    path.write_bytes(pickle.dumps(blobs, protocol=protocol))
    got = load_pickle_safely(str(path))
    assert type(got) is collections.OrderedDict and list(got) == list(blobs)
    np.testing.assert_array_equal(got["w"], blobs["w"])
    assert got["w"].dtype == np.float32 and got["i"].dtype == np.int64
    assert got["s"] == np.float32(2.5) and got["n"] == 7 and got["t"] == "text" and got["b"] == b"\x00\x01"
    assert got["nested"] == {"l": [1, (2, 3)], "set": {4, 5}}


# ---------------------------------------------------------------------- parts and assembly
def _save(model, folder, name="model_final", **kwargs):
    checkpointer = QANetCheckpointer(model, save_dir=str(folder), **kwargs)
    checkpointer.save(name)
    return folder / f"{name}.pth"


def test_batch_counters_of_layers_frozen_here_are_not_reported_unused(tmp_path, caplog):
    """A checkpoint of a model whose BatchNorm trained (it has num_batches_tracked) loads into one
    where that layer is frozen without an unused-keys warning; a real unused weight still warns."""
    path = _save(_tiny_model(seed=1), tmp_path / "run")
    ck = torch.load(path, weights_only=True)
    counter = "parser.backbone.body.frozen_layer.num_batches_tracked"
    ck["model"][counter] = torch.tensor(7)
    torch.save(ck, path)
    with caplog.at_level(logging.WARNING):
        QANetCheckpointer(_tiny_model(seed=2)).load(str(path))
    assert "not used by the model" not in caplog.text
    ck["model"]["parser.backbone.body.frozen_layer.weight"] = torch.ones(1)
    torch.save(ck, path)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        QANetCheckpointer(_tiny_model(seed=2)).load(str(path))
    assert "not used by the model" in caplog.text and "frozen_layer.weight" in caplog.text


def test_stage1_checkpoint_as_model_weights_leaves_the_parser_untouched(tmp_path, caplog):
    stage1 = _tiny_model("MODEL.QANET.TRAIN_MODE", "detector", seed=1)
    path = _save(stage1, tmp_path / "stage1")
    assert torch.load(path, weights_only=True)["trained_parts"] == ["detector"]

    model = _tiny_model("MODEL.QANET.TRAIN_MODE", "parser", seed=2)
    parser_init = _state(model.parser)
    assert _differs(stage1.parser, parser_init)
    with caplog.at_level(logging.INFO, logger="qanet_d2"):
        checkpointer = QANetCheckpointer(model)
        checkpointer.load(str(path))
    _assert_same(model.detector, _state(stage1.detector))
    _assert_same(model.parser, parser_init)
    assert f"detector <- {path}" in caplog.text
    assert "parser: not loaded from" in caplog.text and "keeps its initialisation" in caplog.text
    # stage 2 trains the parser on top of the loaded detector: both parts are trained now
    assert checkpointer.trained_parts() == ["detector", "parser"]

    # a checkpoint without the record (written before it existed) loads whole
    legacy = tmp_path / "legacy.pth"
    torch.save({"model": stage1.state_dict()}, legacy)
    QANetCheckpointer(model).load(str(legacy))
    _assert_same(model.parser, _state(stage1.parser))


def test_resume_loads_the_whole_state(tmp_path):
    stage1 = _tiny_model("MODEL.QANET.TRAIN_MODE", "detector", seed=1)
    _save(stage1, tmp_path, name="model_0000009")
    model = _tiny_model("MODEL.QANET.TRAIN_MODE", "detector", seed=2)
    cfg = _cfg(INSTANT, "MODEL.QANET.HRNET.PRETRAINED", "True", "MODEL.QANET.HRNET.PRETRAINED_PATH", "/nonexistent.pth")
    QANetCheckpointer(model, save_dir=str(tmp_path), cfg=cfg, imagenet_init=True).resume_or_load("", resume=True)
    _assert_same(model, _state(stage1))  # no part re-initialised, no ImageNet file needed


def test_model_assembled_from_detector_and_parser_checkpoints(tmp_path, caplog):
    detector_run = _tiny_model("MODEL.QANET.TRAIN_MODE", "detector", seed=1)
    parser_run = _tiny_model("MODEL.QANET.TRAIN_MODE", "parser", seed=2)
    det_path = _save(detector_run, tmp_path / "det")
    par_path = _save(parser_run, tmp_path / "par")
    cfg = _cfg(INSTANT, "MODEL.QANET.DETECTOR_WEIGHTS", det_path, "MODEL.QANET.PARSER_WEIGHTS", par_path)
    model = _tiny_model(seed=3)
    with caplog.at_level(logging.INFO, logger="qanet_d2"):
        checkpointer = QANetCheckpointer(model, cfg=cfg)
        checkpointer.resume_or_load(cfg.MODEL.WEIGHTS, resume=False)
    _assert_same(model.detector, _state(detector_run.detector))
    _assert_same(model.parser, _state(parser_run.parser))
    assert f"Model weights: detector <- {det_path} (MODEL.QANET.DETECTOR_WEIGHTS)" in caplog.text
    assert f"Model weights: parser <- {par_path} (MODEL.QANET.PARSER_WEIGHTS)" in caplog.text
    assert checkpointer.trained_parts() == ["detector", "parser"]
    # the TTA ensemble loads its parsers with the same part loading
    other = _tiny_model(seed=4).parser
    load_part_weights(other, "parser", str(par_path))
    _assert_same(other, _state(parser_run.parser))

    # the parser of a detector-only run is not trained: refused as parser weights
    with pytest.raises(RuntimeError, match=r"det/model_final\.pth: its parser was not trained .*trained_parts \['detector'\]"):
        load_model_part(_tiny_model(seed=5), "parser", str(det_path))
    with pytest.raises(RuntimeError, match="its parser was not trained"):
        load_part_weights(_tiny_model(seed=5).parser, "parser", str(det_path))
    # a part of another architecture: strict, keys listed
    wider = _tiny_model("MODEL.QANET.NECK.CONV_DIM", "64", "MODEL.QANET.TRAIN_MODE", "parser", seed=6)
    wide_path = _save(wider, tmp_path / "wide")
    with pytest.raises(RuntimeError, match=r"wide/model_final\.pth: the parser weights do not match.*shapes differ.*neck"):
        load_model_part(_tiny_model(seed=5), "parser", str(wide_path))


def test_stage2_assembles_stage1_detector_and_imagenet_parser(tmp_path, hrnet_file, caplog):
    """The stage-wise recipe's loading: stage 1's detector (MODEL.WEIGHTS or DETECTOR_WEIGHTS),
    the parser from ImageNet, never from stage 1's untrained parser."""
    hrnet_path, hrnet_state = hrnet_file
    stage1 = _tiny_model("MODEL.QANET.TRAIN_MODE", "detector", seed=1)
    stage1_path = _save(stage1, tmp_path / "stage1")
    for opts in (["MODEL.WEIGHTS", stage1_path], ["MODEL.QANET.DETECTOR_WEIGHTS", stage1_path]):
        cfg = _cfg(INSTANT, "MODEL.QANET.TRAIN_MODE", "parser", "MODEL.QANET.HRNET.PRETRAINED", "True",
                   "MODEL.QANET.HRNET.PRETRAINED_PATH", hrnet_path, *opts)
        model = _tiny_model(*[str(o) for o in opts], seed=2)
        neck_init = _state(model.parser.neck)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="qanet_d2"):
            checkpointer = QANetCheckpointer(model, save_dir=str(tmp_path / "stage2"), cfg=cfg, imagenet_init=True)
            checkpointer.resume_or_load(cfg.MODEL.WEIGHTS, resume=False)
        _assert_same(model.detector, _state(stage1.detector))
        body = model.parser.backbone.body.state_dict()
        for k in body:
            torch.testing.assert_close(body[k], hrnet_state[k], rtol=0, atol=0, msg=k)
        _assert_same(model.parser.neck, neck_init)
        assert f"Model weights: parser <- ImageNet hrnet_w18_small ({hrnet_path}) in parser.backbone" in caplog.text
        # what stage 2 saves holds both trained parts (the detector frozen as loaded)
        checkpointer.save("model_final")
        saved = torch.load(tmp_path / "stage2" / "model_final.pth", weights_only=True)
        assert saved["trained_parts"] == ["detector", "parser"]


def test_inference_loading_warns_about_parts_no_checkpoint_gives(tmp_path, caplog):
    from qanet_d2.engine.checkpoint import load_model_weights

    stage1 = _tiny_model("MODEL.QANET.TRAIN_MODE", "detector", seed=1)
    path = _save(stage1, tmp_path)
    cfg = _cfg(INSTANT, "MODEL.WEIGHTS", path, "MODEL.QANET.HRNET.PRETRAINED", "True")
    with caplog.at_level(logging.INFO, logger="qanet_d2"):
        sources = load_model_weights(cfg, _tiny_model(seed=2))
    assert sources == {"detector": str(path), "parser": "random initialisation"}  # no ImageNet fetch at inference
    assert any(r.levelno == logging.WARNING and "parser: random initialisation" in r.getMessage() for r in caplog.records)


def test_trainer_starts_from_part_checkpoints_and_imagenet(tmp_path, hrnet_file, synth_datasets_root, monkeypatch):
    """The trainer's checkpointer assembles a run that is not resumed, and records trained parts."""
    from qanet_d2.engine import QANetTrainer

    monkeypatch.setenv("DETECTRON2_DATASETS", str(synth_datasets_root))
    stage1 = _tiny_model("MODEL.QANET.TRAIN_MODE", "detector", seed=1)
    stage1_path = _save(stage1, tmp_path / "stage1")
    cfg = get_qanet_cfg()
    cfg.merge_from_file(str(INSTANT))
    cfg.merge_from_list(["MODEL.QANET.TRAIN_MODE", "parser", "MODEL.QANET.DETECTOR_WEIGHTS", str(stage1_path),
                         "MODEL.QANET.HRNET.PRETRAINED", "True", "MODEL.QANET.HRNET.PRETRAINED_PATH", str(hrnet_file[0]),
                         "OUTPUT_DIR", str(tmp_path / "stage2")])
    (tmp_path / "stage2").mkdir()
    trainer = QANetTrainer(cfg)
    trainer.resume_or_load(resume=False)
    _assert_same(trainer.model.detector, _state(stage1.detector))
    torch.testing.assert_close(trainer.model.parser.backbone.body.conv1.weight, hrnet_file[1]["conv1.weight"], rtol=0, atol=0)
    trainer.checkpointer.save("model_x")
    assert torch.load(tmp_path / "stage2" / "model_x.pth", weights_only=True)["trained_parts"] == ["detector", "parser"]


# ---------------------------------------------------------------------- shipped configs
CONFIGS = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "configs").rglob("*.yaml") if not p.name.startswith("Base-"))


@pytest.mark.parametrize("path", CONFIGS)
def test_gpu_configs_start_from_imagenet_and_cpu_configs_from_random(path):
    shipped = get_qanet_cfg()
    shipped.merge_from_file(str(REPO / path))
    cfg = _cfg(REPO / path)
    sources = imagenet_sources(cfg)
    q = cfg.MODEL.QANET
    if shipped.MODEL.DEVICE == "cpu":  # the quickstart and the instant tests: offline, random init
        assert sources == {"detector": None, "parser": None}
        return
    if cfg.MODEL.QANET.DETECTOR.NAME:
        assert sources["detector"] == MSRA_URL
        assert detector_input_problems(cfg, MSRA_URL, "bgr-caffe2") == []
        assert cfg.MODEL.RESNETS.NORM == "FrozenBN" and cfg.MODEL.BACKBONE.FREEZE_AT == 2
    if "fcos_r50_detector_only" in path:
        assert sources["parser"] is None  # stage 1 does not train the parser; stage 2 starts it from ImageNet
        return
    if q.BACKBONE.NAME == "build_timm_hrnet_backbone":
        assert sources["parser"] == f"timm:{q.HRNET.NAME}"
    else:
        depth = q.BACKBONE.RESNET_DEPTH
        assert re.fullmatch(rf"https://download\.pytorch\.org/models/resnet{depth}-[0-9a-f]+\.pth", sources["parser"])
    assert parser_input_problems(cfg, "rgb-imagenet", "parser weights") == []


def test_checkpoint_lacking_weights_of_the_model_fails_naming_them(tmp_path):
    trained = _tiny_model(seed=1)
    state = _state(trained)
    del state["parser.parsing_branch.predictor.weight"], state["detector.head.cls_score.bias"]
    path = tmp_path / "partial.pth"
    torch.save({"model": state}, path)
    model = _tiny_model(seed=2)
    with pytest.raises(RuntimeError, match=r"partial\.pth: the checkpoint does not fill the model: missing keys \(2\): "
                                           r"detector\.head\.cls_score\.bias, parser\.parsing_branch\.predictor\.weight"):
        QANetCheckpointer(model).load(str(path))
    # a weight of another shape too
    state = _state(trained)
    state["parser.parsing_branch.predictor.bias"] = torch.zeros(3)
    torch.save({"model": state}, path)
    with pytest.raises(RuntimeError, match=r"shapes differ .*parser\.parsing_branch\.predictor\.bias \(3,\) vs \(17,\)"):
        QANetCheckpointer(model).load(str(path))
