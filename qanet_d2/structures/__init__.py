"""Structures shared by every floor: the label sets (class names, colours, flip pairs)."""
from .label_sets import (  # noqa: F401
    IGNORE_LABEL, LABEL_SETS, LabelSet, colorize_labels, conversion_ids, convert_labels, derive_flip_pairs,
    get_label_set, label_set_from_classes, label_set_from_config, label_set_to_config, make_palette, register_label_set,
    sfp_label_set,
)
