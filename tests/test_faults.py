"""The fault suite: faults injected into real runs of the tiny model in the training thread of this process (the
"kernel"). Each fault must end with a readable store, the right status and message, the kernel alive, and
nothing lost that was complete before the fault: the metrics lines written so far, the complete checkpoints.

Faults are injected where they happen in life (the loss, a Trainer save, a file write, a user's handler), by
patching that one call; everything around it is the real code path. Each passing case counts in the
``reliability:`` line at the end of ``make test``.
"""

from __future__ import annotations

import errno
import math
import os
from pathlib import Path
from typing import Any, Callable

import pytest

import jupyter_ft
import reliability
from jupyter_ft.engine.trainer import STAGING_DIR, trainer_class
from jupyter_ft.runtime.registry import active_run
from jupyter_ft.store import RunStore, read_jsonl
from tiny_runs import tiny_run_config

pytestmark = pytest.mark.reliability


def make_config(model_dir: Path, root: Path, probes: bool = False, **training: Any) -> dict:
    return tiny_run_config(model_dir, root, probes={"overfitting": probes, "forgetting": False},
                           **{"max_steps": 8, **training})


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    return tmp_path / "runs"


def enospc(path: object) -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


# ------------------------------------------------------------------ what "nothing lost" means
class Snapshot:
    """What was complete in the run directory at the moment of the fault: its metrics and probe lines, and its
    complete checkpoints (by the store's own test of completeness)."""

    def __init__(self, run_path: Path) -> None:
        self.path = run_path
        self.metrics = read_jsonl(run_path / "metrics.jsonl")
        self.probes = read_jsonl(run_path / "probes.jsonl")
        self.checkpoints = complete_checkpoints(run_path)

    def lost(self) -> int:
        """Records complete at the snapshot and missing now (the lines as a prefix of today's file)."""
        metrics, probes = read_jsonl(self.path / "metrics.jsonl"), read_jsonl(self.path / "probes.jsonl")
        missing = sum(1 for m in self.metrics if m not in metrics) + sum(1 for p in self.probes if p not in probes)
        return missing + len(self.checkpoints - complete_checkpoints(self.path))


def complete_checkpoints(run_path: Path) -> set[str]:
    from jupyter_ft.store.run_dir import _complete_checkpoint

    out = set()
    for p in (run_path / "checkpoints").glob("checkpoint-*"):
        if _complete_checkpoint(p, int(p.name.rsplit("-", 1)[-1])):
            out.add(p.name)
    return out


def check_after(run: Any, root: Path, status: str, snapshot: Snapshot | None, name: str,
                message: str | None = None) -> None:
    """The common ending of every fault: the store lists the run (and every other), with the right status and
    message, the kernel's thread is free, and nothing complete before the fault went missing."""
    assert run.status == status, (run.status, run.error, run.run_dir.record.traceback)
    listed = {r.id: r for r in RunStore(root).list()}
    assert listed[run.id].status == status
    if message is not None:
        assert message in (listed[run.id].error or ""), listed[run.id].error
    assert active_run() is None and run.model is None  # nothing held: the next run can have the memory
    lost = snapshot.lost() if snapshot is not None else 0
    reliability.lost(lost)
    assert lost == 0
    reliability.fault(name)


def train_steps(run_path: Path) -> list[int]:
    return [m["step"] for m in read_jsonl(run_path / "metrics.jsonl") if "loss" in m]


def patch_loss(monkeypatch: pytest.MonkeyPatch, at: Callable[[int], Any]) -> None:
    """Wrap the run's Trainer ``compute_loss``: ``at(step)`` may return a factor for the loss (nan, inf) or
    raise; the step is the optimizer step being computed."""
    cls = trainer_class()
    original = cls.compute_loss

    def compute_loss(self, model, inputs, *args, **kwargs):
        out = original(self, model, inputs, *args, **kwargs)
        factor = at(self.state.global_step + 1)
        if factor is None:
            return out
        if isinstance(out, tuple):
            return (out[0] * factor,) + tuple(out[1:])
        return out * factor

    monkeypatch.setattr(cls, "compute_loss", compute_loss)


# ------------------------------------------------------------------ NaN / inf loss
@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_a_non_finite_loss_stops_the_run_at_that_step(tiny_model_dir, root, monkeypatch, bad) -> None:
    snap: dict[str, Snapshot] = {}

    def at(step: int) -> float | None:
        if step == 5:
            snap.setdefault("s", Snapshot(run.path))
            return bad
        return None

    patch_loss(monkeypatch, at)
    run = jupyter_ft.finetune(make_config(tiny_model_dir, root))
    run.wait(120)
    check_after(run, root, "failed", snap["s"], f"{bad}-loss-stop", message="at step 5")
    assert "training.on_nonfinite: stop" in run.error
    assert train_steps(run.path) == [1, 2, 3, 4]  # the bad step logged nothing
    assert run.run_dir.last_checkpoint().name == "checkpoint-3"  # from before the loss went bad
    assert not (run.path / "adapter").exists()  # no adapter of NaN weights

    monkeypatch.undo()
    resumed = jupyter_ft.resume(run.id, root=str(root), wait=True)  # the kernel goes on; so does the run
    assert resumed.status == "finished", resumed.error
    assert train_steps(run.path) == list(range(1, 9))


def test_skip_drops_the_bad_steps_update_and_says_so(tiny_model_dir, root, monkeypatch) -> None:
    import torch
    from safetensors.torch import load_file

    snap: dict[str, Snapshot] = {}

    def at(step: int) -> float | None:
        if step == 4:
            snap.setdefault("s", Snapshot(run.path))
            return math.nan
        return None

    patch_loss(monkeypatch, at)
    run = jupyter_ft.finetune(make_config(tiny_model_dir, root, on_nonfinite="skip"))
    run.wait(120)
    check_after(run, root, "finished", snap["s"], "nan-loss-skip")
    assert run.summary["skipped_steps"] == [4]
    assert any("step 4" in w and "skipped" in w for w in run.run_dir.record.warnings)
    lines = {m["step"]: m for m in read_jsonl(run.path / "metrics.jsonl") if "loss" in m or "skipped" in m}
    assert lines[4].get("skipped") is True and "loss" not in lines[4]  # not a made-up 0.0 loss
    assert all(math.isfinite(lines[s]["loss"]) for s in lines if s != 4)
    weights = load_file(run.path / "adapter" / "adapter_model.safetensors")
    assert weights and all(bool(torch.isfinite(w).all()) for w in weights.values())  # the NaN never reached them


def test_skip_gives_up_when_every_step_is_bad(tiny_model_dir, root, monkeypatch) -> None:
    patch_loss(monkeypatch, lambda step: math.nan if step >= 2 else None)
    run = jupyter_ft.finetune(make_config(tiny_model_dir, root, on_nonfinite="skip", max_steps=20))
    run.wait(120)
    check_after(run, root, "failed", None, "nan-loss-skip-gives-up", message="10 steps in a row")
    assert len(run.run_dir.record.warnings) <= 4  # three steps named, then counted: no wall of warnings


# ------------------------------------------------------------------ a user's handler, OOM, data
def test_an_exception_in_a_users_event_handler_does_not_touch_the_run(tiny_model_dir, root) -> None:
    calls = {"n": 0}

    def handler(event: Any) -> None:
        calls["n"] += 1
        raise ValueError("my dashboard code is broken")

    run = jupyter_ft.finetune(make_config(tiny_model_dir, root))
    run.subscribe(handler)
    run.wait(120)
    check_after(run, root, "finished", None, "event-handler-raises")
    assert calls["n"] > 8 and train_steps(run.path) == list(range(1, 9))


def test_out_of_memory_mid_run_fails_clearly_keeps_the_checkpoint_and_frees_the_model(tiny_model_dir, root,
                                                                                      monkeypatch) -> None:
    import torch

    snap: dict[str, Snapshot] = {}

    def at(step: int) -> None:
        if step == 5:
            snap.setdefault("s", Snapshot(run.path))
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    patch_loss(monkeypatch, at)
    run = jupyter_ft.finetune(make_config(tiny_model_dir, root))
    run.wait(120)
    check_after(run, root, "failed", snap["s"], "out-of-memory", message="Out of memory with training.batch_size=4")
    assert run.run_dir.last_checkpoint().name == "checkpoint-3"


def test_a_data_error_mid_epoch_names_the_row_and_keeps_what_was_done(tiny_model_dir, root, monkeypatch) -> None:
    from jupyter_ft.engine import trainer as trainer_mod
    from jupyter_ft.errors import DataError

    snap: dict[str, Snapshot] = {}
    original = trainer_mod.make_collator

    def make_collator(tokenizer: Any, packing: bool) -> Callable:
        inner = original(tokenizer, packing)
        calls = {"n": 0}

        def collate(features: list) -> dict:
            calls["n"] += 1
            if calls["n"] == 7:  # past step 3's checkpoint and its evaluation
                snap.setdefault("s", Snapshot(run.path))
                raise DataError("data/tickets.jsonl, row 213: column 'output' is not text (a streamed source "
                                "changed under the run)")
            return inner(features)

        return collate

    monkeypatch.setattr(trainer_mod, "make_collator", make_collator)
    run = jupyter_ft.finetune(make_config(tiny_model_dir, root))
    run.wait(120)
    check_after(run, root, "failed", snap["s"], "data-error-mid-epoch", message="row 213: column 'output'")


# ------------------------------------------------------------------ disk full, on each kind of write
def test_disk_full_on_metrics_and_probe_lines_keeps_them_in_order_once_there_is_room(tiny_model_dir, root,
                                                                                      monkeypatch) -> None:
    from jupyter_ft.store import run_dir as run_dir_mod

    original = run_dir_mod.append_jsonl
    full = {"on": False, "refused": 0}

    def append_jsonl(path: Path, obj: Any) -> None:
        if full["on"]:
            full["refused"] += 1
            raise enospc(path)
        original(path, obj)

    def on_event(event: Any) -> None:
        if event.kind == "progress":
            full["on"] = 3 <= event.data["step"] < 6  # the disk fills after step 3 and has room again at 6

    monkeypatch.setattr(run_dir_mod, "append_jsonl", append_jsonl)
    run = jupyter_ft.finetune(make_config(tiny_model_dir, root, probes=True))
    run.subscribe(on_event)
    run.wait(120)
    check_after(run, root, "finished", None, "disk-full-metrics-and-probes")
    assert full["refused"] >= 2
    assert train_steps(run.path) == list(range(1, 9))  # each step once, in order: nothing lost
    assert read_jsonl(run.path / "metrics.jsonl") == [dict(h) for h in read_jsonl(run.path / "metrics.jsonl")]
    assert [p["step"] for p in read_jsonl(run.path / "probes.jsonl")] == sorted(
        p["step"] for p in read_jsonl(run.path / "probes.jsonl"))
    assert {3, 6} <= {p["step"] for p in read_jsonl(run.path / "probes.jsonl")}
    assert sum("Could not write" in w for w in run.run_dir.record.warnings) == 1  # said once, not per line


def test_disk_full_on_progress_json_never_stops_training(tiny_model_dir, root, monkeypatch) -> None:
    from jupyter_ft.store import run_dir as run_dir_mod

    original = run_dir_mod.write_json_atomic

    def write_json_atomic(path: Path, obj: Any) -> None:
        if Path(path).name == "progress.json":
            raise enospc(path)
        original(path, obj)

    monkeypatch.setattr(run_dir_mod, "write_json_atomic", write_json_atomic)
    run = jupyter_ft.finetune(make_config(tiny_model_dir, root))
    run.wait(120)
    check_after(run, root, "finished", None, "disk-full-progress")


def test_disk_full_on_run_json_keeps_the_status_in_the_kernel_and_says_so(tiny_model_dir, root,
                                                                          monkeypatch) -> None:
    from jupyter_ft.store import run_dir as run_dir_mod

    original = run_dir_mod.write_json_atomic
    full = {"on": False}

    def write_json_atomic(path: Path, obj: Any) -> None:
        if full["on"] and Path(path).name == "run.json":
            raise enospc(path)
        original(path, obj)

    statuses: list[str] = []
    warnings: list[str] = []

    def on_event(event: Any) -> None:
        if event.kind == "progress" and event.data["step"] >= 4:
            full["on"] = True
        if event.kind == "status":
            statuses.append(event.data["status"])
        if event.kind == "warning":
            warnings.append(event.data["message"])

    monkeypatch.setattr(run_dir_mod, "write_json_atomic", write_json_atomic)
    run = jupyter_ft.finetune(make_config(tiny_model_dir, root))
    run.subscribe(on_event)
    run.wait(120)
    assert run.status == "finished" and statuses[-1] == "finished"  # the dashboard got the news
    assert any("run.json" in w and "stale" in w for w in warnings)
    assert train_steps(run.path) == list(range(1, 9)) and (run.path / "adapter" / "adapter_config.json").is_file()
    monkeypatch.undo()  # room again: a reader sees a readable record; this kernel no longer trains it
    listed = {r.id: r for r in RunStore(root).list()}
    assert listed[run.id].status == "interrupted"  # its run.json was stuck at running: never "running" forever
    reliability.fault("disk-full-run-json")


def test_disk_full_while_writing_a_checkpoint_leaves_no_half_checkpoint(tiny_model_dir, root,
                                                                        monkeypatch) -> None:
    cls = trainer_class()
    original = cls._save_optimizer_and_scheduler
    snap: dict[str, Snapshot] = {}

    def save_optimizer(self, output_dir: str) -> None:
        if self.state.global_step == 6:  # the weights of checkpoint-6 are written; the optimizer's state is not
            snap.setdefault("s", Snapshot(run.path))
            raise enospc(Path(output_dir) / "optimizer.pt")
        original(self, output_dir)

    monkeypatch.setattr(cls, "_save_optimizer_and_scheduler", save_optimizer)
    run = jupyter_ft.finetune(make_config(tiny_model_dir, root))
    run.wait(120)
    check_after(run, root, "failed", snap["s"], "disk-full-checkpoint", message="The disk is full")
    assert "optimizer.pt" in run.error and "%ft_resume" in run.error
    assert not (run.path / "checkpoints" / "checkpoint-6").exists()  # complete or absent
    assert (run.path / "checkpoints" / STAGING_DIR / "checkpoint-6").is_dir()  # the cut-short one, out of the way
    assert run.run_dir.last_checkpoint().name == "checkpoint-3"

    monkeypatch.undo()
    resumed = jupyter_ft.resume(run.id, root=str(root), wait=True)
    assert resumed.status == "finished", resumed.error
    assert train_steps(run.path) == list(range(1, 9))
    assert not (run.path / "checkpoints" / STAGING_DIR).exists()  # the next save cleared what the kill left


def test_disk_full_on_the_final_adapter_leaves_none_and_resume_writes_it(tiny_model_dir, root,
                                                                         monkeypatch) -> None:
    from peft import PeftModel

    original = PeftModel.save_pretrained
    snap: dict[str, Snapshot] = {}

    def save_pretrained(self, save_directory: Any, *args: Any, **kwargs: Any) -> None:
        if Path(save_directory).name == ".adapter.tmp":  # the final adapter, not a checkpoint's
            snap.setdefault("s", Snapshot(run.path))
            original(self, save_directory, *args, **kwargs)  # partly written: the weights are there...
            raise enospc(Path(save_directory) / "tokenizer.json")  # ...the tokenizer is not
        original(self, save_directory, *args, **kwargs)

    monkeypatch.setattr(PeftModel, "save_pretrained", save_pretrained)
    run = jupyter_ft.finetune(make_config(tiny_model_dir, root, max_steps=6))
    run.wait(120)
    check_after(run, root, "failed", snap["s"], "disk-full-adapter", message="The disk is full")
    assert not (run.path / "adapter").exists()
    assert run.run_dir.last_checkpoint().name == "checkpoint-6"

    monkeypatch.undo()
    resumed = jupyter_ft.resume(run.id, root=str(root), wait=True)
    assert resumed.status == "finished", resumed.error
    assert (run.path / "adapter" / "adapter_model.safetensors").is_file()
    assert train_steps(run.path) == list(range(1, 7))


def test_disk_full_saving_the_dataset_fails_with_the_disk_message(tiny_model_dir, root, monkeypatch) -> None:
    from jupyter_ft.store.run_dir import RunDir

    def save_dataset(self, *args: Any, **kwargs: Any) -> None:
        raise enospc(self.dataset_dir / "train" / "data-00000-of-00001.arrow")

    monkeypatch.setattr(RunDir, "save_dataset", save_dataset)
    run = jupyter_ft.finetune(make_config(tiny_model_dir, root))
    run.wait(120)
    check_after(run, root, "failed", None, "disk-full-dataset", message="The disk is full writing")


# ------------------------------------------------------------------ Stop racing the last step
def test_stop_racing_the_last_step_ends_consistently(tiny_model_dir, root) -> None:
    run = jupyter_ft.finetune(make_config(tiny_model_dir, root, max_steps=6))
    run.subscribe(lambda e: run.stop() if e.kind == "progress" and e.data.get("step") == 6 else None)
    run.wait(120)
    assert run.status in ("stopped", "finished")
    check_after(run, root, run.status, None, "stop-races-the-last-step")
    assert run.summary["global_step"] == 6
    assert run.run_dir.last_checkpoint().name == "checkpoint-6"
    assert (run.path / "adapter" / "adapter_model.safetensors").is_file()
    assert train_steps(run.path) == list(range(1, 7))
