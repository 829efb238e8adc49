"""The config of a short training run on the tiny test model, shared by the suites that train one (training,
faults, worker): a few steps of demo data with frequent logs, evaluations and checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def tiny_run_config(model_dir: Path, root: Path, probes: dict[str, Any] | None = None, **training: Any) -> dict:
    t = {"max_steps": 6, "batch_size": 4, "logging_every": 1, "eval_every": 3, "save_every": 3,
         "learning_rate": 1e-3}
    t.update(training)
    cfg = {
        "model": {"name": str(model_dir)},
        "data": {"source": "demo:support_tickets", "max_length": 128, "eval_split": 0.05},
        "lora": {"r": 4, "alpha": 8},
        "training": t,
        "output": {"root": str(root)},
    }
    if probes is not None:
        cfg["probes"] = probes
    return cfg
