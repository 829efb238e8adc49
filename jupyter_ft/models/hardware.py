"""What the hardware here means for a run: the device, the compute dtype, the optimizer, checkpointing.

The ``auto`` values of the config are resolved once into a :class:`TrainingPlan`, so the Trainer's
arguments, the memory estimate and the run record all read the same decisions.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from ..config import FineTuneConfig

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = [
    "TrainingPlan",
    "cpu_bf16_is_fast",
    "cuda_bf16_is_native",
    "plan_training",
    "resolve_gradient_checkpointing",
    "resolve_optimizer",
    "select_compute_dtype",
    "select_device",
]


def select_device() -> str:
    """``cuda`` when torch sees a GPU, else ``cpu``."""
    import torch

    if torch.cuda.is_available():
        return "cuda"
    return "cpu"


@functools.cache
def cpu_bf16_is_fast(size: int = 512, repeats: int = 3) -> bool:
    """Measure instead of guessing: bf16 matmul must beat fp32 by 20% to be worth it on this CPU.

    On CPUs without AMX/AVX512-BF16 bf16 is emulated and ~20x slower, which would turn a minutes-long
    demo into an hour.
    """
    import torch

    def bench(dtype: torch.dtype) -> float:
        a = torch.randn(size, size, dtype=dtype)
        b = torch.randn(size, size, dtype=dtype)
        a @ b  # warm-up
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - t0)
        return best

    try:
        return bench(torch.bfloat16) < 0.8 * bench(torch.float32)
    except RuntimeError:
        return False


def cuda_bf16_is_native() -> bool:
    """bf16 in hardware: Ampere (compute capability 8.0) or newer. ``torch.cuda.is_bf16_supported()`` alone
    also answers True on a T4 (7.5), where bf16 is emulated and far slower than fp16."""
    import torch

    major, _minor = torch.cuda.get_device_capability()
    return major >= 8 and bool(torch.cuda.is_bf16_supported())


def select_compute_dtype(device: str) -> torch.dtype:
    """bf16 on GPUs that have it natively (A100, L4, H100), else fp16 (T4, V100); fp32 on CPU unless bf16 is
    measurably faster here. ``JUPYTER_FT_DTYPE`` (float32/bfloat16/float16) overrides the choice."""
    import torch

    forced = os.environ.get("JUPYTER_FT_DTYPE")
    if forced:
        return getattr(torch, forced)
    if device == "cuda":
        return torch.bfloat16 if cuda_bf16_is_native() else torch.float16
    return torch.bfloat16 if cpu_bf16_is_fast() else torch.float32


@dataclass(frozen=True)
class TrainingPlan:
    """The hardware-dependent choices of a run, resolved from the config's ``auto`` values.

    On CUDA: QLoRA's recipe (NF4 + double quantization from the config defaults, bf16 or fp16 compute,
    paged 8-bit AdamW, gradient checkpointing). On a CPU: plain AdamW and no checkpointing, which measured
    fastest there (see the benchmark); memory is rarely the limit on a CPU, speed is.
    """

    device: str
    compute_dtype: str  # "bfloat16" | "float16" | "float32"
    optimizer: str  # a transformers ``optim`` name
    gradient_checkpointing: bool
    # Under a container's hard memory limit each batch may run as accumulated micro-batches (the same
    # examples per optimizer step): ``MemoryEstimate.plan`` decides, ``with_memory_plan`` applies it.
    micro_batch_size: int | None = None
    grad_accum_factor: int = 1

    def with_memory_plan(self, plan: Mapping[str, Any] | None) -> TrainingPlan:
        """This plan with what the memory estimate chose (checkpointing turned on, micro-batches)."""
        plan = plan or {}
        return dataclasses.replace(
            self,
            gradient_checkpointing=bool(plan.get("gradient_checkpointing", self.gradient_checkpointing)),
            micro_batch_size=plan.get("micro_batch_size") or self.micro_batch_size,
            grad_accum_factor=int(plan.get("grad_accum_factor") or self.grad_accum_factor),
        )

    @property
    def torch_dtype(self) -> torch.dtype:
        import torch

        return getattr(torch, self.compute_dtype)

    @property
    def bf16(self) -> bool:
        """The Trainer's mixed-precision flag (GPU only: on a CPU the model is loaded in its dtype)."""
        return self.device != "cpu" and self.compute_dtype == "bfloat16"

    @property
    def fp16(self) -> bool:
        return self.device != "cpu" and self.compute_dtype == "float16"

    def to_dict(self) -> dict[str, Any]:
        out = {**asdict(self), "bf16": self.bf16, "fp16": self.fp16}
        if self.micro_batch_size is None:  # batches are split only under a hard memory limit
            del out["micro_batch_size"], out["grad_accum_factor"]
        return out


def resolve_optimizer(config: FineTuneConfig, device: str) -> str:
    """``training.optimizer``, with ``auto`` as paged 8-bit AdamW on CUDA and plain AdamW on a CPU."""
    opt = getattr(config.training, "optimizer", "auto")
    if opt != "auto":
        return opt
    return "paged_adamw_8bit" if device == "cuda" else "adamw_torch"


def resolve_gradient_checkpointing(config: FineTuneConfig, device: str) -> bool:
    """``training.gradient_checkpointing``, with ``auto`` as on for CUDA and off for a CPU."""
    gc = config.training.gradient_checkpointing
    if gc == "auto":
        return device == "cuda"
    return bool(gc)


def resolve_lora_dropout(config: FineTuneConfig, device: str) -> float:
    """``lora.dropout: auto``: the QLoRA paper's 0.05 on a GPU; 0 on a CPU, where the masks' random numbers cost
    a fifth of a step (peft then uses no dropout layer at all)."""
    if config.lora.dropout == "auto":
        return 0.05 if device == "cuda" else 0.0
    return float(config.lora.dropout)


def plan_training(config: FineTuneConfig, device: str | None = None) -> TrainingPlan:
    """Resolve ``training.optimizer`` / ``training.gradient_checkpointing`` (``auto``) and the compute dtype
    for ``device`` (default: CUDA when available)."""
    device = device or select_device()
    dtype = select_compute_dtype(device)
    return TrainingPlan(device, str(dtype).removeprefix("torch."), resolve_optimizer(config, device),
                        resolve_gradient_checkpointing(config, device))

