"""The dashboard without a widget frontend: a text progress line, then a static figure and a summary.

For nbconvert, ``jupyter execute``, terminal IPython and exported HTML, where widgets do not render (or do
not update): one of the views of :class:`~jupyter_ft.widgets.dashboard.Dashboard`, built from the same
:class:`~jupyter_ft.views.dashboard_state.DashboardState` and figure as the widget view.
"""

from __future__ import annotations

from typing import Any

from ..views.dashboard_state import summary_text
from ..views.figures import build_figure, figure_bundle
from .dashboard import Dashboard, register_dashboard
from .frontend import shell_name, show

__all__ = ["StaticDashboard"]


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
        return shell_name() == "ZMQInteractiveShell"

    def display(self) -> None:
        with self._flush_lock:
            line = self.state.text_line()
            self._handle = show({"text/plain": line}, display_id=True)
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
            show({"text/plain": line}, handle=self._handle)

    def _show_warnings(self) -> None:
        for warning in self.state.warnings[self._shown_warnings:]:
            show({"text/plain": f"warning: {warning}"})
        self._shown_warnings = len(self.state.warnings)

    def finish(self) -> None:
        """Show the figure and the summary line (once), after a last refresh."""
        self.refresh()
        with self._flush_lock:
            if self._finished:
                return
            self._finished = True
            if self._handle is None:
                self._handle = show({"text/plain": self.state.text_line()}, display_id=True)
            self._render({"status"})
            summary = summary_text(self.state)
            fig = build_figure(self.state, smoothing=self.smoothing, log_scale=self.log_scale,
                               title=f"{self.state.name} — {self.state.status}")
        show(figure_bundle(fig, summary))


register_dashboard("static", StaticDashboard)
