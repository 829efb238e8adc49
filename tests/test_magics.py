"""The magics through a real IPython InteractiveShell (no frontend: the static dashboard path)."""

from __future__ import annotations

from pathlib import Path

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

from jupyter_ft.magics import expand_variables, locate
from jupyter_ft.store import RunStore


@pytest.fixture(scope="module")
def shell() -> InteractiveShell:
    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "jupyter_ft")
    return ip


@pytest.fixture()
def body(tiny_model_dir: Path, tmp_path: Path):
    root = tmp_path / "runs"

    def make(**training) -> str:
        t = {"max_steps": 4, "batch_size": 4, "logging_every": 1, "eval_every": 2, "save_every": 2}
        t.update(training)
        lines = "\n".join(f"  {k}: {v}" for k, v in t.items())
        return (f"model:\n  name: {tiny_model_dir}\ndata:\n  source: demo:support_tickets\n  max_length: 128\n"
                f"training:\n{lines}\noutput:\n  root: {root}\n")

    make.root = root  # type: ignore[attr-defined]
    return make


def launch(shell: InteractiveShell, line: str, cell: str):
    """Run a %%finetune cell; the magic binds the Run to `_` (and shows a dashboard instead of an Out line)."""
    shell.user_ns.pop("_", None)
    assert shell.run_cell_magic("finetune", line, cell) is None
    return shell.user_ns["_"]


def test_extension_registers_the_magics(shell: InteractiveShell) -> None:
    magics = shell.magics_manager.magics
    assert "finetune" in magics["cell"]
    assert {"ft_runs", "ft_stop", "ft_status", "ft_show", "ft_form", "ft_help"} <= set(magics["line"])


def test_finetune_wait_trains_and_binds_out(shell: InteractiveShell, body, capsys) -> None:
    run = launch(shell, "--wait --name tiny --out my_run", body())
    assert run.status == "finished", run.run_dir.record.traceback
    assert shell.user_ns["my_run"] is run and run.name == "tiny"
    assert RunStore(body.root).load(run.id).status == "finished"


def test_finetune_without_wait_returns_at_once_and_stop(shell: InteractiveShell, body) -> None:
    run = launch(shell, "", body(max_steps=400, eval_every=1000, save_every=1000))
    assert not run.done
    shell.run_line_magic("ft_stop", "")
    assert run.wait(120) == "stopped"
    assert run.summary.get("global_step", 0) < 400  # stopped before training or within one step


def test_result_lands_in_underscore(shell: InteractiveShell, body) -> None:
    result = shell.run_cell("%%finetune --wait\n" + body(max_steps=2), store_history=True)
    assert result.error_in_exec is None and result.result is None  # no stale Out[] line
    assert shell.user_ns["_"].status == "finished"


def test_invalid_body_names_lines_and_fields_and_launches_nothing(shell: InteractiveShell, tmp_path: Path) -> None:
    root = tmp_path / "never"
    cell = f"training:\n  learning_rate: -1\n  batchsize: 8\noutput:\n  root: {root}\n"
    with pytest.raises(UsageError) as err:
        shell.run_cell_magic("finetune", "", cell)
    message = str(err.value)
    assert message.splitlines()[0] == "2 problem(s) in the %%finetune cell; nothing was launched."
    assert "  line 2: training.learning_rate: must be > 0 (got -1)" in message
    assert "  line 3: training.batchsize: unknown key. Did you mean 'batch_size'?" in message
    assert not root.exists()


def test_invalid_yaml_points_at_line(shell: InteractiveShell) -> None:
    with pytest.raises(UsageError, match=r"invalid YAML in the %%finetune cell at line 3, column"):
        shell.run_cell_magic("finetune", "", "training:\n  epochs: 1\n batch_size: [\n")


def test_usage_error_is_shown_without_traceback(shell: InteractiveShell, capsys) -> None:
    shell.run_cell("%%finetune\ntraining:\n  epochs: 0\n")
    err = capsys.readouterr()
    text = err.out + err.err
    assert "UsageError: 1 problem(s) in the %%finetune cell" in text
    assert "Traceback" not in text


def test_variables_expand_from_namespace(shell: InteractiveShell, body, demo_rows) -> None:
    import pandas as pd

    shell.user_ns.update(lr=1e-3, steps=2, rows=demo_rows[:40], df=pd.DataFrame(demo_rows[:40]))
    cell = body().replace("  max_steps: 4", "  max_steps: {steps}\n  learning_rate: $lr")
    cell = cell.replace("source: demo:support_tickets", "source: $rows")
    run = launch(shell, "--wait", cell)
    assert run.status == "finished", run.run_dir.record.traceback
    assert run.config.training.learning_rate == 1e-3 and run.config.training.max_steps == 2
    assert run.run_dir.record.dataset["rows"] == 40
    assert run.run_dir.record.config["data"]["source"] == "<in-memory list>"

    df_cell = body(max_steps=2).replace("source: demo:support_tickets", "source: df")
    run2 = launch(shell, "--wait", df_cell)
    assert run2.status == "finished" and run2.run_dir.record.dataset["source"] == "<in-memory DataFrame>"


def test_unknown_dollar_variable_is_an_error(shell: InteractiveShell) -> None:
    with pytest.raises(UsageError, match=r"\$nope: no variable named 'nope'"):
        shell.run_cell_magic("finetune", "", "training:\n  learning_rate: $nope\n")


def test_expand_keeps_yaml_flow_mappings() -> None:
    text, objects = expand_variables("columns: {output: answer}\nx: {n}\ny: $s\n", {"n": 3, "s": "a b"})
    assert text == "columns: {output: answer}\nx: 3\ny: a b\n" and objects == {}


def test_locate_finds_nested_keys() -> None:
    text = "model:\n  name: x\ntraining:\n  epochs: 2\n  batch_size: 0\n"
    assert locate(text, "training.batch_size") == 5
    assert locate(text, "training.missing") == 3
    assert locate(text, "nothing") is None


# --------------------------------------------------------------------------- bad input (issue #14)
def test_numpy_scalars_expand_as_their_python_values(shell: InteractiveShell, tmp_path: Path) -> None:
    np = pytest.importorskip("numpy")
    text, objects = expand_variables("lr: $lr\nn: {n}\nok: $b\n",
                                     {"lr": np.float64(3e-4), "n": np.int64(8), "b": np.bool_(False)})
    assert (text, objects) == ("lr: 0.0003\nn: 8\nok: false\n", {})

    root = tmp_path / "never"
    shell.user_ns.update(np_lr=np.float64(3e-4), np_steps=np.int64(2), np_pack=np.bool_(True))
    cell = (f"training:\n  learning_rate: $np_lr\n  max_steps: {{np_steps}}\n  batch_size: 0\n"
            f"data:\n  packing: $np_pack\noutput:\n  root: {root}\n")
    with pytest.raises(UsageError) as err:  # batch_size: 0 stops the launch; the numpy values are all valid
        shell.run_cell_magic("finetune", "", cell)
    assert str(err.value) == ("1 problem(s) in the %%finetune cell; nothing was launched.\n"
                              "  line 4: training.batch_size: must be >= 1 (got 0). Lower it if you run out of memory")
    assert not root.exists()


def test_a_variable_yaml_cannot_write_is_a_usage_error_naming_it(shell: InteractiveShell) -> None:
    import enum

    class Size(enum.IntEnum):
        SMALL = 8

    shell.user_ns["bs_enum"] = Size.SMALL
    for ref in ("$bs_enum", "{bs_enum}"):
        with pytest.raises(UsageError) as err:
            shell.run_cell_magic("finetune", "", f"training:\n  batch_size: {ref}\n")
        assert str(err.value) == (f"{ref}: a value of type Size cannot be written into the YAML; convert it first, "
                                  "e.g. int(bs_enum)")


def alias_bomb(levels: int) -> str:
    """Nine aliases of nine aliases, ``levels`` times, used as training.learning_rate."""
    lines = ["  a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"  a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "anchors:\n" + "\n".join(lines) + f"\ntraining:\n  learning_rate: *a{levels - 1}\n"


DEEP = ("lists and mappings nest deeper than 50 levels. A config needs only 'section: field: value'; look for "
        "brackets that are never closed or a value pasted into itself")


@pytest.mark.parametrize("cell, message", [
    (alias_bomb(7), "at line 7, column 12: aliases expand to more than 100000 values (at *a4). Repeat an anchor "
                    "(&name) a few times, not aliases of aliases; write the values out"),
    ("training:\n  learning_rate: " + "[" * 500 + "]" * 500 + "\n", f"at line 2, column 66: {DEEP}"),
    ('{"a": ' * 500 + "1" + "}" * 500 + "\n", f"at line 1, column 301: {DEEP}"),
    ("training: &t\n  learning_rate: *t\n", "at line 2, column 18: the alias *t is inside the &t it repeats (a value "
                                            "that contains itself). Move *t out of the &t list or mapping"),
    ("output:\n  name: 2024-13-45\n", "at line 2, column 9: cannot read '2024-13-45' as a date (month must be in "
                                      "1..12). Fix the value, or quote it to keep it as text"),
])
def test_yaml_bombs_and_deep_nesting_are_one_line_usage_errors(shell: InteractiveShell, cell, message) -> None:
    for line in ("", "--dry-run"):
        with pytest.raises(UsageError) as err:
            shell.run_cell_magic("finetune", line, cell)
        assert str(err.value) == f"unusable YAML in the %%finetune cell {message}; nothing was launched."
    if not cell.startswith("{"):  # a sweep cell parses the same way (a flow-mapping body cannot take a sweep: key)
        with pytest.raises(UsageError) as err:
            shell.run_cell_magic("finetune", "--dry-run", cell + "sweep:\n  lora.r: [8, 16]\n")
        assert str(err.value) == f"unusable YAML in the %%finetune cell {message}; nothing was launched."


def test_seed_beyond_numpy_is_named_with_its_line(shell: InteractiveShell) -> None:
    with pytest.raises(UsageError) as err:
        shell.run_cell_magic("finetune", "", "training:\n  epochs: 1\n  seed: 4294967296\n")
    assert str(err.value) == ("1 problem(s) in the %%finetune cell; nothing was launched.\n"
                              "  line 3: training.seed: must be <= 4294967295 (got 4294967296). numpy and torch take "
                              "seeds below 2**32; use a smaller seed such as 42")


def test_dry_run_shows_data_examples_and_memory_without_training(shell: InteractiveShell, body, capsys) -> None:
    assert shell.run_cell_magic("finetune", "--dry-run", body()) is None
    out = capsys.readouterr().out
    assert "detected format 'alpaca'" in out
    assert "rows: 480 (train 432, eval 48)" in out
    assert "memory estimate: weights" in out
    assert "<|im_start|>assistant\n  [[" in out and "<|im_end|>\n  ]]" in out  # only the answer is trained
    assert "[[<|im_start|>" not in out
    assert not body.root.exists()


def test_dry_run_html_separates_prompt_and_completion(body) -> None:
    from jupyter_ft import FineTuneConfig
    from jupyter_ft.preview import dry_run

    report = dry_run(FineTuneConfig.from_yaml(body()))
    html = report._repr_html_()
    assert html.count('title="trained"') == 3 and html.count('title="prompt (masked)"') == 3


def test_runs_status_and_help(shell: InteractiveShell, body, capsys) -> None:
    run = launch(shell, "--wait --name listed", body(max_steps=2))
    capsys.readouterr()
    shell.run_line_magic("ft_runs", "")
    table = capsys.readouterr().out
    assert run.id in table and "finished" in table and "listed" in table
    shell.run_line_magic("ft_runs", "--status failed")
    assert run.id not in capsys.readouterr().out
    shell.run_line_magic("ft_status", run.id)
    assert capsys.readouterr().out.startswith(f"{run.id}: finished, step 2")
    shell.run_line_magic("ft_help", "")
    help_out = capsys.readouterr().out
    assert "%%finetune [--name N]" in help_out and "learning_rate: 0.0002" in help_out


def test_unknown_run_is_a_usage_error(shell: InteractiveShell, body) -> None:
    shell.run_cell_magic("finetune", "--wait", body(max_steps=1))
    with pytest.raises(UsageError, match="no run 'does-not-exist'"):
        shell.run_line_magic("ft_status", "does-not-exist")


def test_ft_show_renders_a_finished_run_from_disk(shell: InteractiveShell, body, capsys) -> None:
    run = launch(shell, "--wait", body(max_steps=2))
    capsys.readouterr()
    shell.run_line_magic("ft_show", run.id)  # by id: read back through the store
    out = capsys.readouterr().out
    assert run.id in out or "finished" in out


# --------------------------------------------------------------------------- sweeps, compare, run management
def sweep_body(body, sweep: str, **training) -> str:
    return body(**{"max_steps": 2, "eval_every": 2, "save_every": 2, **training}) + \
        "probes:\n  forgetting: false\n" + sweep


def test_sweep_cell_trains_runs_in_order_then_compare_and_filter(shell: InteractiveShell, body, capsys) -> None:
    from jupyter_ft.sweep import Sweep

    cell = sweep_body(body, "sweep:\n  training.learning_rate: [1e-4, 5e-3]\n")
    sweep = launch(shell, "--wait --name lr --out sw", cell)
    assert isinstance(sweep, Sweep) and shell.user_ns["sw"] is sweep
    assert [r.status for r in sweep.runs] == ["finished", "finished"]
    assert [r.name for r in sweep.runs] == ["lr-1", "lr-2"]
    out = capsys.readouterr().out
    assert f"sweep lr ({sweep.id}): finished · 2/2 runs done" in out  # the static sweep dashboard
    assert "learning_rate" in out and "best eval" in out  # its table of runs

    shell.run_line_magic("ft_compare", "--sweep")  # the newest sweep, read from the store
    out = capsys.readouterr().out
    assert "2 run(s) ranked by best_eval_loss (lower is better)" in out
    assert "training.learning_rate" in out and "lora.r" not in out and "★" in out
    comparison = shell.user_ns["_"]
    assert set(comparison.ranking) == {r.id for r in sweep.runs} and comparison.best in comparison.ranking

    shell.run_line_magic("ft_runs", f"--sweep {sweep.id}")
    table = capsys.readouterr().out
    assert all(r.id in table for r in sweep.runs) and f"{sweep.id} 2/2" in table
    shell.run_line_magic("ft_runs", "--sweep sweep-none")
    assert "no runs yet" in capsys.readouterr().out


def test_sweep_dry_run_lists_runs_and_memory(shell: InteractiveShell, body, capsys) -> None:
    cell = sweep_body(body, "sweep:\n  training.learning_rate: [1e-4, 3e-4]\n  lora.r: [8, 16]\n")
    assert shell.run_cell_magic("finetune", "--dry-run --name lrs", cell) is None
    out = capsys.readouterr().out
    assert "sweep 'lrs': 4 run(s) (grid); nothing launched (--dry-run)" in out
    assert "lrs-4" in out and "GiB" in out and "training.learning_rate" in out
    assert not body.root.exists()


def test_invalid_sweep_key_is_a_usage_error_naming_it(shell: InteractiveShell, body) -> None:
    cell = sweep_body(body, "sweep:\n  training.learnig_rate: [1e-4, 3e-4]\n")
    with pytest.raises(UsageError) as err:
        shell.run_cell_magic("finetune", "", cell)
    line = cell.splitlines().index("  training.learnig_rate: [1e-4, 3e-4]") + 1
    assert (f"  line {line}: sweep.training.learnig_rate: unknown config key. Did you mean "
            "'training.learning_rate'?") in str(err.value)
    assert "nothing was launched" in str(err.value)
    assert not body.root.exists()


@pytest.fixture()
def records(tmp_path: Path):
    """Two finished runs in a store, as a past session left them."""
    store = RunStore(tmp_path / "store")
    made = []
    for name in ("keep", "drop"):
        rd = store.create({"training": {"learning_rate": 1e-4}}, name)
        rd.save(status="finished")
        made.append(rd)
    return store, made


def test_ft_rm_asks_first_and_deletes_only_run_directories(shell: InteractiveShell, records, monkeypatch,
                                                           capsys, tmp_path: Path) -> None:
    store, (keep, drop) = records
    root = f"--root {store.root}"
    answers = iter(["n", "y"])
    monkeypatch.setattr("builtins.input", lambda prompt: next(answers))
    shell.run_line_magic("ft_rm", f"{drop.record.id} {root}")
    assert "nothing deleted" in capsys.readouterr().out and drop.path.is_dir()
    shell.run_line_magic("ft_rm", f"drop {root}")  # by name; answered "y"
    assert not drop.path.exists() and keep.path.is_dir()

    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "run.json").write_text("{}")
    monkeypatch.setattr("builtins.input", lambda prompt: pytest.fail("must not ask"))
    for ref in ("../outside", str(outside), ".."):
        with pytest.raises(UsageError):
            shell.run_line_magic("ft_rm", f"{ref} --yes {root}")
    (store.root / "alias").symlink_to(keep.path)  # a link inside the root to a real run
    with pytest.raises(KeyError, match="no run 'alias'"):
        store.delete("alias")
    assert outside.is_dir() and keep.path.is_dir()
    shell.run_line_magic("ft_rm", f"{keep.record.id} --yes {root}")
    assert not keep.path.exists()


def test_ft_rm_refuses_a_live_run(shell: InteractiveShell, body) -> None:
    run = launch(shell, "", body(max_steps=400, eval_every=1000, save_every=1000))
    try:
        with pytest.raises(UsageError, match="is training in this kernel; stop it first"):
            shell.run_line_magic("ft_rm", f"{run.id} --yes --root {body.root}")
        assert run.path.is_dir()
    finally:
        run.stop()
        run.wait(120)


def test_tags_and_notes_show_in_ft_runs_and_filter(shell: InteractiveShell, records, capsys) -> None:
    store, (keep, drop) = records
    root = f"--root {store.root}"
    shell.run_line_magic("ft_tag", f"keep baseline good {root}")
    shell.run_line_magic("ft_note", f'{drop.record.id} "lr too high: loss exploded" {root}')
    capsys.readouterr()
    assert store.load(keep.record.id).tags == ["baseline", "good"]
    assert store.load(drop.record.id).notes == "lr too high: loss exploded"
    shell.run_line_magic("ft_runs", root)
    table = capsys.readouterr().out
    assert "baseline good" in table and "lr too high: loss exploded" in table
    shell.run_line_magic("ft_runs", f"--tag baseline {root}")
    table = capsys.readouterr().out
    assert keep.record.id in table and drop.record.id not in table
    shell.run_line_magic("ft_runs", f"--name dro {root}")
    table = capsys.readouterr().out
    assert drop.record.id in table and keep.record.id not in table
    shell.run_line_magic("ft_tag", f"keep good --remove {root}")
    assert store.load(keep.record.id).tags == ["baseline"]
    with pytest.raises(UsageError, match="no run 'nope'"):
        shell.run_line_magic("ft_tag", f"nope x {root}")
    shell.run_line_magic("ft_help", "")
    help_out = capsys.readouterr().out
    assert all(m in help_out for m in ("%ft_compare", "%ft_rm", "%ft_tag", "%ft_note", "sweep:"))


def test_ft_stop_skips_the_sweeps_current_run_and_stop_sweep_cancels_the_rest(shell: InteractiveShell, body,
                                                                               capsys) -> None:
    import time

    cell = sweep_body(body, "sweep:\n  training.max_steps: [300, 301, 1]\n", eval_every=1000, save_every=1000)
    sweep = launch(shell, "", cell)

    def training(run) -> None:
        deadline = time.monotonic() + 60
        while (run.progress.get("step") or 0) < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert run.status == "running"

    training(sweep.runs[0])
    shell.run_line_magic("ft_stop", "")  # the run training now, not the sweep's last queued one
    assert sweep.runs[0].wait(60) == "stopped"
    training(sweep.runs[1])
    shell.run_line_magic("ft_stop", "--sweep")
    assert "the queued runs are cancelled" in capsys.readouterr().out
    assert sweep.wait(60) == ["stopped", "stopped", "stopped"]
    assert [sweep.status_of(r) for r in sweep.runs] == ["stopped", "stopped", "cancelled"]


def test_ft_compare_named_runs_from_the_store(shell: InteractiveShell, tmp_path: Path, capsys) -> None:
    from test_compare import make_run

    store = RunStore(tmp_path / "cmp")
    high = make_run(store, "too-high", lr=2e-2, losses=[2.0, 3.5], evals=[2.5, 4.0], verdicts=("overfitting", "mild"))
    right = make_run(store, "just-right", lr=2e-4, losses=[2.0, 1.2], evals=[1.6, 1.3], verdicts=("ok", "none"))
    shell.run_line_magic("ft_compare", f"too-high {right.record.id} --root {store.root} --x tokens --out cmp")
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == "2 run(s) ranked by best_eval_loss (lower is better)"
    assert lines[2].split()[:3] == ["1", "★", "just-right"] and lines[3].split()[:2] == ["2", "too-high"]
    assert "overfitting" in lines[3] and f"best: {right.record.id}" in out
    assert shell.user_ns["cmp"].x == "tokens" and shell.user_ns["cmp"].best == right.record.id
    assert high.record.id in shell.user_ns["cmp"].ranking
    with pytest.raises(UsageError, match="one of them"):
        shell.run_line_magic("ft_compare", f"--root {store.root}")
    with pytest.raises(UsageError, match="unknown metric 'rogue'"):
        shell.run_line_magic("ft_compare", f"--last 2 --metric rogue --root {store.root}")


def test_ft_resume_continues_a_stopped_run_and_after_a_restart(shell: InteractiveShell, body, capsys) -> None:
    """Stop, %ft_resume: the same run trains on from its checkpoint; then the same from a 'new kernel' (the
    run store only) with --root; and the errors a user can hit are one-line usage errors."""
    from jupyter_ft.magics import FineTuneMagics

    run = launch(shell, "--name to-resume", body(max_steps=8, eval_every=1000, save_every=1000))
    run.subscribe(lambda e: run.stop() if e.kind == "progress" and e.data["step"] >= 3 else None)
    assert run.wait(120) == "stopped"
    stopped_at = run.summary["global_step"]
    with pytest.raises(UsageError, match="still training"):
        busy = launch(shell, "", body(max_steps=400, eval_every=1000, save_every=1000))
        try:
            shell.run_line_magic("ft_resume", busy.id)
        finally:
            busy.stop()
            busy.wait(120)

    shell.user_ns.pop("_", None)
    shell.run_line_magic("ft_resume", f"{run.id} --wait --out resumed")
    resumed = shell.user_ns["resumed"]
    assert resumed is shell.user_ns["_"] and resumed.id == run.id and resumed.status == "finished"
    assert f"resuming {run.id} from its checkpoint at step {stopped_at}" in capsys.readouterr().out
    steps = [h["step"] for h in resumed.metrics() if "loss" in h]
    assert steps == list(range(1, 9))

    fresh = FineTuneMagics(shell)  # a restarted kernel: nothing launched, the store on disk
    with pytest.raises(UsageError, match="no checkpoint to resume from"):
        never = launch(shell, "", body(max_steps=400, eval_every=1000, save_every=1000))
        never.stop()
        assert never.wait(120) == "stopped"
        import shutil

        shutil.rmtree(never.run_dir.checkpoints_dir, ignore_errors=True)
        fresh.ft_resume(f"{never.id} --root {body.root}")
    with pytest.raises(UsageError, match="no run 'nope'"):
        fresh.ft_resume(f"nope --root {body.root}")
    with pytest.raises(UsageError, match="no run launched in this kernel"):
        fresh.ft_resume("")


# --------------------------------------------------------------------------- errors: one line, no traceback
def run_cell_text(shell: InteractiveShell, cell: str, capsys) -> tuple[str, object]:
    """Run a cell as a user would (``shell.run_cell``) and return what it printed and the error it ended in."""
    capsys.readouterr()
    result = shell.run_cell(cell)
    captured = capsys.readouterr()
    return captured.out + captured.err, result.error_in_exec


@pytest.fixture()
def bad_sources(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """Data a new user gets wrong, each with the words its message must contain."""
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    csv = tmp_path / "unknown.csv"
    csv.write_text("foo,bar\n1,2\n")
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"instruction": "a", "output": "b"}\n{broken\n')
    return {
        "missing": (tmp_path / "nope.jsonl", "data.source: file not found"),
        "empty": (empty, "the file is empty"),
        "unknown columns": (csv, "could not detect the data format from columns foo, bar"),
        "broken line": (broken, "line 2: invalid JSON"),
    }


def dry_run_cell(model: object, source: object, root: Path) -> str:
    return f"model:\n  name: {model}\ndata:\n  source: {source}\noutput:\n  root: {root}\n"


@pytest.mark.parametrize("case", ["missing", "empty", "unknown columns", "broken line"])
def test_dry_run_data_errors_are_one_line_without_traceback(shell: InteractiveShell, tiny_model_dir: Path,
                                                            bad_sources, tmp_path: Path, capsys, case: str) -> None:
    path, words = bad_sources[case]
    text, error = run_cell_text(shell, "%%finetune --dry-run\n" + dry_run_cell(tiny_model_dir, path, tmp_path / "r"),
                                capsys)
    assert isinstance(error, UsageError)
    assert "UsageError: " in text and words in text
    assert "Traceback" not in text and "DataError" not in text
    assert not (tmp_path / "r").exists()


def test_dry_run_unreachable_hub_model_is_one_line(shell: InteractiveShell, tmp_path: Path, capsys,
                                                   monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the hub unreachable, as on a plane or behind a proxy
    cell = dry_run_cell("some-org/some-model", "demo:support_tickets", tmp_path / "r")
    text, error = run_cell_text(shell, "%%finetune --dry-run\n" + cell, capsys)
    assert isinstance(error, UsageError)
    assert "UsageError: model.name: 'some-org/some-model' is not in the local Hugging Face cache" in text
    assert "Traceback" not in text


@pytest.mark.parametrize("case", ["missing", "empty", "unknown columns", "broken line"])
def test_dry_run_function_raises_the_data_error(tiny_model_dir: Path, bad_sources, tmp_path: Path,
                                                case: str) -> None:
    """The same mistakes from Python: ``dry_run`` raises the ``JupyterFTError`` subclass (a ``ValueError``)."""
    from jupyter_ft import FineTuneConfig
    from jupyter_ft.errors import DataError, JupyterFTError
    from jupyter_ft.preview import dry_run

    path, words = bad_sources[case]
    config = FineTuneConfig.from_yaml(dry_run_cell(tiny_model_dir, path, tmp_path / "r"))
    with pytest.raises(DataError, match=words) as err:
        dry_run(config)
    assert isinstance(err.value, JupyterFTError) and isinstance(err.value, ValueError)


def test_dry_run_function_raises_model_resolution_error(tmp_path: Path, monkeypatch) -> None:
    from jupyter_ft import FineTuneConfig
    from jupyter_ft.errors import JupyterFTError, ModelResolutionError
    from jupyter_ft.preview import dry_run

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = FineTuneConfig.from_yaml(dry_run_cell("some-org/some-model", "demo:support_tickets", tmp_path / "r"))
    with pytest.raises(ModelResolutionError, match="hub cannot be reached") as err:
        dry_run(config)
    assert isinstance(err.value, JupyterFTError)


def test_run_magics_errors_are_one_line_without_traceback(shell: InteractiveShell, records, capsys) -> None:
    """%ft_eval, %ft_export, %ft_resume, %ft_rm, %ft_compare: a wrong run, a run with nothing to evaluate or
    resume, a wrong selection each read as one line."""
    store, (keep, _drop) = records
    root = f"--root {store.root}"
    cases = {
        f"%ft_eval nope {root}": "no run 'nope' under",
        f"%ft_eval keep {root}": "has no saved adapter",
        f"%ft_export keep --out {store.root.parent / 'exported'} {root}": "has no saved adapter",
        f"%ft_export nope --out {store.root.parent / 'exported'} {root}": "no run 'nope' under",
        f"%ft_resume nope {root}": f"no run 'nope' under {store.root}; see %ft_runs --root",
        f"%ft_resume keep {root}": "has no checkpoint to resume from",
        f"%ft_rm nope --yes {root}": "no run is named 'nope'",
        f"%ft_compare nope {root}": "no run 'nope' under",
        f"%ft_compare {root}": "give run ids/names, or --sweep ID, or --last N (one of them)",
        f"%ft_compare --last 2 --metric rogue {root}": "unknown metric 'rogue'",
        f"%ft_compare --sweep {root}": "no sweep under",
    }
    for cell, words in cases.items():
        text, error = run_cell_text(shell, cell, capsys)
        assert isinstance(error, UsageError), (cell, text)
        assert "UsageError: " in text and words in text, (cell, text)
        assert "Traceback" not in text, (cell, text)
    assert keep.path.is_dir() and not (store.root.parent / "exported").exists()


def test_lookup_functions_raise_run_not_found(records) -> None:
    """Run lookup from Python: by id, by name (the newest of that name), and ``RunNotFound`` otherwise."""
    from jupyter_ft.errors import RunNotFound
    from jupyter_ft.magics.lookup import KernelRuns, find_id, find_one

    store, (keep, drop) = records
    assert find_id(store, "keep") == keep.record.id and find_id(store, f"'{drop.record.id}'") == drop.record.id
    assert find_one(store, "drop").id == drop.record.id
    with pytest.raises(RunNotFound, match="no run 'nope' under"):
        find_id(store, "nope")
    store.create({}, "keep")  # a second run of that name: deleting by the name would be a guess
    with pytest.raises(RunNotFound, match="several runs are named 'keep'"):
        find_one(store, "keep")
    with pytest.raises(RunNotFound, match="no run launched in this kernel"):
        KernelRuns().resolve("")


def test_only_jupyter_ft_errors_lose_their_traceback(capsys) -> None:
    """``one_line_errors`` turns a JupyterFTError into a UsageError; anything else (a bug) keeps its traceback."""
    from IPython.core.magic import Magics, line_magic, magics_class

    from jupyter_ft.errors import DataError
    from jupyter_ft.magics.router import one_line_errors

    @one_line_errors
    @magics_class
    class Probe(Magics):
        @line_magic
        def probe_error(self, line: str) -> None:
            """Raise what the line says."""
            raise DataError("data.source: bad") if line == "ours" else RuntimeError("a bug")

    shell = InteractiveShell.instance()
    shell.register_magics(Probe)
    assert Probe.probe_error.__doc__ == "Raise what the line says."
    with pytest.raises(UsageError, match="^data.source: bad$"):
        shell.run_line_magic("probe_error", "ours")
    text, error = run_cell_text(shell, "%probe_error other", capsys)
    assert isinstance(error, RuntimeError) and "Traceback" in text
