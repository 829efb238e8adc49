"""The probes discriminate on the real offline SmolLM2-135M-Instruct (slow; ~4 minutes on 2 idle cores).

Each run is short (few steps, short sequences, small probe subsets) but every threshold is the config's
default: a deliberately overfit run is flagged, a deliberately destructive run forgets past ``mild``, and a
gentle run with the demo's own hyperparameters on the demo task is flagged by neither.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

import jupyter_ft
from jupyter_ft.config import FineTuneConfig, ProbesConfig
from jupyter_ft.demo.__main__ import DEMO_CONFIG
from jupyter_ft.store import read_jsonl

pytestmark = pytest.mark.slow

DEFAULTS = ProbesConfig()
# smaller subsets, measured at every evaluation: the thresholds stay the defaults
SMALL_PROBES = {"forgetting_items": 8, "kl_prompts": 4, "forgetting_every": 1}


def base_config(root: Path, **training: Any) -> dict[str, Any]:
    return {"model": {"name": "smollm2-135m-instruct"}, "quantization": "4bit-nf4", "output": {"root": str(root)},
            "training": {"logging_every": 1, "warmup": 0, "scheduler": "constant", **training}}


def forgetting_records(run: Any) -> list[dict[str, Any]]:
    return [r["forgetting"] for r in read_jsonl(run.path / "probes.jsonl") if r["forgetting"]]


def test_thresholds_are_the_defaults() -> None:
    """Guards the calibration the tests below rely on (README, "Probes"): change both together."""
    assert (DEFAULTS.kl_mild, DEFAULTS.kl_severe, DEFAULTS.loglik_mild, DEFAULTS.loglik_severe) == (0.1, 0.5, 0.25, 1.0)
    assert (DEFAULTS.patience, DEFAULTS.rise_threshold, DEFAULTS.gap_ratio) == (2, 0.1, 1.5)


def test_gentle_demo_run_is_flagged_by_neither(tmp_path: Path) -> None:
    demo = FineTuneConfig.from_yaml(DEMO_CONFIG).to_dict()  # the demo's own model, data, LoRA and learning rate
    demo["training"].update({"max_steps": 12, "eval_every": 6, "save_every": 12, "logging_every": 2})
    demo["data"].update({"max_length": 128, "eval_split": 0.05})
    demo["output"] = {"root": str(tmp_path)}
    demo["probes"] = SMALL_PROBES
    run = jupyter_ft.finetune(demo, wait=True)
    assert run.status == "finished", run.run_dir.record.traceback
    s = run.summary
    losses = [h["loss"] for h in run.history if "loss" in h]
    assert losses[-1] < losses[0]  # it did learn the task
    records = forgetting_records(run)
    assert s["probes"]["overfitting"] == "ok", s["probes"]
    assert s["probes"]["forgetting"] == "none", records[-1]
    assert records[-1]["kl"] > 0  # measured on the tuned adapter, not the cached base


def test_destructive_run_forgets_past_mild(tmp_path: Path) -> None:
    rng = random.Random(0)
    words = ["zebra", "quartz", "vortex", "jumbo", "pixel", "kayak", "fjord", "glyph", "wombat", "nebula"]
    rows = [{"text": " ".join(rng.choice(words) for _ in range(48))} for _ in range(64)]
    cfg = base_config(tmp_path, learning_rate=5e-3, max_steps=8, batch_size=4, eval_every=4, save_every=8)
    cfg["data"] = {"source": rows, "eval_split": 0.1, "max_length": 64}
    cfg["lora"] = {"r": 16, "alpha": 32}
    cfg["probes"] = SMALL_PROBES
    run = jupyter_ft.finetune(cfg, wait=True)
    assert run.status == "finished", run.run_dir.record.traceback
    records = forgetting_records(run)
    assert records[0]["verdict"] == "none" and records[0]["kl"] == pytest.approx(0.0, abs=1e-6)
    assert records[-1]["kl"] > records[1]["kl"] > 0, [r["kl"] for r in records]  # it grows as training goes on
    assert run.summary["probes"]["forgetting"] == "severe", records[-1]
    assert records[-1]["kl"] >= DEFAULTS.kl_severe or records[-1]["loglik_drop"] >= DEFAULTS.loglik_severe


def test_overfit_run_is_flagged(tmp_path: Path) -> None:
    demo_rows = read_jsonl(Path(jupyter_ft.__file__).parent / "demo" / "support_tickets.jsonl")
    # 4 training rows (refund/shipping only; the held-out tickets are mostly technical, account and billing),
    # 24 epochs, a high learning rate: the adapter memorises them and the held-out loss climbs
    cfg = base_config(tmp_path, learning_rate=3e-3, max_steps=24, batch_size=4, eval_every=4, save_every=24)
    cfg["data"] = {"source": demo_rows[:4], "eval_source": demo_rows[400:416], "max_length": 128}
    cfg["lora"] = {"r": 16, "alpha": 32, "dropout": 0.0}
    cfg["probes"] = {"forgetting": False}
    run = jupyter_ft.finetune(cfg, wait=True)
    assert run.status == "finished", run.run_dir.record.traceback
    records = [r["overfitting"] for r in read_jsonl(run.path / "probes.jsonl") if r["overfitting"]]
    assert run.summary["probes"]["overfitting"] == "overfitting", records
    assert any(r["status"] == "overfitting" and r["since_best"] > 0 for r in records)
    assert run.summary["best_eval_step"] < run.summary["global_step"], records  # it ended past its best
