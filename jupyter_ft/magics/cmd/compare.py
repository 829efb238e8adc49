"""``%ft_compare``: runs chosen by id/name, by sweep or the last N, compared from the run store.

The comparison itself is :mod:`jupyter_ft.compare` (data + rendering); here the arguments are unquoted,
and the result is shown as its table and its overlaid loss curves.
"""

from __future__ import annotations

from collections.abc import Sequence

from IPython.display import display

from ...compare import Comparison, compare_runs, select_runs
from ..lookup import unquote

__all__ = ["compare", "show_comparison"]


def compare(root: str, refs: Sequence[str], *, sweep: str | None = None, last: int | None = None,
            metric: str = "best_eval_loss", x: str = "step") -> Comparison:
    """The comparison of the runs named by ``refs`` (or ``sweep``, or the ``last`` N) under ``root``."""
    runs = select_runs(root, [unquote(r) or "" for r in refs], sweep=unquote(sweep), last=last)
    return compare_runs(runs, metric=metric, x=x)


def show_comparison(comparison: Comparison) -> None:
    """The ranked table (text and HTML) and the figure of overlaid curves."""
    from ...views.figures import figure_bundle

    display({"text/plain": comparison.text(), "text/html": comparison.to_html()}, raw=True)
    display(figure_bundle(comparison.figure(), "<jupyter-ft comparison figure>"), raw=True)

