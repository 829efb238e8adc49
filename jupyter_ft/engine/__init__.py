"""The engine: a run's handle, the recipe that trains it, the Trainer callback and the worker thread.

``finetune`` / ``resume`` (``api``) create a :class:`Run` (``run``) and queue it on the process's one
training thread (``worker``), which calls the recipe (``recipe.train``): config in, trained adapter and a
complete run directory out. The recipe builds the Trainer (``trainer``) with the callback that turns its
hooks into events, metrics lines and progress (``callback``). Nothing here touches a widget.
"""

from __future__ import annotations

from .api import finetune, resume
from .events import Event, EventHandler, Subscribers
from .process_run import ProcessRun, follow
from .run import Run

__all__ = ["Event", "EventHandler", "ProcessRun", "Run", "Subscribers", "finetune", "follow", "resume"]
