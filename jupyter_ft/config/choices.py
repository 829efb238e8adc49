"""The closed sets of values a config field may take (shared by validation, the form, docs and the lab)."""

from __future__ import annotations

__all__ = ["DATA_FORMATS", "QUANT_METHODS", "SCHEDULERS", "COLUMN_ROLES", "BUILTIN_MODEL", "OPTIMIZERS",
           "DEFAULT_ROOT"]

DATA_FORMATS = ("auto", "alpaca", "chat", "prompt_completion", "text")
QUANT_METHODS = ("4bit-nf4", "8bit", "none")
SCHEDULERS = ("linear", "cosine", "constant", "constant_with_warmup", "cosine_with_restarts", "polynomial")
COLUMN_ROLES = ("instruction", "input", "output", "messages", "prompt", "completion", "text")
BUILTIN_MODEL = "smollm2-135m-instruct"
# "auto" resolves at run time (models.plan_training): paged 8-bit AdamW on CUDA, plain AdamW on a CPU.
OPTIMIZERS = ("auto", "adamw_torch", "adamw_torch_fused", "paged_adamw_8bit", "adamw_8bit", "paged_adamw_32bit",
              "adafactor", "sgd")
# training.on_nonfinite: what a NaN or infinite training loss does to the run
NONFINITE_POLICIES = ("stop", "skip")

# Where runs are kept unless output.root (or a magic's --root) says otherwise.
DEFAULT_ROOT = "ft_runs"
