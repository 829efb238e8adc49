"""What a sweep's dashboard shows, as plain Python: each run's curves and status, the table, the progress line.

Kept apart from the views (ipywidgets, the static text view, Colab's polling view) so each renders the same
state and the logic needs no frontend. It reads the sweep and its runs through small Protocols
(:class:`SweepLike`, :class:`SweepRunLike`): the sweep use-case and the engine sit above this layer.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any, Mapping, Protocol, Sequence

from ..config.sweep_plan import SweepPlan, format_value, params_text
from .dashboard_state import STATUS_COLORS, EventLike, Series
from .figures import PALETTE, RunCurves, overlay_figure
from .format import finite

if TYPE_CHECKING:  # pragma: no cover
    import plotly.graph_objects as go

__all__ = ["SWEEP_STATUS_COLORS", "SweepLike", "SweepRunLike", "SweepRunState", "SweepState"]

SWEEP_STATUS_COLORS = {**STATUS_COLORS, "cancelled": "#adb5bd"}


class SweepRunLike(Protocol):
    """What the sweep's state reads of one of its runs (the engine's ``Run``)."""

    @property
    def id(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def status(self) -> str: ...

    @property
    def error(self) -> str | None: ...

    @property
    def history(self) -> Sequence[Mapping[str, Any]]: ...

    @property
    def progress(self) -> Mapping[str, Any]: ...


class SweepLike(Protocol):
    """What the sweep's state reads of a sweep (:class:`jupyter_ft.sweep.Sweep`)."""

    @property
    def id(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def keys(self) -> list[str]: ...

    @property
    def plan(self) -> SweepPlan: ...

    @property
    def runs(self) -> Sequence[SweepRunLike]: ...

    @property
    def status(self) -> str: ...

    def status_of(self, run: Any) -> str: ...


class SweepRunState:
    """What the dashboard knows about one run of the sweep."""

    def __init__(self, run: SweepRunLike, index: int, label: str, color: str) -> None:
        self.run_id = run.id
        self.index = index
        self.name = run.name
        self.label = label
        self.color = color
        self.status = run.status
        self.error: str | None = run.error
        self.step: int | None = None
        self.max_steps: int | None = None
        self.loss = Series()
        self.eval_loss = Series()

    def add(self, entry: Mapping[str, Any]) -> set[str]:
        """Add one ``log`` / ``eval`` entry; returns the parts of the view it made stale."""
        step = entry.get("step")
        if step is None:
            return set()
        dirty: set[str] = set()
        if finite(entry.get("loss")):
            self.loss.add(step, float(entry["loss"]))
            dirty |= {"curves", "table"}
        if finite(entry.get("eval_loss")):
            self.eval_loss.add(step, float(entry["eval_loss"]))
            dirty |= {"curves", "table"}
        return dirty

    @property
    def best_eval(self) -> float | None:
        return min(self.eval_loss.y) if self.eval_loss.y else None

    def curves(self, best: bool = False) -> RunCurves:
        return RunCurves(self.run_id, self.label, self.color, (list(self.loss.x), list(self.loss.y)),
                         (list(self.eval_loss.x), list(self.eval_loss.y)), best=best)


class SweepState:
    """The sweep as the views show it; built from the sweep's runs and updated by their events."""

    def __init__(self, sweep: SweepLike) -> None:
        self.sweep = sweep
        self.name = sweep.name
        keys = sweep.keys
        self.runs = [SweepRunState(run, i, f"{run.name} ({params_text(p.params, keys)})" if keys else run.name,
                                   PALETTE[i % len(PALETTE)])
                     for i, (run, p) in enumerate(zip(sweep.runs, sweep.plan.points))]
        self.by_id = {r.run_id: r for r in self.runs}
        self.keys = keys

    def load(self) -> None:
        """Snapshot every run (history and status so far)."""
        for rs, run in zip(self.runs, self.sweep.runs):
            rs.loss.clear()
            rs.eval_loss.clear()
            for entry in list(run.history):
                rs.add(entry)
            rs.status, rs.error = self.sweep.status_of(run), run.error
            if run.progress:
                rs.step, rs.max_steps = run.progress.get("step"), run.progress.get("max_steps")

    def apply(self, event: EventLike) -> set[str]:
        """Apply one event of a run of the sweep; returns the parts of the view it made stale."""
        rs = self.by_id.get(event.run_id)
        if rs is None:
            return set()
        data = event.data or {}
        if event.kind == "status":
            run = self.sweep.runs[rs.index]
            rs.status = self.sweep.status_of(run) if data.get("status") == "stopped" else data.get("status", rs.status)
            rs.error = data.get("error")
            return {"table", "progress", "status"}
        if event.kind == "progress":
            rs.step, rs.max_steps = data.get("step", rs.step), data.get("max_steps", rs.max_steps)
            return {"progress", "table"}
        if event.kind in ("log", "eval"):
            return rs.add(dict(data))
        return set()

    # ------------------------------------------------------------ reading
    @property
    def ended(self) -> int:
        return sum(r.status in ("finished", "stopped", "failed", "interrupted", "cancelled") for r in self.runs)

    @property
    def status(self) -> str:
        return self.sweep.status

    def best(self) -> SweepRunState | None:
        scored = [r for r in self.runs if r.best_eval is not None]
        return min(scored, key=lambda r: r.best_eval) if scored else None  # type: ignore[arg-type, return-value]

    def current(self) -> SweepRunState | None:
        return next((r for r in self.runs if r.status in ("running", "stopping")), None)

    def progress_text(self) -> str:
        n = len(self.runs)
        parts = [f"{self.ended}/{n} runs done"]
        counts: dict[str, int] = {}
        for r in self.runs:
            counts[r.status] = counts.get(r.status, 0) + 1
        parts.append(", ".join(f"{c} {s}" for s, c in counts.items()))
        cur = self.current()
        if cur is not None:
            step = f" · step {cur.step}/{cur.max_steps}" if cur.step is not None else " · loading"
            parts.append(f"now: run {cur.index + 1}/{n} {cur.label}{step}")
        best = self.best()
        if best is not None:
            parts.append(f"best eval loss {best.best_eval:.4f} ({best.name})")
        return " · ".join(parts)

    def text_line(self) -> str:
        return f"sweep {self.name} ({self.sweep.id}): {self.status} · {self.progress_text()}"

    def rows(self) -> list[dict[str, Any]]:
        best = self.best()
        out = []
        for r, point in zip(self.runs, self.sweep.plan.points):
            row: dict[str, Any] = {"#": r.index + 1, "run": r.name}
            row.update({k.rsplit(".", 1)[-1]: format_value(point.params.get(k)) for k in self.keys})
            row["status"] = r.status
            row["step"] = "" if r.step is None else f"{r.step}/{r.max_steps}"
            row["loss"] = f"{r.loss.y[-1]:.4f}" if r.loss.y else ""
            row["best eval"] = f"{r.best_eval:.4f}" if r.best_eval is not None else ""
            row["_best"] = best is r
            row["_color"] = r.color
            out.append(row)
        return out

    def table_html(self) -> str:
        rows = self.rows()
        if not rows:
            return "<p>no runs</p>"
        cols = [c for c in rows[0] if not c.startswith("_")]
        head = "".join(f"<th style='text-align:left;padding:2px 8px'>{html.escape(c)}</th>" for c in cols)
        body = []
        for row in rows:
            style = "font-weight:bold;background:#fff8dc" if row["_best"] else ""
            cells = []
            for c in cols:
                value = html.escape(str(row[c]))
                if c == "#":
                    value = f"<span style='color:{row['_color']}'>■</span> {value}"
                if c == "status":
                    color = SWEEP_STATUS_COLORS.get(row[c], "#6c757d")
                    value = f"<span style='color:{color};font-weight:600'>{value}</span>"
                cells.append(f"<td style='text-align:left;padding:2px 8px'>{value}</td>")
            body.append(f"<tr style='{style}'>{''.join(cells)}</tr>")
        return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"

    def table_text(self) -> str:
        rows = self.rows()
        cols = [c for c in rows[0] if not c.startswith("_")] if rows else []
        cells = [[str(r[c]) for c in cols] for r in rows]
        widths = [max(len(c), *(len(x[i]) for x in cells)) for i, c in enumerate(cols)]
        fmt = "  ".join(f"{{:<{w}}}" for w in widths)
        return "\n".join([fmt.format(*cols)] + [fmt.format(*x) for x in cells])

    def curves(self) -> list[RunCurves]:
        best = self.best()
        return [r.curves(best=r is best) for r in self.runs]

    def figure(self) -> "go.Figure":
        return overlay_figure(self.curves(), title=f"sweep {self.name}: loss by run")
