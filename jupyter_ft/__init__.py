"""jupyter-ft: QLoRA fine-tuning from a Jupyter notebook, in a background thread of the kernel.

Importing the package is cheap (no torch): the heavy pieces load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .config import ConfigError, FineTuneConfig
from .version import __version__


__all__ = ["ConfigError", "FineTuneConfig", "Run", "RunStore", "Sweep", "compare_runs", "evaluate_run", "finetune",
           "resume", "start_sweep", "estimate_memory", "__version__"]

_LAZY = {
    "Run": ("engine", "Run"),
    "finetune": ("engine", "finetune"),
    "resume": ("engine", "resume"),
    "RunStore": ("store", "RunStore"),
    "Sweep": ("sweep", "Sweep"),
    "start_sweep": ("sweep", "start_sweep"),
    "compare_runs": ("compare", "compare_runs"),
    "evaluate_run": ("eval", "evaluate_run"),
    "estimate_memory": ("models", "estimate_memory"),
}

if TYPE_CHECKING:  # pragma: no cover
    from .eval import evaluate_run
    from .models import estimate_memory
    from .store import RunStore
    from .engine import Run, finetune, resume


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(f".{module}", __name__), attr)
    raise AttributeError(f"module 'jupyter_ft' has no attribute {name!r}")


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext jupyter_ft`` registers ``%%finetune``, ``%ft_runs``, ``%ft_stop``, ... (see ``%ft_help``).

    In Google Colab it also enables the custom widget manager and switches the live dashboard to the
    polling view that Colab needs (``jupyter_ft.widgets.colab``)."""
    from .magics import load_ipython_extension as _load
    from .widgets.colab import setup_colab

    _load(ipython)
    setup_colab(ipython)


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    """The server extension (REST API over the run store for the lab sidebar) lives in ``jupyter_ft.server``."""
    return [{"module": "jupyter_ft.server"}]


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    """The prebuilt JupyterLab extension (built from ``labextension/`` into ``jupyter_ft/labextension``);
    used by ``jupyter labextension develop``. A pip install ships it under share/jupyter/labextensions."""
    return [{"src": "labextension", "dest": "jupyter-ft"}]
