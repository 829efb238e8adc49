"""The supervisor of a launch: ``python -m jupyter_ft.launch RUN_DIR`` runs the launcher's command and watches it.

The kernel starts this process in a session of its own, so the run outlives the kernel, its restart and the
browser. It is the one place that sees the whole launch end, so it is where a launch's loose ends are tied:

- **Stop.** The ranks agree on Stop themselves (rank 0 reads the request, the process group spreads it); a second
  Stop (``force`` in the request), or ranks that have not ended ``stop_grace`` seconds after the first, end every
  process of the launch here.
- **Failure.** A rank that raises writes ``logs/rank-N.error.json``; the launcher then ends the others. The first
  error written is the root cause: ``run.json`` ends ``failed`` with that rank's message and traceback tail, not
  with rank 0's "connection closed by peer".
- **No orphans.** This process is a child subreaper (Linux), so a rank whose launcher died is re-parented here and
  still found; whatever is left of the launch when the launcher exits is ended.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

from ..errors import JupyterFTError
from ..store import ACTIVE, RunDir, RunStore, now
from .launch import LaunchPlan

__all__ = ["Supervisor", "STOP_GRACE_SECONDS", "error_file", "write_rank_error", "root_cause"]

# How long ranks have to end after a Stop (their step, a checkpoint, the adapter) before they are ended here.
STOP_GRACE_SECONDS = 300.0
KILL_GRACE_SECONDS = 10.0  # from SIGTERM to SIGKILL
TRACEBACK_TAIL = 40  # lines of a failed rank's traceback kept in run.json


def error_file(run_path: Path, rank: int) -> Path:
    return run_path / "logs" / f"rank-{rank}.error.json"


def write_rank_error(run_path: Path, rank: int, error: str, traceback: str | None) -> None:
    """What a rank that failed leaves for the supervisor (its own file, like its log: rank 0 writes the rest)."""
    path = error_file(run_path, rank)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps({"rank": rank, "error": error, "traceback": traceback, "time": time.time(),
                               "hostname": socket.gethostname(), "pid": os.getpid()}), encoding="utf-8")
    os.replace(tmp, path)


def root_cause(run_path: Path) -> dict[str, Any] | None:
    """The first error a rank wrote (the others' are what its death did to them), or None."""
    found = []
    for path in (run_path / "logs").glob("rank-*.error.json"):
        with contextlib.suppress(OSError, ValueError):
            data = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(data, dict) and isinstance(data.get("time"), (int, float)):
                found.append(data)
    return min(found, key=lambda d: (d["time"], d.get("rank", 0))) if found else None


def _become_subreaper() -> None:
    """Orphaned descendants (a rank whose launcher died) are re-parented to this process, not to init."""
    if sys.platform != "linux":
        return
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER


class Supervisor:
    """Runs ``plan`` for the run in ``rd`` until every process of it has ended; see the module docstring."""

    def __init__(self, rd: RunDir, plan: LaunchPlan, *, stop_grace: float | None = None,
                 poll: float = 0.25) -> None:
        self.rd = rd
        self.plan = plan
        grace = os.environ.get("JUPYTER_FT_STOP_GRACE")
        self.stop_grace = stop_grace if stop_grace is not None else float(grace) if grace else STOP_GRACE_SECONDS
        self.poll = poll
        self.proc: subprocess.Popen[bytes] | None = None
        self.stop_seen: float | None = None
        self.killed = False
        self._known: dict[int, float] = {}  # pid -> create time of every process of the launch seen so far
        self._signals = 0
        self._kill_reason = "Stop"
        # node 0's supervisor records the launch in run.json; another node's only runs its ranks and its log
        self.main = plan.node_rank == 0
        name = "launcher.log" if self.main else f"launcher-node-{plan.node_rank}.log"
        self.log_path = rd.path / "logs" / name

    # ------------------------------------------------------------ running
    def run(self) -> int:
        """Start the launcher, watch it to its end, record how the run ended; returns the launcher's exit code."""
        _become_subreaper()
        logs = self.rd.path / "logs"
        logs.mkdir(exist_ok=True)
        if self.main:
            for old in logs.glob("rank-*.error.json"):  # a resumed run's old errors are not this launch's
                old.unlink(missing_ok=True)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        with open(self.log_path, "ab") as log:
            log.write(f"[jupyter-ft {now()}] {self.plan.command}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(self.plan.argv, env={**os.environ, **self.plan.env}, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT, process_group=0)
            self._save(launch={**self.rd.record.launch, **self.plan.to_dict(), "supervisor_pid": os.getpid(),
                               "launcher_pid": self.proc.pid, "hostname": socket.gethostname()})
            while self.proc.poll() is None:
                self._track()
                self._watch_stop()
                time.sleep(self.poll)
        code = self.proc.returncode
        self._end_leftovers()
        self._record_end(code)
        return code

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        """SIGTERM / Ctrl-C to the supervisor: the first is a Stop for every rank, the second ends them."""
        self._signals += 1
        with contextlib.suppress(OSError):
            self.rd.request_stop("signal", force=self._signals > 1)

    def _watch_stop(self) -> None:
        request = self.rd.stop_request()
        if request is None or self.killed:
            return
        if self.stop_seen is None:
            self.stop_seen = time.monotonic()
        if request.get("force") or time.monotonic() - self.stop_seen > self.stop_grace:
            self.kill(reason="a second Stop" if request.get("force") else
                      f"no rank ended within {self.stop_grace:.0f} s of Stop")

    # ------------------------------------------------------------ processes
    def _track(self) -> None:
        """Remember every descendant: torchrun starts each rank in a session of its own, so only the pids (not a
        process group) reach them all."""
        import psutil

        with contextlib.suppress(psutil.Error):
            for child in psutil.Process().children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    self._known.setdefault(child.pid, child.create_time())

    def _alive(self) -> list[Any]:
        import psutil

        out = []
        for pid, created in list(self._known.items()):
            try:
                proc = psutil.Process(pid)
                if proc.create_time() == created and proc.status() != psutil.STATUS_ZOMBIE:
                    out.append(proc)
            except psutil.Error:
                self._known.pop(pid, None)
        return out

    def kill(self, reason: str) -> None:
        """End every process of the launch: SIGTERM, then SIGKILL for those still there after a grace."""
        import psutil

        self.killed = True
        self._track()
        with open(self.log_path, "a", encoding="utf-8") as log:
            log.write(f"[jupyter-ft {now()}] ending the launch: {reason}\n")
        self._kill_reason = reason
        procs = self._alive()
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                proc.terminate()
        _, alive = psutil.wait_procs(procs, timeout=KILL_GRACE_SECONDS)
        for proc in alive:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        psutil.wait_procs(alive, timeout=KILL_GRACE_SECONDS)

    def _end_leftovers(self) -> None:
        self._track()
        if self._alive():
            self.kill(reason="processes were left when the launcher exited")
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-1, os.WNOHANG)[0]:  # reap re-parented ranks
                pass

    # ------------------------------------------------------------ the record
    def _fresh(self) -> RunDir:
        """The record as rank 0 left it on disk (this process's copy is from before the launch)."""
        try:
            return RunStore(self.rd.path.parent).open(self.rd.path.name)
        except (JupyterFTError, KeyError, OSError):
            return self.rd

    def _save(self, **fields: Any) -> None:
        if not self.main:
            return
        rd = self._fresh()
        with contextlib.suppress(OSError):
            rd.save(**fields)
        self.rd = rd

    def _record_end(self, code: int) -> None:
        if not self.main:
            return
        rd = self._fresh()
        record = rd.record
        cause = root_cause(rd.path)
        launch = {**record.launch, "exit_code": code, "ended_at": now()}
        # "interrupted": opening the record just now saw rank 0's pid gone; this process knows why
        unended = record.status in ACTIVE or record.status == "interrupted"
        if cause is not None and (unended or record.status == "failed"):
            tail = "\n".join((cause.get("traceback") or "").splitlines()[-TRACEBACK_TAIL:]) or None
            rd.save(status="failed", finished_at=record.finished_at or now(), launch={**launch, "failed_rank":
                    cause.get("rank")}, error=f"rank {cause.get('rank')}: {cause.get('error')}", traceback=tail)
        elif self.killed and unended:
            rd.record.warnings.append(f"The launch was ended ({self._kill_reason}); the run keeps "
                                      "its last complete checkpoint, and %ft_resume continues from it.")
            rd.save(status="stopped", finished_at=now(), launch=launch)
        elif unended:  # ended before rank 0 could say how: a launcher error, a kill from outside
            log_tail = _tail(self.log_path, 20)
            rd.save(status="failed", finished_at=now(), launch=launch, traceback=log_tail,
                    error=f"The launcher exited with code {code} before the run ended (see logs/launcher.log and "
                          "logs/rank-N.log).")
        else:
            rd.save(launch=launch)
        self.rd = rd


def _tail(path: Path, lines: int) -> str | None:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]) or None
    except OSError:
        return None
