"""``%%finetune`` and ``%ft_form``: start one run, or a sweep of runs, from a cell and show its dashboard.

The cell body is parsed by :mod:`jupyter_ft.magics.cell`; the training itself is ``jupyter_ft.finetune`` /
:class:`jupyter_ft.sweep.Sweep`. What is left here is the notebook side: binding the result to a variable
and ``_``, showing the live dashboard, and ``--wait`` (Ctrl-C stops the run instead of leaving it behind).
"""

from __future__ import annotations

from argparse import Namespace
from typing import Any

from IPython.core.error import UsageError
from IPython.display import display

from ...config import FineTuneConfig
from ..cell import has_sweep, parse_config, parse_sweep
from ..lookup import KernelRuns

__all__ = ["finetune_cell", "follow", "launch", "show_form"]


def finetune_cell(kernel: KernelRuns, ns: dict[str, Any], args: Namespace, cell: str) -> None:
    """The ``%%finetune`` cell: a dry run, the form, a sweep, or a training run."""
    if has_sweep(cell):
        sweep_cell(kernel, ns, args, cell)
        return
    config = parse_config(cell, ns, args.name)
    if args.form:
        show_form(kernel, ns, config)
        return
    if args.dry_run:
        from ...preview import dry_run

        display(dry_run(config))
        return
    launch(kernel, ns, config, wait=args.wait, out=args.out)


def launch(kernel: KernelRuns, ns: dict[str, Any], config: FineTuneConfig, wait: bool = False,
           out: str | None = None) -> Any:
    """Start a run of ``config`` and follow it (see :func:`follow`)."""
    from ...engine import finetune

    return follow(kernel, ns, finetune(config), wait=wait, out=out)


def follow(kernel: KernelRuns, ns: dict[str, Any], run: Any, wait: bool = False, out: str | None = None) -> Any:
    """Adopt a started run: remember it, bind it, show its dashboard, and block with ``wait``."""
    kernel.adopt(run)
    if out:
        ns[out] = run
    # Bound to `_` but not returned: an Out[] line would freeze "running" under a live dashboard.
    ns["_"] = run
    dashboard = _dashboard(run)
    if wait:
        try:
            run.wait()
        except KeyboardInterrupt:
            run.stop()
            run.wait()
        if dashboard is not None and hasattr(dashboard, "finish"):
            dashboard.finish()
    return None if dashboard is not None else run


def sweep_cell(kernel: KernelRuns, ns: dict[str, Any], args: Namespace, cell: str) -> None:
    """A body with ``sweep:``: list the runs (``--dry-run``) or queue them all with one dashboard."""
    plan = parse_sweep(cell, ns, args.name)
    if args.form:
        raise UsageError("--form edits one run's config; remove the sweep: key to open the form")
    if args.dry_run:
        from ...sweep import estimate_sweep

        estimate_sweep(plan)
        display(plan)
        return
    from ...sweep import Sweep

    sweep = Sweep(plan).start()
    kernel.adopt_sweep(sweep)
    if args.out:
        ns[args.out] = sweep
    ns["_"] = sweep
    dashboard = None
    try:
        from ...widgets.sweep_dashboard import sweep_dashboard_for

        dashboard = sweep_dashboard_for(sweep)
        dashboard.display()
    except ImportError:
        pass
    if args.wait:
        try:
            if dashboard is not None:
                dashboard.wait()
            else:
                sweep.wait()
        except KeyboardInterrupt:
            sweep.stop(cancel_rest=True)
            sweep.wait()
            if dashboard is not None:
                dashboard.finish()


def _dashboard(run: Any) -> Any:
    try:
        from ...widgets import dashboard_for
    except ImportError:
        return None
    dashboard = dashboard_for(run)
    dashboard.display()
    return dashboard


def show_form(kernel: KernelRuns, ns: dict[str, Any], config: FineTuneConfig | None) -> None:
    """The hyperparameter form, pre-filled with ``config``; its Launch button trains like a cell would."""
    from ...widgets.form import ConfigForm

    form = ConfigForm(config, on_launch=lambda cfg: launch(kernel, ns, cfg))
    display(form.widget)
