"""Writing and reading a run's files so that no reader ever sees half of one.

``write_json_atomic`` replaces a JSON file whole (temp file, fsync, rename); ``append_jsonl`` adds one
line; ``read_jsonl`` skips a torn last line, so a kernel killed mid-write costs at most one log line.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import stat
import tempfile
from pathlib import Path
from typing import IO, Any

__all__ = ["FILE_MODE", "now", "finite", "strict", "dumps", "write_json_atomic", "append_jsonl", "open_regular",
           "parse_lines", "after_step", "read_jsonl", "read_json"]

# Every file of a run gets the mode the user's umask gives a new file (before, run.json came out 0600 from
# mkstemp and the JSONL files 0644). The umask can only be read by setting it: once, at import.
_UMASK = os.umask(0o022)
os.umask(_UMASK)
FILE_MODE = 0o666 & ~_UMASK


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def finite(obj: Any) -> Any:
    """``obj`` with every NaN and infinity (in lists and mappings too) replaced by ``None``; the caller's object
    is kept. For replies on the wire; files use :func:`strict`, which also records which values they were."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def strict(obj: Any) -> Any:
    """``obj`` as strict JSON can hold it: a NaN or an infinity becomes ``null``, and a mapping that held one
    says so in ``"nonfinite"`` (the dotted keys), so the fact is kept while every reader, the browser's
    ``JSON.parse`` included, can parse the file. The Trainer logs ``grad_norm`` unfiltered, and an fp16 run can
    overflow: one such number must not make a run's files unreadable."""
    found: list[str] = []
    clean = _strict(obj, "", found)
    if found and isinstance(clean, dict):
        clean["nonfinite"] = sorted(set(clean.get("nonfinite") or []) | set(found))
    return clean


def _strict(obj: Any, where: str, found: list[str]) -> Any:
    if isinstance(obj, float):
        if math.isfinite(obj):
            return obj
        found.append(where or "value")
        return None
    if isinstance(obj, dict):
        return {k: _strict(v, f"{where}.{k}" if where else str(k), found) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_strict(v, where, found) for v in obj]
    return obj


def dumps(obj: Any, **kwargs: Any) -> str:
    """Strict JSON text of ``obj`` (see :func:`strict`); objects JSON has no type for are written as text."""
    return json.dumps(strict(obj), default=_default, allow_nan=False, **kwargs)


def _default(value: Any) -> Any:
    item = getattr(value, "item", None)  # numpy and torch scalars
    if callable(item):
        try:
            return strict(item())
        except (TypeError, ValueError):
            pass
    return str(value)


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write temp file, fsync, rename: readers see the old or the new record, never a mix."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, FILE_MODE)  # mkstemp makes 0600
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(dumps(obj, indent=2))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def append_jsonl(path: Path, obj: Any) -> None:
    """Append one record as one line. A line torn by a crash is closed first, so that it costs only itself:
    appended to its end, the next record would share its line and be lost with it."""
    line = dumps(obj) + "\n"
    with open(path, "a+b") as fh:
        if fh.tell() > 0:
            fh.seek(-1, os.SEEK_END)
            if fh.read(1) != b"\n":
                line = "\n" + line
        fh.write(line.encode("utf-8"))


def open_regular(path: Path) -> IO[bytes] | None:
    """``path`` opened for reading if it is a regular file itself, else ``None``: a link is not followed (a
    run's file linking to /etc/passwd or to another run's file reads as absent), a FIFO (whose open or read
    would block the reader, the lab's server included) or a directory is no file. ``O_NOFOLLOW`` and
    ``fstat`` of the open file, so a file swapped for a link between a check and the open is not followed."""
    try:
        if not _NOFOLLOW and os.path.islink(path):  # a platform without O_NOFOLLOW
            return None
        fd = os.open(path, _OPEN_FLAGS)
    except (OSError, ValueError):
        return None
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            return os.fdopen(fd, "rb")
    except OSError:
        pass
    os.close(fd)
    return None


_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_OPEN_FLAGS = os.O_RDONLY | _NOFOLLOW | getattr(os, "O_NONBLOCK", 0)


def parse_lines(data: bytes, rows: list[dict[str, Any]]) -> int:
    """Append the JSON objects of the complete lines in ``data`` to ``rows`` (a line that is not JSON, not an
    object, not UTF-8 or nested past the parser's depth is skipped); returns the bytes consumed."""
    end = data.rfind(b"\n") + 1  # complete lines only: a writer may be mid-line
    for line in data[:end].splitlines():
        try:
            rec = json.loads(line)
        except (ValueError, RecursionError):
            continue
        if isinstance(rec, dict):
            rows.append(rec)
    return end


def after_step(row: dict[str, Any], since_step: int) -> bool:
    step = row.get("step", 0)
    return isinstance(step, (int, float)) and step > since_step  # a step "seven" or null is no step


def read_jsonl(path: Path, since_step: int | None = None) -> list[dict[str, Any]]:
    """All complete records of a regular file (a torn last line from a crash is skipped; a line that is not a
    JSON object is skipped too), optionally only those after a step."""
    fh = open_regular(path)
    if fh is None:
        return []
    try:
        with fh:
            data = fh.read()
    except OSError:
        return []
    rows: list[dict[str, Any]] = []
    parse_lines(data, rows)
    return rows if since_step is None else [r for r in rows if after_step(r, since_step)]


def read_json(path: Path) -> Any:
    """The parsed JSON of a regular file, or None when it is missing, a link, unreadable or not JSON (a reader
    never fails on a run file)."""
    fh = open_regular(path)
    if fh is None:
        return None
    try:
        with fh:
            return json.loads(fh.read())
    except (OSError, ValueError, RecursionError):
        return None
