"""The runs this process has queued or is training: the one answer to "is run X live here?".

The store asks it before calling a ``running`` record interrupted, ``%ft_rm`` before deleting, evaluation
before blaming memory on a run of the same kernel. It holds any object with an ``id``, a ``status`` and a
``run_dir`` (the engine's ``Run``), so nothing below the engine needs to import it.
"""

from __future__ import annotations

import threading
from typing import Any, Protocol

__all__ = ["LiveRun", "register", "unregister", "get", "live_run_ids", "active_run"]


class LiveRun(Protocol):
    """What the registry needs of a run."""

    @property
    def id(self) -> str: ...

    @property
    def status(self) -> str: ...

    run_dir: Any


_LIVE: dict[str, LiveRun] = {}
_LOCK = threading.Lock()


def register(run: LiveRun) -> bool:
    """Add ``run``; False if a run with its id is live already (nothing changes then)."""
    with _LOCK:
        if run.id in _LIVE:
            return False
        _LIVE[run.id] = run
        return True


def unregister(run_id: str) -> None:
    with _LOCK:
        _LIVE.pop(run_id, None)


def get(run_id: str) -> LiveRun | None:
    with _LOCK:
        return _LIVE.get(run_id)


def live_run_ids() -> set[str]:
    """Runs this process is queued to train or is training now."""
    with _LOCK:
        return set(_LIVE)


def active_run() -> Any:
    """The run training now in this process, if any."""
    with _LOCK:
        return next((r for r in _LIVE.values() if r.status in ("running", "stopping")), None)
