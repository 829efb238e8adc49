"""A run trained by the calling process, in its calling thread, start to end: what ``python -m jupyter_ft.worker
RUN_DIR`` does, and the seam every process launcher (one process today; torchrun, accelerate and DeepSpeed next)
stands on. It is the same ``Run.execute`` the kernel's training thread calls, so a run trained here writes the
same run directory, the same heartbeat and the same record, and every view reads it the same way.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..config import FineTuneConfig
from ..errors import RunNotFound, RunStateError
from ..runtime import distributed, registry
from ..store import ReplicaRunDir, RunDir, RunRecord, RunStore, read_json
from .api import prepare_resume
from .run import Run

__all__ = ["prepare_run_dir", "execute_here"]


def prepare_run_dir(path: str | os.PathLike[str], *, resume: bool = False, trust_remote_code: bool = False) -> Run:
    """The ``Run`` of the run directory at ``path``, its config read from ``run.json``, not yet started.

    A new run is one that never started (no ``started_at``): a kernel or a script created it for this process to
    train. A run that started before is continued only with ``resume=True``, from its newest complete checkpoint.
    ``model.trust_remote_code`` is never taken from disk (``trust_remote_code=True`` allows it here)."""
    where = Path(path).expanduser().resolve()
    if not (where / "run.json").is_file():
        raise RunNotFound(f"{where} is not a run directory (it has no run.json); pass the folder of one run, "
                          "e.g. ft_runs/20261201-120000-my-run-1a2b")
    if not distributed.is_main():
        return _replica(where, resume=resume, trust_remote_code=trust_remote_code)
    rd = RunStore(where.parent).open(where.name)
    if resume:
        return prepare_resume(rd, trust_remote_code=trust_remote_code)
    if rd.record.started_at is not None:
        raise RunStateError(f"run {rd.id} started before (it is {rd.record.status}); continue it with --resume, or "
                            "start a new run")
    return Run(FineTuneConfig.from_record(rd.record.config, trust_remote_code=trust_remote_code), rd)


def _replica(where: Path, *, resume: bool, trust_remote_code: bool) -> Run:
    """The ``Run`` of a rank other than 0: the same config and checkpoint, read without judging or changing the
    record (rank 0 may already be writing it), and a run directory it never writes."""
    data = read_json(where / "run.json")
    if not isinstance(data, dict):
        raise RunNotFound(f"{where / 'run.json'} could not be read as a run record")
    rd = ReplicaRunDir.of(RunDir(where, RunRecord.from_dict(data, run_id=where.name)))
    checkpoint = rd.last_checkpoint() if resume else None
    if resume and checkpoint is None:
        raise RunStateError(f"run {rd.id} has no checkpoint to resume from")
    config = FineTuneConfig.from_record(rd.record.config, trust_remote_code=trust_remote_code)
    run = Run(config, rd, resume_from=str(checkpoint) if checkpoint is not None else None)
    if resume:
        run.history = rd.metrics()
    return run


def execute_here(run: Run) -> str:
    """Train ``run`` in the calling thread (registered as this process's live run, so its own readers see it
    alive); returns its final status. Never raises for the run's own failure: that is recorded in ``run.json``."""
    if not registry.register(run):
        raise RunStateError(f"run {run.id} is already training in this process")
    try:
        run.execute()
    finally:
        registry.unregister(run.id)
        run.finished()
    return run.status
