"""``%ft_runs``, ``%ft_status``, ``%ft_tag``, ``%ft_note``, ``%ft_rm``: the run store seen from a notebook.

Each function reads or changes the store through ``RunStore`` and returns what the magic shows; finding
the run is :mod:`jupyter_ft.magics.lookup`'s job.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from IPython.core.error import UsageError

from ...store import CORRUPT, STATUSES, RunStore
from ...views.run_table import RunTable
from ..lookup import KernelRuns, find_id, find_one, unquote

__all__ = ["list_runs", "note_run", "remove_run", "status_line", "tag_run"]


def list_runs(root: str, *, status: str | None = None, name: str | None = None, tag: str | None = None,
              sweep: str | None = None) -> RunTable:
    """The ``%ft_runs`` table of the runs under ``root`` that match every filter given."""
    if status and status not in (*STATUSES, CORRUPT):
        raise UsageError(f"--status {status}: choose one of {', '.join((*STATUSES, CORRUPT))}")
    records = RunStore(root).select(status=status, name=unquote(name), tag=unquote(tag), sweep=unquote(sweep))
    return RunTable(records)


def status_line(run: Any) -> str:
    """One line on a run (a ``Run`` of this kernel or a ``RunDir``): status, step, loss, ETA, error."""
    from ...engine import Run

    record = run.run_dir.record  # a Run and a RunDir both have run_dir (the RunRef protocol)
    parts = [f"{record.id}: {record.status}"]
    progress = run.progress if isinstance(run, Run) else {}
    history = run.history if isinstance(run, Run) else run.metrics()
    if progress.get("step") is not None:
        parts.append(f"step {progress['step']}/{progress.get('max_steps')}")
    elif record.summary.get("global_step") is not None:
        parts.append(f"step {record.summary['global_step']}")
    losses = [h for h in history if "loss" in h]
    evals = [h for h in history if "eval_loss" in h]
    if losses:
        parts.append(f"loss {losses[-1]['loss']:.4f}")
    if evals:
        parts.append(f"eval loss {evals[-1]['eval_loss']:.4f}")
    if progress.get("eta") is not None and record.status == "running":
        parts.append(f"ETA {progress['eta']:.0f}s")
    if record.error:
        parts.append(f"error: {record.error}")
    return ", ".join(parts)


def tag_run(root: str, ref: str, tags: Sequence[str], remove: bool = False) -> str:
    """Add (or remove) tags; the line ``%ft_tag`` prints."""
    store = RunStore(root)
    run_id = find_id(store, ref)
    current = store.tag(run_id, *[unquote(t) or "" for t in tags], remove=remove)
    return f"{run_id}: tags {', '.join(current) or '(none)'}"


def note_run(root: str, ref: str, words: Sequence[str], append: bool = False) -> str:
    """Set (or append to) a run's note; the line ``%ft_note`` prints."""
    store = RunStore(root)
    run_id = find_id(store, ref)
    notes = store.note(run_id, unquote(" ".join(words)) or "", append=append)
    return f"{run_id}: note {notes!r}" if notes else f"{run_id}: note cleared"


def remove_run(kernel: KernelRuns, root: str, ref: str, *, yes: bool = False,
               ask: Callable[[str], str] | None = None) -> Path | None:
    """Delete a run's directory after asking (``ask``, default ``input``) unless ``yes``; ``None`` when the
    answer was no. The store refuses live runs and anything that is not a run directory under the root."""
    store = RunStore(root)
    record = find_one(store, ref)
    if not yes:
        ask = ask or input
        answer = ask(f"delete run {record.id} ({record.name}, {record.status}) at {store.path_of(record.id)}? "
                     "[y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            return None
    path = store.delete(record.id)
    kernel.runs.pop(record.id, None)
    return path
