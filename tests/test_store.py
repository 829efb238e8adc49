"""The run directory: atomic records, torn-line tolerance, listing, safe ids, interrupted runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jupyter_ft.errors import RunStoreError
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
    # a reader that proves the worker dead says so in run.json, so every reader (the lab's too) agrees
    assert json.loads((rd.path / "run.json").read_text())["status"] == "interrupted"


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
    """A checkpoint counted as complete once trainer_state.json existed; a kill mid-save leaves a torn state, no
    weights, or none of it: resume falls back to the newest complete one."""
    rd = RunStore(tmp_path).create({}, "ckpt")
    cases = {5: "complete", 10: "complete", 15: "no state", 20: "torn state", 25: "no weights", 30: "other step"}
    for step, case in cases.items():
        d = rd.checkpoints_dir / f"checkpoint-{step}"
        d.mkdir(parents=True)
        if case != "no weights":
            (d / "adapter_model.safetensors").write_bytes(b"weights")
        state = json.dumps({"global_step": 7 if case == "other step" else step})
        if case == "torn state":
            state = state[:9]
        if case != "no state":
            (d / "trainer_state.json").write_text(state)
    assert rd.last_checkpoint().name == "checkpoint-10"


def test_the_final_adapter_is_complete_or_absent(tmp_path: Path) -> None:
    """A kill during the final adapter save left old config beside partial weights, and evaluation took it."""
    rd = RunStore(tmp_path).create({}, "adapter")

    class Saves:
        def __init__(self, text: str, fail: bool = False, name: str = "adapter_model.safetensors") -> None:
            self.text, self.fail, self.name = text, fail, name

        def save_pretrained(self, path) -> None:
            Path(path).mkdir(parents=True, exist_ok=True)
            (Path(path) / self.name).write_text(self.text[:3] if self.fail else self.text)
            if self.fail:
                raise OSError(28, "No space left on device")

    rd.save_adapter(Saves("first"), Saves("tok", name="tokenizer.json"))
    with pytest.raises(OSError):
        rd.save_adapter(Saves("second", fail=True), Saves("tok", name="tokenizer.json"))
    assert (rd.adapter_dir / "adapter_model.safetensors").read_text() == "first"  # the previous one, whole
    rd.save_adapter(Saves("third"), Saves("tok", name="tokenizer.json"))
    assert (rd.adapter_dir / "adapter_model.safetensors").read_text() == "third"
    assert sorted(p.name for p in rd.path.iterdir()) == ["adapter", "run.json"]  # no temporary left


@pytest.mark.parametrize("text", ["{not json", "[]", "null", '"x"', "7", "\xff\xfe", '{"id": "../../etc"}',
                                  '{"status": [], "tags": 5, "sweep": "x", "created_at": null, "pid": true}'])
def test_one_odd_record_never_hides_the_others(tmp_path: Path, text: str) -> None:
    """A run.json holding [], null, garbage or fields of the wrong kind made every listing and lookup fail: it
    lists as corrupt (or with its wrong fields at their defaults), with the reason, and can be removed."""
    store = RunStore(tmp_path)
    good = store.create({}, "good")
    odd = tmp_path / "20260101-000000-odd-0000"
    odd.mkdir()
    (odd / "run.json").write_bytes(text.encode("latin-1"))
    listed = {r.id: r for r in store.list()}
    assert set(listed) == {good.record.id, odd.name}  # the good one is always there; the odd one by its folder
    assert listed[good.record.id].status != "corrupt"
    if listed[odd.name].status == "corrupt":
        assert "run.json" in listed[odd.name].error and f"%ft_rm {odd.name}" in listed[odd.name].error
        with pytest.raises(ValueError):
            store.open(odd.name)
    else:  # readable: its id is its folder's name whatever it says, wrong kinds fall back to defaults
        rd = store.open(odd.name)
        assert rd.id == odd.name and rd.record.tags == [] and rd.record.sweep is None
    assert store.find("good").id == good.record.id and store.latest() is not None
    store.delete(odd.name)
    assert not odd.exists() and good.path.is_dir()


def test_the_directory_name_is_the_id_so_a_copy_is_its_own_run(tmp_path: Path) -> None:
    """``cp -r A A-copy`` then deleting A-copy deleted A: the store trusted the id inside run.json."""
    import shutil

    store = RunStore(tmp_path)
    a = store.create({}, "a")
    shutil.copytree(a.path, tmp_path / "A-copy")
    assert store.open("A-copy").id == "A-copy" and store.open("A-copy").path.name == "A-copy"
    store.delete("A-copy")
    assert a.path.is_dir() and not (tmp_path / "A-copy").exists()
    assert [r.id for r in store.list()] == [a.id]


def test_a_run_id_with_a_trailing_newline_is_refused(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    rd = store.create({}, "n")
    with pytest.raises(KeyError, match="invalid run id"):
        store.path_of(rd.id + "\n")


def test_non_finite_numbers_are_written_as_strict_json(tmp_path: Path) -> None:
    """A NaN grad_norm or an overflowed fp16 loss was written as bare NaN: the browser's JSON.parse throws and
    the lab's sidebar showed no runs. Non-finite numbers become null, and the record says which they were."""
    strict = {"parse_constant": lambda c: pytest.fail(f"non-strict JSON constant {c}")}
    append_jsonl(tmp_path / "m.jsonl", {"step": 1, "loss": float("nan"), "grad_norm": float("inf")})
    line = json.loads((tmp_path / "m.jsonl").read_text(), **strict)
    assert line == {"step": 1, "loss": None, "grad_norm": None, "nonfinite": ["grad_norm", "loss"]}
    rd = RunStore(tmp_path / "runs").create({}, "nan")
    rd.save(summary={"final_train_loss": float("-inf"), "probes": {"kl": float("nan")}, "global_step": 3})
    saved = json.loads(rd.run_json.read_text(), **strict)
    assert saved["summary"]["final_train_loss"] is None and saved["summary"]["global_step"] == 3
    assert saved["nonfinite"] == ["summary.final_train_loss", "summary.probes.kl"]
    assert RunStore(tmp_path / "runs").open(rd.id).record.summary["probes"] == {"kl": None}


def test_numpy_scalars_are_written_as_numbers(tmp_path: Path) -> None:
    import numpy as np

    write_json_atomic(tmp_path / "a.json", {"lr": np.float32(0.5), "n": np.int64(3), "nan": np.float64("nan")})
    assert json.loads((tmp_path / "a.json").read_text()) == {"lr": 0.5, "n": 3, "nan": None, "nonfinite": ["nan"]}


def test_a_torn_line_costs_only_itself(tmp_path: Path) -> None:
    """A writer killed mid-line, then an append after a resume: the next record shared the torn line and was
    lost with it."""
    path = tmp_path / "metrics.jsonl"
    append_jsonl(path, {"step": 1})
    with open(path, "a") as fh:
        fh.write('{"step": 2, "lo')  # killed here
    append_jsonl(path, {"step": 3})
    append_jsonl(path, {"step": 4})
    assert [r["step"] for r in read_jsonl(path)] == [1, 3, 4]


def test_read_jsonl_skips_lines_that_are_not_objects(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text('[1, 2]\n5\nnull\n"x"\n{"step": "late"}\n{"step": 2}\n{"no_step": 1}\n')
    assert read_jsonl(path, since_step=1) == [{"step": 2}]
    assert len(read_jsonl(path)) == 3


def test_every_file_of_a_run_gets_the_same_mode(tmp_path: Path) -> None:
    rd = RunStore(tmp_path).create({}, "modes")
    rd.append_metrics({"step": 1})
    rd.write_progress({"step": 1})
    modes = {p.name: p.stat().st_mode & 0o777 for p in rd.path.iterdir()}
    assert len(set(modes.values())) == 1, modes


def test_a_zombie_kernel_reads_as_interrupted(tmp_path: Path) -> None:
    """kill -9 of a kernel leaves a zombie until its parent reaps it, and signal 0 still reaches a zombie: the
    run read ``running`` in a new kernel."""
    import time

    store = RunStore(tmp_path)
    rd = store.create({}, "zombie")
    proc = subprocess.Popen([sys.executable, "-c", "pass"])  # never waited for: a zombie once it exits
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] != "Z":
            time.sleep(0.05)
        os.kill(proc.pid, 0)  # still "alive" to signal 0
        rd.save(status="running", pid=proc.pid)
        assert store.load(rd.id).status == "interrupted"
    finally:
        proc.wait()


# ------------------------------------------------------------------ liveness from the worker's heartbeat
def _beat(rd, age: float) -> None:
    """progress.json as the worker writes it, stamped ``age`` seconds ago."""
    import time

    rd.write_progress({"step": 3, "max_steps": 10})
    data = json.loads(rd.progress_path.read_text())
    data["heartbeat"] = time.time() - age
    rd.progress_path.write_text(json.dumps(data))


@pytest.mark.parametrize("age, status", [(None, "running"), (20.0, "running"), (6 * 60.0, "interrupted")])
def test_a_run_of_another_host_is_judged_by_its_heartbeat(tmp_path: Path, age, status) -> None:
    """No pid of another host can be checked: a beat that stopped long ago proves the worker gone; no beat at all
    proves nothing (an old worker that never beat), so the run keeps its status."""
    store = RunStore(tmp_path)
    rd = store.create({}, "remote")
    rd.save(status="running", pid=1, hostname="gpu-node-7")
    if age is not None:
        _beat(rd, age)
    assert store.load(rd.id).status == status


@pytest.mark.parametrize("age, status", [(5.0, "running"), (61.0, "interrupted")])
def test_a_live_pid_whose_heartbeat_stopped_is_not_the_worker(tmp_path: Path, age, status) -> None:
    """The pid of a dead kernel can be reused by any process: alive by signal 0, but no heartbeat for a minute."""
    store = RunStore(tmp_path)
    rd = store.create({}, "reused")
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        rd.save(status="running", pid=proc.pid)
        _beat(rd, age)
        assert store.load(rd.id).status == status
    finally:
        proc.kill()
        proc.wait()


def test_a_queued_run_is_not_judged_by_a_heartbeat_it_has_not_begun(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    rd = store.create({}, "waiting")
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        rd.save(status="queued", pid=proc.pid)
        _beat(rd, 3600.0)  # an old beat from an earlier attempt of this run
        assert store.load(rd.id).status == "queued"
    finally:
        proc.kill()
        proc.wait()


def test_the_heartbeat_thread_stamps_progress_while_nothing_else_writes(tmp_path: Path) -> None:
    """One step, one evaluation or a model load can take minutes: the beat must not wait for the next step."""
    import socket
    import time

    from jupyter_ft.engine.heartbeat import Heartbeat

    rd = RunStore(tmp_path).create({}, "beating")

    class _Run:
        run_dir = rd
        id = rd.id
        progress = {"step": 7, "max_steps": 9}

    with Heartbeat(_Run(), every=0.05):  # type: ignore[arg-type]
        first = rd.progress()["heartbeat"]
        deadline = time.monotonic() + 10
        while rd.progress()["heartbeat"] == first and time.monotonic() < deadline:
            time.sleep(0.02)
        beat = rd.progress()
    assert beat["heartbeat"] > first and beat["step"] == 7 and beat["max_steps"] == 9
    assert beat["pid"] == os.getpid() and beat["hostname"] == socket.gethostname()
    assert rd.heartbeat_age() < 10


def test_run_directories_without_a_record_never_hang_the_listing(tmp_path: Path) -> None:
    """A kill between mkdir and the first save leaves a run directory without run.json; two of them sent open()
    (whose message listed the runs) and list() into a recursion without end."""
    store = RunStore(tmp_path)
    good = store.create({}, "good")
    for name in ("20261201-000000-a-0001", "20261201-000001-b-0002"):
        (tmp_path / name).mkdir()
    assert [r.id for r in store.list()] == [good.id]
    with pytest.raises(KeyError, match=good.id):
        store.open("20261201-000000-a-0001")


def test_an_int_past_float_range_as_heartbeat_is_no_heartbeat(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    rd = store.create({}, "huge-beat")
    rd.progress_path.write_text('{"heartbeat": 1' + "0" * 400 + "}")
    assert rd.heartbeat_age() is None
    assert store.entry(rd.id).record.status != "corrupt"  # its record is fine; only the beat is nonsense


def test_a_record_with_an_int_past_4300_digits_is_corrupt_not_a_crash(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    rd = store.create({}, "huge-int")
    rd.run_json.write_text('{"a": ' + "9" * 4400 + "}")
    with pytest.raises(RunStoreError, match="not valid JSON"):
        store.open(rd.id)
    assert [r.status for r in store.list()] == ["corrupt"]
