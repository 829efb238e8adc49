"""What the server reads of a run, for the sidebar and the run panel: the list entry of a run, its live facts
(progress, worst verdicts so far, best eval loss), its JSONL files read incrementally, the config schema.

Every file is read through the store's :func:`~jupyter_ft.store.files.open_regular`: a link, a FIFO or a
directory in place of a run's file reads as absent.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import os
import threading
import typing
from pathlib import Path
from typing import IO, Any

import tornado.web

from ..errors import RunNotFound
from ..probes.verdicts import worst  # the worst verdict seen so far, ranked as the probes rank it
from ..store import ACTIVE, CORRUPT, RunDir, RunRecord, RunStore
from ..store.files import after_step, open_regular, parse_lines, read_json

__all__ = ["JsonlTail", "MAX_NESTING", "TAIL", "brief", "config_schema", "corrupt_run", "find_run", "live_facts",
           "number", "read_object", "read_rows", "shallow"]

# config fields a run list shows without sending whole configs
_LIST_CONFIG = {
    "model": ("model", "name"),
    "method": ("quantization", "method"),
    "dataset": ("data", "source"),
    "lora_r": ("lora", "r"),
    "learning_rate": ("training", "learning_rate"),
    "epochs": ("training", "epochs"),
    "max_steps": ("training", "max_steps"),
}


# How deep a record read from a run's file may nest to be sent (a metrics line nests 2, eval.json 3). A line
# nested 500 deep parses, but the reply's cleaning and encoding recurse once or twice per level from deep in the
# server's stack: a RecursionError there was a 500. Such a record reads as absent, like a line that is not JSON.
MAX_NESTING = 64


def shallow(obj: Any, limit: int = MAX_NESTING) -> bool:
    """Whether lists and mappings nest at most ``limit`` deep in ``obj`` (walked without recursion)."""
    stack: list[tuple[Any, int]] = [(obj, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (dict, list)):
            if depth > limit:
                return False
            stack.extend((v, depth + 1) for v in (node.values() if isinstance(node, dict) else node))
    return True


def number(value: Any) -> bool:
    """A finite number (not a flag): ``math.isfinite`` of an int past 1.8e308 raises OverflowError, which was a
    500 for a metrics line with such a step."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def read_object(path: Path) -> dict[str, Any] | None:
    """A run's JSON file (progress.json, eval.json) when it is a regular file holding an object, else None."""
    data = read_json(path)
    return data if isinstance(data, dict) and shallow(data) else None


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Every complete record of a run's ``.jsonl`` file (samples.jsonl), read once; [] unless a regular file."""
    fh = open_regular(path)
    if fh is None:
        return []
    rows: list[dict[str, Any]] = []
    with fh:
        JsonlTail.append(fh, 0, rows)
    return rows


class JsonlTail:
    """The records of append-only ``.jsonl`` files, read incrementally across requests.

    The sidebar polls every few seconds and the run panel asks for ``metrics?since=N``; reading a long run's
    whole file for each answer grew with the run (tens of thousands of lines). This keeps, per file, the
    parsed records and the byte offset of the last complete line, and reads only what was appended since. A
    file that shrank or was replaced (a resumed run rewinds its metrics; a deleted and recreated run) is
    read again from the start; a torn last line waits for its newline. At most ``max_files`` files are
    kept, the least recently read dropped first. Only a regular file is read (see :func:`jupyter_ft.store.files.open_regular`):
    a link or a FIFO reads as absent."""

    def __init__(self, max_files: int = 64) -> None:
        self.max_files = max_files
        self._files: dict[str, tuple[tuple[int, int], int, list[dict[str, Any]]]] = {}
        self._lock = threading.Lock()

    def read(self, path: Path, since_step: int | None = None) -> list[dict[str, Any]]:
        key = str(path)
        fh = open_regular(path)
        if fh is None:
            with self._lock:
                self._files.pop(key, None)
            return []
        with fh, self._lock:
            try:
                st = os.fstat(fh.fileno())  # the file opened, not whatever the path names by now
            except OSError:
                self._files.pop(key, None)
                return []
            identity = (st.st_ino, st.st_dev)
            cached = self._files.pop(key, None)
            if cached is None or cached[0] != identity or cached[1] > st.st_size:
                cached = (identity, 0, [])
            _identity, offset, rows = cached
            if st.st_size > offset:
                offset = self.append(fh, offset, rows)
            self._files[key] = (identity, offset, rows)  # most recently read last
            while len(self._files) > self.max_files:
                self._files.pop(next(iter(self._files)))
            if since_step is None:
                return list(rows)
            return [r for r in rows if after_step(r, since_step)]

    @staticmethod
    def append(fh: IO[bytes], offset: int, rows: list[dict[str, Any]]) -> int:
        """Parse the complete lines of ``fh`` from ``offset`` into ``rows``; returns the offset after them."""
        try:
            fh.seek(offset)
            data = fh.read()
        except OSError:
            return offset
        parsed: list[dict[str, Any]] = []
        offset += parse_lines(data, parsed)
        rows.extend(row for row in parsed if shallow(row))
        return offset


TAIL = JsonlTail()


def _mapping(value: Any) -> dict[str, Any]:
    """A record's section as a mapping: a hand-edited ``"summary": [1]`` or ``"config": "x"`` is empty."""
    return value if isinstance(value, dict) else {}


def live_facts(rd: RunDir) -> dict[str, Any]:
    """What the sidebar shows beyond run.json: progress, the probes' worst verdicts and the best eval loss
    so far. A finished run has them in its summary; a running one only in its files (each read only if it
    is a regular file of the run directory: see :func:`jupyter_ft.store.files.open_regular`)."""
    record = rd.record.to_dict()
    summary = _mapping(record.get("summary"))
    probes = summary.get("probes") if isinstance(summary.get("probes"), dict) else None
    best = summary.get("best_eval_loss")
    if probes is not None:
        verdicts = {"overfitting": probes.get("overfitting"), "forgetting": probes.get("forgetting")}
    else:
        verdicts = {"overfitting": None, "forgetting": None}
        for row in TAIL.read(rd.probes_path):
            over, forget = row.get("overfitting"), row.get("forgetting")
            # a verdict is a word: a list or a mapping there (a hand-edited line) is no verdict, not a TypeError
            if isinstance(over, dict) and isinstance(over.get("status"), str):
                verdicts["overfitting"] = worst(verdicts["overfitting"], over["status"])
            if isinstance(forget, dict) and isinstance(forget.get("verdict"), str):
                verdicts["forgetting"] = worst(verdicts["forgetting"], forget["verdict"])
    if best is None and record.get("status") in ACTIVE:
        losses = [m["eval_loss"] for m in TAIL.read(rd.metrics_path) if number(m.get("eval_loss"))]
        best = min(losses) if losses else None
    return {"progress": read_object(rd.progress_path), "verdicts": verdicts, "best_eval_loss": best}


def _type_name(hint: Any) -> str:
    if isinstance(hint, type):
        return hint.__name__
    return str(hint).replace("typing.", "")


def config_schema() -> dict[str, Any]:
    """Sections and fields of FineTuneConfig, for the editor's unknown-key hints. Built from the
    dataclasses, so a field added to the config is known to the lab without touching the extension.

    A mapping field whose keys are a fixed set (``data.columns``: its roles) lists them as ``keys``, and
    ``sweep`` carries what a ``sweep:`` block accepts (its own keys, the dotted keys that can be swept, the
    distributions), taken from :mod:`jupyter_ft.sweep` so the editor flags what ``parse_sweep`` rejects."""
    from ..config import COLUMN_ROLES, SECTIONS
    from ..config.sweep_plan import DISTRIBUTIONS, METHODS, RESERVED, SWEEPABLE

    field_keys = {("data", "columns"): COLUMN_ROLES}

    sections: dict[str, Any] = {}
    for name, cls in SECTIONS.items():
        hints = typing.get_type_hints(cls)
        fields: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.default is not dataclasses.MISSING:
                default = f.default
            elif f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            else:
                default = None
            fields[f.name] = {"type": _type_name(hints.get(f.name, Any)),
                              "default": json.loads(json.dumps(default, default=str))}
            if (name, f.name) in field_keys:
                fields[f.name]["keys"] = list(field_keys[(name, f.name)])
        doc = (inspect.getdoc(cls) or "").split("\n\n")[0].replace("\n", " ")
        sections[name] = {"doc": doc, "fields": fields}
    sweep = {"reserved": list(RESERVED), "methods": list(METHODS), "distributions": list(DISTRIBUTIONS),
             "sweepable": list(SWEEPABLE)}
    return {"sections": sections, "sweep": sweep}


def brief(rd: RunDir) -> dict[str, Any]:
    """What the run list sends of a run: its record's headline fields, a few config fields, live facts."""
    record = rd.record.to_dict()
    config = _mapping(record.get("config"))
    brief: dict[str, Any] = {}
    for key, (section, field) in _LIST_CONFIG.items():
        value = config[section].get(field) if isinstance(config.get(section), dict) else None
        if value is not None:
            brief[key] = value if isinstance(value, (str, int, float, bool)) else str(value)
    return {
        "id": record.get("id"),
        "name": record.get("name"),
        "status": record.get("status"),
        "created_at": record.get("created_at"),
        "started_at": record.get("started_at"),
        "finished_at": record.get("finished_at"),
        "error": record.get("error"),
        "summary": _mapping(record.get("summary")),
        "config": brief,
        **live_facts(rd),
    }


def corrupt_run(path: Path, run_id: str, exc: BaseException) -> RunDir:
    """A run whose record the server cannot send (too deep to clean, say): shown with its reason, so it is
    neither a 500 nor a run that silently disappears."""
    record = RunRecord(id=run_id, name=run_id, status=CORRUPT, created_at="", path=str(path),
                       error=f"run.json cannot be read: {type(exc).__name__}: {exc}")
    return RunDir(path, record)


def find_run(store: RunStore, run_id: str) -> RunDir:
    """The run ``run_id`` of ``store`` for a request: 400 for an id that is not one (``RunStore.path_of``),
    404 unless it names a real run directory (``RunStore.entry``: no link, even to another run of the root),
    and a ``corrupt`` run when the store cannot read its record."""
    try:
        store.path_of(run_id)
    except RunNotFound as exc:
        if "invalid run id" in str(exc):
            raise tornado.web.HTTPError(400, "invalid run id %r", run_id) from None
        raise tornado.web.HTTPError(404, "no run %r", run_id) from None
    try:
        return store.entry(run_id)
    except RunNotFound:
        raise tornado.web.HTTPError(404, "no run %r", run_id) from None
