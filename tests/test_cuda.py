"""The CUDA path on a real GPU: QLoRA's recipe as jupyter-ft resolves it, out-of-memory, Stop and resume.

``tests/test_gpu.py`` pins the decisions with a faked ``torch.cuda``; these tests run them for real and are
skipped where there is no GPU (CI has none). Run them on a GPU machine with ``pytest -m gpu``; the README
says which machine they last ran on and what they measured.

Models are random: the tiny Llama of ``conftest.py`` and, where sizes matter (memory, out-of-memory), a
Llama with SmolLM2-135M's shapes (30 layers, hidden 576, vocabulary 49152). Weights only need the right
shapes for what is checked here.
"""

from __future__ import annotations

import gc
import json
import math
import time
from pathlib import Path
from typing import Any

import pytest
import torch

import jupyter_ft
from jupyter_ft.store import RunStore, read_jsonl
from jupyter_ft.engine import Run
from jupyter_ft.engine import trainer as engine_trainer
from test_training import make_config  # noqa: E402 - the shared tiny-run config

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run with -m gpu there)")]

MiB = 2**20


def smollm2_shaped(path: Path, tokenizer_dir: Path) -> Path:
    """A random Llama with SmolLM2-135M's shapes and the tiny model's tokenizer (its ids fit the vocabulary)."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    tok.save_pretrained(path)
    config = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                         num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=2048,
                         tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def shaped_model_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return smollm2_shaped(tmp_path_factory.mktemp("smollm2-shaped"), tiny_model_dir)


def capture_trainers(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Keep the Trainer each run builds, to look at the optimizer and model it really trained with."""
    trainers: list[Any] = []
    original = engine_trainer.build_trainer

    def keep(run: Run, *args: Any, **kwargs: Any) -> Any:
        trainer = original(run, *args, **kwargs)
        trainers.append(trainer)
        return trainer

    monkeypatch.setattr(engine_trainer, "build_trainer", keep)
    return trainers


def settle() -> tuple[int, int]:
    """Allocated bytes (torch's allocator) and free bytes on the card (the driver: paged and other memory too)."""
    gc.collect()
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    free, _total = torch.cuda.mem_get_info()
    return torch.cuda.memory_allocated(), free


def wait_for_step(run: Run, step: int, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while (run.progress.get("step") or 0) < step:
        assert run.status in ("queued", "running"), (run.status, run.run_dir.record.error)
        assert time.monotonic() < deadline, f"no step {step} within {timeout}s"
        time.sleep(0.1)


# --------------------------------------------------------------------------- the recipe
def test_qlora_on_cuda_trains_with_nf4_native_dtype_paged_8bit_adamw_and_checkpointing(
        tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import bitsandbytes as bnb

    trainers = capture_trainers(monkeypatch)
    config = make_config(tiny_model_dir, tmp_path / "runs", max_steps=40, eval_every=10, save_every=20,
                         learning_rate=2e-3)
    config["probes"] = {"forgetting": True, "forgetting_items": 8, "kl_prompts": 2, "forgetting_every": 1}
    run = jupyter_ft.finetune(config)
    assert run.wait(600) == "finished", run.run_dir.record.error
    native_bf16 = torch.cuda.get_device_capability()[0] >= 8
    expected = torch.bfloat16 if native_bf16 else torch.float16

    trainer = trainers[0]
    args = trainer.args
    assert (args.bf16, args.fp16) == ((True, False) if native_bf16 else (False, True))
    assert args.optim == "paged_adamw_8bit"
    optimizer = getattr(trainer.optimizer, "optimizer", trainer.optimizer)
    assert isinstance(optimizer, bnb.optim.optimizer.Optimizer2State)
    assert optimizer.is_paged and optimizer.args.optim_bits == 8
    # the 8-bit state really exists (two uint8 moments per LoRA matrix big enough to be quantized)
    states = [s for s in optimizer.state.values() if "state1" in s]
    assert states and {s["state1"].dtype for s in states} <= {torch.uint8, torch.float32}
    assert any(s["state1"].dtype == torch.uint8 for s in states) or all(
        p.numel() < optimizer.args.min_8bit_size for group in optimizer.param_groups for p in group["params"])

    model = trainer.model
    assert model.base_model.model.is_gradient_checkpointing
    nf4 = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert nf4 and all(m.weight.device.type == "cuda" and m.weight.quant_type == "nf4" for m in nf4)
    assert all(m.weight.quant_state.nested for m in nf4)  # double quantization
    assert {m.compute_dtype for m in nf4} == {expected}
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable and all(p.device.type == "cuda" and p.dtype == torch.float32 for p in trainable)

    rec = RunStore(tmp_path / "runs").load(run.id)
    assert rec.environment["cuda"] == torch.cuda.get_device_name(0)
    plan = rec.memory_estimate["plan"]
    assert plan["device"] == "cuda" and plan["optimizer"] == "paged_adamw_8bit" and plan["gradient_checkpointing"]
    assert plan["compute_dtype"] == str(expected).removeprefix("torch.")
    losses = [h["loss"] for h in run.history if "loss" in h]
    assert len(losses) >= 20 and all(math.isfinite(x) for x in losses)
    # it learns: on the tiny model the same config's CPU run (fp32, AdamW) falls 6.25 -> 5.74 in 40 steps
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.25, losses
    summary = rec.summary
    assert summary["peak_gpu_memory"] > 0 and summary["peak_gpu_reserved"] >= summary["peak_gpu_memory"]
    # the progress line carries the peak so far against the card (the dashboard shows it)
    assert 0 < run.progress["gpu_peak"] <= summary["peak_gpu_memory"]
    assert run.progress["gpu_total"] == torch.cuda.get_device_properties(0).total_memory
    probes = read_jsonl(run.run_dir.path / "probes.jsonl")
    forgetting = [p["forgetting"] for p in probes if p.get("forgetting")]
    assert len(forgetting) >= 2 and all(math.isfinite(f["kl"]) and f["kl"] >= 0 for f in forgetting), forgetting
    assert forgetting[0]["kl"] < 1e-3  # at the start the adapter is a no-op (LoRA B is zero)
    del trainers[:], trainer, model, optimizer, states


def test_fp16_as_on_a_t4_trains_with_the_grad_scaler(tiny_model_dir: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A T4 (no native bf16) gets fp16 compute: mixed precision with the grad scaler over fp32 LoRA weights
    (fp16 trainable weights would stop at "Attempting to unscale FP16 gradients")."""
    monkeypatch.setenv("JUPYTER_FT_DTYPE", "float16")
    trainers = capture_trainers(monkeypatch)
    run = jupyter_ft.finetune(make_config(tiny_model_dir, tmp_path / "runs", max_steps=12, learning_rate=2e-3))
    assert run.wait(300) == "finished", run.run_dir.record.error
    trainer = trainers[0]
    assert trainer.args.fp16 and not trainer.args.bf16
    assert trainer.accelerator.scaler is not None  # loss scaling really on
    losses = [h["loss"] for h in run.history if "loss" in h]
    assert len(losses) == 12 and all(math.isfinite(x) for x in losses)
    assert RunStore(tmp_path / "runs").load(run.id).memory_estimate["plan"]["compute_dtype"] == "float16"
    del trainers[:], trainer


def test_stop_frees_the_gpu_and_resume_continues_with_the_paged_optimizer_state(
        shaped_model_dir: Path, tmp_path: Path) -> None:
    """On the 135M-shaped model, whose ~110 MB of NF4 weights a leak would show (the tiny model's would not)."""
    root = tmp_path / "runs"
    torch.zeros(1, device="cuda")  # the CUDA context exists before the baseline is read
    allocated0, free0 = settle()
    run = jupyter_ft.finetune(make_config(shaped_model_dir, root, max_steps=100, eval_every=50, save_every=5))
    wait_for_step(run, 12)
    assert torch.cuda.memory_allocated() > allocated0  # it is on the GPU
    run.stop()
    assert run.wait(120) == "stopped"
    allocated, free = settle()
    assert allocated - allocated0 < 4 * MiB, f"{(allocated - allocated0) / MiB:.1f} MiB still allocated after Stop"
    assert free0 - free < 64 * MiB, f"{(free0 - free) / MiB:.1f} MiB of the card not given back after Stop"
    checkpoint = run.run_dir.last_checkpoint()
    assert checkpoint is not None
    stopped_at = int(checkpoint.name.rsplit("-", 1)[-1])
    assert stopped_at >= 10

    resumed = jupyter_ft.resume(run.id, root=str(root))
    assert resumed.wait(600) == "finished", resumed.run_dir.record.error
    # it went on from the checkpoint (with the paged 8-bit optimizer's saved state), not from step 0
    steps = [h["step"] for h in resumed.metrics() if "loss" in h]
    assert steps == list(range(1, 101)), steps
    assert RunStore(root).load(run.id).summary["global_step"] == 100
    allocated, _free = settle()
    assert allocated - allocated0 < 4 * MiB


# --------------------------------------------------------------------------- memory
def test_memory_estimate_is_close_to_the_measured_peak(shaped_model_dir: Path, tmp_path: Path) -> None:
    """The estimate decides whether a run starts: far below the real peak the run would die minutes later,
    far above it runs that fit would be refused."""
    config = make_config(shaped_model_dir, tmp_path / "runs", max_steps=12, eval_every=6, save_every=100,
                         batch_size=8)
    config["data"]["max_length"] = 256
    run = jupyter_ft.finetune(config)
    assert run.wait(600) == "finished", run.run_dir.record.error
    rec = RunStore(tmp_path / "runs").load(run.id)
    estimate = rec.memory_estimate
    estimated = estimate["weights"] + estimate["lora"] + estimate["optimizer"] + estimate["activations"]
    peak = rec.summary["peak_gpu_memory"]
    print(json.dumps({"estimate": estimate, "estimated_total": estimated, "peak_allocated": peak,
                      "peak_reserved": rec.summary["peak_gpu_reserved"], "ratio": estimated / peak}, indent=1))
    # the estimate says it is good to about 30%, which the refusal margin (1.3x what is free) allows for
    assert 0.8 * peak <= estimated <= 1.3 * peak, f"estimate {estimated / MiB:.0f} MiB, peak {peak / MiB:.0f} MiB"


def test_real_out_of_memory_fails_the_run_with_advice_frees_the_gpu_and_the_next_run_trains(
        shaped_model_dir: Path, tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A card too small for the batch (a per-process cap of 1.5 GiB, which the pre-flight estimate cannot
    see): the run fails with the advice, the memory comes back and the same process trains the next run."""
    monkeypatch.setenv("JUPYTER_FT_IGNORE_MEMORY_ESTIMATE", "1")
    root = tmp_path / "runs"
    torch.zeros(1, device="cuda")
    allocated0, _free0 = settle()
    _free, total = torch.cuda.mem_get_info()
    torch.cuda.set_per_process_memory_fraction(1.5 * 2**30 / total)
    try:
        config = make_config(shaped_model_dir, root, max_steps=4, batch_size=64, eval_every=100, save_every=100)
        config["data"]["max_length"] = 512
        config["training"]["gradient_checkpointing"] = False
        run = jupyter_ft.finetune(config)
        assert run.wait(600) == "failed"
        error = run.run_dir.record.error
        assert error.startswith("Out of memory with training.batch_size=64 and data.max_length=512"), error
        assert "training.gradient_checkpointing: true" in error and "OutOfMemoryError" in error
        assert "OutOfMemoryError" in (RunStore(root).load(run.id).traceback or "")
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
    allocated, _free = settle()
    assert allocated - allocated0 < 4 * MiB, f"{(allocated - allocated0) / MiB:.1f} MiB still allocated after the OOM"
    run2 = jupyter_ft.finetune(make_config(tiny_model_dir, root, max_steps=4))
    assert run2.wait(300) == "finished", run2.run_dir.record.error


def test_a_run_that_cannot_fit_the_card_fails_before_loading_weights(tiny_model_dir: Path, tmp_path: Path) -> None:
    """A 70B-shaped config with a long batch against the card's real free memory (mem_get_info): refused
    with advice before any weight is read (the directory has none)."""
    from transformers import AutoTokenizer, LlamaConfig

    model_dir = tmp_path / "llama-70b-shaped"
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(model_dir)
    LlamaConfig(vocab_size=128256, hidden_size=8192, intermediate_size=28672, num_hidden_layers=80,
                num_attention_heads=64, num_key_value_heads=8).save_pretrained(model_dir)
    config = make_config(model_dir, tmp_path / "runs", batch_size=256)
    config["data"]["max_length"] = 4096
    run = jupyter_ft.finetune(config)
    assert run.wait(300) == "failed"
    rec = run.run_dir.record
    assert rec.error.startswith("InsufficientMemory: Not enough GPU memory"), rec.error
    assert "training.batch_size" in rec.error and "JUPYTER_FT_IGNORE_MEMORY_ESTIMATE" in rec.error
    assert rec.memory_estimate["available"] <= torch.cuda.mem_get_info()[1]


# --------------------------------------------------------------------------- %ft_eval's engine
def test_base_and_tuned_answers_on_cuda_share_one_model(tiny_model_dir: Path, tmp_path: Path) -> None:
    from jupyter_ft import eval as evaluation

    root = tmp_path / "runs"
    run = jupyter_ft.finetune(make_config(tiny_model_dir, root, max_steps=30, learning_rate=3e-3))
    assert run.wait(600) == "finished", run.run_dir.record.error
    metrics = ["exact_match", "perplexity"]
    first = evaluation.evaluate_run(run.id, root=str(root), n=8, max_new_tokens=8, metrics=metrics)
    second = evaluation.evaluate_run(run.id, root=str(root), n=8, max_new_tokens=8, metrics=metrics)
    model, _tok, _cfg = evaluation.run_model(run.run_dir)
    assert next(p for p in model.parameters()).device.type == "cuda"
    assert [r["base"] for r in first.rows] == [r["base"] for r in second.rows]  # toggling restores the base
    assert [r["tuned"] for r in first.rows] == [r["tuned"] for r in second.rows]
    assert set(first.metrics["exact_match"]) == {"base", "tuned"}
    # the adapter is on for the tuned side and off for the base side: trained on this task, tuned is better
    ppl = first.metrics["perplexity"]
    assert ppl["tuned"] < ppl["base"], ppl
    assert first.metrics["perplexity"] == second.metrics["perplexity"]
    assert evaluation.release_model()
    allocated, _free = settle()
    assert allocated < 64 * MiB


# --------------------------------------------------------------------------- compute: on a real GPU
def _launched(tiny_model_dir: Path, tmp_path: Path, compute: dict[str, Any], **training: Any) -> Path:
    from jupyter_ft.config import FineTuneConfig
    from tiny_runs import tiny_run_config

    data = tiny_run_config(tiny_model_dir, tmp_path / "runs", probes={"forgetting": False}, **training)
    data["compute"] = compute
    return RunStore(tmp_path / "runs").create(FineTuneConfig.from_dict(data).to_dict(), "gpu").path


def test_a_process_run_holds_no_gpu_memory_in_the_kernel(tiny_model_dir: Path, tmp_path: Path) -> None:
    torch.cuda.empty_cache()
    before = torch.cuda.memory_allocated()
    run = jupyter_ft.finetune(make_config(tiny_model_dir, tmp_path / "runs").replace(
        **{"compute.launcher": "process"}))
    assert run.wait(600) == "finished", run.error
    assert torch.cuda.memory_allocated() == before  # trained in another process; it gave everything back there
    assert run.summary["peak_gpu_memory"] > 0  # and it did train on the GPU


@pytest.mark.parametrize("compute", [
    {"launcher": "torchrun", "processes": 1, "strategy": "deepspeed", "zero_stage": 2},
    {"launcher": "torchrun", "processes": 1, "strategy": "deepspeed", "zero_stage": 3, "offload": "cpu"},
    {"launcher": "torchrun", "processes": 1, "strategy": "fsdp"},
], ids=["zero2", "zero3-offload", "fsdp-4bit"])
def test_sharded_strategies_train_stop_and_resume_on_one_gpu(tiny_model_dir: Path, tmp_path: Path,
                                                             compute: dict[str, Any]) -> None:
    import subprocess
    import sys

    if compute["strategy"] == "deepspeed":
        pytest.importorskip("deepspeed")
    run_dir = _launched(tiny_model_dir, tmp_path, compute, max_steps=12, save_every=100)
    proc = subprocess.Popen([sys.executable, "-m", "jupyter_ft.launch", str(run_dir)])
    store = RunStore(tmp_path / "runs")
    deadline = time.monotonic() + 600
    while (store.open(run_dir.name).progress() or {}).get("step", 0) < 3 and time.monotonic() < deadline:
        time.sleep(0.2)
    store.open(run_dir.name).request_stop("test")
    proc.wait(600)
    assert store.load(run_dir.name).status == "stopped"
    run = jupyter_ft.resume(run_dir.name, root=tmp_path / "runs")
    assert run.wait(600) == "finished", run.error
    losses = [m["eval_loss"] for m in read_jsonl(run_dir / "metrics.jsonl") if "eval_loss" in m]
    assert losses[-1] < losses[0]
    steps = [m["step"] for m in read_jsonl(run_dir / "metrics.jsonl") if "loss" in m]
    assert steps == sorted(set(steps)) and steps[-1] == 12
