"""ImageNet initialisation of the backbones of the parts no checkpoint provides, loaded strictly
when training starts (by :class:`~qanet_d2.engine.checkpoint.QANetCheckpointer`). Sources:

* ``MODEL.FCOS.BACKBONE_WEIGHTS``: the detector's ResNet, from detectron2 model-zoo files
  (Caffe2 names renamed by detectron2's conversion; BatchNorm fused, so ``NORM FrozenBN``),
  torchvision ``resnet*.pth`` files, or detectron2's ``convert-torchvision-to-d2.py`` output.
* ``MODEL.QANET.HRNET.PRETRAINED`` / ``PRETRAINED_PATH``: the parser's timm HRNet, from the
  Hugging Face hub or a local file in timm's keys (= the HRNet authors' ImageNet file).
* ``MODEL.QANET.BACKBONE.RESNET_WEIGHTS``: a ResNet parser backbone, from torchvision weights.

"Strictly": every weight of the backbone must come from the file and every key of the file must
be used, except the classification head of each format (:data:`HRNET_HEAD_PREFIXES`,
:data:`RESNET_HEAD_KEYS`); a file whose input convention (channel order, normalisation, stride
placement) does not match the config is refused with the keys to set.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Dict, List, Optional

import torch
from torch import nn

from ..weights_io import format_keys, load_checkpoint_file, load_state_strictly

__all__ = ["HRNET_HEAD_PREFIXES", "ImageNetWeightsError", "RESNET_HEAD_KEYS", "ResNetWeights", "imagenet_sources",
           "load_hrnet_imagenet_weights", "load_imagenet_weights", "read_resnet_imagenet_weights",
           "resnet_state_from_caffe2", "resnet_state_from_torchvision"]

logger = logging.getLogger(__name__)

# Pixel conventions of the sources, in their channel order.
IMAGENET_RGB_MEAN = (123.675, 116.28, 103.53)
IMAGENET_RGB_STD = (58.395, 57.12, 57.375)
MSRA_BGR_MEAN = (103.53, 116.28, 123.675)
MSRA_BGR_STD = (1.0, 1.0, 1.0)

# timm's HRNet classification head, absent from the features-only backbone.
HRNET_HEAD_PREFIXES = ("incre_modules.", "downsamp_modules.", "final_layer.", "classifier.")
# ResNet file keys (detectron2 names) a detectron2 ResNet has no place for, per format: the
# classifier, and the MSRA files' stem convolution bias (near zero; detectron2's stem has none).
RESNET_HEAD_KEYS = {
    "caffe2": ("fc1000.weight", "fc1000.bias", "stem.conv1.bias"),
    "torchvision": ("fc.weight", "fc.bias"),
    "detectron2": ("stem.fc.weight", "stem.fc.bias", "linear.weight", "linear.bias"),
}

_HOW_TO_GET = "see docs/pretrained.md for where to get the files and where to put them without network access"


class ImageNetWeightsError(RuntimeError):
    """An ImageNet weights file that cannot initialise the configured backbone."""


# ---------------------------------------------------------------------- ResNet
def resnet_state_from_torchvision(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """torchvision ResNet names -> detectron2 names, as detectron2's ``tools/convert-torchvision-to-d2.py``
    (a script, not importable); the classifier ``fc.*`` keeps its name."""
    out = {}
    for k, v in state.items():
        if not k.startswith("fc."):
            if "layer" not in k:
                k = "stem." + k
            for t in (1, 2, 3, 4):
                k = k.replace(f"layer{t}", f"res{t + 1}")
            for t in (1, 2, 3):
                k = k.replace(f"bn{t}", f"conv{t}.norm")
            k = k.replace("downsample.0", "shortcut").replace("downsample.1", "shortcut.norm")
        out[k] = v
    return out


def resnet_state_from_caffe2(blobs: Dict[str, object]) -> Dict[str, torch.Tensor]:
    """Caffe2 blob names -> detectron2 names, by detectron2's ``convert_c2_detectron_names``."""
    from detectron2.checkpoint.c2_model_loading import convert_c2_detectron_names

    tensors = {k: torch.as_tensor(v) for k, v in blobs.items() if not k.endswith("_momentum")}
    renamed, _ = convert_c2_detectron_names(tensors)
    return renamed


@dataclass
class ResNetWeights:
    """A ResNet ImageNet file in detectron2 names. ``fmt``: "caffe2" (BGR, BatchNorm fused),
    "torchvision" (RGB, ImageNet mean/std) or "detectron2" (``author`` says where it came from)."""

    state: Dict[str, torch.Tensor]
    fmt: str
    author: str = ""

    @property
    def input_convention(self) -> str:
        """"bgr-caffe2" or "rgb-imagenet" (torchvision), "" when the file does not say."""
        if self.fmt == "caffe2":
            return "bgr-caffe2"
        if self.fmt == "torchvision" or self.author == "torchvision":
            return "rgb-imagenet"
        return ""


def read_resnet_imagenet_weights(path: str) -> ResNetWeights:
    """Read a ResNet ImageNet file (any format of the module doc) into detectron2 names."""
    data = load_checkpoint_file(path)
    if not isinstance(data, dict):
        raise ImageNetWeightsError(f"{path}: expected a dict of weights; found {type(data).__name__}")
    if "model" in data and "__author__" in data:  # detectron2 model-zoo format
        author = str(data["__author__"])
        if author == "Caffe2":
            return ResNetWeights(resnet_state_from_caffe2(data["model"]), "caffe2", author)
        return ResNetWeights({k: torch.as_tensor(v) for k, v in data["model"].items()}, "detectron2", author)
    if "blobs" in data and isinstance(data["blobs"], dict):  # Detectron1 detection models
        data = data["blobs"]
    data = _unwrap_state_dict(data, path)
    keys = set(data)
    if "conv1_w" in keys or any(k.startswith("res2_0_branch") for k in keys):
        return ResNetWeights(resnet_state_from_caffe2(data), "caffe2", "Caffe2")
    tensors = {k: torch.as_tensor(v) for k, v in data.items()}
    if "layer1.0.conv1.weight" in keys:
        return ResNetWeights(resnet_state_from_torchvision(tensors), "torchvision", "torchvision")
    if "stem.conv1.weight" in keys:
        return ResNetWeights(tensors, "detectron2")
    raise ImageNetWeightsError(
        f"{path}: not a ResNet ImageNet file in a known format (Caffe2 blobs such as 'conv1_w', "
        f"torchvision keys such as 'layer1.0.conv1.weight', or detectron2 keys such as 'stem.conv1.weight'); "
        f"its keys start with: {format_keys(list(keys), 8)}"
    )


def _fill_fused_batchnorm(resnet: nn.Module, weights: ResNetWeights, path: str) -> None:
    """Caffe2 files hold BatchNorm folded into scale and bias: mean 0, variance 1 for FrozenBN;
    trainable BN would change the network, so it is refused."""
    from detectron2.layers import FrozenBatchNorm2d

    state = weights.state
    for name, module in resnet.named_modules():
        if not isinstance(module, (FrozenBatchNorm2d, nn.BatchNorm2d)):
            continue
        prefix = name + "."
        if prefix + "weight" not in state or prefix + "running_mean" in state:
            continue
        if not isinstance(module, FrozenBatchNorm2d):
            raise ImageNetWeightsError(
                f"{path}: BatchNorm is fused into a per-channel scale and bias in this file (Caffe2 format), which "
                f"only frozen BatchNorm reproduces, but {name} is a trainable {type(module).__name__}: set the "
                "ResNet's NORM to FrozenBN (MODEL.RESNETS.NORM for the detector)."
            )
        state[prefix + "running_mean"] = torch.zeros_like(module.running_mean)
        state[prefix + "running_var"] = torch.ones_like(module.running_var)


def _refuse_mismatch(problems: List[str], source: str, what: str) -> None:
    """ImageNetWeightsError listing the config ``problems`` with the input convention of ``what``."""
    if problems:
        raise ImageNetWeightsError(f"{source}: the config does not match the input convention of {what}:\n  - "
                                   + "\n  - ".join(problems))


# ---------------------------------------------------------------------- HRNet
def _timm_hub_state_dict(name: str):
    import timm

    try:
        model = timm.create_model(name, pretrained=True)
    except Exception as e:  # hub/network errors come in many types (OSError, HTTP errors, ...)
        raise ImageNetWeightsError(
            f"MODEL.QANET.HRNET.PRETRAINED: could not fetch timm's ImageNet weights of {name!r} from the Hugging "
            f"Face hub ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}). Without network access: on a "
            f"machine with it, run  python -c \"import timm, torch; torch.save(timm.create_model('{name}', "
            f"pretrained=True).state_dict(), '{name}.pth')\"  and set MODEL.QANET.HRNET.PRETRAINED_PATH to the "
            f"copied file; or set MODEL.QANET.HRNET.PRETRAINED False for random initialisation ({_HOW_TO_GET})."
        ) from e
    hub_id = (getattr(model, "pretrained_cfg", None) or {}).get("hf_hub_id") or name
    return model.state_dict(), f"timm hub {hub_id}"


def _unwrap_state_dict(data, path: str) -> Dict[str, torch.Tensor]:
    if isinstance(data, dict):
        for wrapper in ("state_dict", "model"):
            if wrapper in data and isinstance(data[wrapper], dict):
                data = data[wrapper]
                break
    if not isinstance(data, dict):
        raise ImageNetWeightsError(f"{path}: expected a state dict; found {type(data).__name__}")
    if data and all(k.startswith("module.") for k in data):  # saved from (Distributed)DataParallel
        data = {k[len("module."):]: v for k, v in data.items()}
    return data


def load_hrnet_imagenet_weights(backbone: nn.Module, path: str = "") -> str:
    """Load timm's ImageNet weights of ``backbone`` (a :class:`TimmHRNetBackbone`) into its
    ``body``, strictly, from ``path`` (timm's HRNet keys) or, when empty, from the hub. Returns a
    description of the source."""
    name = backbone.name
    if path:
        state = _unwrap_state_dict(load_checkpoint_file(path), path)
        source = path
    else:
        state, source = _timm_hub_state_dict(name)
    load_state_strictly(backbone.body, state, source, unused_prefixes=HRNET_HEAD_PREFIXES, what="ImageNet weights",
                        target=f"the timm {name} (features only)", error=ImageNetWeightsError)
    return f"ImageNet {name} ({source})"


# ---------------------------------------------------------------------- config
def _normalisation_problems(key: str, node, mean, std, whose: str, order: str) -> List[str]:
    """``node.PIXEL_MEAN/STD`` (config prefix ``key``) against the file's ``mean``/``std`` (within 0.01)."""
    close = [len(v) == len(r) and all(abs(float(a) - b) <= 1e-2 for a, b in zip(v, r))
             for v, r in ((node.PIXEL_MEAN, mean), (node.PIXEL_STD, std))]
    if all(close):
        return []
    return [f"{key}PIXEL_MEAN {list(node.PIXEL_MEAN)} / PIXEL_STD {list(node.PIXEL_STD)}: {whose} mean {list(mean)} "
            f"and std {list(std)} ({order}, 0..255)"]


def detector_input_problems(cfg, weights_path: str, convention: str) -> List[str]:
    """Config keys that do not match the input convention of the detector's ImageNet file."""
    problems = []
    m = cfg.MODEL
    bottleneck = int(m.RESNETS.DEPTH) >= 50
    if convention == "rgb-imagenet":
        if cfg.INPUT.FORMAT != "RGB":
            problems.append(f"INPUT.FORMAT is {cfg.INPUT.FORMAT!r}; torchvision's ResNets take RGB: set RGB")
        problems += _normalisation_problems("MODEL.", m, IMAGENET_RGB_MEAN, IMAGENET_RGB_STD,
                                            "torchvision's ResNets were trained with", "RGB")
        if bottleneck and m.RESNETS.STRIDE_IN_1X1:
            problems.append("MODEL.RESNETS.STRIDE_IN_1X1 is True; torchvision's ResNets stride in the 3x3 conv: set False")
    elif convention == "bgr-caffe2":
        if cfg.INPUT.FORMAT != "BGR":
            problems.append(f"INPUT.FORMAT is {cfg.INPUT.FORMAT!r}; Caffe2 model-zoo ResNets take BGR: set BGR")
        if "/MSRA/" in weights_path:
            problems += _normalisation_problems("MODEL.", m, MSRA_BGR_MEAN, MSRA_BGR_STD,
                                                "the MSRA ResNets were trained with", "BGR")
            if bottleneck and not m.RESNETS.STRIDE_IN_1X1:
                problems.append("MODEL.RESNETS.STRIDE_IN_1X1 is False; the MSRA ResNets stride in the 1x1 conv: set True")
    return problems


def parser_input_problems(cfg, convention: str, what: str) -> List[str]:
    """Config keys that do not match the input convention of the parser backbone's ImageNet file.
    The parser always takes RGB crops normalised by ``MODEL.QANET.PIXEL_MEAN/STD``."""
    q = cfg.MODEL.QANET
    problems = []
    if convention == "bgr-caffe2":
        problems.append(
            f"{what} is in Caffe2 format (BGR input with the MSRA normalisation, BatchNorm fused): the parser "
            "normalises RGB crops with MODEL.QANET.PIXEL_MEAN/STD and fine-tunes its BatchNorm; use torchvision's "
            "ResNet weights for the parser"
        )
    if convention == "rgb-imagenet":
        problems += _normalisation_problems("MODEL.QANET.", q, IMAGENET_RGB_MEAN, IMAGENET_RGB_STD,
                                            "ImageNet weights expect", "RGB")
        if q.BACKBONE.NAME == "build_qanet_resnet_backbone" and int(q.BACKBONE.RESNET_DEPTH) >= 50 and q.BACKBONE.STRIDE_IN_1X1:
            problems.append("MODEL.QANET.BACKBONE.STRIDE_IN_1X1 is True; torchvision's ResNets stride in the 3x3 conv: set False")
    return problems


def imagenet_sources(cfg) -> Dict[str, Optional[str]]:
    """``{part: ImageNet source of its backbone or None}`` as configured: a file/URL, or
    ``"timm:<name>"`` for timm's hub weights of the HRNet parser."""
    q = cfg.MODEL.QANET
    sources: Dict[str, Optional[str]] = {"detector": None, "parser": None}
    if cfg.MODEL.QANET.DETECTOR.NAME == "FCOS" and cfg.MODEL.FCOS.BACKBONE_WEIGHTS:
        sources["detector"] = cfg.MODEL.FCOS.BACKBONE_WEIGHTS
    if q.BACKBONE.NAME == "build_timm_hrnet_backbone" and q.HRNET.PRETRAINED:
        sources["parser"] = q.HRNET.PRETRAINED_PATH or f"timm:{q.HRNET.NAME}"
    elif q.BACKBONE.NAME == "build_qanet_resnet_backbone" and q.BACKBONE.RESNET_WEIGHTS:
        sources["parser"] = q.BACKBONE.RESNET_WEIGHTS
    return sources


def load_imagenet_weights(cfg, model: nn.Module, part: str) -> Optional[str]:
    """Initialise the backbone of ``model.<part>`` from its configured ImageNet weights. Returns a
    description of what was loaded, or None when none are configured."""
    source = imagenet_sources(cfg)[part]
    q = cfg.MODEL.QANET
    if part == "parser" and source is None and q.BACKBONE.NAME == "build_timm_hrnet_backbone" and q.HRNET.PRETRAINED_PATH:
        logger.info(f"MODEL.QANET.HRNET.PRETRAINED_PATH = {q.HRNET.PRETRAINED_PATH!r} is not used: MODEL.QANET.HRNET.PRETRAINED is False")
    if source is None:
        return None
    backbone = getattr(model, part).backbone
    rest = "; the rest of the " + part + " is randomly initialised"
    if part == "parser" and q.BACKBONE.NAME == "build_timm_hrnet_backbone":
        problems = parser_input_problems(cfg, "rgb-imagenet", "the HRNet weights")
        _refuse_mismatch(problems, source, "timm's ImageNet HRNet")
        return load_hrnet_imagenet_weights(backbone, q.HRNET.PRETRAINED_PATH) + " in parser.backbone" + rest
    weights = read_resnet_imagenet_weights(source)
    if part == "detector":
        resnet = getattr(backbone, "bottom_up", backbone)
        target = "detector.backbone.bottom_up" if resnet is not backbone else "detector.backbone"
        what = f"detector ResNet-{cfg.MODEL.RESNETS.DEPTH} ({target})"
        problems = detector_input_problems(cfg, source, weights.input_convention)
    else:
        resnet, target, what = backbone, "parser.backbone", f"parser ResNet-{q.BACKBONE.RESNET_DEPTH} (parser.backbone)"
        problems = parser_input_problems(cfg, weights.input_convention or "rgb-imagenet",
                                         "MODEL.QANET.BACKBONE.RESNET_WEIGHTS")
    _refuse_mismatch(problems, source, f"these ImageNet weights for the {what}")
    _fill_fused_batchnorm(resnet, weights, source)
    load_state_strictly(resnet, weights.state, source, unused_prefixes=RESNET_HEAD_KEYS.get(weights.fmt, ()),
                        what="ImageNet weights", target=f"the {what}", error=ImageNetWeightsError)
    return f"ImageNet {source} ({weights.author or weights.fmt} format) in {target}" + rest
