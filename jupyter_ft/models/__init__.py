"""Turn a model name into a quantized base model with a LoRA adapter, on whatever hardware is here.

The package splits that along its jobs: :mod:`.resolve` finds the weights (built-in SmolLM2, GGUF, local,
hub), :mod:`.hardware` resolves the config's ``auto`` choices into a :class:`TrainingPlan`, :mod:`.loading`
loads tokenizer and base model and adds the adapter, :mod:`.bnb` holds the bitsandbytes work-arounds and
:mod:`.memory_plan` estimates the memory a run needs against what is here. Importing it does not import
torch. To monkeypatch a function, patch it in the submodule that defines it (that is where the package's
own code looks it up), e.g. ``jupyter_ft.models.memory_plan.available_memory``.
"""

from __future__ import annotations

from ..errors import ModelResolutionError
from . import bnb, hardware, loading, memory_plan, resolve
from .bnb import forget_optimizer_registrations, keep_4bit_weights_trainable
from .hardware import (
    TrainingPlan,
    cpu_bf16_is_fast,
    cuda_bf16_is_native,
    plan_training,
    resolve_gradient_checkpointing,
    resolve_lora_dropout,
    resolve_optimizer,
    select_compute_dtype,
    select_device,
)
from .loading import apply_lora, load_base_model, load_tokenizer, quantization_config
from .memory_plan import (
    CPU_ACTIVATION_FACTOR,
    MemoryEstimate,
    available_memory,
    cgroup_memory_left,
    device_memory,
    estimate_memory,
)
from .resolve import (
    BUILTIN_ALIASES,
    BUILTIN_GGUF,
    BUILTIN_HUB_ID,
    BUILTIN_PACKAGE,
    ResolvedModel,
    builtin_gguf_path,
    cache_dir,
    convert_gguf,
    hub_reachable,
    resolve_model,
)

__all__ = [
    "BUILTIN_ALIASES",
    "BUILTIN_GGUF",
    "BUILTIN_HUB_ID",
    "BUILTIN_PACKAGE",
    "CPU_ACTIVATION_FACTOR",
    "MemoryEstimate",
    "ModelResolutionError",
    "ResolvedModel",
    "TrainingPlan",
    "apply_lora",
    "available_memory",
    "bnb",
    "builtin_gguf_path",
    "cache_dir",
    "cgroup_memory_left",
    "convert_gguf",
    "cpu_bf16_is_fast",
    "cuda_bf16_is_native",
    "device_memory",
    "estimate_memory",
    "forget_optimizer_registrations",
    "hardware",
    "hub_reachable",
    "keep_4bit_weights_trainable",
    "load_base_model",
    "load_tokenizer",
    "loading",
    "memory_plan",
    "plan_training",
    "quantization_config",
    "resolve",
    "resolve_gradient_checkpointing",
    "resolve_lora_dropout",
    "resolve_model",
    "resolve_optimizer",
    "select_compute_dtype",
    "select_device",
]
