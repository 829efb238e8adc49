"""Which run to evaluate, and its model: the base model with the run's saved adapter, kept in the one slot.

``%ft_eval``, ``%ft_chat`` and ``%ft_export`` accept a run id or name, a ``Run`` of this kernel or a
``RunDir``; :func:`open_run` turns any of them into a ``RunDir`` that can be evaluated (ended, adapter
saved) or says why not. :func:`run_model` keeps the loaded model in the process's one-model slot
(``jupyter_ft.runtime.memory.model_slot``), so evaluating and chatting with the same run reuse it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..config import DEFAULT_ROOT, FineTuneConfig
from ..errors import EvalError
from ..runtime.memory import model_slot
from ..store import ACTIVE, RunDir, RunRef, RunStore

__all__ = ["load_run_model", "open_run", "release_model", "run_model"]


def open_run(run: Any, root: str | os.PathLike[str] = DEFAULT_ROOT) -> RunDir:
    """A ``RunDir`` from a run id or name, a ``Run`` of this kernel, or a ``RunDir``; raises ``RunNotFound``
    or ``EvalError`` (still training, no adapter)."""
    if isinstance(run, str):
        rd = RunStore(root).find(run)
    elif isinstance(run, RunDir):
        rd = run
    elif isinstance(run, RunRef):  # a Run of this kernel
        if not run.done:
            raise EvalError(f"run {run.id} is still {run.run_dir.record.status}; wait for it (run.wait()) or stop "
                            "it first.")
        rd = run.run_dir
    else:
        raise EvalError(f"expected a run id, a Run or a RunDir, got {type(run).__name__}")
    if rd.record.status in ACTIVE:
        raise EvalError(f"run {rd.record.id} is still {rd.record.status}; evaluate it when it has ended.")
    if not (rd.adapter_dir / "adapter_config.json").is_file():
        raise EvalError(f"run {rd.record.id} has no saved adapter in {rd.adapter_dir} (status: {rd.record.status}); "
                        "only runs that finished or were stopped can be evaluated.")
    return rd


def load_run_model(run_dir: RunDir, *, trust_remote_code: bool = False) -> tuple[Any, Any, FineTuneConfig]:
    """The run's base model, quantized as it was trained, with its saved adapter attached. The model's own code
    runs only with ``trust_remote_code=True`` from the caller, never because the run's record says so."""
    from peft import PeftModel

    from .. import models

    config = FineTuneConfig.from_record(run_dir.record.config, trust_remote_code=trust_remote_code)
    if not (run_dir.adapter_dir / "adapter_config.json").is_file():
        raise FileNotFoundError(f"run {run_dir.record.id} has no saved adapter in {run_dir.adapter_dir} "
                                f"(status: {run_dir.record.status}).")
    resolved = models.resolve_model(config.model.name, config.model.revision)
    device = models.select_device()
    dtype = models.select_compute_dtype(device)
    tokenizer = models.load_tokenizer(resolved, config.model.trust_remote_code)
    base = models.load_base_model(config, resolved, device, dtype)
    model = PeftModel.from_pretrained(base, str(run_dir.adapter_dir))
    model.eval()
    return model, tokenizer, config


def _adapter_key(rd: RunDir) -> str:
    """The slot key of a run's model: its directory and the adapter's mtime (a resumed run saves a new one)."""
    weights = rd.adapter_dir / "adapter_model.safetensors"
    stamp = weights.stat().st_mtime_ns if weights.is_file() else 0
    return f"{Path(rd.path).resolve()}:{stamp}"


def run_model(run_dir: RunDir, *, trust_remote_code: bool = False) -> tuple[Any, Any, FineTuneConfig]:
    """:func:`load_run_model` behind the process's one-model slot: evaluating or chatting with the same run
    again reuses the loaded model; another run replaces it (the old one is freed first)."""
    key = f"{_adapter_key(run_dir)}:{trust_remote_code}"
    return model_slot.get(key, lambda: load_run_model(run_dir, trust_remote_code=trust_remote_code))


def release_model() -> bool:
    """Free the model kept by :func:`run_model` (``%ft_eval`` / ``%ft_chat``); True if one was held."""
    return model_slot.release()
