"""The live training dashboard: loss / learning-rate / tokens-per-second curves, progress, status, Stop.

Three layers, so that the logic is testable without a frontend and a Colab adapter can plug in:

* **state** (plain Python, no widgets): :class:`DashboardState` accumulates the series from run events
  or from a run directory; :func:`ema`, :func:`format_duration`, :func:`progress_text`,
  :func:`status_text` and :func:`summary_text` are the formatting the views share;
  :func:`build_figure` / :func:`apply_traces` turn a state into a plotly figure.
* **the interface** :class:`Dashboard`: built in the main thread from a live ``Run`` or a ``RunDir``.
  Its event handler runs in the training thread and only buffers; a throttled flush (at most one per
  ``min_interval`` seconds, from a timer thread) applies the buffered events to the state and renders.
  A ``status`` event flushes at once in the thread that emitted it, so when ``run.wait()`` returns the
  dashboard already shows the final points. ``auto_flush=False`` turns the background flushing off:
  the owner then calls :meth:`Dashboard.refresh` itself (the polling adapter Colab needs, because it
  drops widget updates sent from a background thread).
* **views**: :class:`WidgetDashboard` (ipywidgets + plotly ``FigureWidget``) and
  :class:`StaticDashboard` (a text progress line and a static figure, for nbconvert, ``jupyter
  execute``, terminal IPython and exported HTML). :func:`dashboard_for` picks one.

Importing this module is cheap: plotly, ipywidgets and IPython are imported on first use.
"""

from __future__ import annotations

import bisect
import html
import importlib
import json
import math
import os
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

from ..store import ACTIVE, RunDir, RunStore, read_jsonl

if TYPE_CHECKING:  # pragma: no cover
    import plotly.graph_objects as go

    from ..training import Event, Run

__all__ = [
    "Dashboard",
    "DashboardState",
    "Series",
    "StaticDashboard",
    "WidgetDashboard",
    "apply_traces",
    "build_figure",
    "dashboard_for",
    "ema",
    "figure_bundle",
    "format_duration",
    "progress_text",
    "register_dashboard",
    "status_text",
    "summary_text",
]

TERMINAL = ("stopped", "finished", "failed", "interrupted")
STATUS_COLORS = {
    "queued": "#6c757d",
    "running": "#1f77b4",
    "stopping": "#e67e22",
    "stopped": "#e67e22",
    "finished": "#2ca02c",
    "failed": "#d62728",
    "interrupted": "#9467bd",
}
BAR_STYLES = {"finished": "success", "failed": "danger", "stopping": "warning", "stopped": "warning",
              "interrupted": "warning"}

# Parts of the view a batch of events can make stale.
SERIES_PARTS = frozenset({"loss", "eval", "lr", "tps"})
ALL_PARTS = frozenset(SERIES_PARTS | {"progress", "status", "warnings", "options", "probes"})

# Trace order in every dashboard figure (the widget updates traces by index).
TRACE_LOSS, TRACE_LOSS_SMOOTH, TRACE_EVAL, TRACE_BEST, TRACE_LR, TRACE_TPS = range(6)


# =========================================================================== state (no widgets)
def ema(values: Sequence[float | None], weight: float) -> list[float | None]:
    """Debiased exponential moving average, as TensorBoard smooths curves.

    ``s_n = a_n / (1 - weight**n)`` with ``a_n = weight * a_{n-1} + (1 - weight) * v_n`` and ``a_0 = 0``:
    the debiasing keeps the first points from being pulled towards zero. ``weight=0`` returns the values
    unchanged; ``None`` / NaN / inf pass through and do not move the average.
    """
    if not 0.0 <= weight < 1.0:
        raise ValueError(f"smoothing weight must be in [0, 1), got {weight!r}")
    out: list[float | None] = []
    acc, n = 0.0, 0
    for v in values:
        if v is None or not math.isfinite(v):
            out.append(v)
            continue
        n += 1
        acc = weight * acc + (1.0 - weight) * v
        out.append(acc / (1.0 - weight ** n))
    return out


def format_duration(seconds: float | None) -> str:
    """``"0:41"``, ``"1:02:05"``, ``"2d 3:04:05"``; ``"–"`` when unknown."""
    if seconds is None or not isinstance(seconds, (int, float)) or not math.isfinite(seconds):
        return "–"
    total = max(0, int(round(seconds)))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}:{minutes:02d}:{secs:02d}"
    if hours:
        return f"{hours}:{minutes:02d}:{secs:02d}"
    return f"{minutes}:{secs:02d}"


def status_text(status: str, error: str | None = None) -> str:
    """``"running"``, or ``"failed: RuntimeError: boom"`` for a failed run with its error."""
    if status == "failed" and error:
        return f"failed: {error}"
    return status


def progress_text(progress: Mapping[str, Any], status: str = "running") -> str:
    """``"step 12/54 (22%) · epoch 0.22 · elapsed 0:41 · ETA 2:30"``; the ETA is left out once a run ended.
    On a GPU it ends with the run's memory peak so far against the card: ``GPU peak 2.1 of 15 GiB``."""
    step = progress.get("step")
    if step is None:
        if status == "queued":
            return "waiting for the training thread"
        if status in ("running", "stopping"):
            return "loading the model and data"
        return "no steps trained"
    total = progress.get("max_steps")
    parts = [f"step {step}/{total}" + (f" ({100 * step / total:.0f}%)" if total else "") if total
             else f"step {step}"]
    epoch = progress.get("epoch")
    if epoch is not None:
        parts.append(f"epoch {epoch:.2f}")
    if progress.get("elapsed") is not None:
        parts.append(f"elapsed {format_duration(progress['elapsed'])}")
    if status not in TERMINAL:
        parts.append(f"ETA {format_duration(progress.get('eta'))}")
    if progress.get("gpu_peak") and progress.get("gpu_total"):
        parts.append(f"GPU peak {progress['gpu_peak'] / 2**30:.1f} of {progress['gpu_total'] / 2**30:.0f} GiB")
    return " · ".join(parts)


class Series:
    """x/y points in step order. A point at a step at or before the last one rewinds the series to it:
    a resumed run re-logs the steps after its last checkpoint, and the new timeline replaces the old."""

    __slots__ = ("x", "y")

    def __init__(self) -> None:
        self.x: list[int] = []
        self.y: list[float] = []

    def add(self, x: int, y: float) -> None:
        if self.x and x <= self.x[-1]:
            i = bisect.bisect_left(self.x, x)
            del self.x[i:], self.y[i:]
        self.x.append(x)
        self.y.append(y)

    def clear(self) -> None:
        self.x.clear()
        self.y.clear()

    def __len__(self) -> int:
        return len(self.x)

    def __repr__(self) -> str:
        return f"Series({len(self)} points)"


class DashboardState:
    """Everything a dashboard shows, built from events (``apply``) or a run directory (``from_run_dir``).

    Not thread-safe by itself: the :class:`Dashboard` only touches it under its flush lock.
    """

    def __init__(self, run_id: str = "", name: str = "") -> None:
        self.run_id = run_id
        self.name = name or run_id
        self.status = "queued"
        self.error: str | None = None
        self.progress: dict[str, Any] = {}
        self.loss = Series()
        self.eval_loss = Series()
        self.lr = Series()
        self.tokens_per_s = Series()
        self.tokens_seen: int | None = None
        self.last_log: dict[str, Any] = {}
        self.warnings: list[str] = []
        self.dataset: dict[str, Any] = {}
        self.checkpoints: list[int] = []
        self.summary: dict[str, Any] = {}
        self.probes: list[dict[str, Any]] = []  # ``probe`` events / probes.jsonl lines

    # ------------------------------------------------------------ building
    def apply(self, event: "Event") -> set[str]:
        """Apply one run event; returns the parts of the view it made stale."""
        kind, data = event.kind, dict(event.data or {})
        if kind == "status":
            self.status = data.get("status", self.status)
            self.error = data.get("error")
            return {"status", "progress"}
        if kind == "progress":
            self.progress = {**self.progress, **data}
            return {"progress"}
        if kind in ("log", "eval"):
            return self.add_metrics(data)
        if kind == "warning":
            if data.get("message"):
                self.warnings.append(str(data["message"]))
            return {"warnings"}
        if kind == "data":
            self.dataset = data
            return {"status"}
        if kind == "checkpoint":
            if data.get("step") is not None:
                self.checkpoints.append(int(data["step"]))
            return set()
        if kind == "probe":
            self.probes.append(data)
            return {"probes"}
        return set()

    def add_metrics(self, entry: Mapping[str, Any]) -> set[str]:
        """Add one ``metrics.jsonl`` line (a ``log`` or ``eval`` event's data)."""
        step = entry.get("step")
        if step is None:
            return set()
        dirty: set[str] = set()
        if _finite(entry.get("eval_loss")):
            self.eval_loss.add(step, float(entry["eval_loss"]))
            dirty.add("eval")
        if _finite(entry.get("loss")):
            self.loss.add(step, float(entry["loss"]))
            self.last_log = dict(entry)
            dirty.add("loss")
            if _finite(entry.get("learning_rate")):
                self.lr.add(step, float(entry["learning_rate"]))
                dirty.add("lr")
            if _finite(entry.get("tokens_per_s")):
                self.tokens_per_s.add(step, float(entry["tokens_per_s"]))
                dirty.add("tps")
            if entry.get("tokens_seen") is not None:
                self.tokens_seen = entry["tokens_seen"]
        return dirty

    def reset_series(self) -> None:
        for s in (self.loss, self.eval_loss, self.lr, self.tokens_per_s):
            s.clear()
        self.last_log = {}

    def load_history(self, entries: Iterable[Mapping[str, Any]]) -> None:
        self.reset_series()
        for entry in entries:
            self.add_metrics(entry)

    def load_run(self, run: "Run") -> None:
        """Snapshot a live run (its status, progress and the history logged so far)."""
        record = run.run_dir.record
        self.run_id, self.name = record.id, record.name or record.id
        self.status, self.error = record.status, record.error
        self.load_history(list(run.history))
        self.progress = dict(run.progress) or self._progress_from_record(record)
        self.warnings = list(record.warnings)
        self.dataset = dict(record.dataset)
        self.summary = dict(record.summary)
        self.probes = read_jsonl(run.run_dir.probes_path)

    @classmethod
    def from_run_dir(cls, rd: RunDir) -> "DashboardState":
        """A past (or still running elsewhere) run, read from ``run.json`` and ``metrics.jsonl``."""
        record = rd.record
        state = cls(record.id, record.name)
        state.status, state.error = record.status, record.error
        metrics = rd.metrics()
        state.load_history(metrics)
        state.warnings = list(record.warnings)
        state.dataset = dict(record.dataset)
        state.summary = dict(record.summary)
        state.progress = state._progress_from_record(record, metrics)
        state.probes = read_jsonl(rd.probes_path)
        return state

    def _progress_from_record(self, record: Any, metrics: Sequence[Mapping[str, Any]] | None = None) -> dict[str, Any]:
        summary = record.summary or {}
        last = dict(metrics[-1]) if metrics else dict(self.last_log)
        training = (record.config or {}).get("training", {}) if isinstance(record.config, dict) else {}
        step = summary.get("global_step", last.get("step"))
        if step is None:
            return {}
        return {
            "step": step,
            "max_steps": summary.get("max_steps") or training.get("max_steps"),
            "epoch": summary.get("epoch", last.get("epoch")),
            "elapsed": summary.get("train_seconds", last.get("elapsed")),
            "eta": None,
        }

    # ------------------------------------------------------------ reading
    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    def best_eval(self) -> tuple[int, float] | None:
        if not self.eval_loss.y:
            return None
        i = min(range(len(self.eval_loss.y)), key=self.eval_loss.y.__getitem__)
        return self.eval_loss.x[i], self.eval_loss.y[i]

    def status_text(self) -> str:
        return status_text(self.status, self.error)

    def progress_text(self) -> str:
        return progress_text(self.progress, self.status)

    def text_line(self) -> str:
        """The one line the static dashboard shows while a run trains."""
        line = f"{self.name}: {self.status_text()} · {self.progress_text()}"
        if self.loss.y:
            line += f" · loss {self.loss.y[-1]:.4f}"
        if self.eval_loss.y:
            line += f" · eval {self.eval_loss.y[-1]:.4f}"
        return line


def summary_text(state: DashboardState) -> str:
    """One line for a run that ended: status, steps, time, final and best losses, speed."""
    parts = [f"{state.name}: {state.status_text()}"]
    step = state.progress.get("step")
    if step is not None:
        parts.append(f"{step} steps")
    if state.progress.get("elapsed") is not None:
        parts.append(f"in {format_duration(state.progress['elapsed'])}")
    if state.loss.y:
        parts.append(f"train loss {state.loss.y[-1]:.4f}")
    best = state.best_eval()
    if best:
        parts.append(f"best eval loss {best[1]:.4f} @ step {best[0]}")
    if state.tokens_per_s.y:
        parts.append(f"{sum(state.tokens_per_s.y) / len(state.tokens_per_s.y):,.0f} tokens/s")
    return " · ".join(parts)


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# =========================================================================== figure (plotly, no widgets)
def settle_imports() -> None:
    """Import numpy and pandas here, before building a figure, so no other thread can be half-way through.

    plotly's validators look ``pandas`` up in ``sys.modules`` without importing it; right after a run starts,
    the training thread imports pandas (``datasets``), and a figure built in the main thread meanwhile fails
    with "partially initialized module 'pandas'". Once this returns both modules are complete: importing a
    module that another thread is initializing waits on its import lock. Both are already dependencies of
    training, so this costs nothing a run would not spend anyway.
    """
    for name in ("numpy", "pandas"):
        try:
            importlib.import_module(name)
        except ImportError:  # plotly copes without them
            pass


def build_figure(state: DashboardState, *, smoothing: float = 0.6, log_scale: bool = False,
                 title: str | None = None, height: int = 560) -> "go.Figure":
    """A static figure: loss (train raw + smoothed, eval with markers, best eval starred), learning rate and
    tokens/s, stacked against a shared step axis."""
    settle_imports()
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.07, row_heights=[0.5, 0.25, 0.25],
                        subplot_titles=("loss", "learning rate", "tokens/s"))
    train_color, eval_color = "#1f77b4", "#ff7f0e"
    fig.add_trace(go.Scatter(name="train loss", mode="lines", line={"color": train_color, "width": 1.5},
                             legendgroup="train", hovertemplate="step %{x}<br>loss %{y:.4f}<extra></extra>"),
                  row=1, col=1)
    fig.add_trace(go.Scatter(name="train loss (smoothed)", mode="lines", line={"color": train_color, "width": 2.5},
                             legendgroup="train",
                             hovertemplate="step %{x}<br>smoothed %{y:.4f}<extra></extra>"), row=1, col=1)
    fig.add_trace(go.Scatter(name="eval loss", mode="lines+markers", line={"color": eval_color, "width": 2},
                             marker={"size": 7}, hovertemplate="step %{x}<br>eval loss %{y:.4f}<extra></extra>"),
                  row=1, col=1)
    fig.add_trace(go.Scatter(name="best eval", mode="markers",
                             marker={"symbol": "star", "size": 15, "color": "#d62728",
                                     "line": {"width": 1, "color": "white"}},
                             hovertemplate="best eval loss %{y:.4f}<br>at step %{x}<extra></extra>"), row=1, col=1)
    fig.add_trace(go.Scatter(name="learning rate", mode="lines", line={"color": "#2ca02c"}, showlegend=False,
                             hovertemplate="step %{x}<br>lr %{y:.3e}<extra></extra>"), row=2, col=1)
    fig.add_trace(go.Scatter(name="tokens/s", mode="lines", line={"color": "#9467bd"}, showlegend=False,
                             hovertemplate="step %{x}<br>%{y:,.0f} tokens/s<extra></extra>"), row=3, col=1)
    fig.update_layout(height=height, template="plotly_white", hovermode="x unified",
                      margin={"l": 60, "r": 20, "t": 60 if title else 40, "b": 40},
                      legend={"orientation": "h", "yanchor": "bottom", "y": 1.04, "xanchor": "left", "x": 0},
                      title={"text": title} if title else None, uirevision="jupyter-ft")
    fig.update_xaxes(title_text="step", row=3, col=1)
    fig.update_yaxes(exponentformat="e", row=2, col=1)
    apply_traces(fig, state, ALL_PARTS, smoothing=smoothing, log_scale=log_scale)
    return fig


def apply_traces(fig: Any, state: DashboardState, parts: Iterable[str], *, smoothing: float,
                 log_scale: bool) -> None:
    """Copy the state's series into the traces ``build_figure`` made; only the traces of ``parts``.
    The caller wraps it in ``fig.batch_update()`` for a FigureWidget, so the frontend gets one message."""
    parts = set(parts)
    if parts & {"loss", "options"}:
        smooth = smoothing > 0
        fig.data[TRACE_LOSS].update(x=list(state.loss.x), y=list(state.loss.y), opacity=0.35 if smooth else 1.0)
        fig.data[TRACE_LOSS_SMOOTH].update(x=list(state.loss.x) if smooth else [],
                                           y=ema(state.loss.y, smoothing) if smooth else [], visible=smooth)
    if "eval" in parts:
        fig.data[TRACE_EVAL].update(x=list(state.eval_loss.x), y=list(state.eval_loss.y))
        best = state.best_eval()
        fig.data[TRACE_BEST].update(x=[best[0]] if best else [], y=[best[1]] if best else [])
    if "lr" in parts:
        fig.data[TRACE_LR].update(x=list(state.lr.x), y=list(state.lr.y))
    if "tps" in parts:
        fig.data[TRACE_TPS].update(x=list(state.tokens_per_s.x), y=list(state.tokens_per_s.y))
    if "options" in parts:
        fig.layout.yaxis.type = "log" if log_scale else "linear"


def figure_bundle(fig: "go.Figure", text: str = "") -> dict[str, Any]:
    """A display bundle that works without a widget frontend: the plotly mimetype (JupyterLab, VS Code),
    HTML with plotly.js from its CDN (nbconvert / exported HTML, classic notebook) and plain text (a
    terminal). Built by hand because plotly's default renderer in terminal IPython opens a browser."""
    bundle: dict[str, Any] = {"text/plain": text or "<jupyter-ft training figure>"}
    fig_json = json.loads(fig.to_json())  # plain JSON types, whatever plotly stored (tuples, numpy)
    bundle["application/vnd.plotly.v1+json"] = {"data": fig_json.get("data", []),
                                                "layout": fig_json.get("layout", {}),
                                                "config": {"displaylogo": False}}
    bundle["text/html"] = fig.to_html(full_html=False, include_plotlyjs="cdn", config={"displaylogo": False})
    return bundle


# =========================================================================== throttled flushing
class ThrottledFlush:
    """Buffer events from the training thread and flush them at most once per ``min_interval`` seconds.

    Shared by the run and sweep dashboards. The event handler (training thread) only appends to a buffer
    and, unless a flush is already due, starts a ``threading.Timer`` for the next allowed flush time; a
    ``status`` event flushes at once in the emitting thread, so the final state shows when a run ends.
    With ``auto_flush=False`` nothing renders in the background: :meth:`refresh` is called by a poller.
    Subclasses hold a ``state`` with ``apply(event) -> dirty parts`` and implement ``_render(parts)``.
    """

    timer_name = "jupyter-ft-dashboard-flush"
    min_interval: float
    auto_flush: bool

    def _init_throttle(self) -> None:
        self._pending: list[Any] = []
        self._lock = threading.Lock()  # the buffer and the timer
        self._flush_lock = threading.RLock()  # the state and the views
        self._timer: threading.Timer | None = None
        self._last_flush = float("-inf")
        self._closed = False

    def close(self) -> None:
        """Stop following the run or sweep (pending events are applied first). The views stay as they are."""
        with self._lock:
            self._closed = True
            timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        unsubscribe = getattr(self, "_unsubscribe", None)
        if unsubscribe is not None:
            unsubscribe()
            self._unsubscribe = None
        self.refresh()

    def has_pending(self) -> bool:
        """Whether events wait to be applied (a poller must not call the run over before they are)."""
        with self._lock:
            return bool(self._pending)

    def refresh(self) -> bool:
        """Apply the buffered events now and render what changed; returns whether anything was pending.
        Safe from any thread; this is the method a polling adapter calls from the main thread."""
        with self._flush_lock:
            with self._lock:
                batch, self._pending = self._pending, []
                if batch:
                    self._last_flush = time.monotonic()
            if not batch:
                return False
            dirty: set[str] = set()
            for event in batch:
                dirty |= self.state.apply(event)
            if dirty:
                self._render(dirty)
                self.flushes += 1
            return True

    def _on_event(self, event: "Event") -> None:
        """Training thread: buffer, and make sure a flush will happen. Never touches the views, except
        for a status event, which flushes now so the final state is shown when the run ends."""
        with self._lock:
            self._pending.append(event)
            if self._closed or not self.auto_flush:
                return
            if event.kind != "status":
                if self._timer is None:
                    self._start_timer(self._last_flush + self.min_interval - time.monotonic())
                return
        self.refresh()

    def _start_timer(self, delay: float) -> None:  # with self._lock held
        timer = threading.Timer(max(0.0, delay), self._on_timer)
        timer.daemon = True
        timer.name = self.timer_name
        self._timer = timer
        timer.start()

    def _on_timer(self) -> None:
        try:
            self.refresh()
        finally:
            with self._lock:
                self._timer = None
                # Events that came in while we rendered found a timer set and did not start one.
                if self._pending and not self._closed and self.auto_flush:
                    self._start_timer(self.min_interval)


# =========================================================================== the interface
class Dashboard(ThrottledFlush):
    """One run's dashboard. Construct it (and ``display()`` it) in the main thread.

    ``source`` is a live ``Run`` (the dashboard subscribes to its events) or a finished/past run: a
    ``RunDir``, a run directory path, or a run id under ``./ft_runs``. Subclasses render the state;
    this class buffers events and decides when to flush them.

    Thread model: the event handler (training thread) only appends to a buffer and, unless a flush is
    already due, starts a ``threading.Timer`` for the next allowed flush time (at most one flush per
    ``min_interval`` seconds). A ``status`` event flushes at once in the emitting thread. With
    ``auto_flush=False`` nothing renders in the background: call :meth:`refresh` (the polling adapter).
    """

    kind = "base"
    default_interval = 0.3

    def __init__(self, source: Any, *, min_interval: float | None = None, auto_flush: bool | None = None,
                 smoothing: float = 0.6, log_scale: bool = False) -> None:
        ema([], smoothing)  # validates the weight
        run, rd = _resolve_source(source)
        self.run: Run | None = None
        self.run_dir: RunDir = rd
        self.min_interval = self.default_interval if min_interval is None else float(min_interval)
        self.auto_flush = self._default_auto_flush() if auto_flush is None else bool(auto_flush)
        self.smoothing = float(smoothing)
        self.log_scale = bool(log_scale)
        self.flushes = 0  # renders applied; diagnostics and tests
        self._init_throttle()
        self._unsubscribe: Callable[[], None] | None = None
        # A live run is snapshotted by attach(); a past one is read from its directory.
        self.state = DashboardState(rd.record.id, rd.record.name) if run is not None else DashboardState.from_run_dir(rd)
        self._build()
        if run is not None:
            self.attach(run)
        else:
            self._render(ALL_PARTS)

    # ------------------------------------------------------------ the interface adapters implement
    def _build(self) -> None:
        """Create the views (main thread). Called once from ``__init__``."""

    def _render(self, parts: set[str] | frozenset[str]) -> None:
        """Bring the views up to date with ``self.state`` for the stale ``parts``; under the flush lock."""

    def display(self) -> None:
        """Show the dashboard in the current cell (main thread)."""
        raise NotImplementedError

    def finish(self) -> None:
        """Called once a run ended and the cell is still waiting (``--wait``): flush what is left."""
        self.refresh()

    def _default_auto_flush(self) -> bool:
        return True

    # ------------------------------------------------------------ events
    def attach(self, run: "Run") -> None:
        """Follow a live run: subscribe first, then snapshot its history, so no event falls in between
        (one delivered twice is harmless: a point at an existing step replaces it)."""
        if self._unsubscribe is not None:
            self._unsubscribe()
        self.run, self.run_dir = run, run.run_dir
        self._closed = False
        self._unsubscribe = run.subscribe(self._on_event)
        with self._flush_lock:
            self.state.load_run(run)
            self._render(ALL_PARTS)

    def wait(self, timeout: float | None = None, poll: float | None = None) -> str:
        """Block (main thread) until the run ends, refreshing every ``poll`` seconds, then ``finish()``.
        Returns the status. For a dashboard of a past run it only finishes."""
        poll = max(0.05, poll if poll is not None else max(self.min_interval, 0.5))
        deadline = None if timeout is None else time.monotonic() + timeout
        run = self.run
        while run is not None and not run.done:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                break
            run.wait(poll if left is None else min(poll, left))
            self.refresh()
        self.refresh()
        if run is None or run.done:
            self.finish()
        return self.state.status

    # ------------------------------------------------------------ reading
    @property
    def status(self) -> str:
        return self.state.status

    def figure(self, *, smoothing: float | None = None, log_scale: bool | None = None,
               title: str | None = None) -> "go.Figure":
        """A static plotly figure of the current series (pending events are applied first)."""
        self.refresh()
        with self._flush_lock:
            return build_figure(self.state, smoothing=self.smoothing if smoothing is None else smoothing,
                                log_scale=self.log_scale if log_scale is None else log_scale,
                                title=title if title is not None else f"{self.state.name} — {self.state.status}")

    def _ipython_display_(self) -> None:
        self.display()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.state.run_id} {self.state.status}: {self.state.progress_text()}>"


# =========================================================================== widget view
class WidgetDashboard(Dashboard):
    """ipywidgets + plotly ``FigureWidget``, for JupyterLab / Notebook 7 / VS Code.

    Public parts: ``fig`` (FigureWidget), ``progress_bar``, ``progress_label``, ``status_badge``,
    ``message`` (error text and warnings), ``stop_button``, ``log_toggle``, ``smoothing_slider``,
    ``overfitting_panel`` and ``forgetting_panel`` (VBoxes with a title, hidden until
    :meth:`set_panel` fills them), and ``widget``, the whole dashboard.
    """

    kind = "widget"

    def _build(self) -> None:
        import ipywidgets as W
        import plotly.graph_objects as go

        self.fig = go.FigureWidget(build_figure(self.state, smoothing=self.smoothing, log_scale=self.log_scale))
        self.status_badge = W.HTML()
        self.progress_bar = W.IntProgress(min=0, max=1, value=0, layout=W.Layout(width="240px"))
        self.progress_label = W.HTML()
        self.stop_button = W.Button(description="Stop", icon="stop", button_style="danger",
                                    tooltip="Stop after the current step; saves a checkpoint and the adapter",
                                    layout=W.Layout(width="auto"))
        self.stop_button.on_click(self._on_stop)
        self.message = W.HTML()
        self.log_toggle = W.ToggleButton(value=self.log_scale, description="log scale", icon="line-chart",
                                         tooltip="Logarithmic loss axis", layout=W.Layout(width="auto"))
        self.smoothing_slider = W.FloatSlider(value=self.smoothing, min=0.0, max=0.99, step=0.01,
                                              description="smoothing", continuous_update=False,
                                              readout_format=".2f", style={"description_width": "initial"})
        self.log_toggle.observe(self._on_option, names="value")
        self.smoothing_slider.observe(self._on_option, names="value")
        self.overfitting_panel = W.VBox([W.HTML("<b>Overfitting</b>")], layout=W.Layout(display="none", flex="1"))
        self.forgetting_panel = W.VBox([W.HTML("<b>Forgetting</b>")], layout=W.Layout(display="none", flex="1"))
        header = W.HBox([self.status_badge, self.progress_bar, self.progress_label, self.stop_button],
                        layout=W.Layout(align_items="center", flex_flow="row wrap", gap="8px"))
        options = W.HBox([self.log_toggle, self.smoothing_slider], layout=W.Layout(align_items="center", gap="8px"))
        self.widget = W.VBox([header, self.message, options, self.fig,
                              W.HBox([self.overfitting_panel, self.forgetting_panel])])

    def set_panel(self, name: str, *children: Any) -> Any:
        """Fill a probe slot (``"overfitting"`` or ``"forgetting"``) below its title and show it."""
        panel = {"overfitting": self.overfitting_panel, "forgetting": self.forgetting_panel}[name]
        panel.children = (panel.children[0], *children)
        panel.layout.display = "flex" if children else "none"
        return panel

    def display(self) -> None:
        from IPython.display import display

        # FigureWidget syncs changes made before its first display only in its own _repr_mimebundle_,
        # which a container does not call; call it so the view starts from the current traces.
        self.fig._repr_mimebundle_()
        bundle = {
            "application/vnd.jupyter.widget-view+json": {"version_major": 2, "version_minor": 0,
                                                         "model_id": self.widget.model_id},
            # What a frontend without widgets (nbconvert, jupyter execute) keeps instead.
            "text/plain": self.state.text_line(),
        }
        display(bundle, raw=True)

    def finish(self) -> None:
        """Flush what is left and copy the full traces into the widget model's state, so a notebook saved
        with its widget state (``jupyter execute``, nbconvert, "Save Widget State") keeps the final curves
        rather than those at display time; a live view is not redrawn by this."""
        self.refresh()
        with self._flush_lock:
            self.fig._repr_mimebundle_()

    def _render(self, parts: set[str] | frozenset[str]) -> None:
        if parts & (SERIES_PARTS | {"options"}):
            with self.fig.batch_update():
                apply_traces(self.fig, self.state, parts, smoothing=self.smoothing, log_scale=self.log_scale)
        if parts & {"progress", "status"}:
            self._render_progress()
        if parts & {"status", "warnings"}:
            self._render_status()
        if "probes" in parts and self.state.probes:
            self._render_probes()

    def _render_probes(self) -> None:
        """Overfitting and forgetting panels: verdict, suggestion and a small figure (from ``probe`` events)."""
        import ipywidgets as W
        import plotly.graph_objects as go

        recs = self.state.probes
        over = [r for r in recs if r.get("overfitting")]
        forget = [r for r in recs if r.get("forgetting")]
        colors = {"ok": "#198754", "none": "#198754", "suspected": "#b58100", "mild": "#b58100",
                  "overfitting": "#b00020", "severe": "#b00020"}

        def verdict_html(label: str, status: str, message: str, suggestion: str) -> str:
            color = colors.get(status, "#6c757d")
            text = (f'<div><b style="color:{color}">{html.escape(label)}: {html.escape(status)}</b> '
                    f"{html.escape(message)}</div>")
            if suggestion:
                text += f'<div style="color:#555">{html.escape(suggestion)}</div>'
            return text

        if over:
            v = over[-1]["overfitting"]
            if not hasattr(self, "_over_fig"):
                self._over_fig = go.FigureWidget(layout={"height": 220, "template": "plotly_white",
                                                         "margin": {"l": 40, "r": 10, "t": 10, "b": 30},
                                                         "legend": {"orientation": "h"}})
                for name in ("train", "eval", "best"):
                    self._over_fig.add_scatter(name=name, mode="markers" if name == "best" else "lines+markers")
                self._over_html = W.HTML()
            steps = [r["step"] for r in over]
            with self._over_fig.batch_update():
                self._over_fig.data[0].update(x=steps, y=[r["overfitting"]["train_loss"] for r in over])
                self._over_fig.data[1].update(x=steps, y=[r["overfitting"]["eval_loss"] for r in over])
                self._over_fig.data[2].update(x=[v["best_step"]], y=[v["best_eval_loss"]],
                                              marker={"size": 12, "symbol": "star"})
            gap = "" if v.get("gap") is None else f" Gap {v['gap']:.3f} (ratio {v['gap_ratio']:.2f})."
            self._over_html.value = verdict_html("Overfitting", v["status"], v["message"] + gap, v["suggestion"])
            self.set_panel("overfitting", self._over_html, self._over_fig)
        if forget:
            v = forget[-1]["forgetting"]
            if not hasattr(self, "_forget_fig"):
                self._forget_fig = go.FigureWidget(layout={"height": 220, "template": "plotly_white",
                                                           "margin": {"l": 40, "r": 10, "t": 10, "b": 30},
                                                           "legend": {"orientation": "h"}})
                for name in ("KL from base", "answer log-lik. change", "accuracy change"):
                    self._forget_fig.add_scatter(name=name, mode="lines+markers")
                self._forget_html = W.HTML()
            steps = [r["step"] for r in forget]
            with self._forget_fig.batch_update():
                self._forget_fig.data[0].update(x=steps, y=[r["forgetting"]["kl"] for r in forget])
                self._forget_fig.data[1].update(x=steps, y=[-r["forgetting"]["loglik_drop"] for r in forget])
                self._forget_fig.data[2].update(x=steps, y=[-r["forgetting"]["accuracy_drop"] for r in forget])
            self._forget_html.value = verdict_html("Forgetting", v["verdict"], v["message"], v["suggestion"])
            self.set_panel("forgetting", self._forget_html, self._forget_fig)

    def _render_progress(self) -> None:
        st = self.state
        step, total = st.progress.get("step"), st.progress.get("max_steps")
        with self.progress_bar.hold_sync():
            self.progress_bar.max = max(1, int(total or step or 1))
            self.progress_bar.value = min(int(step or 0), self.progress_bar.max)
            self.progress_bar.bar_style = BAR_STYLES.get(st.status, "")
        self.progress_label.value = html.escape(st.progress_text())

    def _render_status(self) -> None:
        st = self.state
        # The button first: comm messages arrive in order, so a frontend showing the new status badge
        # already has the matching button state.
        button = self.stop_button
        with button.hold_sync():
            if st.status == "stopping":
                button.disabled, button.description = True, "Stopping…"
            else:
                button.disabled = self.run is None or st.status not in ("queued", "running")
                button.description = "Stop"
        color = STATUS_COLORS.get(st.status, "#6c757d")
        self.status_badge.value = (
            f'<span style="background:{color};color:white;border-radius:4px;padding:2px 8px;'
            f'font-weight:600">{html.escape(st.status)}</span>'
        )
        lines = []
        if st.status == "failed" and st.error:
            lines.append('<div style="color:#b00020;white-space:pre-wrap;font-family:monospace">'
                         f"{html.escape(st.error)}</div>")
        for warning in st.warnings:
            lines.append(f'<div style="color:#8a6d00">⚠ {html.escape(warning)}</div>')
        self.message.value = "".join(lines)

    def _on_stop(self, _button: Any = None) -> None:
        if self.run is None:
            return
        self.stop_button.disabled = True
        self.stop_button.description = "Stopping…"
        self.run.stop()

    def _on_option(self, _change: Any = None) -> None:
        with self._flush_lock:
            self.log_scale = bool(self.log_toggle.value)
            self.smoothing = float(self.smoothing_slider.value)
            self._render({"options"})


# =========================================================================== static view
class StaticDashboard(Dashboard):
    """No widget frontend: a text progress line (a display handle updated in place where the frontend
    supports it, at most every ``min_interval`` seconds) and, when the run ends with the cell still
    waiting, a static figure plus a one-line summary.

    In a terminal (no kernel) nothing is printed from the background thread, which would garble the
    prompt; there ``wait()`` prints the line from the main thread."""

    kind = "static"
    default_interval = 3.0

    def _build(self) -> None:
        self._handle: Any = None
        self._last_line: str | None = None
        self._shown_warnings = 0
        self._finished = False

    def _default_auto_flush(self) -> bool:
        return _shell_name() == "ZMQInteractiveShell"

    def display(self) -> None:
        with self._flush_lock:
            line = self.state.text_line()
            self._handle = _show({"text/plain": line}, display_id=True)
            self._last_line = line
            self._shown_warnings = 0
            self._show_warnings()
        if self.run is None or self.run.done:
            self.finish()

    def _render(self, parts: set[str] | frozenset[str]) -> None:
        if self._handle is None:
            return
        if parts & {"warnings"}:
            self._show_warnings()
        line = self.state.text_line()
        if line != self._last_line:
            self._last_line = line
            _show({"text/plain": line}, handle=self._handle)

    def _show_warnings(self) -> None:
        for warning in self.state.warnings[self._shown_warnings:]:
            _show({"text/plain": f"warning: {warning}"})
        self._shown_warnings = len(self.state.warnings)

    def finish(self) -> None:
        """Show the figure and the summary line (once), after a last refresh."""
        self.refresh()
        with self._flush_lock:
            if self._finished:
                return
            self._finished = True
            if self._handle is None:
                self._handle = _show({"text/plain": self.state.text_line()}, display_id=True)
            self._render({"status"})
            summary = summary_text(self.state)
            fig = build_figure(self.state, smoothing=self.smoothing, log_scale=self.log_scale,
                               title=f"{self.state.name} — {self.state.status}")
        _show(figure_bundle(fig, summary))


# =========================================================================== choosing one
_DASHBOARDS: dict[str, type[Dashboard]] = {"widget": WidgetDashboard, "static": StaticDashboard}
_AUTO_MODE: str | None = None  # what "auto" picks when an adapter claimed it (Colab); None: widget or static


def register_dashboard(mode: str, cls: type[Dashboard], *, default: bool = False) -> None:
    """Make ``dashboard_for(..., mode=mode)`` build ``cls`` (the hook for a Colab adapter); with
    ``default=True`` ``"auto"`` picks it too (``JUPYTER_FT_DASHBOARD`` still overrides)."""
    global _AUTO_MODE
    if not (isinstance(cls, type) and issubclass(cls, Dashboard)):
        raise TypeError(f"{cls!r} is not a Dashboard subclass")
    _DASHBOARDS[mode] = cls
    if default:
        _AUTO_MODE = mode


def dashboard_for(run_or_dir: Any, mode: str = "auto", **kwargs: Any) -> Dashboard:
    """The dashboard that suits where this code runs: ``"widget"`` in a Jupyter kernel with ipywidgets,
    else ``"static"``. ``JUPYTER_FT_DASHBOARD=static|widget|…`` overrides ``"auto"`` (e.g. for
    ``jupyter nbconvert --execute``, whose kernel looks like any other). Construct it in the main thread."""
    if mode in (None, "", "auto"):
        mode = os.environ.get("JUPYTER_FT_DASHBOARD", "").strip().lower() or "auto"
    if mode == "auto":
        mode = _AUTO_MODE or ("widget" if _widget_frontend() else "static")
    try:
        cls = _DASHBOARDS[mode]
    except KeyError:
        raise ValueError(f"unknown dashboard mode {mode!r}; choose one of auto, {', '.join(_DASHBOARDS)}") from None
    return cls(run_or_dir, **kwargs)


# =========================================================================== helpers
def _shell_name() -> str | None:
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    shell = get_ipython()
    return None if shell is None else type(shell).__name__


def _widget_frontend() -> bool:
    # Colab's shell is a ZMQInteractiveShell subclass named "Shell"; its widgets work from the main thread
    # once jupyter_ft.widgets.colab enabled the custom widget manager.
    if _shell_name() != "ZMQInteractiveShell" and not (_shell_name() and "google.colab" in sys.modules):
        return False
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return False
    return True


def _resolve_source(source: Any) -> tuple["Run | None", RunDir]:
    if hasattr(source, "subscribe") and isinstance(getattr(source, "run_dir", None), RunDir):
        return source, source.run_dir
    if isinstance(source, RunDir):
        rd = source
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source).expanduser()
        if (path / "run.json").is_file():
            rd = RunStore(path.parent).open(path.name)
        else:
            rd = RunStore().open(str(source))  # a run id under ./ft_runs; KeyError names the latest runs
    else:
        raise TypeError(f"a dashboard needs a Run, a RunDir or a run directory, got {type(source).__name__}")
    # A run directory whose run is training in this kernel right now: follow it live.
    from ..training import active_run

    live = active_run()
    if live is not None and live.id == rd.record.id:
        return live, live.run_dir
    return None, rd


def _show(bundle: Mapping[str, Any], *, display_id: bool = False, handle: Any = None) -> Any:
    """Display a raw mimebundle (or update ``handle``); prints the text outside IPython."""
    if _shell_name() is None:
        print(bundle.get("text/plain", ""), flush=True)
        return None
    from IPython.display import display

    if handle is not None:
        handle.update(dict(bundle), raw=True)
        return handle
    return display(dict(bundle), raw=True, display_id=True if display_id else None)
