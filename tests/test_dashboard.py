"""The training dashboard: its state logic on synthetic events, throttling, and real tiny-model runs with the
widget and the static views (headless: widgets need no frontend to be built and updated)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import jupyter_ft
from jupyter_ft.config import FineTuneConfig
from jupyter_ft.store import RunStore
from jupyter_ft.engine import Event, Run
from jupyter_ft.widgets import Dashboard, StaticDashboard, WidgetDashboard, dashboard_for
from test_training import make_config  # noqa: E402 - the shared tiny-run config
from jupyter_ft.views.dashboard_state import DashboardState, summary_text
from jupyter_ft.views.figures import TRACE_BEST, TRACE_EVAL, TRACE_LOSS, TRACE_LOSS_SMOOTH, TRACE_LR, TRACE_TPS
from jupyter_ft.views.format import ema, format_duration, progress_text, status_text



@pytest.fixture()
def plain_shell():
    """A terminal-like IPython (no kernel, no widget frontend) that records what is displayed."""
    from IPython.core.interactiveshell import InteractiveShell

    created = not InteractiveShell.initialized()
    shell = InteractiveShell.instance()
    published: list[dict] = []
    original = shell.display_pub.publish

    def publish(data, metadata=None, *args, **kwargs):
        published.append(dict(data))
        return original(data, metadata, *args, **kwargs)

    shell.display_pub.publish = publish
    try:
        yield published
    finally:
        shell.display_pub.publish = original
        if created:
            InteractiveShell.clear_instance()


def idle_run(tmp_path: Path) -> Run:
    """A real Run that is never started: its emit() drives the dashboard like the training thread does."""
    rd = RunStore(tmp_path / "runs").create(FineTuneConfig.from_dict({}).to_dict(), "synthetic")
    rd.save(status="running")
    return Run(FineTuneConfig.from_dict({}), rd)


def ev(kind: str, **data) -> Event:
    return Event(kind, "r", data)


# --------------------------------------------------------------------------- state logic
def test_ema_matches_hand_computed_values() -> None:
    # a1 = .5, s1 = .5/.5 = 1; a2 = .25+1 = 1.25, s2 = 1.25/.75; a3 = .625+1.5 = 2.125, s3 = 2.125/.875
    assert ema([1.0, 2.0, 3.0], 0.5) == pytest.approx([1.0, 1.25 / 0.75, 2.125 / 0.875])
    assert ema([4.0, 2.0], 0.9) == pytest.approx([4.0, (0.36 + 0.2) / (1 - 0.81)])
    assert ema([3.0, 1.0, 2.0], 0.0) == [3.0, 1.0, 2.0]
    out = ema([1.0, None, float("nan"), 3.0], 0.5)
    assert out[0] == 1.0 and out[1] is None and out[2] != out[2] and out[3] == pytest.approx(1.75 / 0.75)  # a2 = .25 + 1.5
    with pytest.raises(ValueError):
        ema([1.0], 1.0)


def test_format_duration_and_progress_text() -> None:
    assert [format_duration(s) for s in (0, 59.4, 61, 3725, 90061, -5)] == \
        ["0:00", "0:59", "1:01", "1:02:05", "1d 1:01:01", "0:00"]
    assert format_duration(None) == "–" and format_duration(float("inf")) == "–"
    p = {"step": 12, "max_steps": 54, "epoch": 0.2222, "elapsed": 41.2, "eta": 150}
    assert progress_text(p, "running") == "step 12/54 (22%) · epoch 0.22 · elapsed 0:41 · ETA 2:30"
    assert progress_text(p, "finished") == "step 12/54 (22%) · epoch 0.22 · elapsed 0:41"
    assert progress_text({"step": 3}, "running") == "step 3 · ETA –"
    assert progress_text({}, "queued") == "waiting for the training thread"
    gpu = dict(p, gpu_peak=int(2.14 * 2**30), gpu_total=15 * 2**30)  # a T4 run's progress on CUDA
    assert progress_text(gpu, "running").endswith("ETA 2:30 · GPU peak 2.1 of 15 GiB")
    assert progress_text({}, "running") == "loading the model and data"


def test_state_accumulates_events_and_reports_failure() -> None:
    state = DashboardState("r", "my-run")
    assert state.apply(ev("status", status="running", previous="queued", error=None)) == {"status", "progress"}
    state.apply(ev("progress", step=0, max_steps=10, epoch=0.0, elapsed=0.0, eta=None))
    for step in range(1, 5):
        dirty = state.apply(ev("log", step=step, epoch=step / 10, loss=5.0 - step, learning_rate=1e-3 * step,
                               grad_norm=1.0, tokens_per_s=100.0 * step, tokens_seen=64 * step))
        assert dirty == {"loss", "lr", "tps"}
    assert state.apply(ev("eval", step=2, eval_loss=3.5, eval_runtime=0.1)) == {"eval"}
    state.apply(ev("eval", step=4, eval_loss=3.8, eval_runtime=0.1))
    state.apply(ev("log", step=4, train_loss=2.5, epoch=0.4))  # the Trainer's end-of-training line: no point
    state.apply(ev("warning", message="memory is tight"))
    state.apply(ev("progress", step=4, max_steps=10, epoch=0.4, elapsed=8.0, eta=12.0))

    assert state.loss.x == [1, 2, 3, 4] and state.loss.y == [4.0, 3.0, 2.0, 1.0]
    assert state.lr.y == pytest.approx([1e-3, 2e-3, 3e-3, 4e-3]) and state.tokens_per_s.x == [1, 2, 3, 4]
    assert state.eval_loss.x == [2, 4] and state.best_eval() == (2, 3.5)
    assert state.tokens_seen == 256 and state.warnings == ["memory is tight"]
    assert state.text_line() == "my-run: running · step 4/10 (40%) · epoch 0.40 · elapsed 0:08 · ETA 0:12 · " \
                                "loss 1.0000 · eval 3.8000"

    state.apply(ev("status", status="failed", previous="running", error="RuntimeError: boom in step 5"))
    assert state.status_text() == "failed: RuntimeError: boom in step 5"
    assert status_text("finished", None) == "finished" and status_text("failed") == "failed"
    assert summary_text(state).startswith("my-run: failed: RuntimeError: boom in step 5 · 4 steps · in 0:08 · "
                                          "train loss 1.0000 · best eval loss 3.5000 @ step 2")


def test_resumed_steps_replace_the_old_timeline() -> None:
    state = DashboardState()
    for step in (1, 2, 3, 4, 5):
        state.add_metrics({"step": step, "loss": float(step)})
    for step in (4, 5, 6):  # resumed from checkpoint-3: steps 4-5 are trained again
        state.add_metrics({"step": step, "loss": 10.0 + step})
    state.add_metrics({"step": 6, "loss": 16.0})  # the same event delivered twice
    assert state.loss.x == [1, 2, 3, 4, 5, 6] and state.loss.y == [1, 2, 3, 14, 15, 16]


# --------------------------------------------------------------------------- widget view, synthetic events
def test_throttled_flushes_batch_points_and_lose_none(tmp_path: Path, monkeypatch) -> None:
    import plotly.graph_objects as go

    run = idle_run(tmp_path)
    dash = WidgetDashboard(run)  # default min_interval 0.3 s
    batches = []
    original = go.FigureWidget.batch_update

    def counting(self):
        if not self._in_batch_mode:  # trace.update() nests a batch of its own; count the outer ones
            batches.append(threading.current_thread().name)
        return original(self)

    monkeypatch.setattr(go.FigureWidget, "batch_update", counting)

    def train() -> None:
        for step in range(1, 1001):
            run.emit("progress", step=step, max_steps=1000, epoch=step / 1000, elapsed=step * 0.001, eta=1.0)
            run.emit("log", step=step, loss=3.0 - step / 1000, learning_rate=1e-4, tokens_per_s=500.0)
        run.emit("status", status="finished", previous="running", error=None)

    t0 = time.monotonic()
    worker = threading.Thread(target=train, name="fake-trainer")
    worker.start()
    worker.join(30)
    elapsed = time.monotonic() - t0

    # The status event flushed synchronously: nothing is left behind once the "training thread" is done.
    assert not dash.has_pending()
    assert list(dash.fig.data[TRACE_LOSS].x) == list(range(1, 1001))
    assert dash.fig.data[TRACE_LOSS].y[-1] == pytest.approx(2.0)
    assert len(dash.fig.data[TRACE_LR].x) == 1000 and len(dash.fig.data[TRACE_TPS].x) == 1000
    assert len(batches) <= min(10, elapsed / 0.3 + 3), (len(batches), elapsed)
    assert dash.progress_bar.value == 1000 and dash.progress_bar.max == 1000
    assert dash.status == "finished" and dash.stop_button.disabled
    time.sleep(0.5)  # a timer that was still due finds nothing to do
    assert len(dash.fig.data[TRACE_LOSS].x) == 1000


def test_timer_flushes_without_a_status_event(tmp_path: Path) -> None:
    run = idle_run(tmp_path)
    dash = WidgetDashboard(run, min_interval=0.1)
    for step in range(1, 51):
        run.emit("log", step=step, loss=1.0 / step)
    deadline = time.monotonic() + 5
    while len(dash.fig.data[TRACE_LOSS].x) < 50 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert list(dash.fig.data[TRACE_LOSS].x) == list(range(1, 51))
    dash.close()
    run.emit("log", step=51, loss=0.01)  # closed: no longer followed
    time.sleep(0.2)
    assert len(dash.fig.data[TRACE_LOSS].x) == 50


def test_polling_mode_renders_only_on_refresh(tmp_path: Path) -> None:
    run = idle_run(tmp_path)
    dash = WidgetDashboard(run, auto_flush=False)
    for step in (1, 2, 3):
        run.emit("log", step=step, loss=1.0)
    run.emit("status", status="finished", previous="running", error=None)
    time.sleep(0.1)
    assert len(dash.fig.data[TRACE_LOSS].x) == 0 and dash.has_pending()
    assert dash.refresh() is True and dash.refresh() is False
    assert list(dash.fig.data[TRACE_LOSS].x) == [1, 2, 3] and dash.status == "finished"


def test_widget_options_panels_and_failure_badge(tmp_path: Path) -> None:
    import ipywidgets as W

    run = idle_run(tmp_path)
    dash = WidgetDashboard(run, smoothing=0.0)
    losses = [4.0, 3.0, 3.5, 2.0]
    for step, loss in enumerate(losses, 1):
        run.emit("log", step=step, loss=loss)
    run.emit("eval", step=2, eval_loss=3.2)
    run.emit("eval", step=4, eval_loss=2.9)
    dash.refresh()
    assert dash.fig.data[TRACE_LOSS_SMOOTH].visible is False and dash.fig.data[TRACE_LOSS].opacity == 1.0
    dash.smoothing_slider.value = 0.5
    assert list(dash.fig.data[TRACE_LOSS_SMOOTH].y) == pytest.approx(ema(losses, 0.5))
    assert dash.fig.data[TRACE_LOSS_SMOOTH].visible is True
    dash.log_toggle.value = True
    assert dash.fig.layout.yaxis.type == "log"
    assert list(dash.fig.data[TRACE_BEST].x) == [4] and list(dash.fig.data[TRACE_BEST].y) == [2.9]

    for panel in (dash.overfitting_panel, dash.forgetting_panel):
        assert isinstance(panel, W.VBox) and panel.layout.display == "none"
    dash.set_panel("overfitting", W.HTML("gap 0.3"))
    assert len(dash.overfitting_panel.children) == 2 and dash.overfitting_panel.layout.display == "flex"

    run.run_dir.save(status="failed", error="ValueError: <bad> data")
    run.emit("status", status="failed", previous="running", error="ValueError: <bad> data")
    assert "failed" in dash.status_badge.value
    assert "ValueError: &lt;bad&gt; data" in dash.message.value
    assert dash.stop_button.disabled and dash.progress_bar.bar_style == "danger"


def test_failed_run_dir_shows_error_in_both_views(tmp_path: Path, plain_shell) -> None:
    rd = RunStore(tmp_path / "runs").create({}, "broken")
    rd.save(status="failed", error="RuntimeError: boom in step 3")
    rd.log_metrics({"step": 1, "loss": 2.0, "learning_rate": 1e-3})
    rd.log_metrics({"step": 2, "loss": 1.5, "learning_rate": 1e-3})
    widget = WidgetDashboard(RunStore(tmp_path / "runs").open(rd.record.id))
    assert "RuntimeError: boom in step 3" in widget.message.value
    assert widget.stop_button.disabled and list(widget.fig.data[TRACE_LOSS].x) == [1, 2]
    static = StaticDashboard(rd.path)  # a run directory path works too
    static.display()  # a past run: the line, then the figure and the summary at once
    texts = [b.get("text/plain", "") for b in plain_shell]
    assert any("failed: RuntimeError: boom in step 3" in t for t in texts)
    assert any("application/vnd.plotly.v1+json" in b for b in plain_shell)


# --------------------------------------------------------------------------- real runs on the tiny model
@pytest.fixture(scope="module")
def finished_run(tiny_model_dir: Path, tmp_path_factory):
    """One real 6-step run followed by a WidgetDashboard attached right after finetune() returned."""
    root = tmp_path_factory.mktemp("dash") / "runs"
    run = jupyter_ft.finetune(make_config(tiny_model_dir, root))
    dash = WidgetDashboard(run)
    assert run.wait(120) == "finished", run.run_dir.record.traceback
    return run, dash, root


def test_real_run_widget_dashboard_ends_with_all_points(finished_run) -> None:
    run, dash, _ = finished_run
    assert not dash.has_pending()
    train_steps = [h["step"] for h in run.history if "loss" in h]
    eval_steps = [h["step"] for h in run.history if "eval_loss" in h]
    assert train_steps == [1, 2, 3, 4, 5, 6] and eval_steps == [3, 6]
    assert list(dash.fig.data[TRACE_LOSS].x) == train_steps
    assert list(dash.fig.data[TRACE_LOSS].y) == [h["loss"] for h in run.history if "loss" in h]
    assert list(dash.fig.data[TRACE_EVAL].x) == eval_steps
    assert list(dash.fig.data[TRACE_LR].x) == train_steps
    assert list(dash.fig.data[TRACE_TPS].x) == [h["step"] for h in run.history if h.get("tokens_per_s")]
    assert dash.status == "finished" and "finished" in dash.status_badge.value
    assert dash.progress_bar.value == 6 and dash.progress_bar.max == 6 and dash.progress_bar.bar_style == "success"
    assert "step 6/6 (100%)" in dash.progress_label.value and "ETA" not in dash.progress_label.value
    assert dash.stop_button.disabled
    assert dash.flushes < 40  # ~50 events (status, progress, log, eval, checkpoint) batched
    dash.finish()  # what --wait calls: the widget model's saved state gets the final traces
    assert [len(t.get("x", ())) for t in dash.fig._widget_data[:3]] == [6, 6, 2]


def test_finished_run_renders_from_its_directory(finished_run) -> None:
    run, _, root = finished_run
    metrics = [json.loads(line) for line in (run.path / "metrics.jsonl").read_text().splitlines()]
    rd = RunStore(root).open(run.id)  # as after a kernel restart: no Run object, only the directory
    fig = dashboard_for(rd, mode="static").figure()
    assert list(fig.data[TRACE_LOSS].x) == [m["step"] for m in metrics if "loss" in m]
    assert list(fig.data[TRACE_LOSS].y) == [m["loss"] for m in metrics if "loss" in m]
    assert list(fig.data[TRACE_EVAL].y) == [m["eval_loss"] for m in metrics if "eval_loss" in m]
    best = min((m for m in metrics if "eval_loss" in m), key=lambda m: m["eval_loss"])
    assert list(fig.data[TRACE_BEST].x) == [best["step"]]
    assert "finished" in fig.layout.title.text

    widget = dashboard_for(rd, mode="widget")
    assert isinstance(widget, WidgetDashboard) and widget.run is None
    assert list(widget.fig.data[TRACE_LOSS].x) == [1, 2, 3, 4, 5, 6]
    assert widget.progress_bar.value == 6 and widget.stop_button.disabled
    assert widget.state.progress_text().startswith("step 6/6 (100%)")


def test_stop_button_stops_a_running_run(tiny_model_dir: Path, tmp_path: Path) -> None:
    run = jupyter_ft.finetune(make_config(tiny_model_dir, tmp_path / "runs", max_steps=500, eval_every=1000,
                                          save_every=1000))
    dash = WidgetDashboard(run)
    deadline = time.monotonic() + 120
    while (run.progress.get("step") or 0) < 2 and not run.done and time.monotonic() < deadline:
        time.sleep(0.05)
    assert run.status == "running"
    assert not dash.stop_button.disabled
    dash.stop_button.click()
    assert dash.stop_button.disabled and dash.stop_button.description == "Stopping…"
    assert run.wait(120) == "stopped"
    assert dash.status == "stopped" and "stopped" in dash.status_badge.value
    assert dash.stop_button.disabled and dash.stop_button.description == "Stop"
    assert run.summary["global_step"] < 500
    assert dash.state.loss.x == [h["step"] for h in run.history if "loss" in h]


def test_static_dashboard_in_plain_ipython(tiny_model_dir: Path, tmp_path: Path, plain_shell, capsys) -> None:
    run = jupyter_ft.finetune(make_config(tiny_model_dir, tmp_path / "runs", max_steps=4))
    dash = dashboard_for(run)  # a terminal-like shell: no widget frontend
    assert isinstance(dash, StaticDashboard) and not dash.auto_flush
    dash.display()
    assert dash.wait(120, poll=0.2) == "finished"
    out = capsys.readouterr().out
    assert "step 4/4 (100%)" in out and ": finished" in out
    figures = [b for b in plain_shell if "application/vnd.plotly.v1+json" in b]
    assert len(figures) == 1
    assert "cdn.plot.ly" in figures[0]["text/html"]
    assert figures[0]["text/plain"].startswith(f"{run.name}: finished · 4 steps")
    data = figures[0]["application/vnd.plotly.v1+json"]["data"]
    assert list(data[TRACE_LOSS]["x"]) == [1, 2, 3, 4]
    dash.finish()  # idempotent
    assert len([b for b in plain_shell if "application/vnd.plotly.v1+json" in b]) == 1


# --------------------------------------------------------------------------- choosing a view
def test_dashboard_for_picks_the_view(tmp_path: Path, monkeypatch) -> None:
    import IPython

    rd = RunStore(tmp_path / "runs").create({}, "pick")
    rd.save(status="finished")
    monkeypatch.delenv("JUPYTER_FT_DASHBOARD", raising=False)
    assert isinstance(dashboard_for(rd), StaticDashboard)  # no IPython at all

    class ZMQInteractiveShell:  # what ipykernel runs
        pass

    monkeypatch.setattr(IPython, "get_ipython", lambda: ZMQInteractiveShell())
    assert isinstance(dashboard_for(rd), WidgetDashboard)
    monkeypatch.setenv("JUPYTER_FT_DASHBOARD", "static")
    assert isinstance(dashboard_for(rd), StaticDashboard)
    with pytest.raises(ValueError, match="unknown dashboard mode"):
        dashboard_for(rd, mode="colab")
    with pytest.raises(TypeError):
        dashboard_for(42, mode="static")
    assert issubclass(StaticDashboard, Dashboard) and issubclass(WidgetDashboard, Dashboard)


def test_widgets_package_import_is_light() -> None:
    code = ("import sys, jupyter_ft.widgets; "
            "print(sorted(m for m in ('torch', 'transformers', 'plotly', 'ipywidgets') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
