"""QANet's IoU ("quality") branch: predicts the mean IoU of the crop's own parsing."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["IoUBranch"]


class IoUBranch(nn.Module):
    """1x1 conv + ReLU, global average pooling, two fully connected layers with ReLU, one output.

    ``N x C_in x H x W`` -> ``N`` (unbounded; trained towards the IoU in [0, 1]).
    """

    def __init__(self, in_channels: int, conv_dim: int = 256, fc_dim: int = 512):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, conv_dim, kernel_size=1)
        self.fc1 = nn.Linear(conv_dim, fc_dim)
        self.fc2 = nn.Linear(fc_dim, fc_dim)
        self.predictor = nn.Linear(fc_dim, 1)
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(self.conv.bias)
        for fc in (self.fc1, self.fc2):
            nn.init.kaiming_uniform_(fc.weight, a=1)
            nn.init.zeros_(fc.bias)
        nn.init.normal_(self.predictor.weight, std=0.01)
        nn.init.zeros_(self.predictor.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv(x))
        x = x.mean(dim=(2, 3))
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.predictor(x).squeeze(1)
