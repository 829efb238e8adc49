"""The outcome of ``%ft_eval``: base and tuned answers per example, the aggregate scores, and their views.

:class:`EvalResult` is plain data (``to_dict`` is what ``eval.json`` / ``samples.jsonl`` hold) plus the
questions a user asks of it: which rows got worse, the table as text, and the HTML a notebook shows
(rendered by :mod:`jupyter_ft.views.eval_html`). The interactive view is
``jupyter_ft.widgets.eval_widget.EvalWidget(result)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..views import eval_html
from ..views.eval_format import clip, format_cell, format_short

__all__ = ["EvalResult"]


@dataclass
class EvalResult:
    """Base vs tuned: ``rows`` (one dict per example: prompt, user, reference, base, tuned, scores) and
    ``metrics`` (``{name: {"base": x, "tuned": y}}``); ``info`` has the run, decoding, data source, the
    per-row score used for "worse" (``primary``) and which metrics are better lower."""

    rows: list[dict[str, Any]]
    metrics: dict[str, dict[str, float]]
    info: dict[str, Any] = field(default_factory=dict)

    # ---------------------------------------------------------------- text
    def table(self) -> str:
        lines = [f"{'metric':<14}{'base':>8}{'tuned':>8}{'delta':>8}"]
        for name, m in self.metrics.items():
            lines.append(f"{name:<14}{format_cell(m['base'])}{format_cell(m['tuned'])}"
                         f"{format_cell(m['tuned'] - m['base'], sign=True)}")
        return "\n".join(lines)

    def higher_is_better(self, name: str) -> bool:
        return name not in set(self.info.get("lower_is_better", ("perplexity",)))

    @property
    def primary(self) -> str | None:
        """The per-row score that decides whether tuned is better or worse on a row."""
        return self.info.get("primary")

    def row_scores(self, metric: str | None = None) -> list[tuple[float | None, float | None]]:
        metric = metric or self.primary
        out = []
        for row in self.rows:
            s = row.get("scores") or {}
            out.append((s.get("base", {}).get(metric), s.get("tuned", {}).get(metric)))
        return out

    def worse_rows(self, metric: str | None = None) -> list[dict[str, Any]]:
        """Rows where the tuned answer scores below the base answer (on ``metric``, default the primary)."""
        metric = metric or self.primary
        lower = not self.higher_is_better(metric) if metric else False
        out = []
        for row, (b, t) in zip(self.rows, self.row_scores(metric)):
            if b is not None and t is not None and ((t > b) if lower else (t < b)):
                out.append(row)
        return out

    def summary(self) -> str:
        i = self.info
        source = i.get("source")
        parts = [f"base vs tuned on {len(self.rows)} example(s)" + (f" of the {source}" if source == "held-out split"
                                                                     else f" from {source}" if source else "")]
        if i.get("run_id"):
            parts[0] += f" of run {i['run_id']}"
        d = i.get("decoding") or {}
        if d:
            how = (f"sampling, temperature {d['temperature']}, seed {d['seed']}" if d.get("temperature", 0) > 0
                   else "greedy")
            parts.append(f"{how}, up to {d.get('max_new_tokens')} new tokens; adapter switched off for the base")
        return "; ".join(parts)

    def __repr__(self) -> str:
        lines = [self.summary(), self.table()]
        if self.rows:
            lines.append("")
            lines.append(self.rows_text(limit=10))
        return "\n".join(lines)

    def rows_text(self, limit: int | None = 10) -> str:
        """The first rows as text: prompt, reference, base and tuned answers."""
        out = []
        rows = self.rows if limit is None else self.rows[:limit]
        scores = self.row_scores()
        for k, row in enumerate(rows):
            b, t = scores[k]
            mark = "" if b is None or t is None else f"  [{self.primary} {format_short(b)} -> {format_short(t)}]"
            out.append(f"#{row.get('index', k)} {clip(row.get('user') or row['prompt'], 80)!r}{mark}")
            if row.get("reference") is not None:
                out.append(f"    reference: {clip(row['reference'], 100)!r}")
            out.append(f"    base:      {clip(row['base'], 100)!r}")
            out.append(f"    tuned:     {clip(row['tuned'], 100)!r}")
        if limit is not None and len(self.rows) > limit:
            out.append(f"... {len(self.rows) - limit} more rows (samples.jsonl has them all)")
        return "\n".join(out)

    # ---------------------------------------------------------------- html
    def aggregate_html(self) -> str:
        return eval_html.aggregate_html(self.metrics, self.higher_is_better)

    def rows_html(self, *, metric: str | None = None, sort: str = "index", only_worse: bool = False,
                  contains: str = "", limit: int = eval_html.MAX_HTML_ROWS, table_id: str | None = None) -> str:
        """The side-by-side table; ``sort`` is ``index``, ``delta`` (worst first), ``-delta`` (best first),
        ``base`` or ``tuned`` (score, low first)."""
        return eval_html.rows_html(self, metric=metric, sort=sort, only_worse=only_worse, contains=contains,
                                   limit=limit, table_id=table_id)

    def to_html(self, *, metric: str | None = None) -> str:
        """Static HTML: the aggregate table, then the rows with word differences between base and tuned.
        A checkbox hides all but the rows where tuned is worse (CSS only) and the # and score headers sort
        the rows where scripts run (trusted notebooks, exported HTML)."""
        return eval_html.eval_html(self, metric=metric)

    def _repr_html_(self) -> str:
        return self.to_html()

    def to_dict(self) -> dict[str, Any]:
        return {"metrics": self.metrics, "info": self.info, "rows": self.rows}
