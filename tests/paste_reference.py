"""A plain full-image paste of crop probabilities: the reference that the post-processing's
windowed, tiled paste is tested against."""
import torch
import torch.nn.functional as F

from qanet_d2.layers.crops import invert_affines


def paste_to_image(probs: torch.Tensor, affines: torch.Tensor, image_size, mode: str = "bilinear"):
    """``N x C x h x w`` crop probabilities with ``N x 2 x 3`` crop -> image affines, sampled
    bilinearly (crop edges clamped) at every image pixel centre: ``N x C x H x W`` (0 outside each
    crop) and the ``N x H x W`` bool masks of the pixels whose centres lie inside the crop."""
    n, c, h, w = probs.shape
    height, width = int(image_size[0]), int(image_size[1])
    inverse = invert_affines(affines.float()).double()
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float64) + 0.5,
                            torch.arange(width, dtype=torch.float64) + 0.5, indexing="ij")
    points = torch.stack([xs, ys, torch.ones_like(xs)], dim=-1)  # H x W x 3
    crop_xy = torch.einsum("nij,hwj->nhwi", inverse, points)
    grid = (crop_xy * torch.tensor([2.0 / w, 2.0 / h], dtype=torch.float64) - 1.0).float()
    sampled = F.grid_sample(probs.float(), grid, mode=mode, padding_mode="border", align_corners=False)
    inside = (grid.abs() <= 1.0).all(dim=-1)
    return sampled * inside[:, None], inside


def reference_labels(probs: torch.Tensor, affines: torch.Tensor, image_size, order) -> torch.Tensor:
    """The label map painted the plain way from ``N x V x C x h x w`` probabilities and
    ``N x V x 2 x 3`` affines: each view pasted over the full image, views averaged where they
    cover a pixel, argmax (background below 1/C), faces painted in ``order``."""
    labels = torch.zeros(tuple(image_size), dtype=torch.uint8)
    for i in order:
        pasted, inside = paste_to_image(probs[i], affines[i], image_size)
        count = inside.sum(0)
        avg = pasted.sum(0) / count.clamp(min=1)
        top, lab = avg.max(dim=0)
        lab[top < 1.0 / avg.shape[0]] = 0
        fg = (count > 0) & (lab != 0)
        labels[fg] = lab[fg].to(torch.uint8)
    return labels
