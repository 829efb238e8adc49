"""Writing and reading a run's files so that no reader ever sees half of one.

``write_json_atomic`` replaces a JSON file whole (temp file, fsync, rename); ``append_jsonl`` adds one
line; ``read_jsonl`` skips a torn last line, so a kernel killed mid-write costs at most one log line.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["now", "write_json_atomic", "append_jsonl", "read_jsonl", "read_json"]


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write temp file, fsync, rename: readers see the old or the new record, never a mix."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(obj, fh, indent=2, default=str)
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
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(obj, default=str) + "\n")


def read_jsonl(path: Path, since_step: int | None = None) -> list[dict[str, Any]]:
    """All complete records (a torn last line from a crash is skipped), optionally only after a step."""
    out: list[dict[str, Any]] = []
    try:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                if not line.endswith("\n"):
                    break  # a writer died mid-line
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if since_step is None or rec.get("step", 0) > since_step:
                    out.append(rec)
    except FileNotFoundError:
        pass
    return out


def read_json(path: Path) -> Any:
    """The parsed JSON file, or None when it is missing or unreadable (a reader never fails on a run file)."""
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None
