"""One run's live dashboard: the interface its views share, and the choice of view.

:class:`Dashboard` is built in the main thread from a live ``Run`` or a past run (a ``RunDir``, a run
directory, a run id). It keeps a :class:`~jupyter_ft.views.dashboard_state.DashboardState` up to date from
the run's events with the timing of :class:`~jupyter_ft.widgets.throttle.ThrottledFlush`: the handler in the
training thread only buffers; a throttled flush (at most one per ``min_interval`` seconds, from a timer
thread) applies the buffered events and renders. A ``status`` event flushes at once in the thread that
emitted it, so when ``run.wait()`` returns the dashboard already shows the final points.
``auto_flush=False`` turns background flushing off: the owner calls :meth:`Dashboard.refresh` itself (the
polling adapter Colab needs, because it drops widget updates sent from a background thread).

The views subclass it: :class:`~jupyter_ft.widgets.widget_dashboard.WidgetDashboard` (ipywidgets +
``FigureWidget``), :class:`~jupyter_ft.widgets.static_dashboard.StaticDashboard` (text line, static figure)
and Colab's polling view; each registers itself with :func:`register_dashboard`, and :func:`dashboard_for`
picks one. Importing this module is cheap: plotly, ipywidgets and IPython are imported on first use.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ..config import DEFAULT_ROOT
from ..config.choices import PROCESS_LAUNCHERS
from ..store import ACTIVE, RunDir, RunStore
from ..views.dashboard_state import ALL_PARTS, DashboardState
from ..views.figures import build_figure
from ..views.format import ema
from .frontend import widget_frontend
from .throttle import ThrottledFlush

if TYPE_CHECKING:  # pragma: no cover
    import plotly.graph_objects as go

    from ..engine import Run

__all__ = ["Dashboard", "auto_mode", "dashboard_for", "register_dashboard"]


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

    def __init__(self, source: "Run | RunDir | str | os.PathLike[str]", *, min_interval: float | None = None,
                 auto_flush: bool | None = None, smoothing: float = 0.6, log_scale: bool = False) -> None:
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
        self.state = (DashboardState(rd.record.id, rd.record.name) if run is not None
                      else DashboardState.from_run_dir(rd))
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
    def attach(self, run: Run) -> None:
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


# =========================================================================== choosing one
# Filled by the views as they are imported (the package imports widget_dashboard and static_dashboard),
# and by an adapter (Colab) through register_dashboard.
_DASHBOARDS: dict[str, type[Dashboard]] = {}
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


def auto_mode() -> str | None:
    """The mode an adapter made ``"auto"`` pick (``"colab"`` after ``setup_colab``), or ``None``."""
    return _AUTO_MODE


def dashboard_for(run_or_dir: "Run | RunDir | str | os.PathLike[str]", mode: str = "auto",
                  **kwargs: Any) -> Dashboard:
    """The dashboard that suits where this code runs: ``"widget"`` in a Jupyter kernel with ipywidgets,
    else ``"static"``. ``JUPYTER_FT_DASHBOARD=static|widget|…`` overrides ``"auto"`` (e.g. for
    ``jupyter nbconvert --execute``, whose kernel looks like any other). Construct it in the main thread."""
    if mode in (None, "", "auto"):
        mode = os.environ.get("JUPYTER_FT_DASHBOARD", "").strip().lower() or "auto"
    if mode == "auto":
        mode = _AUTO_MODE or ("widget" if widget_frontend() else "static")
    try:
        cls = _DASHBOARDS[mode]
    except KeyError:
        raise ValueError(f"unknown dashboard mode {mode!r}; choose one of auto, {', '.join(_DASHBOARDS)}") from None
    return cls(run_or_dir, **kwargs)


# =========================================================================== helpers
def _resolve_source(source: object) -> tuple["Run | None", RunDir]:
    from ..engine import Run

    if isinstance(source, Run):
        return source, source.run_dir
    if isinstance(source, RunDir):
        rd = source
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source).expanduser()
        if (path / "run.json").is_file():
            rd = RunStore(path.parent).open(path.name)
        else:
            rd = RunStore(DEFAULT_ROOT).open(str(source))  # a run id under ./ft_runs; KeyError names the latest runs
    else:
        raise TypeError(f"a dashboard needs a Run, a RunDir or a run directory, got {type(source).__name__}")
    # A run directory whose run is training in this kernel right now: follow it live.
    from ..runtime.registry import active_run

    live = active_run()
    if live is not None and live.id == rd.record.id:
        return live, live.run_dir
    # one that processes of its own train (started by this kernel, another one, or a shell): follow its files
    if rd.record.status in ACTIVE and rd.record.launch.get("launcher") in PROCESS_LAUNCHERS:
        from ..engine import follow

        followed = follow(rd)
        return followed, followed.run_dir
    return None, rd
