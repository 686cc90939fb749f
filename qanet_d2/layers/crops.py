"""Face crops as affine warps: box -> 3:4 crop region -> affine -> ``grid_sample``.

Conventions of every function here and of the model's outputs: *continuous pixel coordinates*
(pixel ``(i, j)`` covers ``[j, j+1) x [i, i+1)``, centre ``(j + 0.5, i + 0.5)``: detectron2's
XYXY_ABS boxes and ``grid_sample``'s ``align_corners=False``); affines are ``N x 2 x 3`` "crop ->
image" maps of ``(u, v, 1)`` (:func:`invert_affines` for the other way); sizes are ``(height, width)``.

``affine_grid``/``grid_sample`` rather than detectron2's ``ROIAlign``: crops may be rotated and
flipped, and one warp serves images (bilinear), labels (nearest) and, inverted, the paste-back.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

__all__ = [
    "face_crop_affines", "normalize_image", "expand_box_to_aspect", "scale_boxes", "boxes_to_affines", "invert_affines",
    "compose_affines", "crop_images", "supersampling_factors", "crop_labels", "crop_windows",
]


def normalize_image(image: torch.Tensor, pixel_mean: torch.Tensor, pixel_std: torch.Tensor,
                    input_format: str = "BGR") -> torch.Tensor:
    """A ``3 x H x W`` image (channels in ``input_format``) as float RGB ``(image - pixel_mean) /
    pixel_std`` (``3 x 1 x 1``, RGB)."""
    if input_format == "BGR":
        image = image.flip(0)  # on uint8 before the conversion: a quarter of the bytes
    return image.to(pixel_mean.dtype, copy=True).sub_(pixel_mean).div_(pixel_std)


def expand_box_to_aspect(boxes: torch.Tensor, aspect: float, expand: float = 1.0) -> torch.Tensor:
    """``N x 4`` boxes grown around their centres to width / height ``aspect`` (only the shorter
    side grows), then both sides times ``expand``."""
    boxes = boxes.float()
    cx = (boxes[:, 0] + boxes[:, 2]) * 0.5
    cy = (boxes[:, 1] + boxes[:, 3]) * 0.5
    w = (boxes[:, 2] - boxes[:, 0]).clamp(min=1e-3)
    h = (boxes[:, 3] - boxes[:, 1]).clamp(min=1e-3)
    w, h = torch.maximum(w, h * aspect), torch.maximum(h, w / aspect)
    w, h = w * expand, h * expand
    return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=1)


def scale_boxes(boxes: torch.Tensor, scales) -> torch.Tensor:
    """Scale ``N x 4`` XYXY boxes about their centres by ``scales`` (a number or ``N`` tensor)."""
    scales = torch.as_tensor(scales, dtype=boxes.dtype, device=boxes.device)
    cx = (boxes[:, 0] + boxes[:, 2]) * 0.5
    cy = (boxes[:, 1] + boxes[:, 3]) * 0.5
    hw = (boxes[:, 2] - boxes[:, 0]) * 0.5 * scales
    hh = (boxes[:, 3] - boxes[:, 1]) * 0.5 * scales
    return torch.stack([cx - hw, cy - hh, cx + hw, cy + hh], dim=1)


def _to_3x3(affines: torch.Tensor) -> torch.Tensor:
    bottom = affines.new_tensor([0.0, 0.0, 1.0]).expand(affines.shape[0], 1, 3)
    return torch.cat([affines, bottom], dim=1)


def invert_affines(affines: torch.Tensor) -> torch.Tensor:
    """Invert ``N x 2 x 3`` affines."""
    return torch.linalg.inv(_to_3x3(affines.double()))[:, :2].to(affines.dtype)


def compose_affines(outer: torch.Tensor, inner: torch.Tensor) -> torch.Tensor:
    """``outer o inner`` of ``N x 2 x 3`` affines: the point ``p`` goes to ``outer(inner(p))``."""
    return (_to_3x3(outer.double()) @ _to_3x3(inner.to(outer).double()))[:, :2].to(outer.dtype)


def boxes_to_affines(
    boxes: torch.Tensor,
    out_size: Sequence[int],
    rotation: Optional[torch.Tensor] = None,
    flip: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(crop_to_image, image_to_crop)`` ``N x 2 x 3`` affines warping each ``N x 4`` box region onto
    an ``out_size`` crop (stretched unless the box has the crop's aspect ratio).

    ``rotation``: ``N`` degrees about the box centre; a positive angle rotates the sampled region
    clockwise in the image (y down), the content counter-clockwise in the crop. ``flip``: ``N``
    bools, mirrored crops (column ``j`` shows column ``w-1-j``).
    """
    boxes = boxes.float()
    n = boxes.shape[0]
    out_h, out_w = float(out_size[0]), float(out_size[1])
    cx = (boxes[:, 0] + boxes[:, 2]) * 0.5
    cy = (boxes[:, 1] + boxes[:, 3]) * 0.5
    sx = (boxes[:, 2] - boxes[:, 0]) / out_w
    sy = (boxes[:, 3] - boxes[:, 1]) / out_h
    if rotation is None:
        cos, sin = torch.ones_like(cx), torch.zeros_like(cx)
    else:
        theta = rotation.to(cx).reshape(n) * (math.pi / 180.0)
        cos, sin = torch.cos(theta), torch.sin(theta)
    fx = torch.ones_like(cx)
    if flip is not None:
        fx = torch.where(flip.to(torch.bool).reshape(n), -fx, fx)
    # x = c + R @ diag(sx * fx, sy) @ ((u, v) - crop_centre)
    a00, a01 = cos * sx * fx, -sin * sy
    a10, a11 = sin * sx * fx, cos * sy
    u0, v0 = out_w * 0.5, out_h * 0.5
    t0 = cx - a00 * u0 - a01 * v0
    t1 = cy - a10 * u0 - a11 * v0
    crop_to_image = torch.stack([torch.stack([a00, a01, t0], dim=1), torch.stack([a10, a11, t1], dim=1)], dim=1)
    return crop_to_image, invert_affines(crop_to_image)


def face_crop_affines(boxes: torch.Tensor, crop_size: Sequence[int], aspect_ratio: float, box_expand: float,
                      scale=1.0, shift: Optional[torch.Tensor] = None, rotation: Optional[torch.Tensor] = None,
                      flip: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Crop -> image affines of the parser crops of ``N x 4`` face boxes, training and test alike:
    each box moved by ``shift`` (``N x 2`` fractions of its size), grown to ``aspect_ratio``, times
    ``box_expand`` and ``scale`` (number or ``N`` tensor), then rotated and flipped
    (:func:`boxes_to_affines`)."""
    boxes = boxes.to(torch.float32)
    if shift is not None:
        boxes = boxes + (shift.to(boxes) * (boxes[:, 2:] - boxes[:, :2])).repeat(1, 2)
    regions = expand_box_to_aspect(boxes, aspect_ratio, box_expand)
    if not (isinstance(scale, (int, float)) and scale == 1.0):
        regions = scale_boxes(regions, scale.to(boxes) if torch.is_tensor(scale) else scale)
    return boxes_to_affines(regions, crop_size, rotation=rotation, flip=flip)[0]


def _normalised_theta(src_to_dst: torch.Tensor, dst_size: Sequence[int], src_size: Sequence[int]) -> torch.Tensor:
    """``affine_grid`` theta of a pixel-coordinate destination -> source affine (``align_corners=False``:
    pixel ``x = (g + 1) * W / 2``)."""
    dh, dw = float(dst_size[0]), float(dst_size[1])
    sh, sw = float(src_size[0]), float(src_size[1])
    a = src_to_dst.double()
    # x_src = a @ (u, v, 1); u = (gu + 1) * dw / 2; g_src = 2 * x_src / sw - 1
    to_pix = a.new_tensor([[dw / 2, 0, dw / 2], [0, dh / 2, dh / 2], [0, 0, 1]])
    to_norm = a.new_tensor([[2 / sw, 0, -1], [0, 2 / sh, -1], [0, 0, 1]])
    theta = to_norm @ _to_3x3(a) @ to_pix
    return theta[:, :2].float()


def _sample_per_image(
    source: torch.Tensor, batch_idx: torch.Tensor, grids: torch.Tensor, mode: str, padding_mode: str = "zeros"
) -> torch.Tensor:
    """``grid_sample`` of ``N x h x w x 2`` grids from ``source[batch_idx]``, one tall grid per image
    (no copy of an image per crop)."""
    n, h, w, _ = grids.shape
    out = source.new_zeros((n, source.shape[1], h, w))
    for b in torch.unique(batch_idx).tolist():
        sel = (batch_idx == b).nonzero(as_tuple=True)[0]
        tall = grids[sel].reshape(1, len(sel) * h, w, 2)
        sampled = F.grid_sample(source[b : b + 1], tall, mode=mode, padding_mode=padding_mode, align_corners=False)
        out[sel] = sampled.reshape(source.shape[1], len(sel), h, w).transpose(0, 1)
    return out


# Largest number of samples per crop pixel and axis of anti-aliased crops.
MAX_SUPERSAMPLING = 4
# Crops per grid_sample call when supersampling (bounds the memory of the k*h x k*w grids).
_SUPERSAMPLED_CHUNK = 4


def supersampling_factors(affines: torch.Tensor) -> torch.Tensor:
    """``N`` samples per crop pixel and axis of anti-aliased crops: the image pixels a crop pixel
    spans, rounded up (roi_align's adaptive sampling ratio), in ``[1, MAX_SUPERSAMPLING]``."""
    spans = affines[:, :, :2].double().norm(dim=1)  # N x 2: image pixels per crop pixel along u and v
    return torch.ceil(spans.max(dim=1).values - 1e-6).clamp(1, MAX_SUPERSAMPLING).long()


def crop_images(
    images: torch.Tensor,
    batch_idx: torch.Tensor,
    affines: torch.Tensor,
    out_size: Sequence[int],
    mode: str = "bilinear",
    antialias: bool = False,
) -> torch.Tensor:
    """``N x C x h x w`` crops (0 outside) of the ``B x C x H x W`` padded batch ``images``: crop ``k``
    from image ``batch_idx[k]`` with the crop -> image affine ``affines[k]``.

    ``mode``: "bilinear" for images, "nearest" for labels. ``antialias`` (bilinear): a crop that
    shrinks the image averages ``k x k`` samples per pixel (:func:`supersampling_factors`).
    """
    n = affines.shape[0]
    out_h, out_w = int(out_size[0]), int(out_size[1])
    if n == 0:
        return images.new_zeros((0, images.shape[1], out_h, out_w))
    batch_idx = batch_idx.to(images.device)
    factors = supersampling_factors(affines) if antialias and mode == "bilinear" else torch.ones(n, dtype=torch.long)
    out = images.new_zeros((n, images.shape[1], out_h, out_w))
    for k in torch.unique(factors).tolist():
        sel = (factors == k).nonzero(as_tuple=True)[0]
        chunk = len(sel) if k == 1 else _SUPERSAMPLED_CHUNK
        for start in range(0, len(sel), chunk):
            part = sel[start : start + chunk]
            a = affines[part.to(affines.device)].clone()
            a[:, :, :2] /= k  # supersampled crop pixel (j', i') -> crop point ((j' + 0.5) / k, ...)
            theta = _normalised_theta(a, (out_h * k, out_w * k), images.shape[-2:])
            grids = F.affine_grid(theta, [len(part), 1, out_h * k, out_w * k], align_corners=False).to(images.dtype)
            crops = _sample_per_image(images, batch_idx[part.to(batch_idx.device)], grids, mode)
            out[part.to(out.device)] = F.avg_pool2d(crops, k) if k > 1 else crops
    return out


def crop_labels(
    labels: torch.Tensor,
    batch_idx: torch.Tensor,
    affines: torch.Tensor,
    out_size: Sequence[int],
    ignore_value: int = 255,
    outside_value: Optional[int] = None,
) -> torch.Tensor:
    """``N x h x w`` long crops (nearest) of ``B x H x W`` label maps (-1: batch padding), as
    :func:`crop_images`; values above ``ignore_value`` are clamped to it, points outside the
    image read ``outside_value`` (default ``ignore_value``)."""
    outside_value = ignore_value if outside_value is None else int(outside_value)
    # Shift by one so that grid_sample's zero padding and the -1 padding both read 0: "outside".
    shifted = (labels.long() + 1).clamp(min=0, max=ignore_value + 1).to(torch.float32)[:, None]
    out = crop_images(shifted, batch_idx, affines, out_size, mode="nearest")[:, 0].round().long() - 1
    out[out < 0] = outside_value
    return out


def crop_windows(affines: torch.Tensor, crop_size: Sequence[int], image_size: Sequence[int]) -> torch.Tensor:
    """``N x 4`` long pixel windows ``[x0, y0, x1, y1)`` covered by each crop (crop -> image
    affines), clipped to ``image_size`` (possibly empty)."""
    h, w = float(crop_size[0]), float(crop_size[1])
    corners = affines.new_tensor([[0, 0, 1], [w, 0, 1], [0, h, 1], [w, h, 1]]).T  # 3 x 4
    pts = affines @ corners  # N x 2 x 4
    windows = torch.cat([pts.min(dim=2).values.floor(), pts.max(dim=2).values.ceil()], dim=1)
    limits = windows.new_tensor([image_size[1], image_size[0]] * 2)
    return torch.minimum(windows.clamp(min=0), limits).long()
