"""How an evaluation writes its numbers and texts, in the text table and in the HTML alike.

``EvalResult.table()`` (text) and :mod:`jupyter_ft.views.eval_html` show the same values, so the rounding
lives once here; plain functions of plain values.
"""

from __future__ import annotations

import math

__all__ = ["clip", "format_cell", "format_short"]


def format_cell(value: float, sign: bool = False) -> str:
    """Right-aligned in 8 columns with at least one space before it: 3 decimals, fewer for large values."""
    if not math.isfinite(value):
        return f"{value:>8}"
    spec = "+" if sign else ""
    for decimals in (3, 2, 1, 0):
        text = f"{value:{spec}.{decimals}f}"
        if len(text) <= 7:
            return f"{text:>8}"
    return f" {value:{spec}.2e}"


def format_short(value: float | None, sign: bool = False) -> str:
    """A per-row score: ``1``, ``0.667``, ``+0.250``; ``""`` for none."""
    if value is None:
        return ""
    if not math.isfinite(value):
        return str(value)
    if float(value).is_integer() and abs(value) < 1e6 and not sign:
        return str(int(value))
    return f"{value:+.3f}" if sign else (f"{value:.3f}" if abs(value) < 1000 else f"{value:.1f}")


def clip(text: str, width: int) -> str:
    """``text`` on one line, cut to ``width`` characters with an ellipsis."""
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1] + "…"
