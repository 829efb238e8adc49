"""Adapter choices beyond plain LoRA (peft's own options): DoRA and rsLoRA train, record what they are in the
adapter they save, and resume from a checkpoint with every step once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import jupyter_ft
from jupyter_ft.config import ConfigError, FineTuneConfig
from tiny_runs import tiny_run_config


@pytest.mark.parametrize("option", ["use_dora", "use_rslora"])
def test_a_peft_variant_trains_saves_and_resumes(tiny_model_dir: Path, tmp_path: Path, option: str) -> None:
    cfg = tiny_run_config(tiny_model_dir, tmp_path / "runs", probes={"forgetting": False}, max_steps=8,
                          eval_every=1000, save_every=1000)
    cfg["lora"][option] = True
    run = jupyter_ft.finetune(cfg)
    run.subscribe(lambda e: run.stop() if e.kind == "progress" and e.data["step"] >= 3 else None)
    assert run.wait(180) == "stopped", run.run_dir.record.traceback
    stopped_at = run.summary["global_step"]
    resumed = jupyter_ft.resume(run.id, root=str(tmp_path / "runs"), wait=True)
    assert resumed.status == "finished", resumed.run_dir.record.traceback
    steps = [h["step"] for h in resumed.metrics() if "loss" in h]
    assert steps == list(range(1, 9)) and stopped_at < 8
    saved = json.loads((resumed.path / "adapter" / "adapter_config.json").read_text())
    assert saved[option] is True and saved["use_dora" if option == "use_rslora" else "use_rslora"] is False
    if option == "use_dora":  # the magnitude vectors are trained and saved beside A and B
        from safetensors.torch import load_file

        names = load_file(str(resumed.path / "adapter" / "adapter_model.safetensors"))
        assert any("lora_magnitude_vector" in n for n in names)


def test_variant_flags_are_booleans() -> None:
    with pytest.raises(ConfigError) as info:
        FineTuneConfig.from_dict({"lora": {"use_dora": "yes", "use_rslora": 1}})
    assert {p.path for p in info.value.problems} == {"lora.use_dora", "lora.use_rslora"}
