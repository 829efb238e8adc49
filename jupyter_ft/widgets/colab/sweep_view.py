"""The Colab view of a sweep: one loss and eval curve per trial, a table of trials, Stop sweep / Skip run.

The sweep counterpart of :mod:`.run_view`, built from the same pieces (:class:`~.run_view.ColabView`,
:func:`~.series.series_delta`, ``common.js``) with its own page, ``sweep.html``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ...runtime.imports import settle_imports
from ...views.sweep_state import SWEEP_STATUS_COLORS
from ..sweep_dashboard import SweepDashboard
from .assets import plotlyjs_url
from .run_view import ColabView
from .series import TrackedSeries, as_cursor, series_delta

if TYPE_CHECKING:  # pragma: no cover
    from ...views.figures import RunCurves

__all__ = ["ColabSweepDashboard"]


class ColabSweepDashboard(ColabView, SweepDashboard):
    """A sweep's dashboard for Colab: the widget sweep view's parts as HTML+JavaScript that polls :meth:`poll`.

    It shows the sweep's status and runs ended, one train and one eval curve per trial (the best one drawn
    thicker, starred), a table of trials with each one's status, step progress, last loss and best eval
    loss, the error of a failed trial, and the "Stop sweep" (stop the current trial, cancel the queued ones)
    and "Skip run" buttons. Only the points after the view's cursor travel, per trial and curve.
    """

    kind = "colab"
    default_interval = 1.0  # seconds between polls

    def _build(self) -> None:
        for rs in self.state.runs:
            rs.loss, rs.eval_loss = TrackedSeries(rs.loss), TrackedSeries(rs.eval_loss)
        self._register_callbacks()

    def poll(self, cursor: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Apply the buffered events and answer with what the view lacks.

        ``series`` has one ``{"loss": ..., "eval": ...}`` per trial, in trial order, each with ``mode``
        ``"extend"`` (the points after the cursor) or ``"replace"`` (the whole curve); ``trials`` describes
        every trial (status, step, the table's cells, its error, whether it is the best); ``best`` names the
        trial with the lowest eval loss so far. ``done`` (the view stops polling) once every trial ended and
        no event is left to apply. Plain JSON: no NaN or infinity.
        """
        self.refresh()
        cursor = as_cursor(cursor)
        with self._flush_lock:
            self.polls += 1
            st = self.state
            best = st.best()
            rows = st.rows()
            columns = [c for c in rows[0] if not c.startswith("_")] if rows else []
            series: list[dict[str, Any]] = []
            trials: list[dict[str, Any]] = []
            new_cursor: dict[str, Any] = {}
            for rs, row in zip(st.runs, rows):
                curves: dict[str, Any] = {}
                for key, s in (("loss", rs.loss), ("eval", rs.eval_loss)):
                    ckey = f"{key}.{rs.index}"
                    curves[key], new_cursor[ckey] = series_delta(s, cursor.get(ckey))  # type: ignore[arg-type]
                series.append(curves)
                trials.append({
                    "index": rs.index,
                    "run_id": rs.run_id,
                    "name": rs.name,
                    "label": rs.label,
                    "color": rs.color,
                    "status": rs.status,
                    "status_color": SWEEP_STATUS_COLORS.get(rs.status, "#6c757d"),
                    "step": rs.step,
                    "max_steps": rs.max_steps,
                    "fraction": (min(1.0, rs.step / rs.max_steps) if rs.step is not None and rs.max_steps
                                 else (1.0 if rs.status == "finished" else None)),
                    "best_eval": rs.best_eval,
                    "error": rs.error if rs.status == "failed" else None,
                    "best": rs is best,
                    "cells": [str(row[c]) for c in columns],
                })
            done = self.sweep.done and not self.has_pending()
            total = len(st.runs)
            return {
                "sweep_id": self.sweep.id,
                "name": st.name,
                "status": st.status,
                "status_color": SWEEP_STATUS_COLORS.get(st.status, "#1f77b4"),
                "progress_text": st.progress_text(),
                "ended": st.ended,
                "total": total,
                "fraction": st.ended / total if total else None,
                "columns": columns,
                "trials": trials,
                "series": series,
                "best": ({"index": best.index, "name": best.name, "label": best.label, "eval_loss": best.best_eval}
                         if best is not None else None),
                "can_stop": not self.sweep.done and st.status != "stopping",
                "can_skip": not self.sweep.done and st.current() is not None,
                "done": done,
                "interval_ms": int(self.min_interval * 1000),
                "cursor": new_cursor,
            }

    def stop(self, cancel_rest: Any = True) -> dict[str, Any]:
        """The buttons: "Stop sweep" (``cancel_rest``: stop the current trial after its step, with its
        checkpoint and adapter, and cancel the queued ones) or "Skip run" (only the current trial stops)."""
        if self.sweep.done:
            return {"status": self.sweep.status, "stopping": False, "cancelled": []}
        if cancel_rest is not False:
            self.stop_sweep()
        else:
            self.skip_run()
        cancelled = [i for i, run in enumerate(self.sweep.runs) if run.id in self.sweep.cancelled]
        return {"status": self.sweep.status, "stopping": True, "cancelled": cancelled}

    def html(self) -> str:
        """The HTML+JS view; it draws the overlay figure of the trials with no points yet, then polls."""
        from ...views.figures import overlay_figure

        settle_imports()
        st = self.state
        # no title: the header already names the sweep, and a title would sit under the legend
        fig = json.loads(overlay_figure([_empty_curves(rs) for rs in st.runs]).to_json())
        return self._page("sweep.html", st.name, {
            "poll": self.poll_callback,
            "stop": self.stop_callback,
            "plotly": plotlyjs_url(),
            "figure": {"data": fig.get("data", []), "layout": fig.get("layout", {})},
            # overlay_figure draws two traces per run (train, eval), in run order, with no KL panel here
            "traces": [[2 * rs.index, 2 * rs.index + 1] for rs in st.runs],
            "labels": [rs.label for rs in st.runs],
            "interval_ms": int(self.min_interval * 1000),
            "log_scale": False,
            "lost_hint": f"Re-run the cell or use %ft_compare --sweep {self.sweep.id} to see the trials.",
        })


def _empty_curves(rs: Any) -> RunCurves:
    from ...views.figures import RunCurves

    return RunCurves(rs.run_id, rs.label, rs.color, ([], []), ([], []))
