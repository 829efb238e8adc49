"""%ft_export: the adapter, or the merged (dequantized) model, with a model card; both reload and answer like
the adapter model of the run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

from jupyter_ft import eval as ev
from jupyter_ft.export import ExportError, export_run
from jupyter_ft.magics import FineTuneMagics
from test_evaluation import random_model, train_tiny_run

PROMPTS = ["My card was charged twice this month", "The app crashes when I open settings",
           "Where is my parcel? It is two weeks late", "Please delete my account and all my data"]


@pytest.fixture(scope="module", autouse=True)
def _exact_nf4_path():
    """The NF4 forward as a float32 matmul with the dequantized weights, so the merged model can be compared
    with the adapter model token for token: fp32 compute (a CPU with AMX would pick bf16), and not the fused
    bf16 kernel that bitsandbytes uses for inference on CPUs with AVX512-BF16 (its ~0.4% rounding flips the
    near-ties of a random model's greedy choices; on other CPUs and for batched GPU prefill the fp32 path is
    what runs anyway)."""
    import bitsandbytes.nn.modules as bnb_modules

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JUPYTER_FT_DTYPE", "float32")
        mp.setattr(bnb_modules, "has_avx512bf16", lambda: False)
        yield


@pytest.fixture(scope="module")
def run(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    model_dir = random_model(tiny_model_dir, tmp_path_factory.mktemp("tiny-random-export") / "model")
    r = train_tiny_run(model_dir, tmp_path_factory.mktemp("export-runs"))
    yield r
    ev.release_model()


@pytest.fixture(scope="module")
def adapter_answers(run) -> tuple[list[str], list[str], object]:
    """Greedy answers and logits of the run's adapter model (NF4 base + LoRA), as %ft_eval sees it."""
    import torch

    model, tokenizer, _ = ev.run_model(run.run_dir)
    prompts = [ev.render_chat_prompt(p, tokenizer) for p in PROMPTS]
    answers = ev.generate(model, tokenizer, prompts, max_new_tokens=8)
    batch = tokenizer(prompts[:1], return_tensors="pt", add_special_tokens=False)
    with torch.inference_mode():
        logits = model(**batch).logits.float()
    ev.release_model()
    return prompts, answers, logits


def test_merged_export_reloads_with_the_same_greedy_outputs(run, adapter_answers, tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    prompts, answers, logits = adapter_answers
    ev.evaluate_run(run, n=4, max_new_tokens=4, metrics="exact_match,perplexity")  # an eval table for the card
    out = export_run(run, tmp_path / "merged", merge=True)
    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config  # dequantized: loads without bitsandbytes
    assert (out / "model.safetensors").is_file() and not (out / "adapter_config.json").exists()
    merged = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert ev.generate(merged, tokenizer, prompts, max_new_tokens=8) == answers
    batch = tokenizer(prompts[:1], return_tensors="pt", add_special_tokens=False)
    with torch.inference_mode():
        merged_logits = merged(**batch).logits.float()
    assert torch.allclose(merged_logits, logits, atol=1e-4, rtol=1e-5)

    card = (out / "README.md").read_text()
    assert card.startswith("---\n") and "library_name: transformers" in card and "  - merged" in card
    assert "dequantized first" in card
    assert "| exact_match ↑ |" in card and "| perplexity ↓ |" in card  # the eval table
    assert "```yaml" in card and "learning_rate: 0.01" in card and "max_steps: 12" in card  # the config
    assert json.loads((out / "jupyter_ft_export.json").read_text())["run_id"] == run.id


def test_adapter_export_reloads_onto_a_fresh_base(run, adapter_answers, tmp_path: Path) -> None:
    from peft import PeftModel

    from jupyter_ft import models
    from jupyter_ft.config import FineTuneConfig

    prompts, answers, _ = adapter_answers
    out = export_run(run.id, tmp_path / "adapter", root=run.run_dir.path.parent)
    assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()
    assert (out / "tokenizer.json").is_file()
    card = (out / "README.md").read_text()
    assert "library_name: peft" in card and "PeftModel.from_pretrained" in card

    config = FineTuneConfig.from_dict(run.run_dir.record.config)
    resolved = models.resolve_model(config.model.name)
    base = models.load_base_model(config, resolved, "cpu", models.select_compute_dtype("cpu"))
    model = PeftModel.from_pretrained(base, str(out))
    tokenizer = models.load_tokenizer(resolved)
    assert ev.generate(model, tokenizer, prompts, max_new_tokens=8) == answers


def test_export_refuses_to_overwrite_or_write_into_the_run(run, tmp_path: Path) -> None:
    target = tmp_path / "taken"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(ExportError, match="not empty"):
        export_run(run, target)
    assert (target / "keep.txt").read_text() == "mine"
    # --force replaces an earlier export only: it once wiped the notebook's own folder given as --out
    with pytest.raises(ExportError, match="holds no jupyter-ft export"):
        export_run(run, target, overwrite=True)
    assert (target / "keep.txt").read_text() == "mine"
    earlier = tmp_path / "earlier"
    export_run(run, earlier)
    (earlier / "stale.txt").write_text("from the earlier export")
    export_run(run, earlier, overwrite=True)
    assert not (earlier / "stale.txt").exists() and (earlier / "adapter_config.json").is_file()
    with pytest.raises(ExportError, match="outside the run directory"):
        export_run(run, run.path / "export")
    leftovers = [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert leftovers == []  # temporary export directories are renamed or removed


def test_ft_export_magic(run, tmp_path: Path, capsys) -> None:
    shell = InteractiveShell.instance()
    magics = FineTuneMagics(shell)
    magics.last_run = run
    magics.ft_export(f"--out {tmp_path / 'a'}")
    assert "exported the adapter of" in capsys.readouterr().out
    with pytest.raises(UsageError, match="not empty"):
        magics.ft_export(f"{run.id} --out {tmp_path / 'a'}")
    with pytest.raises(UsageError, match="no run 'nope'"):
        magics.ft_export(f"nope --out {tmp_path / 'b'}")
    with pytest.raises(UsageError):
        magics.ft_export("")  # --out is required
