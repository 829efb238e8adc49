"""``%ft_stop``, ``%ft_resume``, ``%ft_show``: act on a run that trains, trained, or was cut off.

A stop is honoured after the current optimizer step; a resume trains on in the run's own directory from
its last checkpoint; a show rebuilds the dashboard from the run (live) or from its files (after a restart).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from IPython.core.error import UsageError

from ...config.choices import PROCESS_LAUNCHERS
from ...errors import RunStateError
from ...store import ACTIVE
from ..lookup import KernelRuns, open_in
from .finetune import follow

__all__ = ["resume_run", "show_run", "stop_run", "stop_sweep"]


def stop_sweep(kernel: KernelRuns) -> str:
    """Stop the last sweep's current run and cancel the runs it still has queued; the line to print."""
    if kernel.last_sweep is None:
        raise UsageError("no sweep launched in this kernel")
    kernel.last_sweep.stop(cancel_rest=True)
    return f"stopping sweep {kernel.last_sweep.id}: the current run after its step; the queued runs are cancelled"


def stop_run(kernel: KernelRuns, ref: str | None, *, root: str | None = None) -> str:
    """Ask a run to stop after its current step; the line to print."""
    from ...engine import Run

    run = open_in(root, ref) if root else kernel.resolve(ref)
    if not isinstance(run, Run):
        if run.record.status not in ACTIVE:
            raise RunStateError(f"run {run.record.id} is not training (status: {run.record.status})")
        # trained by another process (a worker, another kernel): the request file reaches it, as the lab's Stop;
        # asked again, the launch's supervisor ends its processes at once
        again = run.stop_request() is not None
        run.request_stop(by="%ft_stop", force=again)
        where = f"process {run.record.pid} on {run.record.hostname or 'this host'}"
        if again:
            return f"asked {run.record.id} ({where}) again: its processes are ended now, keeping its last checkpoint"
        return f"asked {run.record.id} ({where}) to stop after its current step… (%ft_stop again ends it at once)"
    again = run.stop_asked
    run.stop()
    if again and run.config.compute.launcher != "thread":
        return f"stopping {run.id} now: its processes are ended, keeping its last checkpoint"
    return f"stopping {run.id} after the current step…"


def resume_run(kernel: KernelRuns, ns: dict[str, Any], ref: str | None, *, root: str | None = None,
               wait: bool = False, out: str | None = None, trust_remote_code: bool = False) -> Any:
    """Continue a stopped, failed or interrupted run from its last checkpoint and follow it like a new one."""
    from ...engine import Run, resume

    rd = open_in(root, ref) if root else kernel.resolve(ref)
    run_id = rd.id
    if isinstance(rd, Run) and not rd.done:
        raise RunStateError(f"run {run_id} is still training in this kernel; %ft_stop it first to resume later")
    run_root = root or (rd.config.output.root if isinstance(rd, Run) else str(Path(rd.path).parent))
    run = resume(run_id, root=run_root, trust_remote_code=trust_remote_code)
    step = int(Path(str(run.resume_from)).name.rsplit("-", 1)[-1])  # resume() always sets it
    print(f"resuming {run_id} from its checkpoint at step {step}")
    return follow(kernel, ns, run, wait=wait, out=out)


def show_run(kernel: KernelRuns, ref: str | None) -> None:
    """Show the dashboard of a run again: live, or static for an ended one (renders in every frontend)."""
    run = kernel.resolve(ref)
    from ...widgets import dashboard_for

    from ...engine import Run, follow

    if not isinstance(run, Run) and run.record.status in ACTIVE and run.record.launch.get("launcher") in \
            PROCESS_LAUNCHERS:
        run = follow(run)  # trained by processes of its own (maybe started by an earlier kernel): live again

    done = not isinstance(run, Run) or run.done  # a run on disk is not followed live by this kernel
    # A finished run gets the static figure: it renders in JupyterLab, VS Code and HTML exports alike.
    dashboard = dashboard_for(run, mode="static" if done else "auto")
    dashboard.display()
    if done:
        dashboard.finish()
