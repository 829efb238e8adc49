"""Route what a training thread prints to the cell that launched it.

ipykernel tags output with the parent message of the thread that prints; a background thread would
otherwise print under whichever cell runs last. The launching cell's parent header is captured when the
run starts and set on the thread's streams and display hooks when it begins to work.
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["capture_output_parent", "route_output"]


def capture_output_parent() -> Any:
    """The Jupyter message that launched the run (ipykernel's stdout knows it), or None outside a kernel."""
    stream = sys.stdout
    if hasattr(stream, "set_thread_parent"):
        return getattr(stream, "parent_header", None)
    return None


def route_output(parent: Any) -> None:
    """Make the calling thread's output land under ``parent`` (best effort: never raises)."""
    if not parent:
        return
    for stream in (sys.stdout, sys.stderr):
        setter = getattr(stream, "set_thread_parent", None)
        if setter is not None:
            try:
                setter(parent)
            except Exception:  # noqa: BLE001 - output routing is best effort
                pass
    try:
        from IPython import get_ipython

        shell = get_ipython()
        for hook in (getattr(shell, "display_pub", None), getattr(shell, "displayhook", None)):
            setter = getattr(hook, "set_thread_parent", None)
            if setter is not None:
                setter(parent)
    except Exception:  # noqa: BLE001
        pass
