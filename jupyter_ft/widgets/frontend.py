"""Where this code runs (a Jupyter kernel with widgets, Colab, terminal IPython, plain Python) and how to show
a raw mimebundle there.

One answer for every view: the dashboards, the sweep dashboard and the magics pick the widget or the static
view from :func:`widget_frontend`, and the static views display through :func:`show`, which prints outside
IPython. IPython and ipywidgets are imported on first use.
"""

from __future__ import annotations

import sys
from typing import Any, Mapping

__all__ = ["shell_name", "show", "widget_frontend"]


def shell_name() -> str | None:
    """The class name of the running IPython shell (``"ZMQInteractiveShell"`` in a kernel), ``None`` outside."""
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    shell = get_ipython()
    return None if shell is None else type(shell).__name__


def widget_frontend() -> bool:
    """Whether widgets can render here: a Jupyter kernel (or Colab) with ipywidgets installed."""
    # Colab's shell is a ZMQInteractiveShell subclass named "Shell"; its widgets work from the main thread
    # once jupyter_ft.widgets.colab enabled the custom widget manager.
    if shell_name() != "ZMQInteractiveShell" and not (shell_name() and "google.colab" in sys.modules):
        return False
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return False
    return True


def show(bundle: Mapping[str, Any], *, display_id: bool = False, handle: Any = None) -> Any:
    """Display a raw mimebundle (or update ``handle``); prints the text outside IPython."""
    if shell_name() is None:
        print(bundle.get("text/plain", ""), flush=True)
        return None
    from IPython.display import display

    if handle is not None:
        handle.update(dict(bundle), raw=True)
        return handle
    return display(dict(bundle), raw=True, display_id=True if display_id else None)
