"""QANet's semantic-FPN neck ("PFPN"): all backbone levels brought to stride 4 and summed."""
from __future__ import annotations

from typing import Dict, List

import torch
from torch import nn
from torch.nn import functional as F

from detectron2.layers import Conv2d, ShapeSpec, get_norm
import fvcore.nn.weight_init as weight_init

__all__ = ["SemanticFPNNeck"]


class _ConvNormUp(nn.Module):
    """3x3 conv -> norm -> ReLU, then optionally bilinear upsampling by 2."""

    def __init__(self, in_channels: int, out_channels: int, norm: str, upsample: bool):
        super().__init__()
        self.conv = Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=not norm,
                           norm=get_norm(norm, out_channels), activation=F.relu)
        weight_init.c2_msra_fill(self.conv)
        self.upsample = upsample

    def forward(self, x):
        x = self.conv(x)
        if self.upsample:
            x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        return x


class SemanticFPNNeck(nn.Module):
    """Per level at stride ``4 * 2**k``, ``max(1, k)`` blocks {3x3 conv, norm, ReLU, x2 bilinear
    (none at stride 4)}; the stride-4 maps are summed into ``N x conv_dim x H/4 x W/4``."""

    def __init__(self, input_shape: Dict[str, ShapeSpec], in_features: List[str], conv_dim: int = 256, norm: str = "BN"):
        super().__init__()
        self.in_features = list(in_features)
        strides = [input_shape[f].stride for f in self.in_features]
        base = strides[0]
        self.scale_heads = nn.ModuleList()
        for f, stride in zip(self.in_features, strides):
            ups = int(round(torch.log2(torch.tensor(stride / base)).item()))
            if 2**ups * base != stride:
                raise ValueError(f"neck input strides must be powers of two times the first; got {strides}")
            channels = [input_shape[f].channels] + [conv_dim] * (max(1, ups) - 1)
            blocks = [_ConvNormUp(c, conv_dim, norm, upsample=ups > 0) for c in channels]
            self.scale_heads.append(nn.Sequential(*blocks))
        self.out_channels = conv_dim
        self.out_stride = base

    def forward(self, features: Dict[str, torch.Tensor]) -> torch.Tensor:
        out = self.scale_heads[0](features[self.in_features[0]])
        for f, head in zip(self.in_features[1:], self.scale_heads[1:]):
            y = head(features[f])
            if y.shape[-2:] != out.shape[-2:]:  # odd input sizes: align to the stride-4 map
                y = F.interpolate(y, size=out.shape[-2:], mode="bilinear", align_corners=False)
            out = out + y
        return out
