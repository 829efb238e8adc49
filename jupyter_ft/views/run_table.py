"""The ``%ft_runs`` table: one row per run record, as HTML in a notebook and as aligned text elsewhere.

Pure rendering of ``RunRecord`` fields (duck-typed: ``id``, ``name``, ``status``, ``config``, ``summary``,
``sweep``, ``tags``, ``notes``), so it serves the magics and any other face without importing them.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

__all__ = ["RunTable"]


class RunTable:
    """``%ft_runs`` output: HTML in a notebook, aligned text elsewhere."""

    COLUMNS = ("id", "name", "status", "started", "steps", "best eval", "lr", "r", "batch", "sweep", "tags",
               "notes", "overfitting", "forgetting")

    def __init__(self, records: Sequence[Any]) -> None:
        self.rows = [self.row(r) for r in records]

    @staticmethod
    def row(r: Any) -> tuple[str, ...]:
        """The table cells of one run record."""
        cfg = r.config or {}
        t, lora = cfg.get("training", {}), cfg.get("lora", {})
        s = r.summary or {}
        best = s.get("best_eval_loss")
        return (r.id, r.name, r.status, (r.started_at or r.created_at or "")[:19].replace("T", " "),
                f"{s.get('global_step', '')}", f"{best:.4f}" if isinstance(best, float) else "",
                f"{t.get('learning_rate', '')}", f"{lora.get('r', '')}", f"{t.get('batch_size', '')}",
                _sweep_cell(getattr(r, "sweep", None)), " ".join(getattr(r, "tags", None) or []),
                _short(getattr(r, "notes", "") or ""),
                str((s.get("probes") or {}).get("overfitting") or ""), str((s.get("probes") or {}).get("forgetting") or ""))

    def __repr__(self) -> str:
        if not self.rows:
            return "no runs yet"
        widths = [max(len(c), *(len(row[i]) for row in self.rows)) for i, c in enumerate(self.COLUMNS)]
        fmt = "  ".join(f"{{:<{w}}}" for w in widths)
        return "\n".join([fmt.format(*self.COLUMNS)] + [fmt.format(*row) for row in self.rows])

    def _repr_html_(self) -> str:
        if not self.rows:
            return "<p>no runs yet</p>"
        head = "".join(f"<th>{c}</th>" for c in self.COLUMNS)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row) + "</tr>" for row in self.rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _sweep_cell(sweep: Any) -> str:
    if not isinstance(sweep, dict) or not sweep.get("id"):
        return ""
    return f"{sweep['id']} {int(sweep.get('index', 0)) + 1}/{sweep.get('total', '?')}"


def _short(text: str, limit: int = 40) -> str:
    line = text.strip().replace("\n", " / ")
    return line if len(line) <= limit else line[: limit - 1] + "…"
