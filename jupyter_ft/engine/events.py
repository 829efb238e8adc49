"""What a run tells its views while it trains: events, and the list of handlers that receive them."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

__all__ = ["Event", "EventHandler", "Subscribers"]


@dataclass(frozen=True)
class Event:
    """Something that happened in a run: ``status``, ``progress``, ``log``, ``eval``, ``checkpoint``,
    ``warning``, ``probe`` or ``data``. ``data`` is a plain dict, safe to serialise."""

    kind: str
    run_id: str
    data: dict[str, Any]
    time: float = field(default_factory=time.time)


EventHandler = Callable[[Event], None]


class Subscribers:
    """The event handlers of a run or a sweep: subscribed from the notebook's thread, called from the
    training thread, so the list is copied under a lock before each delivery."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._handlers: list[EventHandler] = []

    def add(self, handler: EventHandler) -> Callable[[], None]:
        """Register ``handler``; returns a function that unsubscribes it."""
        with self._lock:
            self._handlers.append(handler)

        def unsubscribe() -> None:
            with self._lock:
                if handler in self._handlers:
                    self._handlers.remove(handler)

        return unsubscribe

    def __iter__(self) -> Iterator[EventHandler]:
        with self._lock:
            return iter(list(self._handlers))
