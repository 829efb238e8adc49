"""The closed sets of values a config field may take (shared by validation, the form, docs and the lab)."""

from __future__ import annotations

__all__ = ["DATA_FORMATS", "QUANT_METHODS", "SCHEDULERS", "COLUMN_ROLES", "BUILTIN_MODEL", "OPTIMIZERS",
           "DEFAULT_ROOT", "NONFINITE_POLICIES", "LAUNCHERS", "PROCESS_LAUNCHERS", "MULTI_PROCESS_LAUNCHERS",
           "STRATEGIES", "OFFLOADS", "ZERO_STAGES", "QUANT_STORAGES"]

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

# compute: where and how a run trains (thread of this kernel, a process, or a real launcher's process group)
LAUNCHERS = ("thread", "process", "torchrun", "accelerate", "deepspeed")
PROCESS_LAUNCHERS = LAUNCHERS[1:]  # the run trains outside the kernel, in processes that outlive it
MULTI_PROCESS_LAUNCHERS = ("torchrun", "accelerate", "deepspeed")
STRATEGIES = ("auto", "ddp", "fsdp", "deepspeed")
OFFLOADS = ("none", "cpu")
ZERO_STAGES = (1, 2, 3)
# bitsandbytes' bnb_4bit_quant_storage: what the packed 4-bit weights are stored as. FSDP and ZeRO-3 shard
# parameters by dtype, so there they must be stored as the compute dtype ("auto" picks that).
QUANT_STORAGES = ("auto", "uint8", "bfloat16", "float16", "float32")
