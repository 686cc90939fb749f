"""QANet's parsing branch: 1x1 conv to the classes, bilinear upsampling to the crop size."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["ParsingBranch"]


class ParsingBranch(nn.Module):
    """``N x C_in x h/4 x w/4`` neck map -> ``N x num_classes x h x w`` logits."""

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        self.predictor = nn.Conv2d(in_channels, num_classes, kernel_size=1)
        nn.init.normal_(self.predictor.weight, std=0.001)
        nn.init.constant_(self.predictor.bias, 0.0)

    def forward(self, x: torch.Tensor, out_size: Sequence[int]) -> torch.Tensor:
        x = self.predictor(x)
        return F.interpolate(x, size=tuple(int(s) for s in out_size), mode="bilinear", align_corners=False)
