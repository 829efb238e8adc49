"""A run directory written before the package was split into layers (commit c4f3405, by the code of that
commit: `tests/fixtures/runs/`, a tiny-model run stopped at step 3 of 6 with its checkpoint) still lists, shows,
evaluates and resumes: the run-directory format is the contract between versions, not the code that wrote it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from IPython.core.interactiveshell import InteractiveShell

import jupyter_ft
from jupyter_ft.store import RunStore, read_jsonl

FIXTURE = Path(__file__).parent / "fixtures" / "runs" / "20261201-185626-pre-layers-ea85"
RUN_ID = FIXTURE.name


@pytest.fixture()
def old_root(tmp_path: Path, tiny_model_dir: Path) -> Path:
    """The fixture copied under a fresh root, its model path pointed at this session's tiny model (built from
    the same seed and corpus as the one it trained, so the adapter fits it)."""
    root = tmp_path / "ft_runs"  # the default root, seen from tmp_path
    shutil.copytree(FIXTURE, root / RUN_ID)
    record_path = root / RUN_ID / "run.json"
    record = json.loads(record_path.read_text())
    record["config"]["model"]["name"] = str(tiny_model_dir)
    record["config"]["output"]["root"] = str(root)
    record["model"].update(name=str(tiny_model_dir), path=str(tiny_model_dir))
    record_path.write_text(json.dumps(record, indent=2))
    return root


@pytest.fixture()
def shell() -> InteractiveShell:
    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "jupyter_ft")
    return ip


def test_an_old_run_lists_and_shows(old_root: Path, shell: InteractiveShell, capsys, monkeypatch) -> None:
    records = RunStore(old_root).list()
    assert [r.id for r in records] == [RUN_ID]
    assert records[0].status == "stopped" and records[0].summary["global_step"] == 3
    assert RunStore(old_root).find("pre-layers").id == RUN_ID  # by name too

    capsys.readouterr()
    shell.run_line_magic("ft_runs", f"--root {old_root}")
    listed = capsys.readouterr().out
    assert RUN_ID in listed and "stopped" in listed and "pre-layers" in listed
    monkeypatch.chdir(old_root.parent)
    shell.run_line_magic("ft_status", "pre-layers")  # found in the store by name: not a run of this kernel
    assert f"{RUN_ID}: stopped, step 3" in capsys.readouterr().out

    from jupyter_ft.widgets import dashboard_for

    board = dashboard_for(RunStore(old_root).open(RUN_ID), mode="static")
    assert board.state.status == "stopped"
    assert len(board.state.loss) == 3  # the train losses of steps 1-3 in metrics.jsonl


def test_an_old_run_evaluates(old_root: Path) -> None:
    result = jupyter_ft.evaluate_run(RUN_ID, root=old_root, n=4, max_new_tokens=4, metrics=["exact_match"])
    assert len(result.rows) == 4 and "exact_match" in result.metrics
    assert (old_root / RUN_ID / "eval.json").is_file() and len(read_jsonl(old_root / RUN_ID / "samples.jsonl")) == 4


def test_an_old_run_resumes_to_its_last_step(old_root: Path) -> None:
    run = jupyter_ft.resume(RUN_ID, root=old_root)
    assert run.wait(180) == "finished", run.run_dir.record.traceback
    assert run.summary["global_step"] == 6
    steps = [m["step"] for m in read_jsonl(old_root / RUN_ID / "metrics.jsonl") if "loss" in m]
    assert steps == sorted(set(steps)) and steps[-1] == 6


def _killed_at_step_5(root: Path) -> Path:
    """The fixture as a kernel killed at step 5 leaves it: steps 4 and 5 logged after checkpoint-3, and
    ``running`` in run.json with a process that is gone."""
    import subprocess
    import sys

    rd = root / RUN_ID
    with open(rd / "metrics.jsonl", "a") as fh:
        for step in (4, 5):
            fh.write(json.dumps({"step": step, "loss": 9.0, "epoch": 0.04}) + "\n")
    with open(rd / "probes.jsonl", "a") as fh:
        fh.write(json.dumps({"step": 5, "overfitting": None, "forgetting": None}) + "\n")
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    record = json.loads((rd / "run.json").read_text())
    record.update(status="running", pid=int(gone.stdout))
    (rd / "run.json").write_text(json.dumps(record))
    return rd


def test_a_killed_run_resumes_with_every_step_once(old_root: Path) -> None:
    """Steps 11 and 12 were logged twice (and drawn twice) after a kill at step 12 and a resume from the
    checkpoint at step 10: the resume now supersedes the lines after its checkpoint."""
    rd = _killed_at_step_5(old_root)
    assert RunStore(old_root).open(RUN_ID).record.status == "interrupted"
    run = jupyter_ft.resume(RUN_ID, root=old_root)
    assert run.wait(180) == "finished", run.run_dir.record.traceback
    steps = [m["step"] for m in read_jsonl(rd / "metrics.jsonl") if "loss" in m]
    assert steps == [1, 2, 3, 4, 5, 6]
    assert all(m.get("loss") != 9.0 for m in read_jsonl(rd / "metrics.jsonl"))  # the superseded lines are gone
    assert [p["step"] for p in read_jsonl(rd / "probes.jsonl")].count(5) == 0


def test_a_run_live_in_another_process_is_not_resumed(old_root: Path) -> None:
    """resume() of a run another live kernel trains was accepted: two writers in one directory."""
    import subprocess
    import sys

    from jupyter_ft.errors import RunStateError

    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        record_path = old_root / RUN_ID / "run.json"
        record = json.loads(record_path.read_text())
        record.update(status="running", pid=other.pid)
        record_path.write_text(json.dumps(record))
        with pytest.raises(RunStateError, match=f"running in process {other.pid}.*stop it there"):
            jupyter_ft.resume(RUN_ID, root=old_root)
        assert json.loads(record_path.read_text())["status"] == "running"  # untouched
    finally:
        other.kill()
        other.wait()


def test_trust_remote_code_never_comes_back_from_disk(old_root: Path, monkeypatch) -> None:
    """A run directory someone sent you could run a model repository's code on resume, %ft_eval or --merge:
    trust_remote_code came from its run.json. It comes only from the caller now."""
    from jupyter_ft import models
    from jupyter_ft.config import FineTuneConfig

    record_path = old_root / RUN_ID / "run.json"
    record = json.loads(record_path.read_text())
    record["config"]["model"]["trust_remote_code"] = True
    record_path.write_text(json.dumps(record))
    assert FineTuneConfig.from_record(record["config"]).model.trust_remote_code is False
    assert FineTuneConfig.from_record(record["config"], trust_remote_code=True).model.trust_remote_code is True

    asked: list[bool] = []
    real = models.load_tokenizer
    monkeypatch.setattr(models, "load_tokenizer", lambda resolved, trust=False: asked.append(trust) or real(resolved))
    jupyter_ft.evaluate_run(RUN_ID, root=old_root, n=2, max_new_tokens=2, metrics=["exact_match"])
    from jupyter_ft.export import export_run

    export_run(RUN_ID, old_root.parent / "merged", root=old_root, merge=True)
    run = jupyter_ft.resume(RUN_ID, root=old_root)
    assert run.wait(180) == "finished", run.run_dir.record.traceback
    assert run.config.model.trust_remote_code is False
    assert asked == [False, False, False]  # eval, merge, resume: none ran the repository's code
