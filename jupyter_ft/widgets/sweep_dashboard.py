"""One dashboard for a whole sweep: progress over the runs, overlaid loss curves coloured by run, a live table.

The same layering as :mod:`jupyter_ft.widgets.dashboard`: a plain-Python
:class:`~jupyter_ft.views.sweep_state.SweepState` fed by run events, a :class:`SweepDashboard` interface
that buffers those events (the handlers run in the training thread) and flushes at most once per
``min_interval`` from a timer (:class:`~jupyter_ft.widgets.throttle.ThrottledFlush`), and two views: :class:`WidgetSweepDashboard`
(ipywidgets + a plotly ``FigureWidget``, with "Stop sweep" and "Skip run" buttons) and
:class:`StaticSweepDashboard` (a text line updated in place, then the figure and the table once the sweep ends)
for nbconvert, ``jupyter execute`` and terminal IPython. :func:`sweep_dashboard_for` picks one;
:func:`register_sweep_dashboard` plugs in another (Colab's polling view,
:class:`jupyter_ft.widgets.colab.ColabSweepDashboard`, registered by ``setup_colab``).
"""

from __future__ import annotations

import html
import os
import time
from typing import TYPE_CHECKING, Any, Callable

from ..views.figures import figure_bundle
from ..views.sweep_state import SWEEP_STATUS_COLORS, SweepState
from .dashboard import auto_mode
from .frontend import shell_name, show, widget_frontend
from .throttle import ThrottledFlush

if TYPE_CHECKING:  # pragma: no cover
    import plotly.graph_objects as go

    from ..sweep import Sweep

__all__ = ["SweepDashboard", "StaticSweepDashboard", "WidgetSweepDashboard", "register_sweep_dashboard",
           "sweep_dashboard_for"]


# =========================================================================== the interface
class SweepDashboard(ThrottledFlush):
    """A sweep's dashboard; construct and ``display()`` it in the main thread.

    The event handler (training thread) only buffers; a ``threading.Timer`` flushes at most once per
    ``min_interval`` seconds, a ``status`` event flushes at once. ``auto_flush=False`` leaves flushing to
    :meth:`refresh` (the polling adapter Colab needs).
    """

    kind = "base"
    default_interval = 0.5
    timer_name = "jupyter-ft-sweep-dashboard-flush"

    def __init__(self, sweep: "Sweep", *, min_interval: float | None = None, auto_flush: bool | None = None) -> None:
        self.sweep = sweep
        self.min_interval = self.default_interval if min_interval is None else float(min_interval)
        self.auto_flush = self._default_auto_flush() if auto_flush is None else bool(auto_flush)
        self.flushes = 0
        self._init_throttle()
        self.state = SweepState(sweep)
        self._build()
        self._unsubscribe: Callable[[], None] | None = sweep.subscribe(self._on_event)
        with self._flush_lock:
            self.state.load()
            self._render({"curves", "table", "progress", "status"})

    # ------------------------------------------------------------ for the views
    def _build(self) -> None:
        """Create the views (main thread)."""

    def _render(self, parts: set[str]) -> None:
        """Bring the views up to date for the stale ``parts``; under the flush lock."""

    def display(self) -> None:
        raise NotImplementedError

    def finish(self) -> None:
        self.refresh()

    def _default_auto_flush(self) -> bool:
        return True

    # ------------------------------------------------------------ events
    def wait(self, timeout: float | None = None, poll: float = 0.5) -> str:
        """Block until every run ended, refreshing meanwhile, then ``finish()``; returns the sweep status."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.sweep.done:
            if deadline is not None and time.monotonic() >= deadline:
                break
            current = self.sweep.current
            if current is not None:
                current.wait(poll)
            self.refresh()
        self.refresh()
        if self.sweep.done:
            self.finish()
        return self.sweep.status

    # ------------------------------------------------------------ control (the buttons call these)
    def stop_sweep(self) -> None:
        """Stop the current run and cancel the rest."""
        self.sweep.stop(cancel_rest=True)

    def skip_run(self) -> None:
        """Stop only the current run; the sweep goes on with the next."""
        self.sweep.stop(cancel_rest=False)

    def figure(self) -> "go.Figure":
        self.refresh()
        with self._flush_lock:
            return self.state.figure()

    def _ipython_display_(self) -> None:
        self.display()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.state.text_line()}>"


# =========================================================================== widget view
class WidgetSweepDashboard(SweepDashboard):
    """ipywidgets + ``FigureWidget``. Parts: ``status_badge``, ``progress_bar`` (runs ended / total),
    ``progress_label``, ``stop_button`` (stop the current run, cancel the rest), ``skip_button`` (stop only
    the current run), ``fig`` (two traces per run: train, eval), ``table`` (HTML), ``widget``."""

    kind = "widget"

    def _build(self) -> None:
        import ipywidgets as W
        import plotly.graph_objects as go

        self.fig = go.FigureWidget(self.state.figure())
        self.status_badge = W.HTML()
        self.progress_bar = W.IntProgress(min=0, max=max(1, len(self.state.runs)), value=0,
                                          layout=W.Layout(width="200px"))
        self.progress_label = W.HTML()
        self.stop_button = W.Button(description="Stop sweep", icon="stop", button_style="danger",
                                    tooltip="Stop the current run (checkpoint saved) and cancel the runs still queued",
                                    layout=W.Layout(width="auto"))
        self.skip_button = W.Button(description="Skip run", icon="forward", button_style="warning",
                                    tooltip="Stop only the current run; the sweep goes on with the next",
                                    layout=W.Layout(width="auto"))
        self.stop_button.on_click(lambda _b: self._on_stop(cancel_rest=True))
        self.skip_button.on_click(lambda _b: self._on_stop(cancel_rest=False))
        self.table = W.HTML()
        header = W.HBox([self.status_badge, self.progress_bar, self.stop_button, self.skip_button],
                        layout=W.Layout(align_items="center", flex_flow="row wrap", gap="8px"))
        self.widget = W.VBox([header, self.progress_label, self.fig, self.table])

    def _on_stop(self, cancel_rest: bool) -> None:
        self.stop_button.disabled = True
        if cancel_rest:
            self.skip_button.disabled = True
            self.stop_sweep()
        else:
            self.skip_run()
            self.stop_button.disabled = False

    def _render(self, parts: set[str]) -> None:
        st = self.state
        if "curves" in parts:
            best = st.best()
            with self.fig.batch_update():
                for r in st.runs:
                    train, evaluation = self.fig.data[2 * r.index], self.fig.data[2 * r.index + 1]
                    width = 3.0 if r is best else 1.6
                    train.update(x=list(r.loss.x), y=list(r.loss.y), line={"width": width},
                                 name=("★ " if r is best else "") + r.label)
                    evaluation.update(x=list(r.eval_loss.x), y=list(r.eval_loss.y), line={"width": width})
        if parts & {"progress", "status", "table"}:
            self.progress_bar.value = st.ended
            self.progress_bar.bar_style = {"finished": "success", "failed": "danger"}.get(st.status, "")
            self.progress_label.value = html.escape(st.progress_text())
            color = SWEEP_STATUS_COLORS.get(st.status, "#1f77b4")
            self.status_badge.value = (f'<span style="background:{color};color:white;border-radius:4px;'
                                       f'padding:2px 8px;font-weight:600">sweep {html.escape(st.status)}</span>')
            running = not self.sweep.done
            self.stop_button.disabled = not running or st.status == "stopping"
            self.skip_button.disabled = not running or st.current() is None
        if "table" in parts:
            self.table.value = st.table_html()

    def display(self) -> None:
        from IPython.display import display

        self.fig._repr_mimebundle_()  # sync traces set before the first display (see WidgetDashboard.display)
        display({"application/vnd.jupyter.widget-view+json": {"version_major": 2, "version_minor": 0,
                                                              "model_id": self.widget.model_id},
                 "text/plain": self.state.text_line()}, raw=True)

    def finish(self) -> None:
        self.refresh()
        with self._flush_lock:
            self._render({"curves", "table", "progress", "status"})
            self.fig._repr_mimebundle_()


# =========================================================================== static view
class StaticSweepDashboard(SweepDashboard):
    """No widget frontend: one text line updated in place (at most every ``min_interval`` seconds), then,
    when the sweep ends with the cell still waiting, the overlaid loss figure and the table of runs."""

    kind = "static"
    default_interval = 3.0

    def _build(self) -> None:
        self._handle: Any = None
        self._last_line: str | None = None
        self._finished = False

    def _default_auto_flush(self) -> bool:
        return shell_name() == "ZMQInteractiveShell"

    def display(self) -> None:
        with self._flush_lock:
            self._last_line = self.state.text_line()
            self._handle = show({"text/plain": self._last_line}, display_id=True)
        if self.sweep.done:
            self.finish()

    def _render(self, parts: set[str]) -> None:
        if self._handle is None:
            return
        line = self.state.text_line()
        if line != self._last_line:
            self._last_line = line
            show({"text/plain": line}, handle=self._handle)

    def finish(self) -> None:
        self.refresh()
        with self._flush_lock:
            if self._finished:
                return
            self._finished = True
            if self._handle is None:
                self._handle = show({"text/plain": self.state.text_line()}, display_id=True)
            self._render({"status"})
            fig = self.state.figure()
            table = {"text/plain": self.state.table_text(), "text/html": self.state.table_html()}
        show(figure_bundle(fig, self.state.text_line()))
        show(table)


# =========================================================================== choosing one
_SWEEP_DASHBOARDS: dict[str, type[SweepDashboard]] = {"widget": WidgetSweepDashboard, "static": StaticSweepDashboard}


def register_sweep_dashboard(mode: str, cls: type[SweepDashboard]) -> None:
    """Make ``sweep_dashboard_for(..., mode=mode)`` build ``cls`` (e.g. a Colab adapter)."""
    if not (isinstance(cls, type) and issubclass(cls, SweepDashboard)):
        raise TypeError(f"{cls!r} is not a SweepDashboard subclass")
    _SWEEP_DASHBOARDS[mode] = cls


def sweep_dashboard_for(sweep: "Sweep", mode: str = "auto", **kwargs: Any) -> SweepDashboard:
    """``"widget"`` in a Jupyter kernel with ipywidgets, else ``"static"``; ``JUPYTER_FT_DASHBOARD`` overrides
    ``"auto"`` as for a single run's dashboard (a mode with no sweep view falls back to the automatic one)."""
    if mode in (None, "", "auto"):
        mode = os.environ.get("JUPYTER_FT_DASHBOARD", "").strip().lower() or "auto"
    if mode == "auto":
        claimed = auto_mode()  # an adapter (Colab) took over the single-run "auto"
        if claimed:
            # The adapter's sweep view when it registered one (setup_colab registers ColabSweepDashboard);
            # without, widgets updated from the training thread may freeze there (Colab drops them), so the
            # static view, which works everywhere, is the fallback.
            mode = claimed if claimed in _SWEEP_DASHBOARDS else "static"
        else:
            mode = "widget" if widget_frontend() else "static"
    elif mode not in _SWEEP_DASHBOARDS:  # a single-run-only mode: the static view
        mode = "static"
    try:
        cls = _SWEEP_DASHBOARDS[mode]
    except KeyError:
        raise ValueError(f"unknown dashboard mode {mode!r}; choose one of auto, "
                         f"{', '.join(_SWEEP_DASHBOARDS)}") from None
    return cls(sweep, **kwargs)
