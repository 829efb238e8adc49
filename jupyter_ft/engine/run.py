"""A fine-tuning run as the notebook holds it: a directory plus, while it trains, the worker's work.

The handle is what ``finetune()`` returns and what every view subscribes to. Its state is set here, in
``__init__``, and changed by the recipe and the callback; nothing is read back with ``getattr`` defaults.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ..config import FineTuneConfig
from ..errors import StopRequested
from ..runtime import distributed, registry
from ..runtime.memory import free_memory
from ..runtime.output import capture_output_parent, route_output
from ..store import RunDir, now
from . import worker
from .events import Event, EventHandler, Subscribers
from .heartbeat import Heartbeat

if TYPE_CHECKING:  # pragma: no cover
    from ..models import TrainingPlan

__all__ = ["Run"]

log = logging.getLogger(__name__)


class Run:
    """A fine-tuning run: a directory plus (while it trains) the background thread's work.

    ``history`` holds every logged step; ``subscribe`` delivers events to the dashboard and probes.
    Handlers run in the training thread and must be quick; an exception in one is logged, never fatal.
    """

    def __init__(self, config: FineTuneConfig, run_dir: RunDir, *, resume_from: str | None = None) -> None:
        self.config = config
        self.run_dir = run_dir
        self.resume_from = resume_from
        self.history: list[dict[str, Any]] = []
        self.progress: dict[str, Any] = {}
        # Set by the recipe while the run trains; the model, tokenizer and probes are dropped afterwards.
        self.plan: TrainingPlan | None = None
        self.model: Any = None
        self.tokenizer: Any = None
        self.probes: Any = None  # the probes' TrainerCallback, when probes run
        self.restores_best = False  # early stop: the final model is the best checkpoint, not the last step
        self.nonfinite_steps: list[int] = []  # steps whose update training.on_nonfinite: skip dropped
        self.nonfinite_in_a_row = 0
        # the global batch: examples per optimizer step, whatever the world size (the launch splits it)
        self.examples_per_step = int(config.training.batch_size) * int(config.training.grad_accum)
        self._subscribers = Subscribers()
        self._stop = threading.Event()
        self._done = threading.Event()
        self._output_parent: Any = None
        self._write_failed = False

    # ------------------------------------------------------------ public API
    @property
    def id(self) -> str:
        return self.run_dir.record.id

    @property
    def name(self) -> str:
        return self.run_dir.record.name

    @property
    def status(self) -> str:
        return self.run_dir.record.status

    @property
    def error(self) -> str | None:
        return self.run_dir.record.error

    @property
    def path(self) -> Path:
        return self.run_dir.path

    @property
    def summary(self) -> dict[str, Any]:
        return self.run_dir.record.summary

    @property
    def done(self) -> bool:
        return self._done.is_set()

    @property
    def device(self) -> str | None:
        return self.plan.device if self.plan is not None else None

    @property
    def stop_asked(self) -> bool:
        """Whether Stop was pressed (without polling the lab's request file)."""
        return self._stop.is_set()

    def start(self) -> "Run":
        """Queue the run on the process's training thread; returns at once."""
        if not registry.register(self):
            return self
        self._done.clear()
        self._output_parent = capture_output_parent()
        self.set_status("queued")
        worker.submit(self)
        return self

    def stop(self, wait: bool = False, timeout: float | None = None) -> "Run":
        """Ask the run to stop after the current optimizer step; it saves a checkpoint and the adapter."""
        self._stop.set()
        if self.status in ("running", "queued"):
            self.set_status("stopping")
        if wait:
            self.wait(timeout)
        return self

    def wait(self, timeout: float | None = None) -> str:
        """Block until the run ends (or ``timeout`` seconds pass); return its status."""
        self._done.wait(timeout)
        return self.status

    def subscribe(self, handler: EventHandler) -> Callable[[], None]:
        """Call ``handler(event)`` for every event from now on; returns a function that unsubscribes."""
        return self._subscribers.add(handler)

    def metrics(self, since_step: int | None = None) -> list[dict[str, Any]]:
        return self.run_dir.metrics(since_step)

    def tag(self, *tags: str, remove: bool = False) -> list[str]:
        """Label the run (shown and filtered in ``%ft_runs --tag``); safe while it trains."""
        return self.run_dir.tag(*tags, remove=remove)

    def note(self, text: str, append: bool = False) -> str:
        """Set (or append to) the run's free-text notes, kept in run.json."""
        return self.run_dir.note(text, append=append)

    def __repr__(self) -> str:
        step = self.progress.get("step")
        total = self.progress.get("max_steps")
        where = f", step {step}/{total}" if step is not None else ""
        return f"<Run {self.id} {self.status}{where}>"

    # ------------------------------------------------------------ events and state (any thread)
    def emit(self, kind: str, **data: Any) -> None:
        event = Event(kind, self.id, data)
        for handler in self._subscribers:
            try:
                handler(event)
            except Exception:  # noqa: BLE001 - a broken dashboard must not kill training
                log.exception("jupyter-ft: event handler %r failed", handler)

    def set_status(self, status: str, **fields: Any) -> None:
        """Record the status in run.json and tell the views. A full disk must not lose the news: the record
        in memory (and so the dashboard) still gets the status and its error, with a warning that run.json
        could not be written."""
        previous = self.run_dir.record.status
        self.record(status=status, **fields)
        if status != previous:
            self.emit("status", status=status, previous=previous, error=self.run_dir.record.error)

    def record(self, **fields: Any) -> None:
        """Set fields of the run's record and write run.json. A full disk must not lose the news: the record in
        memory (and so the dashboard) still has them, with a warning that run.json could not be written."""
        try:
            self.run_dir.save(**fields)
        except OSError as exc:
            message = f"Could not write {self.run_dir.run_json} ({exc}); the run's status there may be stale."
            log.warning("jupyter-ft: %s", message)
            self.run_dir.record.warnings.append(message)
            self.emit("warning", message=message)

    def warn(self, message: str) -> None:
        """A warning kept in run.json and shown by the dashboard (in memory too, when the disk is full)."""
        self.run_dir.record.warnings.append(message)
        try:
            self.run_dir.save()
        except OSError:
            pass
        self.emit("warning", message=message)

    def write_line(self, append: Callable[[dict[str, Any]], None], entry: dict[str, Any]) -> None:
        """A metrics or probes line: a full disk does not stop training. The line waits in memory and is
        written first when there is room (the dashboard has it already); the run says so once."""
        try:
            append(entry)
        except OSError as exc:
            if not self._write_failed:
                self._write_failed = True
                self.warn(f"Could not write to {self.path} ({exc}); metrics are kept in memory and written when "
                          "there is room again. Free some disk space.")

    def check_stop(self) -> None:
        """Raise :class:`StopRequested` between set-up phases when Stop was asked for. Not in a launch of many
        ranks: one rank leaving on its own would leave the others waiting for it; they stop together at the end
        of the first step instead."""
        if distributed.world_size() == 1 and self.poll_stop_request():
            raise StopRequested()

    def poll_stop_request(self) -> bool:
        """Whether Stop was asked for, here (``stop()``) or by the lab's Stop (a request file the server
        writes into the run directory: the run lives in this kernel's thread, out of the server's reach)."""
        if not self._stop.is_set() and self.run_dir.stop_requested():
            self.stop()
        return self._stop.is_set()

    # ------------------------------------------------------------ the work (training thread)
    def execute(self) -> None:
        """Train (the recipe), record how it ended, and give every byte back; never raises."""
        from . import recipe

        route_output(self._output_parent)
        if distributed.world_size() == 1 and self.poll_stop_request():
            self.set_status("stopped", finished_at=now())
            return
        self.set_status("running", started_at=now(), error=None, traceback=None, pid=os.getpid(),
                        hostname=socket.gethostname())
        try:
            with Heartbeat(self):
                recipe.train(self)
            self.set_status("stopped" if self._stop.is_set() else "finished", finished_at=now())
        except StopRequested:
            self.set_status("stopped", finished_at=now())
        except Exception as exc:  # noqa: BLE001 - a failed run is recorded, never raised into the kernel
            self.set_status("failed", finished_at=now(), error=recipe.explain_failure(exc, self.config),
                            traceback=traceback.format_exc())
        finally:
            if self.run_dir.flush_pending():
                self.warn(f"Some metrics lines could not be written to {self.path} (the disk is full); they are "
                          "in this kernel's run.history only.")
            recipe.release(self)
            free_memory()

    def finished(self) -> None:
        """Called by the worker when this run is over, whatever happened: wakes ``wait()``."""
        self._done.set()
