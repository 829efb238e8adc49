"""Whether this is a Google Colab runtime, and the set-up ``%load_ext jupyter_ft`` does there.

Kept apart from the views so that the check (``in_colab``) is cheap to import
and testable without building any dashboard: the views are imported only when :func:`setup_colab` runs
in Colab.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from typing import Any

__all__ = ["in_colab", "setup_colab"]

log = logging.getLogger(__name__)


def in_colab() -> bool:
    """True in a Google Colab runtime (``google.colab`` imported or importable)."""
    if "google.colab" in sys.modules:
        return True
    try:
        return importlib.util.find_spec("google.colab") is not None
    except (ImportError, ValueError):  # no ``google`` package at all, or a broken namespace
        return False


def setup_colab(ipython: Any = None) -> bool:
    """Called by ``%load_ext jupyter_ft``: in Colab, enable the custom widget manager (third-party widgets)
    and make the polling views what ``dashboard_for(..., "auto")`` and ``sweep_dashboard_for(..., "auto")``
    build. Returns whether it did."""
    if not in_colab():
        return False
    try:
        from google.colab import output
    except ImportError:
        return False
    try:
        output.enable_custom_widget_manager()
    except Exception as exc:  # noqa: BLE001 - a widget-manager problem must not stop the magics loading
        log.warning("jupyter-ft: could not enable Colab's custom widget manager (%s); the form and the "
                    "evaluation table may not render, the dashboard still does.", exc)
    # the views load only in Colab
    from ..dashboard import register_dashboard
    from ..sweep_dashboard import register_sweep_dashboard
    from .run_view import ColabDashboard
    from .sweep_view import ColabSweepDashboard

    register_dashboard("colab", ColabDashboard, default=True)
    register_sweep_dashboard("colab", ColabSweepDashboard)  # "auto" follows the single-run claim of "colab"
    return True
