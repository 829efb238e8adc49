"""The real offline model: GGUF -> safetensors conversion, NF4 loading, a short QLoRA run, base vs tuned eval."""

from __future__ import annotations

from pathlib import Path

import pytest

import jupyter_ft
from jupyter_ft import models

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2():
    return models.resolve_model("smollm2-135m-instruct")


def test_builtin_model_converts_once_and_answers(smollm2) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    assert smollm2.kind == "builtin"
    path = Path(smollm2.path)
    assert (path / "model.safetensors").is_file() and (path / "config.json").is_file()
    assert models.resolve_model("smollm2").path == smollm2.path  # cached, not converted again
    tok = models.load_tokenizer(smollm2)
    model = AutoModelForCausalLM.from_pretrained(smollm2.path, dtype=torch.float32)
    prompt = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                     tokenize=False, add_generation_prompt=True)
    from jupyter_ft.eval import generate

    (answer,) = generate(model, tok, [prompt], max_new_tokens=12)
    assert "Paris" in answer


def test_nf4_is_much_smaller_than_fp32(smollm2) -> None:
    import torch

    cfg4 = jupyter_ft.FineTuneConfig()
    cfg32 = jupyter_ft.FineTuneConfig.from_dict({}, quantization="none")
    nf4 = models.load_base_model(cfg4, smollm2, "cpu", torch.float32).get_memory_footprint()
    fp32 = models.load_base_model(cfg32, smollm2, "cpu", torch.float32).get_memory_footprint()
    assert nf4 < 0.4 * fp32


def test_short_qlora_run_and_base_vs_tuned(tmp_path: Path) -> None:
    from jupyter_ft.eval import compare_base_tuned

    run = jupyter_ft.finetune(
        {"data": {"max_length": 128, "eval_split": 0.02},
         "training": {"max_steps": 6, "batch_size": 8, "eval_every": 6, "save_every": 6, "logging_every": 1},
         "output": {"root": str(tmp_path)}},
        wait=True,
    )
    assert run.status == "finished", run.run_dir.record.traceback
    assert run.summary["global_step"] == 6
    assert run.run_dir.record.model["kind"] == "builtin"
    losses = [h["loss"] for h in run.history if "loss" in h]
    assert sum(losses[-2:]) < sum(losses[:2])  # the answer format is learnt within a few steps
    result = compare_base_tuned(run.id, root=str(tmp_path), n=4, max_new_tokens=6)
    assert len(result.rows) == 4 and set(result.metrics) == {"exact_match"}
    assert (run.path / "samples.jsonl").is_file() and (run.path / "eval.json").is_file()
