"""From whatever the user has (a file, a DataFrame, a list, a datasets dir) to tokenized, masked examples.

Every row becomes a list of chat turns, rendered with the model's own chat template so that training
sees exactly the text the model will see at inference. The prompt part is masked out of the loss by
default: a model that learns to reproduce its instructions wastes capacity and overstates progress.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from .config import DataConfig

__all__ = ["DataError", "PreparedData", "detect_format", "load_rows", "prepare_data", "to_messages"]

DEMO_DIR = Path(__file__).parent / "demo"
IGNORE_INDEX = -100

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


class DataError(ValueError):
    """Bad training data; the message names the source, row and column and says what to change."""


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


# --------------------------------------------------------------------------- loading
def source_name(source: Any) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    return f"<in-memory {type(source).__name__}>"


def load_rows(source: Any) -> tuple[Any, Any | None]:
    """Load ``source`` into a ``datasets.Dataset``; also return an eval split when the source has one
    (a DatasetDict with ``validation``/``test``)."""
    import datasets

    datasets.disable_progress_bars()
    name = source_name(source)
    if isinstance(source, datasets.DatasetDict):
        return _nonempty(*_split_dict(source, name), name)
    if isinstance(source, datasets.Dataset):
        return _nonempty(source, None, name)
    if isinstance(source, list):
        bad = next((i for i, row in enumerate(source) if not isinstance(row, Mapping)), None)
        if bad is not None:
            raise DataError(f"{name}, row {bad + 1}: expected a dict of column -> value, got {type(source[bad]).__name__}")
        if not source:
            raise DataError(f"{name}: the list is empty; give at least a few examples.")
        rows = [dict(r) for r in source]
        return _from_records(lambda: datasets.Dataset.from_list(rows), rows, name), None
    if type(source).__name__ == "DataFrame":
        if len(source) == 0:
            raise DataError(f"{name}: the DataFrame has no rows.")
        return _from_records(lambda: datasets.Dataset.from_pandas(source, preserve_index=False),
                             lambda: source.to_dict("records"), name), None
    if not isinstance(source, (str, os.PathLike)):
        raise DataError(
            f"data.source: cannot load a {type(source).__name__}; give a file path, a datasets directory, "
            "a pandas DataFrame, a list of dicts or a datasets.Dataset."
        )
    text = str(source)
    if text.startswith("demo:"):
        path = DEMO_DIR / f"{text[5:]}.jsonl"
        if not path.is_file():
            choices = ", ".join(f"demo:{p.stem}" for p in sorted(DEMO_DIR.glob("*.jsonl")))
            raise DataError(f"data.source: no bundled dataset '{text}'. Available: {choices}")
    else:
        path = Path(os.path.expanduser(text))
    if path.is_dir():
        try:
            loaded = datasets.load_from_disk(str(path))
        except Exception as exc:  # noqa: BLE001
            raise DataError(f"{path}: not a directory written by datasets' save_to_disk ({exc}).") from None
        if isinstance(loaded, datasets.DatasetDict):
            return _nonempty(*_split_dict(loaded, str(path)), str(path))
        return _nonempty(loaded, None, str(path))
    if not path.is_file():
        raise DataError(f"data.source: file not found: {path}. Check the path (relative to {os.getcwd()}).")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json", ".csv", ".parquet") and path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty.")
    try:
        if suffix in (".jsonl", ".json"):
            _check_json(path)
            ds = datasets.Dataset.from_json(str(path))
        elif suffix == ".csv":
            # Every CSV cell is text: read all columns as strings so an answer column of numbers ("4", "0")
            # is not turned into integers that then fail the text check.
            header = _csv_header(path)
            ds = datasets.Dataset.from_csv(
                str(path), features=datasets.Features({c: datasets.Value("string") for c in header}))
        elif suffix == ".parquet":
            import pyarrow.parquet as pq

            if pq.ParquetFile(str(path)).metadata.num_rows == 0:
                raise DataError(f"{path}: the file has no rows.")
            ds = datasets.Dataset.from_parquet(str(path))
        else:
            raise DataError(f"{path}: unsupported file type '{suffix}'. Use .jsonl, .json, .csv or .parquet.")
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - arrow errors are cryptic; say what file failed
        raise DataError(f"{path}: could not be read as {suffix[1:]} ({type(exc).__name__}: {exc}).") from None
    if len(ds) == 0:
        raise DataError(f"{path}: the file has no rows.")
    return ds, None


def _nonempty(ds: Any, ev: Any | None, name: str) -> tuple[Any, Any | None]:
    if len(ds) == 0:
        raise DataError(f"{name}: the dataset has no rows.")
    return ds, ev


def _from_records(build: Any, rows: Any, name: str) -> Any:
    """Build a Dataset; when arrow rejects a column of mixed types, name the first row that breaks it."""
    try:
        return build()
    except Exception as exc:  # noqa: BLE001 - arrow says 'Expected bytes, got a 'int' object', not where
        rows = rows() if callable(rows) else rows
        first: dict[str, tuple[int, type]] = {}
        for i, row in enumerate(rows):
            for col, value in row.items():
                if value is None or (isinstance(value, float) and value != value):  # None / NaN: missing
                    continue
                j, kind = first.setdefault(col, (i, type(value)))
                if type(value) is not kind:
                    raise DataError(f"{name}, row {i + 1}, column '{col}': got {type(value).__name__} {value!r} "
                                    f"but row {j + 1} has {kind.__name__}; give every row the same type.") from None
        raise DataError(f"{name}: could not be converted to a dataset ({type(exc).__name__}: {exc}).") from None


def _csv_header(path: Path) -> list[str]:
    """The column names exactly as pandas (which datasets reads CSV with) names them."""
    import pandas as pd

    try:
        head = pd.read_csv(path, nrows=1, dtype=str)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: the file is empty.") from None
    if len(head) == 0:
        raise DataError(f"{path}: the file has no rows.")
    return [str(c) for c in head.columns]


def _split_dict(dd: Any, name: str) -> tuple[Any, Any | None]:
    if "train" not in dd:
        raise DataError(f"{name}: a DatasetDict needs a 'train' split (has {', '.join(dd.keys())}).")
    ev = next((dd[k] for k in ("validation", "eval", "test") if k in dd), None)
    return dd["train"], ev


def _check_json(path: Path) -> None:
    """Find the exact bad line of a JSONL file, which arrow's reader never reports."""
    with open(path, encoding="utf-8") as fh:
        head = fh.read(1)
        while head.isspace():  # a leading blank line or indent is not an empty file
            head = fh.read(1)
        fh.seek(0)
        if not head:
            raise DataError(f"{path}: the file is empty.")
        if path.suffix.lower() == ".json" and head == "[":
            try:
                rows = json.load(fh)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}, line {exc.lineno}: invalid JSON ({exc.msg}).") from None
            if not rows:
                raise DataError(f"{path}: the JSON list is empty.")
            return
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}, line {lineno}: invalid JSON ({exc.msg}). Each line must be one object.") from None
            if not isinstance(obj, dict):
                raise DataError(f"{path}, line {lineno}: expected a JSON object, got {type(obj).__name__}.")


# --------------------------------------------------------------------------- formats
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


def _validate_rows(ds: Any, fmt: str, columns: Mapping[str, str], source: str) -> None:
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


# --------------------------------------------------------------------------- tokenization
def render_segments(messages: list[dict[str, str]], tokenizer: Any) -> list[tuple[str, bool]]:
    """Split a conversation into (text, trained) segments using the tokenizer's chat template.

    Each assistant turn is trained; everything before it (system, user, the assistant header) is the
    prompt. Tokenizers without a chat template get an Alpaca-style fallback.
    """
    if messages and messages[0]["role"] == "text":
        eos = tokenizer.eos_token or ""
        return [(messages[0]["content"] + eos, True)]
    if getattr(tokenizer, "chat_template", None):
        segments: list[tuple[str, bool]] = []
        done = ""
        for i, m in enumerate(messages):
            if m["role"] != "assistant":
                continue
            prompt = tokenizer.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True)
            full = tokenizer.apply_chat_template(messages[: i + 1], tokenize=False)
            if not prompt.startswith(done) or not full.startswith(prompt):
                raise DataError("the model's chat template is not prefix-stable; use data.format: text instead")
            segments.append((prompt[len(done):], False))
            segments.append((full[len(prompt):], True))
            done = full
        return segments
    segments = []
    for m in messages:
        if m["role"] == "assistant":
            segments.append(("### Response:\n", False))
            segments.append((m["content"] + (tokenizer.eos_token or "") + "\n\n", True))
        else:
            header = {"system": "", "user": "### Instruction:\n"}.get(m["role"], f"### {m['role']}:\n")
            segments.append((f"{header}{m['content']}\n\n", False))
    return segments


def render_prompt(messages: list[dict[str, str]], tokenizer: Any) -> str:
    """The text a model continues from at inference, matching ``render_segments`` exactly."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return "".join(t for t, _ in render_segments(messages + [{"role": "assistant", "content": ""}], tokenizer)[:-1])


def tokenize_messages(messages: list[dict[str, str]], tokenizer: Any, max_length: int, completion_only: bool) -> dict[str, Any]:
    ids: list[int] = []
    labels: list[int] = []
    for text, trained in render_segments(messages, tokenizer):
        piece = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids += piece
        labels += piece if (trained or not completion_only) else [IGNORE_INDEX] * len(piece)
    full_length = len(ids)
    ids, labels = ids[:max_length], labels[:max_length]
    return {"input_ids": ids, "labels": labels, "length": len(ids), "full_length": full_length}


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
    _validate_rows(train_raw, fmt, columns, name)
    if eval_raw is not None:
        _validate_rows(eval_raw, fmt, columns, source_name(config.eval_source) if config.eval_source is not None else name)
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
    keep = lambda r: any(t != IGNORE_INDEX for t in r["labels"])  # noqa: E731 - truncation can cut every answer token
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
