"""Training and launching: what detectron2's engine does not already do for this project."""
from .checkpoint import QANetCheckpointer, UnsafeCheckpointError, load_checkpoint_file
from .launch import launch
from .trainer import QANetTrainer, ResumableTrainingSampler, format_summary_line
from .validation import ConfigError, validate_config

__all__ = [
    "ConfigError",
    "QANetCheckpointer",
    "QANetTrainer",
    "ResumableTrainingSampler",
    "UnsafeCheckpointError",
    "format_summary_line",
    "launch",
    "load_checkpoint_file",
    "validate_config",
]
