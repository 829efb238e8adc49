"""The worker's heartbeat: ``progress.json`` stamped every few seconds while a run is set up, trains, evaluates
and saves, so a reader in another process (a new kernel, the lab's server, another host) can tell a live run
from one whose worker died, however long one step or one evaluation takes."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from ..store import HEARTBEAT_SECONDS

if TYPE_CHECKING:  # pragma: no cover
    from .run import Run

__all__ = ["Heartbeat"]


class Heartbeat:
    """A daemon thread that rewrites the run's progress (what the callback last knew) with a fresh stamp."""

    def __init__(self, run: "Run", every: float = HEARTBEAT_SECONDS) -> None:
        self.run = run
        self.every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"jupyter-ft-heartbeat-{run.id}", daemon=True)

    def __enter__(self) -> "Heartbeat":
        self._beat_once()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self.every + 1)

    def _beat(self) -> None:
        while not self._stop.wait(self.every):
            self._beat_once()

    def _beat_once(self) -> None:
        try:
            self.run.run_dir.write_progress(dict(self.run.progress))
        except OSError:  # a full disk must not stop training; readers see an older beat
            pass
