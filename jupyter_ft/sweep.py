"""Running a sweep: the expanded plan (``config.sweep_plan``, which holds the ``sweep:`` syntax) becomes runs.

Each run is a normal :class:`~jupyter_ft.engine.Run` with its own directory; ``run.json`` carries
``sweep: {id, index, total, method, params}`` so ``%ft_compare --sweep ID`` and ``%ft_runs --sweep ID``
find them after a kernel restart. The runs queue on the process's one training thread, so they train one
after another, in order.
"""

from __future__ import annotations

import datetime as _dt
import secrets
import threading
from typing import TYPE_CHECKING, Any, Callable, Mapping

from .config import FineTuneConfig, Loader
from .config.sweep_plan import SweepPlan, plan_sweep
from .errors import RunStateError

if TYPE_CHECKING:  # pragma: no cover
    from .engine import Event, Run

__all__ = ["Sweep", "estimate_sweep", "start_sweep"]


def estimate_sweep(plan: SweepPlan) -> SweepPlan:
    """Fill ``plan.memory``: the memory estimate of every run, from the model's config alone (no weights)."""
    from . import models

    resolved: dict[tuple[str, Any], Any] = {}
    plan.memory = []
    for p in plan.points:
        m = p.config.model
        if (m.name, m.revision) not in resolved:
            resolved[(m.name, m.revision)] = models.resolve_model(m.name, m.revision)
        plan.memory.append(models.estimate_memory(p.config, resolved[(m.name, m.revision)]))
    return plan


# =========================================================================== running a sweep
class Sweep:
    """The runs of one sweep, queued in order on the training thread.

    ``runs`` are ordinary :class:`~jupyter_ft.engine.Run` objects. ``stop()`` stops the run training now
    and (``cancel_rest=True``, the default) cancels the runs still waiting; ``stop(cancel_rest=False)`` only
    skips the current run and the sweep goes on. ``subscribe`` delivers the events of every run.
    """

    def __init__(self, plan: SweepPlan, *, sweep_id: str | None = None) -> None:
        self.plan = plan
        self.id = sweep_id or new_sweep_id()
        self.runs: list[Run] = []
        self.cancelled: set[str] = set()
        from .engine.events import Subscribers

        self._subscribers = Subscribers()
        self._lock = threading.Lock()

    # ------------------------------------------------------------ launching
    @property
    def name(self) -> str:
        return self.plan.name

    @property
    def keys(self) -> list[str]:
        return self.plan.keys

    def start(self) -> "Sweep":
        """Create every run's directory (status ``queued``), then queue them all; returns at once."""
        from .store import RunStore
        from .engine import Run

        if self.runs:
            return self
        launchers = {point.config.compute.launcher for point in self.plan.points} - {"thread"}
        if launchers:  # a sweep's runs queue on the kernel's thread, one after the other
            raise RunStateError(f"a sweep trains its runs one after another in this kernel's thread; compute."
                                f"launcher: {launchers.pop()} is not supported in a sweep yet. Drop compute.launcher "
                                "(or set it to thread) for the sweep, and launch the best point on its own.")
        total = len(self.plan.points)
        runs = []
        for point in self.plan.points:
            cfg = point.config
            store = RunStore(cfg.output.root)
            rd = store.create(cfg.to_dict(), f"{self.name}-{point.index + 1}")
            rd.save(sweep={"id": self.id, "name": self.name, "index": point.index, "total": total,
                           "method": self.plan.spec.method, "params": point.params, "spec": self.plan.spec.to_dict()})
            run = Run(cfg, rd)
            run.subscribe(self._forward)
            runs.append(run)
        self.runs = runs
        for run in runs:
            run.start()
        return self

    # ------------------------------------------------------------ control
    @property
    def current(self) -> "Run | None":
        """The run training now (or the next to train); ``None`` once all ended."""
        for run in self.runs:
            if run.status in ("running", "stopping") and not run.done:
                return run
        return next((r for r in self.runs if not r.done), None)

    @property
    def done(self) -> bool:
        return bool(self.runs) and all(r.done for r in self.runs)

    def stop(self, cancel_rest: bool = True, wait: bool = False, timeout: float | None = None) -> "Sweep":
        """Stop the current run after its step (checkpoint and adapter saved); with ``cancel_rest`` the queued
        runs are cancelled first, so the training thread never starts them."""
        current = self.current
        if cancel_rest:
            for run in self.runs:
                if run is not current and not run.done and run.status == "queued":
                    self.cancelled.add(run.id)
                    sweep_info = dict(run.run_dir.record.sweep or {}, cancelled=True)
                    run.run_dir.save(sweep=sweep_info)
                    run.stop()
        if current is not None:
            current.stop()
        if wait:
            self.wait(timeout)
        return self

    def wait(self, timeout: float | None = None) -> list[str]:
        """Block until every run ended (or ``timeout`` seconds); the statuses in run order."""
        import time

        deadline = None if timeout is None else time.monotonic() + timeout
        for run in self.runs:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            run.wait(left)
        return [r.status for r in self.runs]

    def subscribe(self, handler: Callable[["Event"], None]) -> Callable[[], None]:
        """``handler(event)`` for every event of every run of the sweep (``event.run_id`` says which)."""
        return self._subscribers.add(handler)

    def _forward(self, event: "Event") -> None:
        for handler in self._subscribers:
            handler(event)  # Run.emit logs a failing handler; it never reaches training

    # ------------------------------------------------------------ reading
    def status_of(self, run: "Run") -> str:
        """A run's status, with ``cancelled`` for a run the sweep's Stop kept from starting."""
        if run.status == "stopped" and run.id in self.cancelled and not run.run_dir.record.started_at:
            return "cancelled"
        return run.status

    @property
    def status(self) -> str:
        if not self.runs:
            return "planned"
        statuses = [self.status_of(r) for r in self.runs]
        if not self.done:
            return "stopping" if any(s == "stopping" for s in statuses) else "running"
        if all(s == "finished" for s in statuses):
            return "finished"
        if any(s == "failed" for s in statuses):
            return "failed"
        return "stopped"

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for run in self.runs:
            s = self.status_of(run)
            out[s] = out.get(s, 0) + 1
        return out

    def __repr__(self) -> str:
        counts = ", ".join(f"{n} {s}" for s, n in self.counts().items())
        return f"<Sweep {self.id} '{self.name}' {self.status}: {len(self.runs)} runs ({counts})>"


def new_sweep_id() -> str:
    return f"sweep-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def start_sweep(config: FineTuneConfig | str | Mapping[str, Any], sweep: Mapping[str, Any] | None = None, *,
                name: str | None = None, wait: bool = False) -> Sweep:
    """Start a sweep in the background and return it at once (or when all runs ended, ``wait=True``).

    ``config`` is a YAML string or a mapping (its ``sweep:`` key is used unless ``sweep`` is given), or a
    ``FineTuneConfig`` with ``sweep`` given. See the module docstring for the syntax.
    """
    import yaml

    if isinstance(config, FineTuneConfig):
        data: dict[str, Any] = config.to_dict()
        data["data"]["source"], data["data"]["eval_source"] = config.data.source, config.data.eval_source
    elif isinstance(config, str):
        data = yaml.load(config, Loader=Loader) or {}
    else:
        data = dict(config)
    result = Sweep(plan_sweep(data, sweep, name)).start()
    if wait:
        result.wait()
    return result
