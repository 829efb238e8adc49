"""Which run a magic means: this kernel's runs first (live ``Run`` objects), then the run store on disk.

Every magic that takes a run id or name goes through here, so "by id, else the newest run of that name"
is written once (``RunStore.find``) and the same words appear when nothing matches.
"""

from __future__ import annotations

from typing import Any

from ..config import DEFAULT_ROOT
from ..errors import RunNotFound, RunStoreError
from ..store import RunDir, RunRecord, RunStore

__all__ = ["KernelRuns", "find_id", "find_one", "open_in", "unquote"]


def unquote(value: str | None) -> str | None:
    """A magic argument without the quotes a user may have typed around it."""
    return value.strip().strip("'\"") if isinstance(value, str) else value


class KernelRuns:
    """The runs and sweeps launched from this kernel, newest last; past runs come from the store."""

    def __init__(self) -> None:
        self.runs: dict[str, Any] = {}
        self.last_run: Any = None
        self.sweeps: dict[str, Any] = {}
        self.last_sweep: Any = None

    def adopt(self, run: Any) -> None:
        """Remember a run started (or resumed) from this kernel; it is the default run from now on."""
        self.runs[run.id] = run
        self.last_run = run

    def adopt_sweep(self, sweep: Any) -> None:
        self.sweeps[sweep.id] = sweep
        self.last_sweep = sweep
        for run in sweep.runs:
            self.runs[run.id] = run
        self.last_run = sweep.runs[-1]

    def root(self, root: str | None = None) -> str:
        """``--root`` when given, else the last run's root, else ``./ft_runs``."""
        if root:
            return unquote(root) or DEFAULT_ROOT
        return self.last_run.config.output.root if self.last_run is not None else DEFAULT_ROOT

    def resolve(self, ref: str | None) -> Any:
        """A ``Run`` of this kernel by id/name, the last one by default; past runs come from the store
        (a ``RunDir``). Raises ``RunNotFound`` saying where it looked."""
        ref = (ref or "").strip()
        if not ref:
            if self.last_run is None:
                raise RunNotFound("no run launched in this kernel yet; give a run id (see %ft_runs)")
            sweep = self.last_sweep
            if sweep is not None and self.last_run in sweep.runs and not sweep.done:
                return sweep.current or self.last_run  # the sweep's run training now, not its last queued one
            return self.last_run
        for run in reversed(list(self.runs.values())):
            if ref in (run.id, run.name):
                return run
        store = RunStore(self.root())
        try:
            return store.find(ref)
        except RunNotFound:
            raise RunNotFound(f"no run '{ref}' in this kernel or under {store.root}; see %ft_runs") from None


def find_id(store: RunStore, ref: str | None) -> str:
    """The id of the run ``ref`` names in ``store`` (by id, else the newest of that name)."""
    ref = unquote(ref) or ""
    try:
        return store.find(ref).record.id
    except RunNotFound:
        raise RunNotFound(f"no run '{ref}' under {store.root}; see %ft_runs") from None


def find_one(store: RunStore, ref: str | None) -> RunRecord:
    """The record of the run ``ref`` names, by id or by a name only one run has: for deleting, where the
    newest of several same-named runs would be a guess."""
    ref = unquote(ref) or ""
    try:
        return store.open(ref).record
    except RunStoreError:  # a corrupt record: its listing entry, so that %ft_rm can remove it
        return next(r for r in store.list() if r.id == ref)
    except RunNotFound:
        named = [r for r in store.list() if r.name == ref]
        if len(named) != 1:
            what = "several runs are" if named else "no run is"
            raise RunNotFound(f"{what} named '{ref}' under {store.root}; give the run id (see %ft_runs)") from None
        return named[0]


def open_in(root: str, ref: str | None) -> RunDir:
    """A run by id or name under an explicit ``--root``; the message points at ``%ft_runs --root``."""
    try:
        return RunStore(root).find(ref or "")
    except RunNotFound:
        raise RunNotFound(f"no run '{ref}' under {root}; see %ft_runs --root {root}") from None
