"""Loading the tokenizer and the frozen, quantized base model, and wrapping it with a fresh LoRA adapter.

Every heavy import (transformers, peft) happens inside these functions, so importing the package stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..config import FineTuneConfig
from ..config.compute import topology
from ..runtime import distributed
from . import bnb, hardware
from .resolve import ResolvedModel

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["apply_lora", "device_map", "load_base_model", "load_tokenizer", "quant_storage", "quantization_config"]


def load_tokenizer(resolved: ResolvedModel, trust_remote_code: bool = False) -> Any:
    """The model's tokenizer; one without a pad token pads with its EOS token."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(
        resolved.path, revision=resolved.revision, trust_remote_code=trust_remote_code
    )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def quantization_config(config: FineTuneConfig, compute_dtype: torch.dtype) -> Any:
    """The ``BitsAndBytesConfig`` for ``quantization.method`` (None for ``none``)."""
    from transformers import BitsAndBytesConfig

    method = config.quantization.method
    if method == "4bit-nf4":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=config.quantization.double_quant,
            bnb_4bit_compute_dtype=compute_dtype,
            bnb_4bit_quant_storage=quant_storage(config, compute_dtype),
        )
    if method == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return None


def quant_storage(config: FineTuneConfig, compute_dtype: "torch.dtype") -> "torch.dtype":
    """``quantization.quant_storage``: ``auto`` is the compute dtype where parameters are sharded (FSDP, ZeRO-3
    shard tensors of one dtype) and bitsandbytes' packed ``uint8`` everywhere else."""
    import torch

    name = config.quantization.quant_storage
    if name == "auto":
        return compute_dtype if topology(config).shards_parameters else torch.uint8
    return getattr(torch, name)


def device_map(config: FineTuneConfig, device: str, quantized: bool) -> Any:
    """Where ``from_pretrained`` puts the weights: this rank's own GPU in a launch (each rank would otherwise
    load onto GPU 0), nothing for an unquantized model whose parameters FSDP or ZeRO-3 will shard and place."""
    if device == "cpu" and not quantized:
        return None
    if device == "cuda" and distributed.world_size() > 1:
        if topology(config).shards_parameters and not quantized:
            return None
        return {"": distributed.local_rank()}
    return {"": device}


def load_base_model(config: FineTuneConfig, resolved: ResolvedModel, device: str, compute_dtype: torch.dtype) -> Any:
    """Load the frozen base, quantized as configured, onto ``device``."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    qconfig = quantization_config(config, compute_dtype)
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a "Loading weights" bar from the training thread is noise in a cell
    try:
        model = AutoModelForCausalLM.from_pretrained(
            resolved.path,
            revision=resolved.revision,
            trust_remote_code=config.model.trust_remote_code,
            dtype=compute_dtype,
            quantization_config=qconfig,
            device_map=device_map(config, device, qconfig is not None),
        )
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    model.config.use_cache = False
    return model


def apply_lora(model: Any, config: FineTuneConfig, device: str | None = None,
               gradient_checkpointing: bool | None = None) -> Any:
    """Wrap with a fresh LoRA adapter; k-bit models get peft's preparation (fp32 norms, input grads).
    ``gradient_checkpointing`` is the resolved choice (``estimate_memory(...).plan``); by default
    ``training.gradient_checkpointing`` is resolved for ``device`` (default: where the model is)."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if device is None:
        device = next((p.device.type for p in model.parameters()), "cpu")
    gc_on = hardware.resolve_gradient_checkpointing(config, device) if gradient_checkpointing is None else gradient_checkpointing
    # Non-reentrant checkpointing works with frozen (quantized) inputs and is what torch recommends.
    gc_kwargs = {"use_reentrant": False}
    if config.quantization.method != "none":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gc_on,
                                                gradient_checkpointing_kwargs=gc_kwargs)
    elif gc_on:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=gc_kwargs)
        model.enable_input_require_grads()
    lora = LoraConfig(
        r=config.lora.r,
        lora_alpha=config.lora.alpha,
        lora_dropout=hardware.resolve_lora_dropout(config, device),
        target_modules=config.lora.target_modules,
        use_dora=config.lora.use_dora,
        use_rslora=config.lora.use_rslora,
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, lora)
    bnb.keep_4bit_weights_trainable(model)
    return model
