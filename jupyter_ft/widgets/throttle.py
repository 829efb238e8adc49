"""Throttled flushing of run events into a view: the thread model every live dashboard shares.

Training events arrive in the training thread, but widgets must be updated sparingly (each update is a comm
message) and a polling frontend (Colab) must do the updating itself. This mixin owns that timing: buffer in
the training thread, flush from a timer at most once per ``min_interval`` seconds, flush at once on
``status``, or leave flushing to :meth:`ThrottledFlush.refresh` (``auto_flush=False``).
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

from ..views.dashboard_state import EventLike

__all__ = ["ThrottledFlush"]


class ThrottledFlush:
    """Buffer events from the training thread and flush them at most once per ``min_interval`` seconds.

    Shared by the run and sweep dashboards. The event handler (training thread) only appends to a buffer
    and, unless a flush is already due, starts a ``threading.Timer`` for the next allowed flush time; a
    ``status`` event flushes at once in the emitting thread, so the final state shows when a run ends.
    With ``auto_flush=False`` nothing renders in the background: :meth:`refresh` is called by a poller.
    Subclasses hold a ``state`` with ``apply(event) -> dirty parts`` and implement ``_render(parts)``.
    """

    timer_name = "jupyter-ft-dashboard-flush"
    min_interval: float
    auto_flush: bool
    state: Any  # has ``apply(event) -> set of stale parts``
    flushes: int
    _unsubscribe: Callable[[], None] | None = None

    def _render(self, parts: set[str]) -> None:
        """Bring the views up to date for the stale ``parts``; under the flush lock (subclasses)."""

    def _init_throttle(self) -> None:
        self._pending: list[EventLike] = []
        self._lock = threading.Lock()  # the buffer and the timer
        self._flush_lock = threading.RLock()  # the state and the views
        self._timer: threading.Timer | None = None
        self._last_flush = float("-inf")
        self._closed = False

    def close(self) -> None:
        """Stop following the run or sweep (pending events are applied first). The views stay as they are."""
        with self._lock:
            self._closed = True
            timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        unsubscribe = self._unsubscribe
        if unsubscribe is not None:
            unsubscribe()
            self._unsubscribe = None
        self.refresh()

    def has_pending(self) -> bool:
        """Whether events wait to be applied (a poller must not call the run over before they are)."""
        with self._lock:
            return bool(self._pending)

    def refresh(self) -> bool:
        """Apply the buffered events now and render what changed; returns whether anything was pending.
        Safe from any thread; this is the method a polling adapter calls from the main thread."""
        with self._flush_lock:
            with self._lock:
                batch, self._pending = self._pending, []
                if batch:
                    self._last_flush = time.monotonic()
            if not batch:
                return False
            dirty: set[str] = set()
            for event in batch:
                dirty |= self.state.apply(event)
            if dirty:
                self._render(dirty)
                self.flushes += 1
            return True

    def _on_event(self, event: EventLike) -> None:
        """Training thread: buffer, and make sure a flush will happen. Never touches the views, except
        for a status event, which flushes now so the final state is shown when the run ends."""
        with self._lock:
            self._pending.append(event)
            if self._closed or not self.auto_flush:
                return
            if event.kind != "status":
                if self._timer is None:
                    self._start_timer(self._last_flush + self.min_interval - time.monotonic())
                return
        self.refresh()

    def _start_timer(self, delay: float) -> None:  # with self._lock held
        timer = threading.Timer(max(0.0, delay), self._on_timer)
        timer.daemon = True
        timer.name = self.timer_name
        self._timer = timer
        timer.start()

    def _on_timer(self) -> None:
        try:
            self.refresh()
        finally:
            with self._lock:
                self._timer = None
                # Events that came in while we rendered found a timer set and did not start one.
                if self._pending and not self._closed and self.auto_flush:
                    self._start_timer(self.min_interval)
