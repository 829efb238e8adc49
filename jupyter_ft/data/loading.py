"""Reading a data source (file, datasets dir, DataFrame, list, Dataset, ``demo:`` name) into rows.

Kept apart from format detection and tokenization because this is where every file-level error is
caught and named (the exact bad JSONL line, the first row of a mixed-type column), which arrow never does.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import DataError, short_repr

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
        # every row gets every column (None where it has none): Dataset.from_list takes the first row's keys
        # only, and would drop a column the first row lacks, for every row
        names = list(dict.fromkeys(k for r in source for k in r))
        rows = [{k: r.get(k) for k in names} for r in source]
        for i, row in enumerate(rows):
            problem = _nul_key(row) if isinstance(row, dict) and all(isinstance(k, str) for k in row) else None
            if problem:
                raise DataError(f"{name}, row {i + 1}{', ' if problem.startswith('column') else ': '}{problem}.")
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
        if suffix in (".jsonl", ".json", ".csv"):
            _check_utf8(path)
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
        cause: BaseException = exc
        while type(cause).__name__ == "DatasetGenerationError" and cause.__cause__ is not None:
            cause = cause.__cause__  # "An error occurred while generating the dataset": the reader's error says where
        if suffix in (".jsonl", ".json"):
            _explain_json(path)  # arrow names a byte offset at best: find the row it could not take
        raise DataError(f"{path}: could not be read as {suffix[1:]} ({type(cause).__name__}: {cause}).") from None
    if len(ds) == 0:
        raise DataError(f"{path}: the file has no rows.")
    return ds, None


def _nonempty(ds: Any, ev: Any | None, name: str) -> tuple[Any, Any | None]:
    if len(ds) == 0:
        raise DataError(f"{name}: the dataset has no rows.")
    return ds, ev


def _from_records(build: Any, rows: Any, name: str) -> Any:
    """Build a Dataset; when arrow rejects a column of mixed types, name the first row that breaks it: the
    first whose type is not the column's usual one (the most common; text on a tie), so that one odd row is
    the row named, wherever it is, and not the row after it."""
    try:
        return build()
    except Exception as exc:  # noqa: BLE001 - arrow says 'Expected bytes, got a 'int' object', not where
        rows = rows() if callable(rows) else rows
        kinds: dict[Any, dict[type, list[int]]] = {}  # column -> type -> [rows with it]
        for i, row in enumerate(rows):
            for col, value in row.items():
                if value is None or (isinstance(value, float) and value != value):  # None / NaN: missing
                    continue
                kinds.setdefault(col, {}).setdefault(type(value), []).append(i)
        odd = []
        for col, seen in kinds.items():
            if len(seen) > 1:
                usual = max(seen, key=lambda t: (len(seen[t]), t is str, -seen[t][0]))
                i = min(j for t, at in seen.items() if t is not usual for j in at)
                odd.append((i, col, usual, seen[usual][0]))
        if odd:
            i, col, usual, j = min(odd, key=lambda o: o[0])
            value = rows[i][col]
            raise DataError(f"{name}, row {i + 1}, column '{col}': got {type(value).__name__} {short_repr(value)} "
                            f"but row {j + 1} has {usual.__name__}; give every row the same type.") from None
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


def _check_utf8(path: Path) -> None:
    """A text file must be UTF-8: name the first line that is not (pandas and arrow name a byte offset, or
    nothing at all). A UTF-8 byte never holds a newline, so each line decodes on its own."""
    with open(path, "rb") as fh:
        for lineno, line in enumerate(fh, 1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(f"{path}, line {lineno}: not UTF-8 text (byte {line[exc.start]:#04x} at column "
                                f"{exc.start + 1}). Save the file as UTF-8.") from None


_LONG_NUMBER = re.compile(r"\d{19}")  # a JSON int this long may not fit arrow's int64
INT64 = 2**63


def _nul_key(obj: dict[str, Any]) -> str | None:
    """A key holding NUL (``"\\u0000"``) anywhere in a row, naming its column: datasets cannot keep such a key
    (the column is refused, or its values come back changed or fail to read), so it is refused here."""
    for col, value in obj.items():
        if "\x00" in col:
            return "a column name with a NUL character (\\u0000)"
        stack = [value]
        while stack:
            item = stack.pop()
            if isinstance(item, dict):
                if any("\x00" in k for k in item):
                    return f"column '{col}': a key with a NUL character (\\u0000), which datasets cannot keep"
                stack.extend(item.values())
            elif isinstance(item, list):
                stack.extend(item)
    return None


def _explain_json(path: Path) -> None:
    """After arrow refused a JSON(L) file that Python parses (``_check_json`` passed): the first row holding what
    arrow cannot take, as a DataError naming its line (JSONL) or row (a JSON list) and column; else nothing."""
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix.lower() == ".json" and text.lstrip().startswith("["):
            numbered = [(f"row {i + 1}", row, json.dumps(row)) for i, row in enumerate(json.loads(text))]
        else:
            numbered = [(f"line {n}", json.loads(line), line) for n, line in enumerate(text.split("\n"), 1)
                        if line.strip()]
    except (OSError, ValueError, RecursionError):  # nothing more to say than arrow's own message
        return
    for where, row, line in numbered:
        problem = _row_problem(row, line) if isinstance(row, dict) else None
        if problem:
            raise DataError(f"{path}, {where}, {problem}." if problem.startswith("column") else
                            f"{path}, {where}: {problem}.")


def _row_problem(obj: dict[str, Any], line: str) -> str | None:
    """What arrow cannot take in one parsed row, naming the column: an escaped lone surrogate (``"\\ud800"``:
    Python's parser takes it, arrow refuses the whole file), or an int past int64 in a column that also holds
    other types (arrow reads such ints as floats, but a mixed column fails with "Value is too big at position
    1234")."""
    for col, value in obj.items():
        if "\\u" in line:
            try:
                col.encode("utf-8")
            except UnicodeEncodeError:
                return "a column name with a lone surrogate escape (\\ud800-\\udfff), which is no character"
            try:
                json.dumps(value, ensure_ascii=False).encode("utf-8")
            except UnicodeEncodeError:
                return (f"column '{col}': text with a lone surrogate escape (\\ud800-\\udfff), which is no "
                        "character; fix or drop it")
        stack = [value] if _LONG_NUMBER.search(line) else []
        while stack:
            item = stack.pop()
            if isinstance(item, int) and not isinstance(item, bool) and not -INT64 <= item < INT64:
                return (f"column '{col}': the number {short_repr(item, 40)} does not fit a 64-bit column; quote it "
                        "to keep it as text")
            stack.extend(item.values() if isinstance(item, dict) else item if isinstance(item, list) else ())
    return None


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
            for i, row in enumerate(rows):  # arrow would read a list of numbers as a column named 'text'
                if not isinstance(row, dict):
                    raise DataError(f"{path}, row {i + 1}: expected a JSON object, got {type(row).__name__}.")
                problem = _nul_key(row)
                if problem:
                    raise DataError(f"{path}, row {i + 1}{', ' if problem.startswith('column') else ': '}{problem}.")
            if not any(rows):
                raise DataError(f"{path}: every row is an empty object; there are no columns to train on.")
            return
        columns = False
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}, line {lineno}: invalid JSON ({exc.msg}). Each line must be one object.") from None
            if not isinstance(obj, dict):
                raise DataError(f"{path}, line {lineno}: expected a JSON object, got {type(obj).__name__}.")
            problem = _nul_key(obj) if "\\u0000" in line else None
            if problem:
                raise DataError(f"{path}, line {lineno}{', ' if problem.startswith('column') else ': '}{problem}.")
            columns = columns or bool(obj)
        if not columns:
            raise DataError(f"{path}: every row is an empty object; there are no columns to train on.")

