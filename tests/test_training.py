"""Runs in the background thread on the tiny model: finish, stop, fail, queue, resume, and the store after each."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

import jupyter_ft
from jupyter_ft.store import RunStore, read_jsonl
from jupyter_ft.runtime.registry import active_run
from tiny_runs import tiny_run_config


def make_config(model_dir: Path, root: Path, **training) -> dict:
    return tiny_run_config(model_dir, root, **training)


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    return tmp_path / "runs"



def test_full_run_in_background_thread(tiny_model_dir: Path, root: Path) -> None:
    events = []
    run = jupyter_ft.finetune(make_config(tiny_model_dir, root))
    assert run.status in ("queued", "running")  # returned before training ended
    run.subscribe(events.append)
    assert run.wait(120) == "finished", run.run_dir.record.traceback

    rec = RunStore(root).load(run.id)
    assert rec.status == "finished" and rec.started_at and rec.finished_at and rec.error is None
    assert rec.config["training"]["max_steps"] == 6
    assert rec.environment["versions"]["torch"] and rec.model["kind"] == "local"
    assert rec.dataset["format"] == "alpaca" and rec.dataset["rows"] == 480 and len(rec.dataset["fingerprint"]) == 16
    assert "gpu_peak" not in run.progress and "peak_gpu_memory" not in rec.summary  # CUDA-only statistics
    assert rec.summary["global_step"] == 6 and rec.summary["best_eval_loss"] is not None

    train_logs = [h for h in run.history if "loss" in h]
    eval_logs = [h for h in run.history if "eval_loss" in h]
    assert [h["step"] for h in train_logs] == [1, 2, 3, 4, 5, 6]
    assert [h["step"] for h in eval_logs] == [3, 6]
    assert all(h["tokens_per_s"] > 0 and "learning_rate" in h for h in train_logs[1:])
    assert read_jsonl(run.path / "metrics.jsonl") == json.loads(json.dumps(run.history))

    assert (run.path / "adapter" / "adapter_config.json").is_file()
    assert (run.path / "adapter" / "adapter_model.safetensors").is_file()
    assert run.run_dir.last_checkpoint().name == "checkpoint-6"
    assert (run.path / "dataset" / "train").is_dir() and (run.path / "dataset" / "eval_raw").is_dir()

    kinds = [e.kind for e in events]
    assert {"log", "eval", "progress", "checkpoint", "status"} <= set(kinds)
    statuses = [e.data["status"] for e in events if e.kind == "status"]
    assert statuses[-1] == "finished"
    assert run.model is None and active_run() is None  # memory released after the run


def test_main_thread_is_free_while_training(tiny_model_dir: Path, root: Path) -> None:
    run = jupyter_ft.finetune(make_config(tiny_model_dir, root, max_steps=30, eval_every=100, save_every=100))
    ticks = 0
    while not run.done:
        ticks += 1  # the main thread keeps running Python while the trainer works
        time.sleep(0.01)
    assert run.status == "finished"
    assert ticks > 10


def test_stop_mid_run_saves_checkpoint_and_adapter(tiny_model_dir: Path, root: Path) -> None:
    cfg = make_config(tiny_model_dir, root, max_steps=500, eval_every=1000, save_every=1000)
    run = jupyter_ft.finetune(cfg)
    stop_at = {}

    def on_event(event) -> None:
        if event.kind == "progress" and event.data["step"] >= 4 and not stop_at:
            stop_at["step"] = event.data["step"]
            run.stop()

    run.subscribe(on_event)
    assert run.wait(120) == "stopped"
    final = run.summary["global_step"]
    assert stop_at["step"] <= final <= stop_at["step"] + 1  # honoured within one optimizer step
    assert run.run_dir.last_checkpoint().name == f"checkpoint-{final}"
    assert (run.path / "adapter" / "adapter_config.json").is_file()
    assert RunStore(root).load(run.id).status == "stopped"


def test_resume_continues_from_last_checkpoint(tiny_model_dir: Path, root: Path) -> None:
    cfg = make_config(tiny_model_dir, root, max_steps=10, eval_every=1000, save_every=1000)
    run = jupyter_ft.finetune(cfg)
    run.subscribe(lambda e: run.stop() if e.kind == "progress" and e.data["step"] >= 4 else None)
    assert run.wait(120) == "stopped"
    stopped_at = run.summary["global_step"]
    assert stopped_at < 10

    resumed = jupyter_ft.resume(run.id, root=str(root), wait=True)
    assert resumed.status == "finished", resumed.run_dir.record.traceback
    assert resumed.id == run.id and resumed.summary["global_step"] == 10
    steps = [h["step"] for h in resumed.metrics() if "loss" in h]
    assert steps == list(range(1, stopped_at + 1)) + list(range(stopped_at + 1, 11))


def test_failure_inside_training_is_recorded_and_worker_survives(tiny_model_dir: Path, root: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import Trainer

    original = Trainer.training_step
    calls = {"n": 0}

    def broken(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("boom in step 3")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "training_step", broken)
    run = jupyter_ft.finetune(make_config(tiny_model_dir, root))
    assert run.wait(120) == "failed"
    rec = RunStore(root).load(run.id)
    assert rec.status == "failed" and rec.error == "RuntimeError: boom in step 3"
    assert "Traceback" in rec.traceback and "boom in step 3" in rec.traceback
    assert [h["step"] for h in read_jsonl(run.path / "metrics.jsonl") if "loss" in h] == [1, 2]

    monkeypatch.setattr(Trainer, "training_step", original)
    again = jupyter_ft.finetune(make_config(tiny_model_dir, root, max_steps=2))
    assert again.wait(120) == "finished"  # the training thread outlived the failure


def test_out_of_memory_gets_actionable_message(tiny_model_dir: Path, root: Path, monkeypatch) -> None:
    import torch
    from transformers import Trainer

    def oom(self, *args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(Trainer, "training_step", oom)
    run = jupyter_ft.finetune(make_config(tiny_model_dir, root))
    assert run.wait(120) == "failed"
    assert run.error.startswith("Out of memory with training.batch_size=4 and data.max_length=128.")
    assert "gradient_checkpointing" in run.error


def test_bad_data_fails_the_run_but_keeps_its_record(tiny_model_dir: Path, root: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "a", "output": "b"}\n{"instruction": "c", "output": 5}\n')
    cfg = make_config(tiny_model_dir, root)
    cfg["data"]["source"] = str(bad)
    run = jupyter_ft.finetune(cfg)
    assert run.wait(60) == "failed"
    assert "row 2, column 'output'" in run.error
    assert RunStore(root).load(run.id).status == "failed"


def test_second_run_is_queued_not_concurrent(tiny_model_dir: Path, root: Path) -> None:
    first = jupyter_ft.finetune(make_config(tiny_model_dir, root, max_steps=12))
    second = jupyter_ft.finetune(make_config(tiny_model_dir, root, max_steps=2))
    seen_running_together = threading.Event()

    def watch(event) -> None:
        if event.kind == "progress" and second.status == "running":
            seen_running_together.set()

    first.subscribe(watch)
    assert second.status == "queued"
    assert first.wait(120) == "finished" and second.wait(120) == "finished"
    assert not seen_running_together.is_set()
    r1, r2 = RunStore(root).load(first.id), RunStore(root).load(second.id)
    assert r2.started_at >= r1.finished_at


def test_stop_while_queued_never_trains(tiny_model_dir: Path, root: Path) -> None:
    first = jupyter_ft.finetune(make_config(tiny_model_dir, root, max_steps=6))
    second = jupyter_ft.finetune(make_config(tiny_model_dir, root, max_steps=6))
    second.stop()
    assert first.wait(120) == "finished"
    assert second.wait(60) == "stopped"
    assert second.history == [] and not (second.path / "metrics.jsonl").exists()


def test_handler_errors_do_not_break_training(tiny_model_dir: Path, root: Path) -> None:
    run = jupyter_ft.finetune(make_config(tiny_model_dir, root, max_steps=3))

    def explode(event):
        raise ValueError("dashboard bug")

    run.subscribe(explode)
    assert run.wait(120) == "finished"


def test_config_errors_raise_before_any_run_starts(tmp_path: Path) -> None:
    with pytest.raises(jupyter_ft.ConfigError, match="training.learning_rate"):
        jupyter_ft.finetune("training:\n  learning_rate: -1\noutput:\n  root: " + str(tmp_path / "r"))
    assert not (tmp_path / "r").exists()


def test_packing_run_trains(tiny_model_dir: Path, root: Path) -> None:
    cfg = make_config(tiny_model_dir, root, max_steps=3)
    cfg["data"]["packing"] = True
    run = jupyter_ft.finetune(cfg, wait=True)
    assert run.status == "finished", run.run_dir.record.traceback
    assert all(h["loss"] > 0 for h in run.history if "loss" in h)


def test_a_run_with_an_8bit_optimizer_leaves_nothing_in_bitsandbytes_registry(tiny_model_dir: Path, root: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """With an 8-bit optimizer (the CUDA default is paged_adamw_8bit) the Trainer registers the embeddings with
    bitsandbytes' process-wide GlobalOptimManager, which kept them alive after the run: 108 MiB of GPU memory per
    run on SmolLM2-135M, measured on an H100. The run must let go of them whether it finishes or fails."""
    import gc
    import weakref

    from bitsandbytes.optim import GlobalOptimManager
    from transformers import Trainer

    from jupyter_ft.engine import Run
    from jupyter_ft.engine import trainer as engine_trainer

    embeddings: list[weakref.ref] = []
    original = engine_trainer.build_trainer

    def keep(run: Run, model, *args, **kwargs):
        embeddings.append(weakref.ref(model.get_input_embeddings()))
        return original(run, model, *args, **kwargs)

    monkeypatch.setattr(engine_trainer, "build_trainer", keep)
    mng = GlobalOptimManager.get_instance()
    before = len(mng.module_weight_config_triple)
    cfg = make_config(tiny_model_dir, root, max_steps=3)
    cfg["training"]["optimizer"] = "adamw_8bit"
    assert jupyter_ft.finetune(cfg).wait(120) == "finished"

    step = Trainer.training_step

    def oom(self, *args, **kwargs):
        if self.state.global_step >= 1:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return step(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "training_step", oom)
    assert jupyter_ft.finetune(cfg).wait(120) == "failed"
    gc.collect()
    assert len(embeddings) == 2 and all(ref() is None for ref in embeddings)
    assert len(mng.module_weight_config_triple) == before


def test_a_finished_run_gives_its_heap_back_to_the_system(tiny_model_dir: Path, root: Path, monkeypatch) -> None:
    """Freed CPU tensors stay in the C heap: without a trim the kernel kept the training peak (1.8 GB where
    0.6 GB were live after the quickstart) and the %ft_eval after it was killed in a 2 GB Binder pod."""
    import sys

    import jupyter_ft.runtime.memory as memory

    calls: list[str] = []
    real = memory.trim_heap
    monkeypatch.setattr(memory, "trim_heap", lambda: calls.append("trim") or real())
    run = jupyter_ft.finetune(make_config(tiny_model_dir, root, max_steps=2))
    assert run.wait(120) == "finished"
    assert calls == ["trim"]  # once, after the model and the trainer were dropped
    if sys.platform.startswith("linux"):
        assert real() is True  # glibc's malloc_trim is there and runs


def test_a_full_disk_does_not_lose_a_failed_runs_error(tiny_model_dir: Path, root: Path, monkeypatch) -> None:
    """Writing the ``failed`` status raised too, so run.json kept ``running`` and the message was lost: the run
    (and the dashboard, through its events) still says failed and why, and the training thread lives on."""
    import errno

    from jupyter_ft.engine import recipe
    from jupyter_ft.store import RunDir

    def broken_train(run) -> None:
        raise RuntimeError("the data loader broke mid-epoch")

    real_save = RunDir.save

    def full_disk(self, **changes):
        if changes.get("status") == "failed":
            for key, value in changes.items():
                setattr(self.record, key, value)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(self, **changes)

    monkeypatch.setattr(recipe, "train", broken_train)
    monkeypatch.setattr(RunDir, "save", full_disk)
    run = jupyter_ft.finetune(make_config(tiny_model_dir, root, max_steps=2))
    assert run.wait(60) == "failed"
    assert "the data loader broke mid-epoch" in run.error
    assert any("No space left on device" in w for w in run.run_dir.record.warnings)
    monkeypatch.undo()
    again = jupyter_ft.finetune(make_config(tiny_model_dir, root, max_steps=1))
    assert again.wait(120) == "finished"  # the training thread outlived it


def test_checkpoints_are_renamed_into_place_and_rotated_as_the_trainer_would(tiny_model_dir: Path,
                                                                             root: Path) -> None:
    """Each checkpoint is written under checkpoints/.staging and renamed when complete; rotation
    (save_total_limit=2) still keeps the newest two, and nothing is left in the staging folder."""
    run = jupyter_ft.finetune(make_config(tiny_model_dir, root, max_steps=5, save_every=1, eval_every=100))
    assert run.wait(120) == "finished", run.error
    names = sorted(p.name for p in (run.path / "checkpoints").iterdir())
    assert names == ["checkpoint-4", "checkpoint-5"]
    assert (run.path / "checkpoints" / "checkpoint-5" / "trainer_state.json").is_file()
