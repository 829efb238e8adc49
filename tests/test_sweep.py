"""Sweeps: expansion (grid, random, errors) without training, then real sweeps on the tiny model."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from test_training import make_config

from jupyter_ft.config import ConfigError
from jupyter_ft.store import RunStore
from jupyter_ft.config.sweep_plan import plan_sweep
from jupyter_ft.sweep import Sweep, estimate_sweep, start_sweep
from jupyter_ft.widgets.sweep_dashboard import StaticSweepDashboard, WidgetSweepDashboard

DEMO = Path(__file__).resolve().parents[1] / "jupyter_ft" / "demo" / "support_tickets.jsonl"


def problems(block, base=None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        plan_sweep(dict(base or {}), block)
    return [str(p) for p in info.value.problems]


# --------------------------------------------------------------------------- expansion
def test_grid_expands_every_combination_in_order():
    plan = plan_sweep({"sweep": {"training.learning_rate": [1e-4, 3e-4, 1e-3], "lora.r": [8, 16]},
                       "training": {"max_steps": 5}})
    assert len(plan.points) == 6
    assert [p.params for p in plan.points[:3]] == [
        {"training.learning_rate": 1e-4, "lora.r": 8}, {"training.learning_rate": 1e-4, "lora.r": 16},
        {"training.learning_rate": 3e-4, "lora.r": 8}]
    assert [(p.config.training.learning_rate, p.config.lora.r) for p in plan.points][-1] == (1e-3, 16)
    assert all(p.config.training.max_steps == 5 for p in plan.points)  # the base config is kept
    assert plan.keys == ["training.learning_rate", "lora.r"]


def test_grid_accepts_params_block_and_nested_keys():
    a = plan_sweep({}, {"params": {"training": {"learning_rate": [1e-4, 2e-4]}, "lora.r": [8]}})
    b = plan_sweep({}, {"training.learning_rate": [1e-4, 2e-4], "lora": {"r": [8]}})
    assert [p.params for p in a.points] == [p.params for p in b.points]
    assert len(a.points) == 2 and a.keys == ["training.learning_rate"]  # r=8 everywhere: not a differing key


def test_random_sweep_count_and_seed_determinism():
    block = {"method": "random", "n": 7, "seed": 3,
             "params": {"training.learning_rate": {"log_uniform": [1e-5, 1e-3]}, "lora.r": [4, 8, 16],
                        "lora.dropout": {"uniform": [0.0, 0.2]}, "training.batch_size": {"int_uniform": [2, 6]}}}
    one, two = plan_sweep({}, block), plan_sweep({}, json.loads(json.dumps(block)))
    other = plan_sweep({}, {**block, "seed": 4})
    assert len(one.points) == 7
    assert [p.params for p in one.points] == [p.params for p in two.points]
    assert [p.params for p in one.points] != [p.params for p in other.points]
    for p in one.points:
        assert 1e-5 <= p.params["training.learning_rate"] <= 1e-3
        assert p.params["lora.r"] in (4, 8, 16) and 0.0 <= p.params["lora.dropout"] <= 0.2
        assert isinstance(p.params["training.batch_size"], int) and 2 <= p.params["training.batch_size"] <= 6
        assert p.config.training.learning_rate == p.params["training.learning_rate"]


def test_invalid_sweep_keys_name_the_key_with_did_you_mean():
    assert problems({"training.learnig_rate": [1e-4], "lora.rank": [8], "trianing.seed": [1]}) == [
        "sweep.training.learnig_rate: unknown config key. Did you mean 'training.learning_rate'?",
        "sweep.lora.rank: unknown config key. Did you mean 'lora.r'?",
        "sweep.trianing.seed: unknown config key. Did you mean 'training.seed'?",
    ]
    assert "cannot be swept" in problems({"output.root": ["a", "b"]})[0]


def test_sweep_syntax_problems_are_reported_together():
    out = problems({"method": "random", "params": {"lora.r": 8, "training.learning_rate": {"log_uniform": [0, 1]}}})
    assert out == [
        "sweep.lora.r: must be a non-empty list of values to try (got 8). e.g. lora.r: [8, ...]",
        "sweep.training.learning_rate: log_uniform needs low > 0 (got [0, 1])",
        "sweep.n: must be a whole number of runs between 1 and 256. A random sweep draws n configurations",
    ]
    assert problems({"training.learning_rate": {"uniform": [1e-5, 1e-3]}})[0].startswith(
        "sweep.training.learning_rate: a range needs method: random")
    assert problems({"method": "bayes", "lora.r": [8]})[0] == (
        "sweep.method: is not a valid choice (got 'bayes'). Choose grid or random")
    assert problems([1, 2])[0].startswith("sweep: must be a mapping of config keys to lists of values")


def test_every_expanded_config_is_validated_at_once():
    out = problems({"training.learning_rate": [1e-4, 2.0], "lora.r": [0, 8]}, {"training": {"batchsize": 8}})
    assert out == [
        "training.batchsize: unknown key. Did you mean 'batch_size'?",  # in every run: reported once
        "lora.r: must be >= 1 in sweep runs 1, 3 (got 0). Common ranks are 8, 16, 32, 64",
        ("training.learning_rate: must be <= 1 in sweep runs 3, 4 (got 2.0). LoRA usually trains well between "
         "1e-5 and 1e-3"),
    ]


def test_dry_run_plan_lists_differing_params_and_memory(tiny_model_dir: Path, tmp_path: Path):
    cfg = make_config(tiny_model_dir, tmp_path / "runs")
    plan = plan_sweep(cfg, {"training.learning_rate": [1e-4, 1e-3], "training.batch_size": [2, 8]}, name="lr")
    estimate_sweep(plan)
    rows = plan.rows()
    assert [r["run"] for r in rows] == ["lr-1", "lr-2", "lr-3", "lr-4"]
    assert set(rows[0]) == {"run", "training.learning_rate", "training.batch_size", "memory"}
    assert plan.memory[1].activations > plan.memory[0].activations  # batch 8 needs more than batch 2
    text = str(plan)
    assert "4 run(s) (grid); nothing launched" in text and "GiB" in text
    assert not (tmp_path / "runs").exists()


# --------------------------------------------------------------------------- running
def fast_config(model_dir: Path, root: Path, **training) -> dict:
    cfg = make_config(model_dir, root, **{"max_steps": 2, "eval_every": 2, "save_every": 2, **training})
    rows = [json.loads(line) for line in DEMO.read_text().splitlines()][:40]
    cfg["data"].update(source=rows, eval_split=0.1)
    cfg["probes"] = {"forgetting": False}
    return cfg


def test_four_run_sweep_trains_in_order_with_four_run_directories(tiny_model_dir: Path, tmp_path: Path):
    root = tmp_path / "runs"
    events = []
    cfg = fast_config(tiny_model_dir, root)
    cfg["sweep"] = {"training.learning_rate": [1e-4, 3e-3], "lora.r": [4, 8]}
    sweep = Sweep(plan_sweep(cfg, name="grid"))
    sweep.subscribe(events.append)  # before start(): every event of every run
    sweep.start()
    assert isinstance(sweep, Sweep) and len(sweep.runs) == 4
    assert sweep.wait(240) == ["finished"] * 4, [r.error for r in sweep.runs]
    assert sweep.status == "finished" and sweep.done

    records = sorted(RunStore(root).select(sweep=sweep.id), key=lambda r: r.sweep["index"])
    assert len(records) == 4 and len({r.path for r in records}) == 4
    assert [Path(r.path).parent for r in records] == [root.resolve()] * 4
    assert [r.sweep["index"] for r in records] == [0, 1, 2, 3]
    assert records[2].sweep["params"] == {"training.learning_rate": 3e-3, "lora.r": 4}
    assert records[2].config["training"]["learning_rate"] == 3e-3 and records[2].config["lora"]["r"] == 4
    assert all(r.sweep["id"] == sweep.id and r.sweep["total"] == 4 for r in records)
    # one after another, in order: each started after the previous finished
    for before, after in zip(records, records[1:]):
        assert before.finished_at <= after.started_at
    starts = [e.run_id for e in events if e.kind == "status" and e.data["status"] == "running"]
    assert starts == [r.id for r in sweep.runs]
    assert all((Path(r.path) / "adapter" / "adapter_config.json").is_file() for r in records)

    # the compare of the sweep reads the same store
    from jupyter_ft.compare import compare_runs, select_runs

    comparison = compare_runs(select_runs(root, sweep=sweep.id[:16]))
    assert set(comparison.differing) == {"training.learning_rate", "lora.r"}
    assert comparison.best in {r.id for r in records}


def test_cancel_mid_sweep_stops_current_and_cancels_the_rest(tiny_model_dir: Path, tmp_path: Path):
    root = tmp_path / "runs"
    cfg = fast_config(tiny_model_dir, root, max_steps=300, eval_every=1000, save_every=1000)
    sweep = start_sweep(cfg, {"training.learning_rate": [1e-4, 2e-4, 3e-4]}, name="cancel")
    first = sweep.runs[0]
    deadline = time.monotonic() + 60
    while (first.progress.get("step") or 0) < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert first.progress.get("step", 0) >= 1
    dash = WidgetSweepDashboard(sweep, auto_flush=False)
    dash.stop_button.click()  # "Stop sweep": the current run stops, the queued ones never start
    assert sweep.wait(120) == ["stopped", "stopped", "stopped"]
    assert [sweep.status_of(r) for r in sweep.runs] == ["stopped", "cancelled", "cancelled"]
    assert sweep.status == "stopped"
    dash.finish()
    assert dash.table.value.count(">cancelled<") == 2 and dash.progress_bar.value == 3
    assert dash.stop_button.disabled and dash.skip_button.disabled
    assert first.summary["global_step"] < 300 and first.run_dir.last_checkpoint() is not None
    for run in sweep.runs[1:]:
        record = RunStore(root).load(run.id)
        assert record.started_at is None and record.sweep["cancelled"] is True


def test_skip_only_the_current_run_and_the_sweep_goes_on(tiny_model_dir: Path, tmp_path: Path):
    root = tmp_path / "runs"
    cfg = fast_config(tiny_model_dir, root, max_steps=300, eval_every=1000, save_every=1000)
    sweep = start_sweep(cfg, {"training.max_steps": [300, 1]}, name="skip")
    first = sweep.runs[0]
    deadline = time.monotonic() + 60
    while (first.progress.get("step") or 0) < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    dash = WidgetSweepDashboard(sweep, auto_flush=False)
    dash.skip_button.click()  # "Skip run": only the current run stops
    assert sweep.wait(120) == ["stopped", "finished"]
    assert sweep.runs[1].summary["global_step"] == 1
    dash.finish()
    assert ">stopped<" in dash.table.value and ">finished<" in dash.table.value


def test_widget_sweep_dashboard_overlays_curves_by_run(tiny_model_dir: Path, tmp_path: Path):
    cfg = fast_config(tiny_model_dir, tmp_path / "runs", max_steps=3)
    sweep = Sweep(plan_sweep(cfg, {"training.learning_rate": [1e-4, 1e-3]}, name="viz"))
    sweep.start()
    dash = WidgetSweepDashboard(sweep, min_interval=0.05)  # follows the runs from their first event
    assert sweep.wait(120) == ["finished", "finished"]
    dash.finish()
    fig = dash.fig
    assert len(fig.data) == 4  # train and eval per run
    assert [list(fig.data[i].x) for i in (0, 2)] == [[1, 2, 3], [1, 2, 3]]
    assert list(fig.data[1].x) == [2, 3]
    assert fig.data[0].line.color != fig.data[2].line.color and fig.data[0].line.color == fig.data[1].line.color
    losses = [h["loss"] for h in sweep.runs[1].history if "loss" in h]
    assert list(fig.data[2].y) == losses
    best = min(sweep.runs, key=lambda r: r.summary["best_eval_loss"])
    assert fig.data[2 * sweep.runs.index(best)].name.startswith("★ ")
    assert dash.progress_bar.value == 2 and "2/2 runs done" in dash.progress_label.value
    assert dash.table.value.count(">finished<") == 2 and "learning_rate" in dash.table.value
    static = StaticSweepDashboard(sweep)
    assert "finished · 2/2 runs done · 2 finished" in static.state.text_line()
