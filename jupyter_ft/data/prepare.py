"""The whole data pipeline of a run: load, detect, validate, split, tokenize, and the summary a user sees.

Every row becomes a list of chat turns, rendered with the model's own chat template; the prompt part is
masked out of the loss by default: a model that learns to reproduce its instructions wastes capacity and
overstates progress.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..config import DataConfig
from ..errors import DataError
from .formats import detect_format, to_messages, validate_rows
from .loading import load_rows, source_name
from .templating import IGNORE_INDEX, tokenize_messages

__all__ = ["PreparedData", "fingerprint_rows", "prepare_data"]


@dataclass
class PreparedData:
    """Tokenized train/eval splits plus what a user should know about them."""

    train: Any  # datasets.Dataset with input_ids, labels, length
    eval: Any | None
    raw_eval: Any | None  # the untokenized held-out rows (for generation-based evaluation)
    format: str
    columns: dict[str, str]
    source: str
    fingerprint: str
    n_rows: int
    n_truncated: int
    n_dropped: int
    lengths: list[int] = field(default_factory=list)
    message: str = ""

    def summary(self) -> dict[str, Any]:
        import numpy as np

        lengths = np.asarray(self.lengths or [0])
        trained = int(sum(sum(1 for t in row if t != IGNORE_INDEX) for row in self.train["labels"]))
        total = int(sum(self.train["length"]))
        return {
            "source": self.source,
            "format": self.format,
            "columns": self.columns,
            "rows": self.n_rows,
            "train_rows": len(self.train),
            "eval_rows": len(self.eval) if self.eval is not None else 0,
            "truncated": self.n_truncated,
            "dropped": self.n_dropped,
            "tokens": {
                "p50": int(np.percentile(lengths, 50)),
                "p90": int(np.percentile(lengths, 90)),
                "p99": int(np.percentile(lengths, 99)),
                "max": int(lengths.max()),
                "train_total": total,
                "trained_fraction": round(trained / total, 4) if total else 0.0,
            },
            "fingerprint": self.fingerprint,
            "detected": self.message,
        }



def fingerprint_rows(ds: Any, extra: Mapping[str, Any]) -> str:
    """A content hash of the rows in order, stable across sessions and machines."""
    h = hashlib.sha256(json.dumps(extra, sort_keys=True, default=str).encode())
    for row in ds:
        h.update(json.dumps(row, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def prepare_data(config: DataConfig, tokenizer: Any, seed: int = 42) -> PreparedData:
    """Load, detect, validate, split and tokenize; raise ``DataError`` naming the file, row and column."""
    name = source_name(config.source)
    train_raw, eval_raw = load_rows(config.source)
    if config.eval_source is not None:
        eval_raw, _ = load_rows(config.eval_source)
    fmt, columns, message = detect_format(train_raw.column_names, config, name)
    validate_rows(train_raw, fmt, columns, name)
    if eval_raw is not None:
        validate_rows(eval_raw, fmt, columns, source_name(config.eval_source) if config.eval_source is not None else name)
    n_rows = len(train_raw)
    fingerprint = fingerprint_rows(train_raw, {"format": fmt, "columns": columns, "eval_split": config.eval_split,
                                               "seed": seed, "max_length": config.max_length,
                                               "system_prompt": config.system_prompt,
                                               "completion_only_loss": config.completion_only_loss})
    if eval_raw is not None:  # a validation split or data.eval_source is part of the data as well
        fingerprint = fingerprint_rows(eval_raw, {"train": fingerprint})
    if eval_raw is None and config.eval_split > 0:
        if n_rows < 2:
            raise DataError(f"{name}: only {n_rows} row(s); need at least 2 to hold some out (or set data.eval_split: 0).")
        n_eval = min(max(1, round(n_rows * config.eval_split)), n_rows - 1)  # keep at least one training row
        split = train_raw.train_test_split(test_size=n_eval, seed=seed, shuffle=True)
        train_raw, eval_raw = split["train"], split["test"]

    def tokenize(ds: Any) -> Any:
        def fn(row: dict[str, Any]) -> dict[str, Any]:
            msgs = to_messages(row, fmt, columns, config.system_prompt)
            return tokenize_messages(msgs, tokenizer, config.max_length, config.completion_only_loss)

        return ds.map(fn, remove_columns=ds.column_names, desc=None)

    train = tokenize(train_raw)
    eval_ds = tokenize(eval_raw) if eval_raw is not None else None
    lengths = list(train["full_length"])
    n_truncated = sum(1 for n in lengths if n > config.max_length)
    keep = lambda r: any(t != IGNORE_INDEX for t in r["labels"])
    before = len(train)
    train = train.filter(keep)
    n_dropped = before - len(train)
    if eval_ds is not None:
        n_truncated += sum(1 for n in eval_ds["full_length"] if n > config.max_length)
        eval_ds = eval_ds.filter(keep)
    if len(train) == 0:
        raise DataError(
            f"{name}: every example lost all its answer tokens to truncation at data.max_length={config.max_length}. "
            "Raise data.max_length."
        )
    train = train.remove_columns(["full_length"])
    if eval_ds is not None:
        eval_ds = eval_ds.remove_columns(["full_length"])
    return PreparedData(
        train=train, eval=eval_ds, raw_eval=eval_raw, format=fmt, columns=columns, source=name,
        fingerprint=fingerprint, n_rows=n_rows, n_truncated=n_truncated, n_dropped=n_dropped,
        lengths=lengths, message=message,
    )
