"""A button that copies text in the browser: the form's "Copy as %%finetune".

A kernel cannot insert a notebook cell from a widget callback (``set_next_input`` only works while a cell
is executing), so the copy goes through the browser: this small ``anywidget`` whose JavaScript
(``static/clipboard.js``) calls ``navigator.clipboard.writeText(model.get("text"))`` inside the click, with
no round trip through the kernel (Firefox and Safari refuse clipboard writes that are not in a user gesture).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import anywidget
import ipywidgets as W
import traitlets

__all__ = ["ClipboardButton"]

STATIC = Path(__file__).parent / "static"


class ClipboardButton(anywidget.AnyWidget):
    """A button that copies ``text`` to the browser clipboard and, in JupyterLab, writes it as a new cell.

    A click copies in the browser (inside the user's gesture) and then runs the ``on_click`` callbacks in
    the kernel. ``copy()`` asks the browser to copy from Python: it bumps ``request``, which the
    JavaScript watches. The browser reports the outcome in ``status`` ("copied" or "not copied: ...").

    With ``insert_cell`` (the default) a click also dispatches a bubbling DOM ``CustomEvent``
    ``jupyter-ft:insert-cell`` with ``detail.text``; the jupyter-ft JupyterLab extension answers it by
    inserting a code cell with the text below the cell holding the button, and marks the event handled
    (``preventDefault``), which the button reports by bumping ``inserted``. Where nothing listens (Colab,
    VS Code, classic Notebook) the event goes unanswered and the clipboard is the way.
    """

    _esm = STATIC / "clipboard.js"
    _css = STATIC / "clipboard.css"

    text = traitlets.Unicode("").tag(sync=True)
    description = traitlets.Unicode("Copy").tag(sync=True)
    tooltip = traitlets.Unicode("").tag(sync=True)
    disabled = traitlets.Bool(False).tag(sync=True)
    request = traitlets.Int(0).tag(sync=True)
    status = traitlets.Unicode("").tag(sync=True)
    insert_cell = traitlets.Bool(True).tag(sync=True)
    inserted = traitlets.Int(0).tag(sync=True)  # clicks a JupyterLab extension answered with a new cell

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._click_handlers = W.CallbackDispatcher()
        self.on_msg(self._handle_frontend_msg)

    def on_click(self, callback: Callable[[ClipboardButton], Any], remove: bool = False) -> None:
        """Run ``callback(button)`` after each click (after the browser copied); ``remove`` unregisters it."""
        self._click_handlers.register_callback(callback, remove=remove)

    def click(self) -> None:
        """Run the click callbacks, as a click in the browser does after copying."""
        if not self.disabled:
            self._click_handlers(self)

    def copy(self) -> None:
        """Ask the browser to copy ``text`` now."""
        self.request += 1

    def _handle_frontend_msg(self, _widget: Any, content: Any, _buffers: Any) -> None:
        if isinstance(content, dict) and content.get("event") == "click":
            self.click()
