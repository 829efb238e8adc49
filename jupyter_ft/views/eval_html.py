"""The HTML of an evaluation: the aggregate table, the side-by-side rows with word differences, the page.

``EvalResult._repr_html_`` and the eval widget both render through here. This layer sits below ``eval``,
so it takes the result as an :class:`EvalTable` (any object with those attributes) instead of importing
it. The CSS and the sorting script are package files (``static/eval.css``, ``static/eval.js``).
"""

from __future__ import annotations

import functools
import html
import uuid
from collections.abc import Callable, Mapping
from importlib import resources
from typing import Any, Protocol

from .diff import word_diff
from .eval_format import format_cell, format_short

__all__ = ["MAX_HTML_ROWS", "EvalTable", "aggregate_html", "eval_html", "eval_style", "rows_html", "sort_script"]

MAX_HTML_ROWS = 500


class EvalTable(Protocol):
    """What the HTML needs of an evaluation result (``jupyter_ft.eval.EvalResult`` has all of it)."""

    rows: list[dict[str, Any]]
    metrics: dict[str, dict[str, float]]

    @property
    def primary(self) -> str | None: ...

    def higher_is_better(self, name: str) -> bool: ...

    def row_scores(self, metric: str | None = None) -> list[tuple[float | None, float | None]]: ...

    def worse_rows(self, metric: str | None = None) -> list[dict[str, Any]]: ...

    def summary(self) -> str: ...


@functools.cache
def _static(name: str) -> str:
    return resources.files(__package__).joinpath("static", name).read_text(encoding="utf-8")


def eval_style() -> str:
    """The CSS of the tables and of the word-difference marks (``.jft-eval`` scope); goes in a ``<style>``."""
    return _static("eval.css")


def sort_script(table_id: str) -> str:
    """The script that sorts the rows of table ``table_id`` when its ``#`` or score header is clicked."""
    return _static("eval.js").replace("TABLE_ID", table_id)


def aggregate_html(metrics: Mapping[str, Mapping[str, float]], higher_is_better: Callable[[str], bool]) -> str:
    """One row per metric: base, tuned and the delta, green where tuned is better (in the metric's direction)."""
    if not metrics:
        return "<p><i>no metrics (no references)</i></p>"
    body = []
    for name, m in metrics.items():
        delta = m["tuned"] - m["base"]
        up = higher_is_better(name)
        good = delta > 0 if up else delta < 0
        color = "#1a7f37" if good else ("#cf222e" if delta != 0 else "inherit")
        arrow = "↑" if up else "↓"
        body.append(f"<tr><td style='text-align:left'>{html.escape(name)} <span title='"
                    f"{'higher' if up else 'lower'} is better' style='color:#888'>{arrow}</span></td>"
                    f"<td>{format_cell(m['base']).strip()}</td><td>{format_cell(m['tuned']).strip()}</td>"
                    f"<td style='color:{color};font-weight:600'>{format_cell(delta, sign=True).strip()}</td></tr>")
    return ("<table class='jft-agg'><thead><tr><th style='text-align:left'>metric</th><th>base</th><th>tuned</th>"
            f"<th>delta</th></tr></thead><tbody>{''.join(body)}</tbody></table>")


_Entry = tuple[int, dict[str, Any], float | None, float | None, float | None, str]  # k, row, b, t, delta, state

_SORT_KEYS: dict[str, Callable[[_Entry], Any]] = {
    "index": lambda e: e[0],
    "delta": lambda e: (e[4] is None, e[4] if e[4] is not None else 0.0, e[0]),
    "-delta": lambda e: (e[4] is None, -(e[4] if e[4] is not None else 0.0), e[0]),
    "base": lambda e: (e[2] is None, e[2] if e[2] is not None else 0.0, e[0]),
    "tuned": lambda e: (e[3] is None, e[3] if e[3] is not None else 0.0, e[0]),
}


def rows_html(result: EvalTable, *, metric: str | None = None, sort: str = "index", only_worse: bool = False,
              contains: str = "", limit: int = MAX_HTML_ROWS, table_id: str | None = None) -> str:
    """The side-by-side table; ``sort`` is ``index``, ``delta`` (worst first), ``-delta`` (best first),
    ``base`` or ``tuned`` (score, low first)."""
    metric = metric or result.primary
    lower = bool(metric) and not result.higher_is_better(metric or "")
    entries: list[_Entry] = []
    for k, (row, (b, t)) in enumerate(zip(result.rows, result.row_scores(metric))):
        delta = None if b is None or t is None else (t - b)
        if delta is not None and lower:
            delta = -delta  # positive = tuned better, whatever the metric's direction
        state = "" if delta is None else ("worse" if delta < 0 else "better" if delta > 0 else "same")
        if only_worse and state != "worse":
            continue
        if contains:
            hay = " ".join(str(row.get(c) or "") for c in ("user", "prompt", "reference", "base", "tuned")).lower()
            if contains.lower() not in hay:
                continue
        entries.append((k, row, b, t, delta, state))
    if sort not in _SORT_KEYS:
        raise ValueError(f"sort must be one of {', '.join(_SORT_KEYS)}")
    entries.sort(key=_SORT_KEYS[sort])
    shown = entries[:limit]
    has_ref = any(row.get("reference") is not None for _, row, *_ in shown) or not shown
    tid = table_id or f"jft-rows-{uuid.uuid4().hex[:8]}"
    body = []
    for k, row, b, t, delta, state in shown:
        base_html, tuned_html = word_diff(row["base"], row["tuned"])
        prompt = html.escape(row.get("user") or row["prompt"])
        full = html.escape(row["prompt"], quote=True)
        score = "" if b is None or t is None else f"{format_short(b)} → {format_short(t)}"
        ref = "" if not has_ref else f"<td>{html.escape(row.get('reference') or '')}</td>"
        attrs = (f" data-i='{row.get('index', k)}'" + ("" if b is None else f" data-base='{b}'")
                 + ("" if t is None else f" data-tuned='{t}'")
                 + ("" if delta is None else f" data-delta='{delta}'"))
        body.append(f"<tr class='{state}'{attrs}><td>{row.get('index', k)}</td>"
                    f"<td title=\"{full}\">{prompt}</td>{ref}<td>{base_html}</td><td>{tuned_html}</td>"
                    f"<td class='jft-score'>{score}</td></tr>")
    ref_head = "<th>reference</th>" if has_ref else ""
    head = (f"<tr><th data-k='i' title='sort'>#</th><th>prompt</th>{ref_head}<th>base</th><th>tuned</th>"
            f"<th data-k='delta' title='sort by tuned - base'>{html.escape(metric or 'score')}<br>"
            "base → tuned</th></tr>")
    more = (f"<p style='color:#888'>{len(entries) - len(shown)} more rows not shown; samples.jsonl has them "
            "all.</p>" if len(entries) > len(shown) else "")
    return (f"<table class='jft-rows' id='{tid}'><thead>{head}</thead><tbody>{''.join(body)}</tbody></table>"
            + more)


def eval_html(result: EvalTable, *, metric: str | None = None) -> str:
    """Static HTML: the aggregate table, then the rows with word differences between base and tuned.
    A checkbox hides all but the rows where tuned is worse (CSS only) and the # and score headers sort
    the rows where scripts run (trusted notebooks, exported HTML)."""
    uid = uuid.uuid4().hex[:8]
    worse = len(result.worse_rows(metric))
    # The checkbox, its label and the table are siblings, so that `:checked ~ table` can hide rows.
    toggle = (f"<input type='checkbox' id='jft-worse-{uid}' class='jft-worse'>"
              f"<label for='jft-worse-{uid}'> only rows where tuned is worse ({worse})</label>")
    style = eval_style() + f"#jft-worse-{uid}:checked ~ table tbody tr:not(.worse){{display:none}}"
    script = sort_script(f"jft-rows-{uid}")
    return (f"<div class='jft-eval'><style>{style}</style>"
            f"<div style='margin-bottom:4px'>{html.escape(result.summary())}</div>"
            f"{aggregate_html(result.metrics, result.higher_is_better)}"
            f"{toggle}{rows_html(result, metric=metric, table_id=f'jft-rows-{uid}')}"
            f"<script>{script}</script></div>")
