"""Reading a data source (file, datasets dir, DataFrame, list, Dataset, ``demo:`` name) into rows.

Kept apart from format detection and tokenization because this is where every file-level error is
caught and named (the exact bad JSONL line, the first row of a mixed-type column), which arrow never does.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import DataError

__all__ = ["DEMO_DIR", "load_rows", "source_name"]

DEMO_DIR = Path(__file__).parent.parent / "demo"


def source_name(source: Any) -> str:
    """How a source is named in messages: its path, or ``<in-memory TYPE>``."""
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

