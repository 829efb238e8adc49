"""Finish imports that another thread may be half-way through before building a figure."""

from __future__ import annotations

import importlib

__all__ = ["settle_imports"]


def settle_imports() -> None:
    """Import numpy and pandas here, before building a figure, so no other thread can be half-way through.

    plotly's validators look ``pandas`` up in ``sys.modules`` without importing it; right after a run starts,
    the training thread imports pandas (``datasets``), and a figure built in the main thread meanwhile fails
    with "partially initialized module 'pandas'". Once this returns both modules are complete: importing a
    module that another thread is initializing waits on its import lock. Both are already dependencies of
    training, so this costs nothing a run would not spend anyway.
    """
    for name in ("numpy", "pandas"):
        try:
            importlib.import_module(name)
        except ImportError:  # plotly copes without them
            pass
