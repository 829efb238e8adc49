"""``python -m jupyter_ft.worker RUN_DIR``: train one run directory in this process, writing the same run
directory the kernel's training thread writes (``run.json``, metrics, probes, heartbeat, checkpoints, adapter).

A run trained here lives as long as this process, not as long as a kernel: a new kernel's ``%ft_runs`` lists it
``running`` from its heartbeat, and ``%ft_stop`` / the lab's Stop reach it through its stop-request file.
SIGTERM (or Ctrl-C) is a Stop too: the run saves a checkpoint at the end of its step and exits; a second one ends
the process at once. Output goes to ``RUN_DIR/logs/rank-N.log`` (``N`` from the launcher's ``RANK``, else 0).

Exit status: 0 when the run finished or was stopped, 1 when it failed (the reason is in ``run.json``), 2 when it
could not start (the reason is printed).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Sequence

from .engine.process import execute_here, prepare_run_dir
from .engine.supervise import write_rank_error
from .errors import JupyterFTError
from .runtime import distributed

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jupyter_ft.worker", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", help="the run's directory (it holds run.json)")
    parser.add_argument("--resume", action="store_true", help="continue from the newest complete checkpoint")
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="allow the model repository's own code (never taken from run.json)")
    parser.add_argument("--log-to-console", action="store_true",
                        help="keep output on this console instead of RUN_DIR/logs/rank-N.log")
    args = parser.parse_args(argv)
    try:
        run = prepare_run_dir(args.run_dir, resume=args.resume, trust_remote_code=args.trust_remote_code)
    except JupyterFTError as exc:
        print(f"jupyter-ft worker: {exc}", file=sys.stderr)
        if (Path(args.run_dir) / "run.json").is_file():  # a rank of a launch: the supervisor reports it
            write_rank_error(Path(args.run_dir).resolve(), distributed.rank(), str(exc), None)
        return 2
    if not args.log_to_console:
        log = log_path(run.path)
        print(f"jupyter-ft worker: training {run.id} in process {os.getpid()}; output in {log}", file=sys.stderr)
        redirect_output(log)

    stops = {"n": 0}

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stops["n"] += 1
        if stops["n"] == 1:
            run.stop()  # a checkpoint at the end of this step, then exit
        else:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    status = execute_here(run)
    step = run.progress.get("step")
    print(f"jupyter-ft worker: rank {distributed.rank()}: run {run.id} {status}"
          + (f" at step {step}" if step is not None else "") + (f": {run.error}" if run.error else ""))
    if status == "failed":  # the supervisor finds the root cause among the ranks' error files
        write_rank_error(run.path, distributed.rank(), run.error or "failed", run.run_dir.record.traceback)
    return 1 if status == "failed" else 0


def log_path(run_path: Path) -> Path:
    """``logs/rank-N.log`` of the run: every rank of a launch writes its own file."""
    rank = os.environ.get("RANK", "0")
    logs = run_path / "logs"
    logs.mkdir(exist_ok=True)
    return logs / f"rank-{rank if rank.isdigit() else '0'}.log"


def redirect_output(path: Path) -> None:
    """This process's stdout and stderr (the file descriptors, so native libraries' output too) into ``path``."""
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


if __name__ == "__main__":  # pragma: no cover - run as a module
    sys.exit(main())
