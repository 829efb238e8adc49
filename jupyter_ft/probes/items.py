"""The probes' questions: bundled general-knowledge items, general prompts for the KL, and answer checking.

Kept apart from the measuring so the item set can be read, subset and checked without a model or torch.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from ..data.answers import normalize_answer

__all__ = ["general_prompts", "is_correct", "load_probe_items", "subset"]


def _read_jsonl(text: str) -> list[dict[str, Any]]:
    """The objects of a JSONL text, blank lines skipped."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def load_probe_items(probe_file: str | None = None) -> list[dict[str, Any]]:
    """The bundled general-knowledge items (``category``, ``prompt``, ``answer``) plus the user's file."""
    text = resources.files(__package__).joinpath("general_knowledge.jsonl").read_text(encoding="utf-8")
    items = _read_jsonl(text)
    if probe_file:
        extra = _read_jsonl(Path(probe_file).read_text(encoding="utf-8"))
        for i, row in enumerate(extra):
            if not isinstance(row, Mapping) or not row.get("prompt") or row.get("answer") in (None, ""):
                raise ValueError(f"{probe_file}, line {i + 1}: each line needs 'prompt' and 'answer'")
            items.append({"category": str(row.get("category", "user")), "prompt": str(row["prompt"]),
                          "answer": str(row["answer"])})
    return items


def general_prompts() -> list[str]:
    """General prompts on which the tuned distribution is compared with the base one (KL)."""
    text = resources.files(__package__).joinpath("general_prompts.jsonl").read_text(encoding="utf-8")
    return [row["prompt"] for row in _read_jsonl(text)]


def subset(items: Sequence[dict[str, Any]], n: int, seed: int = 0) -> list[dict[str, Any]]:
    """A deterministic subset of ``n`` items spread over the categories (round robin), user items first."""
    if n >= len(items):
        return list(items)
    rng = random.Random(seed)
    by_cat: dict[str, list[dict[str, Any]]] = {}
    for item in items:
        by_cat.setdefault(item.get("category", ""), []).append(item)
    cats = sorted(by_cat, key=lambda c: (c != "user", c))
    for c in cats:
        if c != "user":
            rng.shuffle(by_cat[c])
    out: list[dict[str, Any]] = []
    while len(out) < n:
        for c in cats:
            if by_cat[c] and len(out) < n:
                out.append(by_cat[c].pop(0))
    return out



def is_correct(output: str, answer: str) -> bool:
    """Exact-ish match: the normalised answer (:func:`~jupyter_ft.data.normalize_answer`, the rule evaluation
    uses) is the output, or appears in it as whole words."""
    out, ans = normalize_answer(output), normalize_answer(answer)
    if not ans:
        return False
    return out == ans or f" {ans} " in f" {out} "
