"""What ``%ft_eval`` asks the model: prompts with their reference answers, from one of three sources.

The run's held-out split (kept untokenized in the run directory), a data file or notebook variable (read
and format-detected like training data), or a list of prompts without references. Each source becomes
:class:`Examples`; perplexity needs tokenized rows instead (:func:`tokenized_for_perplexity`), tokenized
the way training tokenized them. Every problem is an :class:`EvalError` raised before a model is loaded.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import DataConfig, FineTuneConfig
from ..errors import DataError, EvalError
from ..store import RunDir

__all__ = ["Examples", "examples_from_data", "examples_from_prompts", "examples_from_run", "split_rows",
           "tokenized_for_perplexity"]


@dataclass
class Examples:
    """The prompts (chat turns) and references (``None`` for a prompt without one), and where they came from."""

    messages: list[list[dict[str, str]]]
    references: list[str | None]
    source: str
    raw: Any = None            # rows to tokenize for perplexity (--data), or None
    fmt: str | None = None
    columns: dict[str, str] | None = None

    @property
    def has_references(self) -> bool:
        return bool(self.references) and all(r is not None for r in self.references)


def _rows_of(data: Any) -> tuple[Any, str]:
    from ..data import load_rows, source_name

    if isinstance(data, (str, os.PathLike)) and not str(data).startswith("demo:"):
        path = Path(os.path.expanduser(str(data)))
        if not path.exists():
            raise EvalError(f"data: no such file or directory: {path}")
    try:
        train, ev = load_rows(data)
    except DataError as exc:
        raise EvalError(f"data: {exc}") from None
    # A DatasetDict with a validation/test split: evaluate on that split.
    return (ev if ev is not None else train), source_name(data)


def examples_from_data(data: Any, config: FineTuneConfig, n: int | None) -> Examples:
    """``--data``: a file, datasets dir, DataFrame, list of dicts or Dataset with a prompt and a reference."""
    from ..data import detect_format

    rows, name = _rows_of(data)
    cols = list(rows.column_names)
    fmt: str | None = None
    columns: dict[str, str] | None = None
    for dc in (config.data, DataConfig(format="auto")):
        try:
            fmt, columns, _ = detect_format(cols, dc, name)
        except DataError:
            continue
        if fmt != "text":
            break
        fmt = None
    if fmt is None:
        raise EvalError(f"{name}: no reference column: the rows have columns {', '.join(cols)}; evaluation needs a "
                        f"prompt and a reference answer per row: prompt + completion, instruction (+ input) + output, "
                        "or messages ending with an assistant turn (reference columns: completion, answer, "
                        "response, output). Map other names "
                        "with data.columns in the run's config, or use --prompts for answers without references.")
    if n is not None:
        rows = rows.select(range(min(n, len(rows))))
    messages, refs = split_rows(rows, fmt, columns or {}, config.data.system_prompt, name)
    return Examples(messages, refs, name, raw=rows, fmt=fmt, columns=columns)


def split_rows(rows: Iterable[Mapping[str, Any]], fmt: str, columns: Mapping[str, str], system_prompt: str | None,
               name: str) -> tuple[list[list[dict[str, str]]], list[str | None]]:
    """Each row's prompt turns and its reference answer (the last assistant turn / the completion column)."""
    from ..data import prompt_messages

    messages: list[list[dict[str, str]]] = []
    refs: list[str | None] = []
    for i, row in enumerate(rows):
        try:
            msgs, ref = prompt_messages(row, fmt, columns, system_prompt)
        except (KeyError, ValueError, TypeError) as exc:
            what = ("no assistant turn to use as the reference" if isinstance(exc, ValueError)
                    else f"{type(exc).__name__}: {exc}")
            raise EvalError(f"{name}, row {i + 1}: {what}") from None
        if not isinstance(ref, str):
            col = columns.get("completion") or columns.get("output") or "reference"
            raise EvalError(f"{name}, row {i + 1}, column '{col}': the reference must be text, got "
                            f"{type(ref).__name__} {ref!r}")
        messages.append(msgs)
        refs.append(ref)
    return messages, refs


def examples_from_prompts(prompts: Any) -> Examples:
    """``--prompts``: strings or lists of ``{role, content}`` turns, answered without references."""
    if isinstance(prompts, str):
        prompts = [prompts]
    try:
        items = list(prompts)
    except TypeError:
        raise EvalError("prompts: expected a list of strings (or of chat turns), "
                        f"got {type(prompts).__name__}") from None
    if not items:
        raise EvalError("prompts: the list is empty")
    messages = []
    for i, p in enumerate(items):
        if isinstance(p, str):
            messages.append([{"role": "user", "content": p}])
        elif isinstance(p, list) and all(isinstance(m, Mapping) and "role" in m and "content" in m for m in p):
            messages.append([{"role": m["role"], "content": m["content"]} for m in p])
        else:
            raise EvalError(f"prompts, item {i + 1}: expected a string or a list of {{role, content}} turns, "
                            f"got {type(p).__name__}")
    return Examples(messages, [None] * len(messages), "prompts")


def examples_from_run(rd: RunDir, config: FineTuneConfig, n: int | None) -> Examples:
    """The run's held-out split, as the run saved it (``dataset/eval_raw``)."""
    import datasets

    raw_dir = rd.dataset_dir / "eval_raw"
    if not raw_dir.is_dir():
        raise EvalError(f"run {rd.record.id} kept no held-out split ({raw_dir}); it trained with eval_split 0. "
                        "Give data to evaluate on (--data PATH or a notebook variable) or --prompts.")
    datasets.disable_progress_bars()
    raw = datasets.load_from_disk(str(raw_dir))
    if n is not None:
        raw = raw.select(range(min(n, len(raw))))
    fmt, columns = rd.record.dataset["format"], rd.record.dataset["columns"]
    messages, refs = split_rows(raw, fmt, columns, config.data.system_prompt, f"run {rd.record.id} held-out split")
    return Examples(messages, refs, "held-out split")


def tokenized_for_perplexity(rd: RunDir, examples: Examples, config: FineTuneConfig, tokenizer: Any,
                             n: int | None) -> tuple[Any, str] | None:
    """Tokenized rows (input_ids, labels) to score perplexity on, and where they came from."""
    from ..data import IGNORE_INDEX, to_messages, tokenize_messages

    if examples.raw is not None:  # --data: tokenize the given rows like training did
        assert examples.fmt is not None and examples.columns is not None  # set with raw
        rows = []
        for row in examples.raw:
            msgs = to_messages(row, examples.fmt, examples.columns, config.data.system_prompt)
            tok = tokenize_messages(msgs, tokenizer, config.data.max_length, config.data.completion_only_loss)
            if any(t != IGNORE_INDEX for t in tok["labels"]):
                rows.append(tok)
        return (rows, examples.source) if rows else None
    eval_dir = rd.dataset_dir / "eval"
    if not eval_dir.is_dir():
        return None
    import datasets

    ds = datasets.load_from_disk(str(eval_dir))
    if n is not None:
        ds = ds.select(range(min(n, len(ds))))
    return (ds, "held-out split (tokenized)") if len(ds) else None
