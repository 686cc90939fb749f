"""QANet's parsing branch: 1x1 conv to the classes, bilinear upsampling to the crop size."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["ParsingBranch", "classifier_from_coarser"]


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


def classifier_from_coarser(weight: torch.Tensor, bias: torch.Tensor, parent_ids: Sequence[int]):
    """``(weight, bias)`` of a finer classifier from a trained coarser one: fine class ``k`` gets the
    row of its parent ``parent_ids[k]`` (e.g. ``conversion_ids(fine_set, coarse_set)``), its bias
    lowered by ``log(children of the parent)``, so that the fine softmax summed per parent equals
    the coarse softmax; training then separates the children (left and right eye)."""
    ids = torch.as_tensor(list(parent_ids), dtype=torch.long)
    bad = [int(i) for i in ids if not 0 <= int(i) < weight.shape[0]]
    if bad:
        raise ValueError(f"parent ids {bad} are not classes of the coarse classifier ({weight.shape[0]} classes): "
                         f"every fine class needs a coarse parent")
    children = torch.bincount(ids, minlength=weight.shape[0]).to(torch.float32)
    new_bias = bias.float()[ids] - torch.log(children[ids])
    return weight[ids].clone(), new_bias.to(bias.dtype)
