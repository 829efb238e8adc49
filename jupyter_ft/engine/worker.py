"""The process's one training thread: runs train one at a time, in the order they were started.

Two trainings at once would fight over the same GPU and cores, so a second ``finetune()`` waits in the
queue. The thread is a daemon: it never keeps a kernel from shutting down, and it outlives any run's error.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Protocol

from ..runtime import registry

__all__ = ["Job", "submit"]

log = logging.getLogger(__name__)


class Job(Protocol):
    """What the worker runs: a run's ``execute`` (never raises) and ``finished`` (signals waiters)."""

    @property
    def id(self) -> str: ...

    def execute(self) -> None: ...

    def finished(self) -> None: ...


_QUEUE: "queue.Queue[Job]" = queue.Queue()
_THREAD: threading.Thread | None = None
_LOCK = threading.Lock()


def submit(job: Job) -> None:
    """Queue ``job`` behind the runs already waiting; start the thread if it is not running."""
    global _THREAD
    _QUEUE.put(job)
    with _LOCK:
        if _THREAD is None or not _THREAD.is_alive():
            _THREAD = threading.Thread(target=_work, name="jupyter-ft-trainer", daemon=True)
            _THREAD.start()


def _work() -> None:
    while True:
        job = _QUEUE.get()
        try:
            job.execute()
        except BaseException:  # noqa: BLE001 - the worker must outlive any run
            log.exception("jupyter-ft: unexpected error around run %s", job.id)
        finally:
            registry.unregister(job.id)
            job.finished()
