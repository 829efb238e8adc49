"""Export a run to a team's experiment tracker through the Trainer's own integrations.

``training.report_to: [mlflow]`` (or ``tensorboard``, ``trackio``) is handed to ``TrainingArguments.report_to``,
so the Trainer's callbacks log the training curves the way every transformers user knows. This module adds
what those callbacks cannot know: the jupyter-ft config as parameters, the run and sweep ids as tags, and the
final summary (final/best losses, probe verdicts) once the run ended. The local run store stays the source of
truth for the notebook; a tracker that fails never fails the run.

Importing this module is cheap; mlflow loads only inside a run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from typing import TYPE_CHECKING, Any, Iterator, Mapping

from ..config.schema import flatten
from ..config.trackers import INTEGRATIONS, normalize_report_to

if TYPE_CHECKING:  # pragma: no cover
    from .run import Run

__all__ = ["INTEGRATIONS", "flatten", "normalize_report_to", "tracking_session"]

log = logging.getLogger(__name__)

def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def final_metrics(summary: Mapping[str, Any]) -> dict[str, float]:
    """The numbers of a run's summary that a tracker plots as final metrics (``final/...``)."""
    keys = ("final_train_loss", "final_eval_loss", "best_eval_loss", "best_eval_step", "global_step",
            "tokens_seen", "mean_tokens_per_s", "train_seconds")
    out = {f"final/{k}": v for k in keys if (v := _number(summary.get(k))) is not None}
    probes = summary.get("probes") or {}
    for k in ("kl", "loglik_drop", "accuracy", "base_accuracy"):
        if (v := _number(probes.get(k))) is not None:
            out[f"final/probes.{k}"] = v
    return out


@contextlib.contextmanager
def tracking_session(run: "Run", trainer: Any = None) -> Iterator[None]:
    """Around ``trainer.train()`` in the training thread: open the tracker runs the Trainer's callbacks then
    log into, and close them with the run's outcome and final summary. When MLflow cannot start (a bad
    tracking URI, a store it refuses), the Trainer's MLflow callback is removed, so the run trains anyway
    and says why in a warning."""
    names = normalize_report_to(run.config.training.report_to)
    if "mlflow" not in names:
        yield
        return
    mlflow_run = _mlflow_start(run)
    if mlflow_run is None and trainer is not None:
        from transformers.integrations import MLflowCallback

        trainer.remove_callback(MLflowCallback)
    status = "FAILED"
    try:
        yield
        status = "KILLED" if run.stop_asked else "FINISHED"
    finally:
        if mlflow_run is not None:
            _mlflow_end(run, mlflow_run, status)


def _mlflow_start(run: "Run") -> Any:
    """Start the MLflow run ourselves (in this thread), so that the Trainer's ``MLflowCallback`` logs into it
    instead of opening and closing its own: the final evaluation and the summary then land in the same run."""
    try:
        import os

        import mlflow

        if os.environ.get("MLFLOW_TRACKING_URI"):  # read per run, so changing it in the notebook takes effect
            mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
        if os.environ.get("MLFLOW_EXPERIMENT_NAME"):
            mlflow.set_experiment(os.environ["MLFLOW_EXPERIMENT_NAME"])
        if mlflow.active_run() is not None:  # a leftover in this thread from a crashed run
            mlflow.end_run("KILLED")
        record = run.run_dir.record
        previous = (record.tracking or {}).get("mlflow") or {}
        if run.resume_from and previous.get("run_id") and previous.get("tracking_uri") == mlflow.get_tracking_uri():
            # A resumed run goes on in its MLflow run: one curve from step 1 to the end, as in the notebook.
            # Its parameters were logged when it started (MLflow refuses to change a logged value).
            try:
                return mlflow.start_run(run_id=previous["run_id"])
            except Exception as exc:  # noqa: BLE001 - deleted on the server, say: start a new one instead
                log.warning("jupyter-ft: MLflow run %s cannot be resumed (%s); starting a new one",
                            previous["run_id"], exc)
        tags = {"jupyter_ft.run_id": record.id, "jupyter_ft.run_dir": str(run.run_dir.path),
                "jupyter_ft.tags": ",".join(record.tags or [])}
        if record.sweep:
            tags["jupyter_ft.sweep_id"] = str(record.sweep.get("id"))
            tags["jupyter_ft.sweep_index"] = str(record.sweep.get("index"))
        active = mlflow.start_run(run_name=record.name, tags=tags)
        limit = getattr(mlflow.utils.validation, "MAX_PARAM_VAL_LENGTH", 250)
        params = {k: (json.dumps(v) if isinstance(v, (list, dict)) else str(v))[:limit]
                  for k, v in flatten(record.config).items()}
        for key, value in (record.sweep or {}).get("params", {}).items():
            params[f"sweep.{key}"] = str(value)[:limit]
        items = list(params.items())
        for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            mlflow.log_params(dict(items[i:i + 100]))
        record.tracking = {**(record.tracking or {}), "mlflow": {
            "run_id": active.info.run_id, "experiment_id": active.info.experiment_id,
            "tracking_uri": mlflow.get_tracking_uri()}}
        run.run_dir.save()
        return active
    except Exception as exc:  # noqa: BLE001 - a tracker never fails the run
        message = f"MLflow export could not start (the run trains without it): {exc}"
        log.warning("jupyter-ft: %s", message)
        run.run_dir.record.warnings.append(message)
        run.run_dir.save()
        run.emit("warning", message=message)
        return None


def _mlflow_end(run: "Run", active: Any, status: str) -> None:
    try:
        import mlflow

        summary = run.run_dir.record.summary or {}
        metrics = final_metrics(summary)
        step = int(summary.get("global_step") or 0)
        if metrics:
            mlflow.log_metrics(metrics, step=step)
        table = {"run_id": run.id, "name": run.name, "status": status.lower(), **summary}
        mlflow.log_dict(table, "jupyter_ft/summary.json")
        probes = summary.get("probes") or {}
        verdicts = {f"jupyter_ft.{k}": str(probes[k]) for k in ("overfitting", "forgetting") if probes.get(k)}
        if verdicts:
            mlflow.set_tags(verdicts)
        mlflow.flush_async_logging() if hasattr(mlflow, "flush_async_logging") else None
    except Exception as exc:  # noqa: BLE001
        log.warning("jupyter-ft: MLflow export of the summary failed: %s", exc)
    finally:
        try:
            import mlflow

            current = mlflow.active_run()
            if current is not None and current.info.run_id == active.info.run_id:
                mlflow.end_run(status)
        except Exception:  # noqa: BLE001
            pass
