"""How much memory a run needs (from the model's config alone) against what this machine or container has.

Also where a CPU run under a container's hard limit gets gradient checkpointing and micro-batches, since a
kernel killed past a cgroup limit loses everything the notebook held.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

from ..config import FineTuneConfig
from . import hardware, resolve
from .resolve import ResolvedModel

__all__ = [
    "CPU_ACTIVATION_FACTOR",
    "MemoryEstimate",
    "available_memory",
    "cgroup_memory_left",
    "device_memory",
    "estimate_memory",
]


@dataclass
class MemoryEstimate:
    """Bytes needed to train, by part; rough (±30%) but enough to warn before a sure OOM."""

    weights: int
    lora: int
    optimizer: int
    activations: int
    available: int | None
    device: str
    device_total: int | None = None  # the card's whole memory (CUDA), for the message
    plan: dict[str, Any] | None = None  # TrainingPlan.to_dict(): optimizer, checkpointing, dtype assumed
    seq_len: int | None = None  # the sequence length the activations were counted for
    # the memory available is a container's hard limit (cgroup): past it the kernel is killed, not slowed
    hard_limit: bool = False

    # The estimate is rough (about ±30%): "tight" warns, "too_big" (past the error margin) stops a CUDA
    # run before it loads weights, since an out-of-memory error 10 minutes in costs more than a clear no.
    TIGHT = 0.9
    TOO_BIG = 1.3

    @property
    def total(self) -> int:
        return self.weights + self.lora + self.optimizer + self.activations

    @property
    def fits(self) -> bool:
        return self.available is None or self.total <= self.available

    @property
    def verdict(self) -> str:
        """``fits`` | ``tight`` (within the estimate's error of what is free) | ``too_big`` | ``unknown``."""
        if self.available is None:
            return "unknown"
        if self.total > self.TOO_BIG * self.available:
            return "too_big"
        if self.total > self.TIGHT * self.available:
            return "tight"
        return "fits"

    def advice(self, config: FineTuneConfig | None = None) -> str:
        """What to change, in the order that saves the most memory for the least harm."""
        steps = []
        gc_on = bool((self.plan or {}).get("gradient_checkpointing"))
        if config is not None:
            t, d = config.training, config.data
            steps.append(f"lower training.batch_size (now {t.batch_size}; raise training.grad_accum to keep the "
                         f"effective batch)")
            steps.append(f"shorten data.max_length (now {d.max_length})")
        else:
            steps += ["lower training.batch_size", "shorten data.max_length"]
        if not gc_on:
            steps.append("set training.gradient_checkpointing: true")
        if config is not None and config.quantization.method != "4bit-nf4":
            steps.append("use quantization: 4bit-nf4")
        steps.append("or pick a smaller model")
        return "; ".join(steps)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["total"] = self.total
        d["fits"] = self.fits
        d["verdict"] = self.verdict
        return d

    def __str__(self) -> str:
        gib = lambda b: f"{b / 2**30:.2f} GiB"
        avail = gib(self.available) if self.available is not None else "unknown"
        if self.device_total is not None and self.available is not None:
            avail += f" free of {gib(self.device_total)}"
        return (
            f"weights {gib(self.weights)} + LoRA {gib(self.lora)} + optimizer {gib(self.optimizer)} + "
            f"activations {gib(self.activations)} = {gib(self.total)} (available on {self.device}: {avail})"
        )


def _model_config(resolved: ResolvedModel, trust_remote_code: bool) -> Any:
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(resolved.path, revision=resolved.revision, trust_remote_code=trust_remote_code)


def device_memory(device: str) -> tuple[int | None, int | None]:
    """(free, total) bytes: the card's, from ``torch.cuda.mem_get_info`` (what other processes and this one
    already hold is not free), or the machine's available RAM on a CPU."""
    if device == "cuda":
        import torch

        free, total = torch.cuda.mem_get_info()
        return int(free), int(total)
    return available_memory(device), None


def _cgroup_memory_files(proc_cgroup: str, sysfs: str) -> list[tuple[str, str]]:
    """(limit, usage) file pairs of this process's memory cgroup and its ancestors, innermost first.

    ``/proc/self/cgroup`` names the process's own cgroup: ``0::/path`` (v2) or ``N:memory:/path`` (v1).
    Reading only the root files saw no limit where the container has no cgroup namespace (docker without
    cgroupns, ``systemd-run -p MemoryMax=``, a nested limit), and a 2 GB pod looked like its host."""
    v2: list[str] = []
    v1: list[str] = []
    try:
        with open(proc_cgroup) as fh:
            for line in fh:
                parts = line.rstrip("\n").split(":", 2)
                if len(parts) != 3:
                    continue
                if parts[0] == "0" and parts[1] == "":
                    v2.append(parts[2])
                elif "memory" in parts[1].split(","):
                    v1.append(parts[2])
    except OSError:
        pass

    def chain(path: str) -> list[str]:
        parts = [p for p in path.split("/") if p and p not in (".", "..")]
        return ["/".join(parts[:i]) for i in range(len(parts), 0, -1)] + [""]

    pairs: list[tuple[str, str]] = []
    for rel in chain(v2[0]) if v2 else [""]:
        base = os.path.join(sysfs, rel) if rel else sysfs
        pairs.append((os.path.join(base, "memory.max"), os.path.join(base, "memory.current")))
    for rel in chain(v1[0]) if v1 else [""]:
        base = os.path.join(sysfs, "memory", rel) if rel else os.path.join(sysfs, "memory")
        pairs.append((os.path.join(base, "memory.limit_in_bytes"), os.path.join(base, "memory.usage_in_bytes")))
    return pairs


def cgroup_memory_left(proc_cgroup: str = "/proc/self/cgroup", sysfs: str = "/sys/fs/cgroup") -> int | None:
    """Bytes this container may still allocate (the tightest cgroup v2 or v1 limit minus its usage, over this
    process's cgroup and its ancestors), or None without a limit. /proc/meminfo shows the host's memory, so a
    2 GB Binder pod would otherwise look like a 100 GB machine."""
    left: int | None = None
    for limit_path, usage_path in _cgroup_memory_files(proc_cgroup, sysfs):
        try:
            with open(limit_path) as fh:
                limit = fh.read().strip()
            with open(usage_path) as fh:
                usage = int(fh.read().strip())
        except (OSError, ValueError):
            continue
        if limit == "max" or not limit.isdigit() or int(limit) >= 1 << 60:
            continue
        room = max(0, int(limit) - usage)
        left = room if left is None else min(left, room)
    return left


def available_memory(device: str) -> int | None:
    """Bytes free for training: the card's free memory, or MemAvailable capped by the container's cgroup limit."""
    if device == "cuda":
        return device_memory(device)[0]
    available = None
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    left = cgroup_memory_left()
    if left is not None:
        available = left if available is None else min(available, left)
    return available


# A CPU run's resident memory grows by about 2.5x the activations counted above (the process RSS, measured
# on the demo with SmolLM2-135M on our 2-core CI machine: 2.6-3.0 GiB for batch 8 where 1.05 GiB were
# counted, 1.4 GiB with checkpointing, 1.7 GiB at batch 4): CPU kernels keep fp32 intermediates and workspaces
# that the GPU path does not, and freed memory stays with the process. On an H100 the same formula came
# within 10% of torch's allocator peak, so only the CPU estimate is scaled. A 2 GB Binder pod depends on it:
# unscaled, the demo "fit", skipped checkpointing and was killed at its first step.
CPU_ACTIVATION_FACTOR = 2.5


def estimate_memory(
    config: FineTuneConfig, resolved: ResolvedModel | None = None, device: str | None = None,
    longest: int | None = None,
) -> MemoryEstimate:
    """Estimate training memory from the model's config alone, without loading any weights.

    Counts parameters on the meta device, then adds LoRA parameters (r * (in + out) per targeted
    linear), AdamW state (two fp32 moments plus fp32 grads), and activations for one micro-batch.
    ``longest`` is the longest tokenized training row when the data is known: batches are padded to their
    longest row, not to ``data.max_length``, so counting ``max_length`` overestimated short-row tasks about
    2x (the demo on an H100: 1.46 GiB estimated, 0.74 GiB measured; benchmarks/bench_gpu_memory.py).
    """
    import torch
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    resolved = resolved or resolve.resolve_model(config.model.name, config.model.revision)
    device = device or hardware.select_device()
    plan = hardware.plan_training(config, device)
    dtype = getattr(torch, plan.compute_dtype)
    mconf = _model_config(resolved, config.model.trust_remote_code)
    with init_empty_weights():
        meta = AutoModelForCausalLM.from_config(mconf, trust_remote_code=config.model.trust_remote_code)
    elem = torch.tensor([], dtype=dtype).element_size()
    tied = bool(getattr(mconf, "tie_word_embeddings", False))
    linear_params = 0
    other_params = 0
    lora_params = 0
    targets = config.lora.target_modules
    seen: set[int] = set()
    for name, module in meta.named_modules():
        if isinstance(module, torch.nn.Linear):
            seen.add(id(module.weight))
            n = module.weight.numel()
            is_head = name.split(".")[-1] in ("lm_head", "score")
            if is_head:
                if not tied:  # a tied head is the embedding matrix, counted once below (the meta model
                    other_params += n  # does not always tie, so its parameters would count it twice)
                continue
            linear_params += n
            leaf = name.split(".")[-1]
            if targets == "all-linear" or (isinstance(targets, list) and leaf in targets) or (
                isinstance(targets, str) and targets != "all-linear" and leaf == targets
            ):
                lora_params += config.lora.r * (module.in_features + module.out_features)
    for p in meta.parameters():
        if id(p) not in seen:
            other_params += p.numel()
            seen.add(id(p))
    method = config.quantization.method
    bytes_per_linear = {"4bit-nf4": 0.5 + (0.0 if config.quantization.double_quant else 0.06), "8bit": 1.0}.get(method, elem)
    # k-bit preparation (peft's prepare_model_for_kbit_training) upcasts every unquantized weight, embeddings
    # and norms, to fp32 for stable training: 4 bytes, not the compute dtype's 2 (measured on an H100)
    other_elem = 4 if method in ("4bit-nf4", "8bit") else elem
    weights = int(linear_params * bytes_per_linear + other_params * other_elem)
    lora = lora_params * 4
    # fp32 grads, plus the optimizer's state: two fp32 moments for AdamW, two 8-bit ones for the 8-bit
    # variants (bitsandbytes keeps small fp32 block statistics besides), none for SGD, ~1 for Adafactor.
    state_bytes = {"sgd": 0.0, "adafactor": 1.0}.get(plan.optimizer, 2.1 if "8bit" in plan.optimizer else 8.0)
    optimizer = int(lora_params * (4 + state_bytes))
    hidden = getattr(mconf, "hidden_size", 1024)
    layers = getattr(mconf, "num_hidden_layers", 12)
    heads = getattr(mconf, "num_attention_heads", 16)
    vocab = getattr(mconf, "vocab_size", 32000)
    b, s = config.training.batch_size, config.data.max_length
    if longest and not config.data.packing:  # packing fills each row up to max_length whatever the rows are
        s = max(1, min(s, int(longest)))
    act_elem = max(elem, 2)
    if plan.gradient_checkpointing:
        per_layer = 2 * s * b * hidden * act_elem
    else:  # Korthikanti et al. 2022, scaled from 16-bit to the element size in use
        per_layer = int(s * b * hidden * (34 + 5 * heads * s / hidden) * act_elem / 2)
    # per logit: the compute-dtype logits (2 bytes), their fp32 upcast (4), the log-softmax (4) and the
    # gradients in fp32 and back in the compute dtype (4 + 2): 16 bytes. Counting 12 left the estimate 6-14%
    # under the peaks measured on an H100 (benchmarks/results/gpu-h100.json); 16 puts them within -6%/+8%.
    logits = 4 * b * s * vocab * 4
    activations = int(per_layer * layers + logits)
    if device == "cpu":
        activations = int(activations * CPU_ACTIVATION_FACTOR)
    free, total = device_memory(device)
    left = cgroup_memory_left() if device == "cpu" else None
    hard = left is not None and free is not None and left <= free
    estimate = MemoryEstimate(weights, lora, optimizer, activations, free, device, total, plan.to_dict(), s, hard)
    if (device == "cpu" and config.training.gradient_checkpointing == "auto" and not plan.gradient_checkpointing
            and estimate.verdict in ("tight", "too_big")):
        # A small machine or container (Binder's 2 GB): checkpointing costs ~30% speed and saves most of the
        # activation memory, so "auto" turns it on here too. The run uses this plan (estimate.plan).
        checkpointed = estimate_memory(config.replace(**{"training.gradient_checkpointing": True}), resolved, device,
                                       longest)
        checkpointed.plan = {**(checkpointed.plan or {}), "reason": "low memory"}
        return _micro_batched(checkpointed, config, resolved, device, longest)
    return estimate


def _micro_batched(estimate: MemoryEstimate, config: FineTuneConfig, resolved: ResolvedModel, device: str,
                   longest: int | None) -> MemoryEstimate:
    """Under a container's hard limit, when checkpointing alone still does not fit: micro-batches.

    Halve the batch the model sees at once and accumulate as many more steps, until the estimate fits:
    each optimizer step still sees ``training.batch_size`` examples (the Trainer normalises the loss over the
    accumulated tokens), so the run's steps, schedule and results stay those of the config, only slower.
    Measured on the demo, batch 8 peaked at 1.9 GiB RSS with checkpointing and 1.4 GiB as 2 x 4: the
    difference between a Binder kernel killed at its first step and one that trains."""
    if not estimate.hard_limit or estimate.verdict not in ("tight", "too_big"):
        return estimate
    batch, factor = config.training.batch_size, 1
    best = estimate
    while batch % (factor * 2) == 0 and batch // (factor * 2) >= 1:
        factor *= 2
        smaller = estimate_memory(config.replace(**{"training.gradient_checkpointing": True,
                                                    "training.batch_size": batch // factor}), resolved, device, longest)
        smaller.plan = {**(smaller.plan or {}), "reason": "low memory", "micro_batch_size": batch // factor,
                        "grad_accum_factor": factor}
        best = smaller
        if smaller.verdict == "fits":
            break
    return best
