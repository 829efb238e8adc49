"""The supported row formats (chat, prompt/completion, Alpaca, text): detection, validation, chat turns.

One place decides which columns hold which role, so training, preview and evaluation read rows the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ..config import DataConfig
from ..errors import DataError

__all__ = ["ALIASES", "FORMAT_ROLES", "detect_format", "prompt_messages", "to_messages", "validate_rows"]

# Column names accepted for each role when the user gives no explicit mapping.
ALIASES: dict[str, tuple[str, ...]] = {
    "messages": ("messages", "conversations", "conversation"),
    "prompt": ("prompt", "question", "query"),
    "completion": ("completion", "answer", "response"),
    "instruction": ("instruction",),
    "input": ("input", "context"),
    "output": ("output", "response", "answer"),
    "text": ("text", "content"),
}
FORMAT_ROLES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # format: (required roles, optional roles)
    "chat": (("messages",), ()),
    "prompt_completion": (("prompt", "completion"), ()),
    "alpaca": (("instruction", "output"), ("input",)),
    "text": (("text",), ()),
}


def detect_format(column_names: Iterable[str], config: DataConfig, source: str = "data") -> tuple[str, dict[str, str], str]:
    """Pick the format and the role -> column mapping; explain the choice in one sentence."""
    cols = list(column_names)
    explicit = dict(config.columns or {})
    missing_explicit = [f"{role}={col}" for role, col in explicit.items() if col not in cols]
    if missing_explicit:
        raise DataError(
            f"{source}: data.columns names columns that do not exist: {', '.join(missing_explicit)}. "
            f"Columns present: {', '.join(cols)}."
        )

    def mapping_for(fmt: str) -> dict[str, str] | None:
        required, optional = FORMAT_ROLES[fmt]
        found: dict[str, str] = {}
        for role in required + optional:
            if role in explicit:
                found[role] = explicit[role]
                continue
            col = next((c for c in ALIASES[role] if c in cols and c not in found.values()), None)
            if col is not None:
                found[role] = col
            elif role in required:
                return None
        return found

    if config.format != "auto":
        mapping = mapping_for(config.format)
        if mapping is None:
            required, _ = FORMAT_ROLES[config.format]
            absent = [r for r in required if r not in explicit and not any(a in cols for a in ALIASES[r])]
            absent = absent or [r for r in required if r not in explicit]  # alias column taken by another role
            raise DataError(
                f"{source}: format '{config.format}' needs column(s) {', '.join(absent)}; the data has "
                f"{', '.join(cols)}. Map them with data.columns, e.g. columns: {{{absent[0]}: <your column>}}."
            )
        return config.format, mapping, f"format '{config.format}' (given) with columns {mapping}"
    order = ["chat", "prompt_completion", "alpaca", "text"]
    if explicit:  # formats whose roles the user mapped come first
        order.sort(key=lambda f: -sum(r in explicit for r in sum(FORMAT_ROLES[f], ())))
    for fmt in order:
        mapping = mapping_for(fmt)
        if mapping is not None:
            return fmt, mapping, f"detected format '{fmt}' from columns {mapping}"
    raise DataError(
        f"{source}: could not detect the data format from columns {', '.join(cols)}. Expected one of: "
        "messages (chat); prompt + completion; instruction (+ input) + output (Alpaca); text. "
        "Set data.format and map your columns with data.columns."
    )


def to_messages(row: Mapping[str, Any], fmt: str, columns: Mapping[str, str], system_prompt: str | None = None) -> list[dict[str, str]]:
    """One row as chat turns (the text format gives a single 'text' pseudo-turn)."""
    if fmt == "chat":
        msgs = [{"role": m["role"], "content": m["content"]} for m in row[columns["messages"]]]
    elif fmt == "prompt_completion":
        msgs = [{"role": "user", "content": row[columns["prompt"]]},
                {"role": "assistant", "content": row[columns["completion"]]}]
    elif fmt == "alpaca":
        user = row[columns["instruction"]]
        extra = row.get(columns["input"]) if "input" in columns else None
        if extra:
            user = f"{user}\n\n{extra}"
        msgs = [{"role": "user", "content": user}, {"role": "assistant", "content": row[columns["output"]]}]
    else:
        return [{"role": "text", "content": row[columns["text"]]}]
    if system_prompt and not any(m["role"] == "system" for m in msgs):
        msgs.insert(0, {"role": "system", "content": system_prompt})
    return msgs


def prompt_messages(row: Mapping[str, Any], fmt: str, columns: Mapping[str, str], system_prompt: str | None = None) -> tuple[list[dict[str, str]], str]:
    """The prompt turns and the reference answer of a row (for generation-based evaluation)."""
    msgs = to_messages(row, fmt, columns, system_prompt)
    if fmt == "text":
        raise DataError("generation-based evaluation needs prompt/answer data, not plain text")
    last = max(i for i, m in enumerate(msgs) if m["role"] == "assistant")
    return msgs[:last], msgs[last]["content"]


def validate_rows(ds: Any, fmt: str, columns: Mapping[str, str], source: str) -> None:
    """Raise ``DataError`` listing (up to 10) rows whose role columns have the wrong type or are empty."""
    problems: list[str] = []
    required, optional = FORMAT_ROLES[fmt]
    for i, row in enumerate(ds):
        for role in required + optional:
            col = columns.get(role)
            if col is None:
                continue
            value = row.get(col)
            where = f"{source}, row {i + 1}, column '{col}'"
            if role == "messages":
                if not isinstance(value, list) or not value:
                    problems.append(f"{where}: expected a non-empty list of {{role, content}} messages")
                    continue
                for j, m in enumerate(value):
                    if not isinstance(m, Mapping) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
                        problems.append(f"{where}, message {j + 1}: each message needs string 'role' and 'content'")
                        break
                else:
                    if not any(m["role"] == "assistant" for m in value):
                        problems.append(f"{where}: no 'assistant' message, so there is nothing to learn")
                    elif value[0]["role"] == "assistant":  # a chat template cannot render the empty prompt before it
                        problems.append(f"{where}: the conversation opens with the 'assistant'; put the user's (or a "
                                        "system) message before it")
            elif role in optional:
                if value is not None and not isinstance(value, str):
                    problems.append(f"{where}: expected text, got {type(value).__name__} {value!r}")
            elif not isinstance(value, str):
                problems.append(f"{where}: expected text, got {type(value).__name__} {value!r}")
            elif not value.strip():
                problems.append(f"{where}: is empty")
        if len(problems) >= 10:
            break
    if problems:
        more = " (stopped after 10)" if len(problems) >= 10 else ""
        raise DataError(f"{len(problems)} problem(s) in the data{more}:\n  - " + "\n  - ".join(problems))

