"""What a run's dashboard shows, as plain Python: the curves, progress, status, warnings and probe results.

Kept apart from every view (ipywidgets, the static text view, Colab's polling view) so the logic is tested
on synthetic events without a frontend, and so each view renders the same state. It consumes run events and
live runs through small Protocols (:class:`EventLike`, :class:`RunLike`): the engine sits above this layer.
"""

from __future__ import annotations

import bisect
from typing import Any, Iterable, Mapping, Protocol, Sequence

from ..store import ACTIVE, RunDir, RunRecord
from .format import finite, format_duration, progress_text, status_text

__all__ = ["ALL_PARTS", "SERIES_PARTS", "STATUS_COLORS", "DashboardState", "EventLike", "RunLike", "Series",
           "summary_text"]

STATUS_COLORS = {
    "queued": "#6c757d",
    "running": "#1f77b4",
    "stopping": "#e67e22",
    "stopped": "#e67e22",
    "finished": "#2ca02c",
    "failed": "#d62728",
    "interrupted": "#9467bd",
}

# Parts of the view a batch of events can make stale.
SERIES_PARTS = frozenset({"loss", "eval", "lr", "tps"})
ALL_PARTS = frozenset(SERIES_PARTS | {"progress", "status", "warnings", "options", "probes"})


class EventLike(Protocol):
    """What a view reads of a run event (the engine's ``Event``)."""

    @property
    def kind(self) -> str: ...

    @property
    def run_id(self) -> str: ...

    @property
    def data(self) -> Mapping[str, Any] | None: ...


class RunLike(Protocol):
    """What :meth:`DashboardState.load_run` reads of a live run (the engine's ``Run``)."""

    @property
    def run_dir(self) -> RunDir: ...

    @property
    def history(self) -> Sequence[Mapping[str, Any]]: ...

    @property
    def progress(self) -> Mapping[str, Any]: ...


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

    Not thread-safe by itself: the dashboard only touches it under its flush lock.
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
    def apply(self, event: EventLike) -> set[str]:
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
        if finite(entry.get("eval_loss")):
            self.eval_loss.add(step, float(entry["eval_loss"]))
            dirty.add("eval")
        if finite(entry.get("loss")):
            self.loss.add(step, float(entry["loss"]))
            self.last_log = dict(entry)
            dirty.add("loss")
            if finite(entry.get("learning_rate")):
                self.lr.add(step, float(entry["learning_rate"]))
                dirty.add("lr")
            if finite(entry.get("tokens_per_s")):
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

    def load_run(self, run: RunLike) -> None:
        """Snapshot a live run (its status, progress and the history logged so far)."""
        record = run.run_dir.record
        self.run_id, self.name = record.id, record.name or record.id
        self.status, self.error = record.status, record.error
        self.load_history(list(run.history))
        self.progress = dict(run.progress) or self._progress_from_record(record)
        self.warnings = list(record.warnings)
        self.dataset = dict(record.dataset)
        self.summary = dict(record.summary)
        self.probes = run.run_dir.probes()

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
        state.probes = rd.probes()
        return state

    def _progress_from_record(self, record: RunRecord,
                              metrics: Sequence[Mapping[str, Any]] | None = None) -> dict[str, Any]:
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
