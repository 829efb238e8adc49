"""IPython magics: ``%%finetune`` and friends. Parsing and display only; the work lives in the modules.

``%load_ext jupyter_ft`` registers them (or list ``jupyter_ft`` in ``c.InteractiveShellApp.extensions``).
``router`` holds the magics class (one thin method per magic), ``cmd/`` one module per command, ``cell``
the parsing of a ``%%finetune`` body, ``lookup`` which run a magic means, ``help`` the ``%ft_help`` text.
"""

from __future__ import annotations

from typing import Any

from .cell import expand_variables, locate
from .router import FineTuneMagics

__all__ = ["FineTuneMagics", "expand_variables", "load_ipython_extension", "locate", "unload_ipython_extension"]


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext jupyter_ft``."""
    ipython.register_magics(FineTuneMagics)


def unload_ipython_extension(ipython: Any) -> None:  # pragma: no cover - IPython has no unregister
    pass
