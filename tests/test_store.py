"""The run directory: atomic records, torn-line tolerance, listing, safe ids, interrupted runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jupyter_ft.store import RunStore, append_jsonl, read_jsonl, write_json_atomic


def test_create_list_load(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    a = store.create({"training": {"learning_rate": 1e-4}}, "first try")
    b = store.create({}, None)
    assert a.record.name == "first try" and "first-try" in a.record.id
    assert json.loads((a.path / "run.json").read_text())["config"]["training"]["learning_rate"] == 1e-4
    listed = store.list()
    assert {r.id for r in listed} == {a.record.id, b.record.id}
    assert listed[0].created_at >= listed[1].created_at  # newest first
    assert store.load(a.record.id).config == {"training": {"learning_rate": 1e-4}}


def test_atomic_write_leaves_no_temp_files(tmp_path: Path) -> None:
    target = tmp_path / "run.json"
    write_json_atomic(target, {"a": 1})
    write_json_atomic(target, {"a": 2})
    assert json.loads(target.read_text()) == {"a": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]


def test_read_jsonl_skips_torn_last_line_and_filters_steps(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    for step in (1, 2, 3):
        append_jsonl(path, {"step": step, "loss": 1.0 / step})
    with open(path, "a") as fh:
        fh.write('{"step": 4, "lo')  # the writer died here
    assert [r["step"] for r in read_jsonl(path)] == [1, 2, 3]
    assert [r["step"] for r in read_jsonl(path, since_step=1)] == [2, 3]
    assert read_jsonl(tmp_path / "missing.jsonl") == []


@pytest.mark.parametrize("bad", ["..", "../etc", "a/b", "/etc/passwd", "", ".hidden", "x" * 200])
def test_run_ids_cannot_escape_the_root(tmp_path: Path, bad: str) -> None:
    with pytest.raises(KeyError, match="invalid run id"):
        RunStore(tmp_path).path_of(bad)


def test_unknown_run_names_the_root_and_latest(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    rd = store.create({}, "exists")
    with pytest.raises(KeyError, match=f"no run 'nope' under {tmp_path}.*{rd.record.id}"):
        store.open("nope")


def test_running_record_of_dead_process_reads_as_interrupted(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    rd = store.create({}, "crashed")
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    rd.save(status="running", pid=int(proc.stdout))  # that process has exited
    assert store.load(rd.record.id).status == "interrupted"
    assert json.loads((rd.path / "run.json").read_text())["status"] == "running"  # reading never rewrites


def test_running_record_of_live_process_stays_running(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    rd = store.create({}, "elsewhere")
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        rd.save(status="running", pid=proc.pid)
        assert store.load(rd.record.id).status == "running"
    finally:
        proc.kill()
        proc.wait()


def test_running_record_of_this_process_without_thread_is_interrupted(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    rd = store.create({}, "orphan")
    rd.save(status="running", pid=os.getpid())
    assert store.load(rd.record.id).status == "interrupted"


def test_last_checkpoint_ignores_incomplete_ones(tmp_path: Path) -> None:
    rd = RunStore(tmp_path).create({}, "ckpt")
    for step, complete in ((5, True), (10, True), (15, False)):
        d = rd.checkpoints_dir / f"checkpoint-{step}"
        d.mkdir(parents=True)
        if complete:
            (d / "trainer_state.json").write_text("{}")
    assert rd.last_checkpoint().name == "checkpoint-10"


def test_unreadable_run_directories_are_skipped(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    good = store.create({}, "good")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "run.json").write_text("{not json")
    assert [r.id for r in store.list()] == [good.record.id]
