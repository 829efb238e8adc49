"""The configuration layer: the dataclass tree, safe YAML, validation of every field at once, sweep plans.

It imports neither torch nor transformers (the magics and the form import it on every cell), and nothing
of the package above ``errors``.
"""

from __future__ import annotations

from ..errors import ConfigError, Problem
from .choices import BUILTIN_MODEL, COLUMN_ROLES, DATA_FORMATS, DEFAULT_ROOT, OPTIMIZERS, QUANT_METHODS, SCHEDULERS
from .schema import (
    SECTIONS,
    ComputeConfig,
    DataConfig,
    FineTuneConfig,
    LoraSettings,
    ModelConfig,
    OutputConfig,
    ProbesConfig,
    QuantizationConfig,
    TrainingConfig,
)
from .yaml_io import Dumper, Loader

__all__ = [
    "BUILTIN_MODEL", "COLUMN_ROLES", "DATA_FORMATS", "DEFAULT_ROOT", "OPTIMIZERS", "QUANT_METHODS", "SCHEDULERS",
    "SECTIONS", "ComputeConfig", "ConfigError", "DataConfig", "Dumper", "FineTuneConfig", "Loader", "LoraSettings", "ModelConfig",
    "OutputConfig", "Problem", "ProbesConfig", "QuantizationConfig", "TrainingConfig",
]
