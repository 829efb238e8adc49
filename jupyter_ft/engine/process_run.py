"""A run trained outside this kernel (``compute.launcher: process | torchrun | accelerate | deepspeed``), as the
notebook holds it: the same :class:`~jupyter_ft.engine.run.Run` handle, fed by reading the run directory.

The kernel starts ``python -m jupyter_ft.launch RUN_DIR`` in a session of its own and returns at once; the run
then lives as long as its processes, not as long as the kernel. A follower thread turns what rank 0 writes
(``run.json``, ``metrics.jsonl``, ``probes.jsonl``, ``progress.json``) into the events a thread run emits, so the
live dashboard, ``%ft_status``, ``%ft_show`` and ``wait()`` work on it unchanged; a new kernel attaches the same
way to a run it did not start (:func:`follow`). Stop writes the request file that rank 0 reads and the process
group spreads; a second Stop asks the supervisor to end every process of the launch.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import threading
from typing import Any

from ..config import FineTuneConfig
from ..errors import ConfigError, RunStateError
from ..runtime import registry
from ..store import ACTIVE, RunDir, RunStore, read_jsonl
from .run import Run

__all__ = ["ProcessRun", "follow", "FOLLOW_SECONDS"]

log = logging.getLogger(__name__)

FOLLOW_SECONDS = 0.5  # how often the follower reads the run directory
_BEAT_KEYS = ("heartbeat", "pid", "hostname", "time")


class ProcessRun(Run):
    """A run whose training processes are not this kernel's threads; see the module docstring."""

    def __init__(self, config: FineTuneConfig, run_dir: RunDir, *, resume_from: str | None = None) -> None:
        super().__init__(config, run_dir, resume_from=resume_from)
        self.proc: subprocess.Popen[bytes] | None = None  # the supervisor, when this kernel started it
        self.stops = 0
        self._follower: threading.Thread | None = None
        self._seen = {"metrics": len(self.history), "probes": 0, "warnings": len(run_dir.record.warnings)}
        self._last_progress: dict[str, Any] = {}

    # ------------------------------------------------------------ starting and following
    def start(self) -> "ProcessRun":
        """Start the launch in a session of its own (it outlives this kernel) and follow it; returns at once."""
        if not registry.register(self):
            return self
        self._done.clear()
        argv = [sys.executable, "-m", "jupyter_ft.launch", str(self.path)]
        if self.resume_from:
            argv.append("--resume")
        if self.config.model.trust_remote_code:
            argv.append("--trust-remote-code")
        logs = self.path / "logs"
        logs.mkdir(exist_ok=True)
        with open(logs / "supervisor.log", "ab") as out:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True, cwd=os.getcwd())
        self._seen["probes"] = len(self.run_dir.probes())
        self._follow()
        return self

    def attach(self) -> "ProcessRun":
        """Follow a run that processes started elsewhere (another kernel, a shell) train now."""
        if registry.register(self):
            self.history = self.run_dir.metrics()
            self._seen.update(metrics=len(self.history), probes=len(self.run_dir.probes()))
            self.progress = {k: v for k, v in (self.run_dir.progress() or {}).items() if k not in _BEAT_KEYS}
            self._done.clear()
            self._follow()
        return self

    def _follow(self) -> None:
        self._follower = threading.Thread(target=self._follow_loop, name=f"jupyter-ft-follow-{self.id}", daemon=True)
        self._follower.start()

    def _follow_loop(self) -> None:
        try:
            while True:
                self._poll_once()
                ended = self.status not in ACTIVE
                if ended and (self.proc is None or self.proc.poll() is not None):
                    self._poll_once()  # what the supervisor wrote last (a failed rank's traceback)
                    return
                if self.proc is not None and self.proc.poll() is not None and self.status in ACTIVE:
                    self._poll_once()
                    if self.status in ACTIVE:  # the supervisor is gone and nobody recorded the end
                        self.run_dir.record.status = "interrupted"
                        self.emit("status", status="interrupted", previous="running", error=None)
                    return
                self._done.wait(FOLLOW_SECONDS)
        except Exception:  # noqa: BLE001 - a follower must never take the kernel down
            log.exception("jupyter-ft: following run %s failed", self.id)
        finally:
            registry.unregister(self.id)
            self._done.set()

    def _poll_once(self) -> None:
        """Read what rank 0 wrote since the last look and emit it as this handle's events."""
        try:
            fresh = RunStore(self.path.parent).open(self.path.name)
        except Exception:  # noqa: BLE001 - a torn or missing file: look again next time
            return
        previous = self.run_dir.record.status
        self.run_dir.record = fresh.record
        record = fresh.record
        for message in record.warnings[self._seen["warnings"]:]:
            self.emit("warning", message=message)
        self._seen["warnings"] = len(record.warnings)
        metrics = read_jsonl(self.run_dir.metrics_path)
        if len(metrics) < self._seen["metrics"]:  # superseded by a resume: start over from the file
            self.history, self._seen["metrics"] = [], 0
        for entry in metrics[self._seen["metrics"]:]:
            self.history.append(entry)
            self.emit("eval" if any(k.startswith("eval_") for k in entry) else "log", **entry)
        self._seen["metrics"] = len(metrics)
        probes = self.run_dir.probes()
        for entry in probes[self._seen["probes"]:]:
            self.emit("probe", **entry)
        self._seen["probes"] = len(probes)
        progress = {k: v for k, v in (fresh.progress() or {}).items() if k not in _BEAT_KEYS}
        if progress and progress != self._last_progress:
            self._last_progress = progress
            self.progress = progress
            self.emit("progress", **progress)
        if record.status != previous:
            self.emit("status", status=record.status, previous=previous, error=record.error)

    # ------------------------------------------------------------ control
    def stop(self, wait: bool = False, timeout: float | None = None) -> "ProcessRun":
        """Ask every rank to stop after its current step (they agree on the step and save one checkpoint); a
        second call asks the supervisor to end the launch's processes at once."""
        self.stops += 1
        self._stop.set()
        with contextlib.suppress(OSError):
            self.run_dir.request_stop("kernel", force=self.stops > 1)
        if self.status in ("running", "queued"):
            previous = self.status
            self.run_dir.record.status = "stopping"  # rank 0 writes it to run.json at the end of its step
            self.emit("status", status="stopping", previous=previous, error=None)
        if wait:
            self.wait(timeout)
        return self

    def execute(self) -> None:
        raise RunStateError(f"run {self.id} trains in processes of its own (compute.launcher: "
                            f"{self.config.compute.launcher}), not in this kernel's thread")

    def __repr__(self) -> str:
        return super().__repr__().replace("<Run ", f"<Run ({self.config.compute.launcher}) ", 1)


def follow(rd: RunDir, *, trust_remote_code: bool = False) -> ProcessRun:
    """The live handle of a run that processes train now (a new kernel re-attaching to it)."""
    live = registry.get(rd.record.id)
    if isinstance(live, ProcessRun):
        return live
    try:
        config = FineTuneConfig.from_record(rd.record.config, trust_remote_code=trust_remote_code)
    except ConfigError:  # checked against another machine (its GPUs, its packages): following needs none of it
        config = FineTuneConfig()
        config.compute.launcher = str(rd.record.launch.get("launcher") or "process")
    return ProcessRun(config, rd).attach()
