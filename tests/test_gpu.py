"""The CUDA path without a GPU: ``torch.cuda`` is monkeypatched (is_available, get_device_capability,
is_bf16_supported, mem_get_info) to look like a free-tier T4 or an A100, and the tests check what jupyter-ft
resolves from that: compute dtype, NF4 settings, optimizer, gradient checkpointing, the TrainingArguments
it builds, the memory estimate against the card's free memory, and out-of-memory handling.

No GPU machine was available to this project's CI, so the real CUDA run of examples/03_colab_gpu.ipynb's
config is not exercised here; these tests pin the decisions that config relies on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

# Imported before any test fakes CUDA: bitsandbytes picks its CUDA backend at import time when
# torch.cuda.is_available() says True, and that needs a real CUDA build.
import bitsandbytes  # noqa: F401
import peft  # noqa: F401
from transformers import Trainer, TrainingArguments  # noqa: F401

import jupyter_ft
from jupyter_ft import models
from jupyter_ft.config import FineTuneConfig
from jupyter_ft.store import RunStore
from jupyter_ft.engine import Run
from jupyter_ft.engine import trainer as engine_trainer
from jupyter_ft.models import memory_plan
from test_training import make_config  # noqa: E402 - the shared tiny-run config

GiB = 2**30


def fake_cuda(monkeypatch: pytest.MonkeyPatch, capability: tuple[int, int], free: int, total: int,
              bf16_supported: bool = True) -> None:
    monkeypatch.delenv("JUPYTER_FT_DTYPE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: bf16_supported)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (free, total))


@pytest.fixture()
def t4(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Colab free-tier T4: compute capability 7.5, 15 GiB. torch answers is_bf16_supported() True there
    (emulated bf16), which is exactly the trap: bf16 must not be chosen."""
    fake_cuda(monkeypatch, (7, 5), free=14 * GiB, total=15 * GiB, bf16_supported=True)


@pytest.fixture()
def a100(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_cuda(monkeypatch, (8, 0), free=39 * GiB, total=40 * GiB)


# --------------------------------------------------------------------------- resolved choices
def test_t4_gets_fp16_nf4_double_quant_paged_8bit_adamw_and_checkpointing(t4) -> None:
    config = FineTuneConfig()
    plan = models.plan_training(config)
    assert plan.device == "cuda" and models.select_device() == "cuda"
    assert plan.compute_dtype == "float16" and plan.fp16 and not plan.bf16
    assert plan.optimizer == "paged_adamw_8bit" and plan.gradient_checkpointing is True
    q = models.quantization_config(config, models.select_compute_dtype("cuda"))
    assert q.load_in_4bit and q.bnb_4bit_quant_type == "nf4" and q.bnb_4bit_use_double_quant
    assert q.bnb_4bit_compute_dtype == torch.float16


def test_ampere_gets_bf16(a100) -> None:
    plan = models.plan_training(FineTuneConfig())
    assert plan.compute_dtype == "bfloat16" and plan.bf16 and not plan.fp16
    assert models.quantization_config(FineTuneConfig(), torch.bfloat16).bnb_4bit_compute_dtype == torch.bfloat16


def test_ampere_without_bf16_support_falls_back_to_fp16(monkeypatch) -> None:
    fake_cuda(monkeypatch, (8, 6), free=20 * GiB, total=24 * GiB, bf16_supported=False)
    assert models.plan_training(FineTuneConfig()).compute_dtype == "float16"


def test_cpu_defaults_are_unchanged(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    plan = models.plan_training(FineTuneConfig())
    assert plan.device == "cpu" and plan.optimizer == "adamw_torch" and plan.gradient_checkpointing is False
    assert not plan.bf16 and not plan.fp16  # the model is loaded in its dtype; no AMP on a CPU


def test_explicit_choices_win_over_auto(t4) -> None:
    config = FineTuneConfig.from_dict({"training": {"optimizer": "adamw_torch", "gradient_checkpointing": False}})
    plan = models.plan_training(config)
    assert plan.optimizer == "adamw_torch" and plan.gradient_checkpointing is False
    monkey_cpu = FineTuneConfig.from_dict({"training": {"gradient_checkpointing": True}})
    assert models.plan_training(monkey_cpu, "cpu").gradient_checkpointing is True


def test_dtype_override_env(t4, monkeypatch) -> None:
    monkeypatch.setenv("JUPYTER_FT_DTYPE", "float32")
    assert models.plan_training(FineTuneConfig()).compute_dtype == "float32"


# --------------------------------------------------------------------------- the TrainingArguments
class _Captured(Exception):
    pass


def captured_training_args(monkeypatch, tmp_path: Path, config: FineTuneConfig, device: str,
                           dtype: torch.dtype) -> dict[str, Any]:
    """The keyword arguments ``engine.trainer.training_arguments`` hands to ``TrainingArguments`` (the real class would try to
    initialise CUDA, which this machine does not have)."""
    import transformers

    seen: dict[str, Any] = {}

    class Record:
        __dataclass_fields__ = TrainingArguments.__dataclass_fields__  # what the code inspects for field names

        def __init__(self, **kwargs: Any) -> None:
            seen.update(kwargs)
            raise _Captured()

    monkeypatch.setattr(transformers, "TrainingArguments", Record)
    rd = RunStore(tmp_path / "runs").create(config.to_dict(), "args")
    run = Run(config, rd)
    run.plan = models.TrainingPlan(device, str(dtype).removeprefix("torch."), models.resolve_optimizer(config, device),
                                   models.resolve_gradient_checkpointing(config, device))
    with pytest.raises(_Captured):
        engine_trainer.training_arguments(run, has_eval=False)
    return seen


def test_training_arguments_on_a_t4(t4, monkeypatch, tmp_path: Path) -> None:
    from transformers.training_args import OptimizerNames

    args = captured_training_args(monkeypatch, tmp_path, FineTuneConfig(), "cuda", torch.float16)
    assert args["fp16"] is True and args["bf16"] is False and args["use_cpu"] is False
    assert args["optim"] == "paged_adamw_8bit" and OptimizerNames(args["optim"])  # a name transformers knows
    ckpt = "activation_checkpointing" if "activation_checkpointing" in TrainingArguments.__dataclass_fields__ \
        else "gradient_checkpointing"  # transformers 5.x renamed it
    assert args[ckpt] is True and args[f"{ckpt}_kwargs"] == {"use_reentrant": False}


def test_training_arguments_on_ampere_and_on_cpu(a100, monkeypatch, tmp_path: Path) -> None:
    args = captured_training_args(monkeypatch, tmp_path, FineTuneConfig(), "cuda", torch.bfloat16)
    assert args["bf16"] is True and args["fp16"] is False
    cpu = captured_training_args(monkeypatch, tmp_path, FineTuneConfig(), "cpu", torch.float32)
    assert cpu["use_cpu"] is True and cpu["optim"] == "adamw_torch"
    assert cpu.get("activation_checkpointing", cpu.get("gradient_checkpointing")) is False
    assert cpu["bf16"] is False and cpu["fp16"] is False


# --------------------------------------------------------------------------- memory estimate
def test_estimate_knows_the_cards_free_memory(t4, tiny_model_dir: Path) -> None:
    config = FineTuneConfig.from_dict({"model": {"name": str(tiny_model_dir)}})
    est = models.estimate_memory(config, device="cuda")
    assert est.device == "cuda" and est.available == 14 * GiB and est.device_total == 15 * GiB
    assert est.plan["optimizer"] == "paged_adamw_8bit" and est.plan["gradient_checkpointing"] is True
    assert est.verdict == "fits" and "free of 15.00 GiB" in str(est)
    cpu_plan = FineTuneConfig.from_dict({"model": {"name": str(tiny_model_dir)},
                                         "training": {"optimizer": "adamw_torch", "gradient_checkpointing": False}})
    full = models.estimate_memory(cpu_plan, device="cuda")
    assert est.optimizer < full.optimizer  # 8-bit optimizer state
    assert est.activations < full.activations  # checkpointing keeps one activation per layer


def test_estimate_verdicts_and_advice(monkeypatch, tiny_model_dir: Path) -> None:
    config = FineTuneConfig.from_dict({"model": {"name": str(tiny_model_dir)},
                                       "training": {"batch_size": 16}, "data": {"max_length": 1024}})
    fake_cuda(monkeypatch, (7, 5), free=100 * GiB, total=100 * GiB)
    need = models.estimate_memory(config, device="cuda").total
    for free, verdict in ((need * 2, "fits"), (int(need * 0.95), "tight"), (need // 2, "too_big")):
        fake_cuda(monkeypatch, (7, 5), free=free, total=100 * GiB)
        est = models.estimate_memory(config, device="cuda")
        assert est.verdict == verdict, (free, need)
    advice = est.advice(config)
    assert "training.batch_size (now 16" in advice and "data.max_length (now 1024)" in advice
    assert "gradient_checkpointing" not in advice  # already on for CUDA


def test_run_that_clearly_cannot_fit_fails_before_loading_with_advice(monkeypatch, tiny_model_dir: Path,
                                                                     tmp_path: Path) -> None:
    fake_cuda(monkeypatch, (7, 5), free=1024, total=15 * GiB)  # 1 KiB free
    loaded = []
    monkeypatch.setattr(models, "load_base_model", lambda *a, **k: loaded.append(a))
    run = jupyter_ft.finetune(make_config(tiny_model_dir, tmp_path / "runs"))
    assert run.wait(120) == "failed"
    assert run.error.startswith("InsufficientMemory: Not enough GPU memory")
    assert "lower training.batch_size (now 4" in run.error and "JUPYTER_FT_IGNORE_MEMORY_ESTIMATE" in run.error
    assert not loaded and run.run_dir.record.memory_estimate["verdict"] == "too_big"


# --------------------------------------------------------------------------- out of memory
def test_cuda_oom_during_evaluation_fails_the_run_with_advice_and_the_kernel_lives_on(tiny_model_dir: Path,
                                                                                      tmp_path: Path,
                                                                                      monkeypatch) -> None:
    original = Trainer.prediction_step

    def oom(self, *args: Any, **kwargs: Any) -> Any:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.50 GiB (GPU 0; 14.75 GiB total)")

    monkeypatch.setattr(Trainer, "prediction_step", oom)
    run = jupyter_ft.finetune(make_config(tiny_model_dir, tmp_path / "runs", eval_every=2, save_every=1))
    assert run.wait(120) == "failed"
    assert run.error.startswith("Out of memory with training.batch_size=4 and data.max_length=128.")
    assert "shorten data.max_length" in run.error and "training.gradient_checkpointing: true" in run.error
    assert "OutOfMemoryError: CUDA out of memory" in run.error
    record = RunStore(tmp_path / "runs").load(run.id)
    assert record.status == "failed" and "OutOfMemoryError" in record.traceback
    assert run.run_dir.last_checkpoint() is not None  # the steps trained before the OOM are kept
    monkeypatch.setattr(Trainer, "prediction_step", original)
    again = jupyter_ft.finetune(make_config(tiny_model_dir, tmp_path / "runs", max_steps=2))
    assert again.wait(120) == "finished"  # the training thread (and the kernel) outlived the OOM


def test_oom_message_when_checkpointing_is_already_on(t4) -> None:
    from jupyter_ft.engine.recipe import explain_failure

    message = explain_failure(torch.cuda.OutOfMemoryError("CUDA out of memory."), FineTuneConfig())
    assert "already on" in message and "smaller lora.r" in message and "batch_size=8" in message


# --------------------------------------------------------------------------- a small CPU machine (Binder)
def test_small_cpu_container_turns_auto_checkpointing_on_and_trains(monkeypatch, tiny_model_dir: Path,
                                                                   tmp_path: Path) -> None:
    """With little memory left (a 2 GB Binder pod), ``auto`` checkpointing comes on for a CPU run too, and the
    run trains with it (non-reentrant checkpointing through the NF4 layers)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(memory_plan, "available_memory", lambda device: 2 * 2**20)  # 2 MiB
    run = jupyter_ft.finetune(make_config(tiny_model_dir, tmp_path / "runs", max_steps=3, eval_every=3))
    assert run.wait(180) == "finished", run.run_dir.record.traceback
    plan = run.run_dir.record.memory_estimate["plan"]
    assert plan["gradient_checkpointing"] is True and plan["reason"] == "low memory" and plan["device"] == "cpu"
    assert any("gradient checkpointing is on" in w for w in run.run_dir.record.warnings)
    assert run.summary["global_step"] == 3
    # plenty of memory: the CPU default stays off
    monkeypatch.setattr(memory_plan, "available_memory", lambda device: 64 * 2**30)
    est = models.estimate_memory(FineTuneConfig.from_dict({"model": {"name": str(tiny_model_dir)}}), device="cpu")
    assert est.plan["gradient_checkpointing"] is False and "reason" not in est.plan


def test_a_cpu_run_past_a_containers_hard_limit_fails_before_loading(monkeypatch, tiny_model_dir: Path,
                                                                      tmp_path: Path) -> None:
    """Past a cgroup limit the kernel is killed with everything the notebook held: a CPU run that clearly
    cannot fit fails first, with what to lower. Host RAM without a limit only warns (it swaps, it is slow)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(memory_plan, "cgroup_memory_left", lambda: 2 * 2**20)  # 2 MiB left in the pod
    loaded = []
    monkeypatch.setattr(models, "load_base_model", lambda *a, **k: loaded.append(a))
    run = jupyter_ft.finetune(make_config(tiny_model_dir, tmp_path / "runs"))
    assert run.wait(120) == "failed"
    assert run.error.startswith("InsufficientMemory: Not enough memory in this container (past its limit the "
                                "kernel is killed, not slowed)"), run.error
    assert "lower training.batch_size (now 4" in run.error and not loaded
    estimate = run.run_dir.record.memory_estimate
    assert estimate["hard_limit"] is True and estimate["verdict"] == "too_big"
    # the same shortfall without a container limit: a warning, and it trains
    monkeypatch.setattr(memory_plan, "cgroup_memory_left", lambda: None)
    monkeypatch.setattr(memory_plan, "available_memory", lambda device: 2 * 2**20)
    est = models.estimate_memory(FineTuneConfig.from_dict({"model": {"name": str(tiny_model_dir)}}), device="cpu")
    assert est.verdict == "too_big" and est.hard_limit is False


def test_cgroup_limit_caps_available_memory(monkeypatch, tmp_path: Path) -> None:
    """The limit of the process's own cgroup (from /proc/self/cgroup) and its ancestors, v2 and v1: without
    a cgroup namespace (docker without cgroupns, systemd-run, a nested limit) the root files show no limit."""
    sysfs, proc = tmp_path / "sys", tmp_path / "cgroup"

    def write(rel: str, name: str, value: str) -> None:
        (sysfs / rel).mkdir(parents=True, exist_ok=True)
        (sysfs / rel / name).write_text(value + "\n")

    # v2, a pod two levels down: the pod's 2 GiB, 0.5 used, is what is left; the root has no limit
    write("", "memory.max", "max")
    write("", "memory.current", str(40 * GiB))
    write("kubepods/pod1", "memory.max", str(2 * GiB))
    write("kubepods/pod1", "memory.current", str(GiB // 2))
    write("kubepods/pod1/jupyter", "memory.max", "max")
    write("kubepods/pod1/jupyter", "memory.current", str(GiB // 2))
    proc.write_text("0::/kubepods/pod1/jupyter\n")
    args = (str(proc), str(sysfs))
    assert models.cgroup_memory_left(*args) == 2 * GiB - GiB // 2
    # the tightest of several limits wins
    write("kubepods", "memory.max", str(GiB))
    write("kubepods", "memory.current", str(GiB // 4 * 3))
    assert models.cgroup_memory_left(*args) == GiB // 4
    # v1 (memory controller line), nested group
    v1 = tmp_path / "v1"
    (v1 / "memory" / "jft").mkdir(parents=True)
    (v1 / "memory" / "memory.limit_in_bytes").write_text(str(1 << 62) + "\n")  # "unlimited" in v1
    (v1 / "memory" / "memory.usage_in_bytes").write_text(str(9 * GiB) + "\n")
    (v1 / "memory" / "jft" / "memory.limit_in_bytes").write_text(str(2 * GiB) + "\n")
    (v1 / "memory" / "jft" / "memory.usage_in_bytes").write_text(str(GiB) + "\n")
    proc.write_text("9:pids:/\n4:memory:/jft\n1:name=systemd:/\n")
    assert models.cgroup_memory_left(str(proc), str(v1)) == GiB
    # no limit anywhere, or no cgroup files at all
    (v1 / "memory" / "jft" / "memory.limit_in_bytes").write_text(str(1 << 62) + "\n")
    assert models.cgroup_memory_left(str(proc), str(v1)) is None
    assert models.cgroup_memory_left(str(tmp_path / "absent"), str(tmp_path / "nothing")) is None
    # available_memory takes it into account
    monkeypatch.setattr(memory_plan, "cgroup_memory_left", lambda: GiB // 4)
    assert models.available_memory("cpu") <= GiB // 4


def test_a_tight_container_splits_batches_into_accumulated_micro_batches(monkeypatch, tiny_model_dir: Path,
                                                                         tmp_path: Path) -> None:
    """Under a hard limit where checkpointing alone does not fit (the quickstart in Binder's 2 GB), ``auto``
    also runs each batch as accumulated micro-batches: the same examples per optimizer step, so the same
    number of steps and schedule; the Trainer gets the smaller batch and the larger accumulation."""

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    base = FineTuneConfig.from_dict(make_config(tiny_model_dir, tmp_path / "runs"))
    resolved = models.resolve_model(str(tiny_model_dir))
    whole = models.estimate_memory(base.replace(**{"training.gradient_checkpointing": True}), resolved, "cpu")
    half = models.estimate_memory(base.replace(**{"training.gradient_checkpointing": True,
                                                  "training.batch_size": 2}), resolved, "cpu")
    room = int(half.total / models.MemoryEstimate.TIGHT) + 1  # the micro-batches fit, whole batches do not
    assert whole.total > models.MemoryEstimate.TIGHT * room
    monkeypatch.setattr(memory_plan, "cgroup_memory_left", lambda: room)
    plan = models.estimate_memory(base, resolved, "cpu").plan
    assert (plan["micro_batch_size"], plan["grad_accum_factor"], plan["gradient_checkpointing"]) == (2, 2, True)

    trainers: list = []
    original = engine_trainer.build_trainer
    monkeypatch.setattr(engine_trainer, "build_trainer",
                        lambda run, *a, **k: trainers.append(original(run, *a, **k)) or trainers[-1])
    run = jupyter_ft.finetune(make_config(tiny_model_dir, tmp_path / "runs", max_steps=3, eval_every=3))
    assert run.wait(180) == "finished", run.run_dir.record.traceback
    args = trainers[0].args
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps) == (2, 2)
    assert run.summary["global_step"] == 3
    assert any("Each batch of 4 also runs as 2 micro-batches of 2" in w for w in run.run_dir.record.warnings)
    # without a hard limit (host RAM that can swap) batches are never split
    monkeypatch.setattr(memory_plan, "cgroup_memory_left", lambda: None)
    monkeypatch.setattr(memory_plan, "available_memory", lambda device: room)
    assert "micro_batch_size" not in models.estimate_memory(base, resolved, "cpu").plan
