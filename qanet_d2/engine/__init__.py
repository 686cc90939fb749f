"""Training and launching: what detectron2's engine does not already do for this project."""
from ..weights_io import UnsafeCheckpointError, load_checkpoint_file
from .checkpoint import QANetCheckpointer, load_model_part, load_model_weights
from .imagenet import ImageNetWeightsError, load_imagenet_weights
from .launch import launch
from .trainer import QANetTrainer, ResumableTrainingSampler, format_summary_line
from .validation import ConfigError, validate_config

__all__ = ["ConfigError", "ImageNetWeightsError", "QANetCheckpointer", "QANetTrainer", "ResumableTrainingSampler",
           "UnsafeCheckpointError", "format_summary_line", "launch", "load_checkpoint_file", "load_imagenet_weights",
           "load_model_part", "load_model_weights", "validate_config"]
