"""The interactive view of an evaluation: pick the per-row score, sort, keep the rows where tuned is worse.

It lives with the other ipywidgets views (``eval`` does not import widgets); ``%ft_eval`` builds it where a
widget frontend runs, and a user can too: ``EvalWidget(result).widget``. The HTML inside it is rendered
by :mod:`jupyter_ft.views.eval_html`, like the static view.
"""

from __future__ import annotations

import html
from typing import Any

from ..eval.result import EvalResult
from ..views.eval_html import eval_style

__all__ = ["EvalWidget"]


class EvalWidget:
    """The interactive view of an :class:`EvalResult`: pick the per-row score, sort (worst first, ...), keep
    only the rows where tuned is worse, or filter by text. Parts: ``score``, ``sort``, ``only_worse``,
    ``search``, ``table`` and ``widget``."""

    SORTS = (("row order", "index"), ("tuned − base, worst first", "delta"), ("tuned − base, best first", "-delta"),
             ("base score", "base"), ("tuned score", "tuned"))

    def __init__(self, result: EvalResult) -> None:
        import ipywidgets as W

        self.result = result
        keys = sorted({k for row in result.rows for k in (row.get("scores") or {}).get("base", {})},
                      key=lambda k: (k != result.primary, k))
        self.score = W.Dropdown(options=keys or ["—"], value=(keys[0] if keys else "—"), description="score",
                                layout=W.Layout(width="220px"))
        self.sort = W.Dropdown(options=list(self.SORTS), value="index", description="sort",
                               layout=W.Layout(width="300px"))
        self.only_worse = W.Checkbox(value=False, description="only rows where tuned is worse", indent=False)
        self.search = W.Text(placeholder="filter: text in prompt/answers", layout=W.Layout(width="240px"),
                             continuous_update=False)
        self.table = W.HTML()
        self.count = W.HTML()
        for w in (self.score, self.sort, self.only_worse, self.search):
            w.observe(self._render, names="value")
        controls = W.HBox([self.score, self.sort, self.only_worse, self.search, self.count],
                          layout=W.Layout(flex_flow="row wrap", align_items="center", gap="8px"))
        head = W.HTML(f"<div class='jft-eval'><style>{eval_style()}</style><div>{html.escape(result.summary())}</div>"
                      f"{result.aggregate_html()}</div>")
        self.widget = W.VBox([head, controls, self.table])
        self._render()

    def _render(self, _change: Any = None) -> None:
        metric = self.score.value if self.score.value != "—" else None
        worse = len(self.result.worse_rows(metric)) if metric else 0
        self.count.value = f"<span style='color:#888'>{worse} row(s) where tuned is worse</span>"
        self.table.value = (f"<div class='jft-eval'><style>{eval_style()}</style>"
                            + self.result.rows_html(metric=metric, sort=self.sort.value,
                                                    only_worse=self.only_worse.value, contains=self.search.value)
                            + "</div>")
