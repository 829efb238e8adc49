"""Work-arounds for bitsandbytes behaviour that breaks fine-tuning or leaks memory, in one place.

Each one names the bitsandbytes behaviour it undoes and how it was seen, so it can be dropped when
bitsandbytes changes.
"""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["forget_optimizer_registrations", "keep_4bit_weights_trainable"]

# bitsandbytes on AVX512-BF16 CPUs tries to fetch an optional kernel from the hub and warns when it can't;
# the built-in fallback is what we measured, so the warning only confuses notebook users.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)


def keep_4bit_weights_trainable(model: Any) -> int:
    """Stop bitsandbytes repacking a model we train into its CPU inference layout; returns the layers changed.

    On CPUs with AVX512-BF16, ``Linear4bit.forward`` in eval mode without grad (every Trainer evaluation,
    every probe) repacks the NF4 weight one way for a faster inference kernel that has no autograd. Training
    after the first evaluation then ran through that kernel: torch warned "bitsandbytes::gemv_4bit: an
    autograd kernel was not registered", and the gradients reaching the LoRA weights of earlier layers were
    wrong. The probes' forgetting measurements (eval mode, no grad, between training steps) hit the same
    repacking: seen on SmolLM2 as a loss climbing 4.4 -> 5.3 over six steps instead of 4.4 -> 2.1. A model
    being fine-tuned gives up that inference speed-up; ``%ft_eval`` models keep it. Idempotent: the probes
    call it again on the model they measure.
    """
    try:
        import bitsandbytes as bnb
    except ImportError:  # pragma: no cover - quantization needs it
        return 0
    changed = 0
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit) and getattr(module, "support_avx512bf16_for_cpu", False):
            module.support_avx512bf16_for_cpu = False
            changed += 1
    return changed


def forget_optimizer_registrations(model: Any) -> int:
    """Drop ``model`` from bitsandbytes' process-wide optimizer registry; returns the entries removed.

    With an 8-bit optimizer (``paged_adamw_8bit``, the CUDA default) the Trainer registers every
    ``nn.Embedding`` with bitsandbytes' ``GlobalOptimManager`` singleton so embeddings keep 32-bit state, and
    bitsandbytes holds those modules for the life of the process: every run left its (fp32-upcast) embedding
    on the GPU after it finished, stopped or failed - 108 MiB per run for SmolLM2-135M, measured on an H100
    (tests/test_cuda.py). A Stop must give the memory back.
    """
    try:
        from bitsandbytes.optim import GlobalOptimManager
    except ImportError:  # pragma: no cover - quantization needs it
        return 0
    mng = GlobalOptimManager.get_instance()
    modules = {id(m) for m in model.modules()}
    params = {id(p) for p in model.parameters()}
    kept = [t for t in mng.module_weight_config_triple if id(t[0]) not in modules]
    removed = len(mng.module_weight_config_triple) - len(kept)
    mng.module_weight_config_triple = kept
    for pid in params & set(mng.pid2config):  # ids are reused by later objects: stale entries would misapply
        del mng.pid2config[pid]
        removed += 1
    return removed
