"""``python -m jupyter_ft.worker RUN_DIR``: a run trained by a process of its own, writing the same run directory as
the kernel's thread; this test process plays the kernel that reads it, stops it and resumes it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from jupyter_ft.config import FineTuneConfig
from jupyter_ft.store import RunStore, read_jsonl
from tiny_runs import tiny_run_config


def make_config(model_dir: Path, root: Path, **training: Any) -> FineTuneConfig:
    return FineTuneConfig.from_dict(tiny_run_config(model_dir, root, probes={"forgetting": False}, **training))


def create(model_dir: Path, root: Path, **training: Any) -> Path:
    cfg = make_config(model_dir, root, **training)
    return RunStore(root).create(cfg.to_dict(), "worker").path


def worker(run_dir: Path, *args: str) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "jupyter_ft.worker", str(run_dir), *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_step(store: RunStore, run_id: str, proc: subprocess.Popen, step: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the worker exited early ({proc.returncode}): {proc.stderr.read()}")
        progress = store.open(run_id).progress() or {}
        if (progress.get("step") or 0) >= step:
            return
        time.sleep(0.1)
    raise AssertionError(f"no step {step} within {timeout}s")


def train_steps(run_dir: Path) -> list[int]:
    return [m["step"] for m in read_jsonl(run_dir / "metrics.jsonl") if "loss" in m]


def test_a_worker_process_trains_a_run_directory_end_to_end(tiny_model_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "runs"
    run_dir = create(tiny_model_dir, root)
    proc = worker(run_dir)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    record = RunStore(root).load(run_dir.name)
    assert record.status == "finished" and record.pid == proc.pid  # the worker, not this process, trained it
    assert train_steps(run_dir) == [1, 2, 3, 4, 5, 6]
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()
    assert record.summary["global_step"] == 6
    log = (run_dir / "logs" / "rank-0.log").read_text()
    assert f"run {run_dir.name} finished" in log
    assert f"output in {run_dir / 'logs' / 'rank-0.log'}" in err  # the one line left on the console
    progress = RunStore(root).open(run_dir.name).progress()
    assert progress["pid"] == proc.pid and progress["step"] == 6  # its heartbeat


def test_the_worker_refuses_what_it_cannot_train_with_one_line(tiny_model_dir: Path, tmp_path: Path) -> None:
    missing = worker(tmp_path / "nowhere")
    _, err = missing.communicate(timeout=120)
    assert missing.returncode == 2 and "is not a run directory" in err and str(tmp_path / "nowhere") in err
    assert "Traceback" not in err

    root = tmp_path / "runs"
    run_dir = create(tiny_model_dir, root)
    RunStore(root).open(run_dir.name).save(status="stopped", started_at="2026-12-01T10:00:00")
    again = worker(run_dir)
    _, err = again.communicate(timeout=120)
    assert again.returncode == 2 and "--resume" in err and "Traceback" not in err


def test_ft_stop_from_a_kernel_stops_the_worker_and_resume_continues(tiny_model_dir: Path, tmp_path: Path) -> None:
    """The kernel does not own the run: %ft_stop writes the stop request the worker's callback honours at its
    next step; the worker saves a checkpoint and exits; ``--resume`` trains on, each step once."""
    from IPython.core.interactiveshell import InteractiveShell

    root = tmp_path / "runs"
    run_dir = create(tiny_model_dir, root, max_steps=400, eval_every=1000, save_every=1000)
    store = RunStore(root)
    proc = worker(run_dir)
    try:
        wait_for_step(store, run_dir.name, proc, 2)
        assert store.load(run_dir.name).status == "running"  # alive by pid and heartbeat, from another process
        shell = InteractiveShell.instance()
        shell.run_line_magic("load_ext", "jupyter_ft")
        shell.run_line_magic("ft_stop", f"{run_dir.name} --root {root}")
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, proc.stderr.read()
    record = store.load(run_dir.name)
    stopped_at = record.summary["global_step"]
    assert record.status == "stopped" and 2 <= stopped_at < 400
    assert store.open(run_dir.name).last_checkpoint().name == f"checkpoint-{stopped_at}"


def test_sigterm_is_a_stop_and_kill_9_reads_interrupted_then_resumes(tiny_model_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "runs"
    run_dir = create(tiny_model_dir, root, max_steps=60, eval_every=1000, save_every=2)
    store = RunStore(root)

    proc = worker(run_dir)
    wait_for_step(store, run_dir.name, proc, 3)
    proc.send_signal(signal.SIGTERM)  # what a launcher, or a second kernel's %ft_stop escalation, sends
    proc.wait(timeout=120)
    assert proc.returncode == 0 and store.load(run_dir.name).status == "stopped"
    first = store.load(run_dir.name).summary["global_step"]
    assert first < 50, "the stop was not honoured at the next step"

    proc = worker(run_dir, "--resume")
    wait_for_step(store, run_dir.name, proc, first + 4)
    proc.kill()  # kill -9: nothing is written
    proc.wait()
    assert store.load(run_dir.name).status == "interrupted"  # the first reader proves it dead and says so

    proc = worker(run_dir, "--resume")
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert store.load(run_dir.name).status == "finished"
    assert train_steps(run_dir) == list(range(1, 61))  # every step once, across a stop, a kill and two resumes


# The fault suite's faults, injected into a worker process (the patch is made in the child, before main()).
CHILD = """
import errno, math, os, sys
from pathlib import Path
import torch
from jupyter_ft.engine.trainer import trainer_class
from jupyter_ft.worker import main

cls, fault = trainer_class(), os.environ["FAULT"]
compute_loss, save_optimizer = cls.compute_loss, cls._save_optimizer_and_scheduler

def bad_loss(self, model, inputs, *args, **kwargs):
    loss = compute_loss(self, model, inputs, *args, **kwargs)
    if self.state.global_step + 1 == 5:
        if fault == "nan":
            return loss * math.nan
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    return loss

def full_disk(self, output_dir):
    if self.state.global_step == 6:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(Path(output_dir) / "optimizer.pt"))
    save_optimizer(self, output_dir)

if fault in ("nan", "oom"):
    cls.compute_loss = bad_loss
else:
    cls._save_optimizer_and_scheduler = full_disk
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.reliability
@pytest.mark.parametrize("fault, message", [("nan", "at step 5"), ("oom", "Out of memory with"),
                                            ("disk-full-checkpoint", "The disk is full")])
def test_faults_in_a_worker_process_end_failed_with_the_reason_and_keep_the_checkpoint(
        tiny_model_dir: Path, tmp_path: Path, fault: str, message: str) -> None:
    import reliability

    root = tmp_path / "runs"
    run_dir = create(tiny_model_dir, root, max_steps=8)
    env = dict(os.environ, OMP_NUM_THREADS="1", FAULT=fault)
    proc = subprocess.run([sys.executable, "-c", CHILD, str(run_dir)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 1, proc.stderr  # failed: the reason is in run.json, not a crash of the process
    record = RunStore(root).load(run_dir.name)
    assert record.status == "failed" and message in record.error and record.traceback
    assert RunStore(root).open(run_dir.name).last_checkpoint().name == "checkpoint-3"
    assert not (run_dir / "checkpoints" / "checkpoint-6").exists()
    assert train_steps(run_dir)[:4] == [1, 2, 3, 4]
    reliability.fault(f"worker:{fault}")
