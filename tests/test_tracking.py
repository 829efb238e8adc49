"""``training.report_to``: config errors for unknown/uninstalled trackers, and a real export to a local MLflow
store read back with MLflow's own client."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
from test_training import make_config

import jupyter_ft
from jupyter_ft.config import ConfigError, FineTuneConfig
from jupyter_ft.store import RunStore
from jupyter_ft.engine.tracking import flatten, normalize_report_to

DEMO = Path(__file__).resolve().parents[1] / "jupyter_ft" / "demo" / "support_tickets.jsonl"


def report_problems(value) -> list[str]:
    with pytest.raises(ConfigError) as info:
        FineTuneConfig.from_dict({"training": {"report_to": value}})
    return [str(p) for p in info.value.problems]


def test_unknown_tracker_is_a_config_error_with_did_you_mean():
    assert report_problems(["mlfow"]) == ["training.report_to: unknown tracker (got 'mlfow'). Did you mean 'mlflow'?"]
    assert report_problems("wandbx")[0].startswith("training.report_to: unknown tracker (got 'wandbx'). Supported: "
                                                   "mlflow, tensorboard, trackio")
    assert report_problems({"mlflow": 1})[0].startswith("training.report_to: must be a list of tracker names")


@pytest.mark.skipif(importlib.util.find_spec("trackio") is not None, reason="trackio is installed here")
def test_uninstalled_tracker_is_a_config_error_naming_the_install():
    assert report_problems(["trackio"]) == [
        ("training.report_to: 'trackio' is not installed in this kernel's environment (got 'trackio'). Install it "
         "(pip install trackio) and restart the kernel, or remove it")]


def test_report_to_forms():
    assert normalize_report_to(None) == [] and normalize_report_to("none") == []
    assert normalize_report_to("mlflow") == ["mlflow"] and normalize_report_to(["mlflow"]) == ["mlflow"]
    assert FineTuneConfig.from_dict({"training": {"report_to": "mlflow"}}).training.report_to == "mlflow"
    assert flatten({"a": {"b": 1, "c": {"d": [1]}}, "e": {}}) == {"a.b": 1, "a.c.d": [1], "e": {}}


def tracked_config(model_dir: Path, root: Path) -> dict:
    cfg = make_config(model_dir, root, max_steps=3, eval_every=2, save_every=10, learning_rate=7e-4)
    cfg["data"].update(source=[json.loads(line) for line in DEMO.read_text().splitlines()][:40], eval_split=0.1)
    cfg["probes"] = {"forgetting": False}
    cfg["training"]["report_to"] = ["mlflow"]
    cfg["output"]["name"] = "tracked"
    return cfg


def test_mlflow_that_cannot_start_warns_and_the_run_trains(tiny_model_dir: Path, tmp_path: Path, monkeypatch):
    pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "unknown-scheme://nowhere")
    root = tmp_path / "runs"
    run = jupyter_ft.finetune(tracked_config(tiny_model_dir, root))
    assert run.wait(180) == "finished", run.run_dir.record.traceback
    warnings = RunStore(root).load(run.id).warnings
    assert any(w.startswith("MLflow export could not start (the run trains without it)") for w in warnings)
    assert run.summary["global_step"] == 3


@pytest.fixture()
def mlflow_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Point MLflow at a local file store (no server) and return a function listing the experiment's runs,
    read back with MLflow's own client. MLflow 3 keeps the file store behind an opt-in (it prefers a database
    backend, which needs SQLAlchemy, not part of mlflow-skinny)."""
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    store_dir = tmp_path / "mlruns"
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store_dir.as_uri())
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "jupyter-ft-test")
    client = MlflowClient(tracking_uri=store_dir.as_uri())

    def runs() -> tuple[Any, list[Any]]:
        experiment = client.get_experiment_by_name("jupyter-ft-test")
        return client, client.search_runs([experiment.experiment_id])

    return runs


def test_mlflow_export_is_readable_with_mlflows_client(tiny_model_dir: Path, tmp_path: Path, mlflow_runs):
    root = tmp_path / "runs"
    run = jupyter_ft.finetune(tracked_config(tiny_model_dir, root))
    run.tag("exported")
    assert run.wait(180) == "finished", run.run_dir.record.traceback

    client, found = mlflow_runs()
    assert len(found) == 1  # the final evaluation and the summary land in the same MLflow run
    ml = found[0]
    assert ml.info.run_name == "tracked" and ml.info.status == "FINISHED"
    params, metrics, tags = ml.data.params, ml.data.metrics, ml.data.tags
    assert params["training.learning_rate"] == "0.0007" and params["lora.r"] == "4"  # the jupyter-ft config
    assert params["learning_rate"] == "0.0007"  # the Trainer's own callback logged its arguments too
    assert tags["jupyter_ft.run_id"] == run.id and tags["jupyter_ft.tags"] == "exported"

    history = client.get_metric_history(ml.info.run_id, "loss")
    assert [m.step for m in history] == [1, 2, 3]
    local = [h["loss"] for h in run.history if "loss" in h]
    assert [m.value for m in history] == pytest.approx(local)
    summary = RunStore(root).load(run.id).summary  # the local store stays the source of truth
    assert metrics["final/best_eval_loss"] == pytest.approx(summary["best_eval_loss"])
    assert metrics["final/global_step"] == 3
    assert [m.step for m in client.get_metric_history(ml.info.run_id, "eval_loss")] == [2, 3]
    table = json.loads(Path(client.download_artifacts(ml.info.run_id, "jupyter_ft/summary.json", str(tmp_path)))
                       .read_text())
    assert table["run_id"] == run.id and table["final_eval_loss"] == pytest.approx(summary["final_eval_loss"])


def test_a_resumed_run_goes_on_in_the_same_mlflow_run(tiny_model_dir: Path, tmp_path: Path, mlflow_runs):
    """Stop, resume: one MLflow run with one loss curve over all steps, not a second run from the middle."""
    root = tmp_path / "runs"
    config = tracked_config(tiny_model_dir, root)
    config["training"].update(max_steps=6, eval_every=1000, save_every=1000)
    run = jupyter_ft.finetune(config)
    run.subscribe(lambda e: run.stop() if e.kind == "progress" and e.data["step"] >= 3 else None)
    assert run.wait(180) == "stopped", run.run_dir.record.traceback
    stopped_at = run.summary["global_step"]
    first_id = RunStore(root).load(run.id).tracking["mlflow"]["run_id"]

    resumed = jupyter_ft.resume(run.id, root=str(root))
    assert resumed.wait(180) == "finished", resumed.run_dir.record.traceback
    assert RunStore(root).load(run.id).tracking["mlflow"]["run_id"] == first_id

    client, found = mlflow_runs()
    assert [r.info.run_id for r in found] == [first_id]
    assert found[0].info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(first_id, "loss")]
    assert steps == list(range(1, 7)) and stopped_at < 6
    assert found[0].data.metrics["final/global_step"] == 6
