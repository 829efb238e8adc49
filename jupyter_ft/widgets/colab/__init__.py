"""Google Colab: the live dashboard as a small JavaScript view that polls the kernel, and widget set-up.

Why a separate path: Colab does not deliver widget (comm) messages sent from a background thread
(googlecolab/colabtools#3373), so the ``FigureWidget`` dashboard would freeze while training runs in
the kernel's background thread. Here the browser asks instead: the view displayed under the cell calls a
Python callback registered with ``google.colab.output.register_callback`` through
``google.colab.kernel.invokeFunction`` about once a second. Colab runs such a callback in the kernel's
main thread, so it can safely apply the buffered run events (``Dashboard.refresh``) and answer with the
points added since the view's cursor; the view appends them with ``Plotly.extendTraces``. The Stop button
calls a second registered callback. A sweep gets the same kind of view (:class:`ColabSweepDashboard`: one
loss and eval curve per trial, a table of trials, Stop sweep / Skip run); both are built from the same
pieces (:class:`ColabView`, :func:`series_delta`, the shared JavaScript in ``common.js``). Third-party
widgets (the config form, ``%ft_eval``'s table) need ``google.colab.output.enable_custom_widget_manager()``;
:func:`setup_colab` calls it on ``%load_ext jupyter_ft``.

Everything Colab-specific goes through ``google.colab.output.register_callback`` and the JavaScript,
so the adapter is testable anywhere with a fake ``google.colab`` module (``tests/test_colab.py``).

Limits: callbacks queue behind a running cell, so the view pauses while a cell blocks (``run.wait()``)
and catches up afterwards; Colab has no API to unregister a callback, so each dashboard (run or sweep) keeps
two small entries in Colab's callback table until the kernel restarts.

Modules: ``environment`` (:func:`in_colab`, :func:`setup_colab`), ``assets`` (the page files, :func:`plotlyjs_url`), ``series``
(:class:`TrackedSeries` and the cursors), ``run_view`` (:class:`ColabView`, :class:`ColabDashboard`),
``sweep_view`` (:class:`ColabSweepDashboard`); the pages are package files: ``run.html``, ``sweep.html``
and ``common.js`` (filled in by :meth:`ColabView._page`).
"""

from __future__ import annotations

from .assets import plotlyjs_url
from .environment import in_colab, setup_colab
from .run_view import ColabDashboard, ColabView
from .series import TrackedSeries, series_delta
from .sweep_view import ColabSweepDashboard

__all__ = ["ColabDashboard", "ColabSweepDashboard", "ColabView", "TrackedSeries", "in_colab", "plotlyjs_url",
           "series_delta", "setup_colab"]
