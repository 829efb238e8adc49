"""Handlers of the jupyter-ft server extension (see the package docstring for the API)."""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import threading
import typing
from pathlib import Path
from typing import Any

import tornado.web
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from traitlets import Unicode
from traitlets.config import Configurable

from ..version import __version__
from ..config import DEFAULT_ROOT
from ..probes.verdicts import worst  # the worst verdict seen so far, ranked as the probes rank it
from ..store import ACTIVE, RunDir, RunStore, read_jsonl

API = "jupyter-ft/api"
# a run id is one path segment; what it may contain is RunStore.path_of's business (400 otherwise)
_ID = r"(?P<run_id>[^/]+)"

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


class JupyterFT(Configurable):
    """Server-side settings of jupyter-ft (``--JupyterFT.run_root=...`` or ``c.JupyterFT.run_root``)."""

    run_root = Unicode(
        DEFAULT_ROOT,
        config=True,
        help="Directory of the run store the kernel writes (FineTuneConfig.output.root). "
        "A relative path is resolved against the server's root_dir.",
    )


def resolve_root(run_root: str, root_dir: str | None) -> Path:
    path = Path(run_root).expanduser()
    if not path.is_absolute():
        path = Path(root_dir or ".").expanduser() / path
    return path.resolve()


class JsonlTail:
    """The records of append-only ``.jsonl`` files, read incrementally across requests.

    The sidebar polls every few seconds and the run panel asks for ``metrics?since=N``; reading a long run's
    whole file for each answer grew with the run (tens of thousands of lines). This keeps, per file, the
    parsed records and the byte offset of the last complete line, and reads only what was appended since. A
    file that shrank or was replaced (a resumed run rewinds its metrics; a deleted and recreated run) is
    read again from the start; a torn last line waits for its newline. At most ``max_files`` files are
    kept, the least recently read dropped first."""

    def __init__(self, max_files: int = 64) -> None:
        self.max_files = max_files
        self._files: dict[str, tuple[tuple[int, int], int, list[dict[str, Any]]]] = {}
        self._lock = threading.Lock()

    def read(self, path: Path, since_step: int | None = None) -> list[dict[str, Any]]:
        key = str(path)
        try:
            st = os.stat(key)
        except OSError:
            with self._lock:
                self._files.pop(key, None)
            return []
        identity = (st.st_ino, st.st_dev)
        with self._lock:
            cached = self._files.pop(key, None)
            if cached is None or cached[0] != identity or cached[1] > st.st_size:
                cached = (identity, 0, [])
            _identity, offset, rows = cached
            if st.st_size > offset:
                offset = self._append(key, offset, rows)
            self._files[key] = (identity, offset, rows)  # most recently read last
            while len(self._files) > self.max_files:
                self._files.pop(next(iter(self._files)))
            if since_step is None:
                return list(rows)
            return [r for r in rows if r.get("step", 0) > since_step]

    @staticmethod
    def _append(path: str, offset: int, rows: list[dict[str, Any]]) -> int:
        try:
            with open(path, "rb") as fh:
                fh.seek(offset)
                data = fh.read()
        except OSError:
            return offset
        end = data.rfind(b"\n") + 1  # complete lines only: a writer may be mid-line
        for line in data[:end].splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict):
                rows.append(rec)
        return offset + end


_TAIL = JsonlTail()


def live_facts(rd: RunDir) -> dict[str, Any]:
    """What the sidebar shows beyond run.json: progress, the probes' worst verdicts and the best eval loss
    so far. A finished run has them in its summary; a running one only in its files."""
    record = rd.record.to_dict()
    summary = record.get("summary") or {}
    probes = summary.get("probes") if isinstance(summary.get("probes"), dict) else None
    best = summary.get("best_eval_loss")
    if probes is not None:
        verdicts = {"overfitting": probes.get("overfitting"), "forgetting": probes.get("forgetting")}
    else:
        verdicts = {"overfitting": None, "forgetting": None}
        for row in _TAIL.read(rd.probes_path):
            over, forget = row.get("overfitting"), row.get("forgetting")
            if isinstance(over, dict):
                verdicts["overfitting"] = worst(verdicts["overfitting"], over.get("status"))
            if isinstance(forget, dict):
                verdicts["forgetting"] = worst(verdicts["forgetting"], forget.get("verdict"))
    if best is None and record.get("status") in ACTIVE:
        losses = [m["eval_loss"] for m in _TAIL.read(rd.metrics_path)
                  if isinstance(m.get("eval_loss"), (int, float))]
        best = min(losses) if losses else None
    return {"progress": rd.progress(), "verdicts": verdicts, "best_eval_loss": best}


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


def _light(rd: RunDir) -> dict[str, Any]:
    record = rd.record.to_dict()
    config = record.get("config") or {}
    brief: dict[str, Any] = {}
    for key, (section, field) in _LIST_CONFIG.items():
        value = (config.get(section) or {}).get(field) if isinstance(config.get(section), dict) else None
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
        "summary": record.get("summary") or {},
        "config": brief,
        **live_facts(rd),
    }


class _Base(APIHandler):
    @property
    def store(self) -> RunStore:
        return RunStore(self.settings["jupyter_ft_run_root"])

    def open_run(self, run_id: str):
        store = self.store
        try:
            store.path_of(run_id)
        except KeyError:
            raise tornado.web.HTTPError(400, "invalid run id %r", run_id) from None
        try:
            return store.open(run_id)
        except KeyError:
            raise tornado.web.HTTPError(404, "no run %r", run_id) from None
        except (ValueError, OSError) as exc:  # unreadable run.json
            raise tornado.web.HTTPError(500, "run %r could not be read: %s", run_id, exc) from None

    def since(self) -> int | None:
        raw = self.get_query_argument("since", None)
        if raw is None or raw == "":
            return None
        try:
            return int(raw)
        except ValueError:
            raise tornado.web.HTTPError(400, "since must be an integer step, not %r", raw) from None

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """JSON like APIHandler's, with the message's ``%`` arguments filled in (they carry the raw id)."""
        exc = (kwargs.get("exc_info") or (None, None, None))[1]
        if isinstance(exc, tornado.web.HTTPError) and exc.log_message and exc.args:
            self.set_header("Content-Type", "application/json")
            self.finish(json.dumps({"message": exc.log_message % exc.args, "reason": exc.reason}))
            return
        super().write_error(status_code, **kwargs)

    def reply(self, obj: Any) -> None:
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(obj, default=str))


class StatusHandler(_Base):
    @tornado.web.authenticated
    def get(self) -> None:
        root = Path(self.settings["jupyter_ft_run_root"])
        self.reply({"version": __version__, "run_root": str(root), "exists": root.is_dir()})


class RunsHandler(_Base):
    @tornado.web.authenticated
    def get(self) -> None:
        store = self.store
        runs = [_light(RunDir(store.root / r.id, r)) for r in store.list()]
        self.reply({"run_root": str(store.root), "runs": runs})


class RunHandler(_Base):
    @tornado.web.authenticated
    def get(self, run_id: str) -> None:
        rd = self.open_run(run_id)
        self.reply({**rd.record.to_dict(), **live_facts(rd)})


class StopHandler(_Base):
    """Stop a run from the lab. The run trains in a thread of some kernel, which the server cannot reach:
    the request is a file in the run directory, which the training callback checks at every step and
    honours like ``Run.stop()`` (a checkpoint of that step and the adapter are saved)."""

    @tornado.web.authenticated
    def post(self, run_id: str) -> None:
        rd = self.open_run(run_id)
        status = rd.record.status
        if status not in ACTIVE:
            raise tornado.web.HTTPError(409, "run %r is %s: only a queued or running run can be stopped",
                                        run_id, status)
        try:
            rd.request_stop(by="jupyter-ft lab extension")
        except OSError as exc:
            raise tornado.web.HTTPError(500, "could not write the stop request of run %r: %s", run_id, exc) from None
        self.set_status(202)
        self.reply({"run_id": rd.record.id, "status": status, "requested": True})


class SchemaHandler(_Base):
    @tornado.web.authenticated
    def get(self) -> None:
        self.reply(config_schema())


class _SeriesHandler(_Base):
    key = ""

    @staticmethod
    def series_path(rd: RunDir) -> Path:
        """The run's append-only ``.jsonl`` file this handler serves (read incrementally by ``_TAIL``)."""
        raise NotImplementedError

    @tornado.web.authenticated
    def get(self, run_id: str) -> None:
        since = self.since()
        rd = self.open_run(run_id)
        rows = _TAIL.read(self.series_path(rd), since)
        steps = [r["step"] for r in rows if isinstance(r.get("step"), (int, float))]
        last = max(steps) if steps else since
        self.reply({"run_id": rd.record.id, "status": rd.record.status, "since": since, "last_step": last,
                    self.key: rows})


class MetricsHandler(_SeriesHandler):
    key = "metrics"

    @staticmethod
    def series_path(rd: RunDir) -> Path:
        return rd.metrics_path


class ProbesHandler(_SeriesHandler):
    key = "probes"

    @staticmethod
    def series_path(rd: RunDir) -> Path:
        return rd.probes_path


class SamplesHandler(_Base):
    @tornado.web.authenticated
    def get(self, run_id: str) -> None:
        rd = self.open_run(run_id)
        self.reply({"run_id": rd.record.id, "samples": read_jsonl(rd.samples_path), "eval": rd.eval_info()})


def setup_handlers(server_app: Any) -> None:
    ft = JupyterFT(config=server_app.config, parent=server_app)
    root = resolve_root(ft.run_root, getattr(server_app, "root_dir", None))
    web_app = server_app.web_app
    web_app.settings["jupyter_ft_run_root"] = str(root)
    base = url_path_join(web_app.settings["base_url"], API)
    web_app.add_handlers(".*$", [
        (url_path_join(base, "status") + "/?", StatusHandler),
        (url_path_join(base, "runs") + "/?", RunsHandler),
        (url_path_join(base, "runs", _ID) + "/?", RunHandler),
        (url_path_join(base, "runs", _ID, "metrics") + "/?", MetricsHandler),
        (url_path_join(base, "runs", _ID, "probes") + "/?", ProbesHandler),
        (url_path_join(base, "runs", _ID, "samples") + "/?", SamplesHandler),
        (url_path_join(base, "runs", _ID, "stop") + "/?", StopHandler),
        (url_path_join(base, "schema") + "/?", SchemaHandler),
    ])
    server_app.log.info("jupyter-ft: serving runs under %s at %s", root, base)
