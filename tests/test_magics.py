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
