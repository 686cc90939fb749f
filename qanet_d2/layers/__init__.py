"""Torch geometry shared by the model, the post-processing and the video smoother."""
from .crops import (  # noqa: F401
    boxes_to_affines, compose_affines, crop_images, crop_labels, crop_windows, expand_box_to_aspect, invert_affines,
    normalize_image, scale_boxes,
)
