"""Handlers of the jupyter-ft server extension (see the package docstring for the API)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import tornado.web
from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from traitlets import Unicode
from traitlets.config import Configurable

from ..config import DEFAULT_ROOT
from ..store import ACTIVE, RunDir, RunStore
from ..store.files import finite
from ..version import __version__
from .reading import TAIL, brief, config_schema, corrupt_run, find_run, live_facts, number, read_object, read_rows

API = "jupyter-ft/api"
# a run id is one path segment; what it may contain is RunStore.path_of's business (400 otherwise)
_ID = r"(?P<run_id>[^/]+)"
# the resource the server's Authorizer is asked about: reads are "read", Stop is "write"
AUTH_RESOURCE = "jupyter_ft"


def strict_json(obj: Any) -> str:
    """The JSON text of a reply: strict (no NaN, no Infinity: the browser's ``JSON.parse`` throws on them); a
    value JSON has no type for is text."""
    return json.dumps(finite(obj), default=str, allow_nan=False)


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


class _Base(APIHandler):
    auth_resource = AUTH_RESOURCE  # what @authorized asks the server's Authorizer about

    @property
    def store(self) -> RunStore:
        return RunStore(self.settings["jupyter_ft_run_root"])

    def open_run(self, run_id: str) -> RunDir:
        return find_run(self.store, run_id)

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
        self.finish(strict_json(obj))


class StatusHandler(_Base):
    @tornado.web.authenticated
    @authorized("read")
    def get(self) -> None:
        root = Path(self.settings["jupyter_ft_run_root"])
        self.reply({"version": __version__, "run_root": str(root), "exists": root.is_dir()})


class RunsHandler(_Base):
    @tornado.web.authenticated
    @authorized("read")
    def get(self) -> None:
        store = self.store
        runs = []
        for rd in store.dirs():
            try:
                runs.append(finite(brief(rd)))  # cleaned here too: a record too deep to clean fails here
            except Exception as exc:  # a record the summary cannot take lists as corrupt, not as a 500
                runs.append(brief(corrupt_run(rd.path, rd.record.id, exc)))
        self.reply({"run_root": str(store.root), "runs": runs})


class RunHandler(_Base):
    @tornado.web.authenticated
    @authorized("read")
    def get(self, run_id: str) -> None:
        rd = self.open_run(run_id)
        try:
            full = finite({**rd.record.to_dict(), **live_facts(rd)})
        except Exception as exc:
            rd = corrupt_run(rd.path, rd.record.id, exc)
            full = {**rd.record.to_dict(), **live_facts(rd)}
        self.reply(full)


class StopHandler(_Base):
    """Stop a run from the lab. The run trains in a thread of some kernel, which the server cannot reach:
    the request is a file in the run directory, which the training callback checks at every step and
    honours like ``Run.stop()`` (a checkpoint of that step and the adapter are saved)."""

    @tornado.web.authenticated
    @authorized("write")
    def post(self, run_id: str) -> None:
        rd = self.open_run(run_id)
        status = rd.record.status
        if status not in ACTIVE:
            raise tornado.web.HTTPError(409, "run %r is %s: only a queued or running run can be stopped",
                                        run_id, status)
        again = rd.stop_request() is not None  # Stop pressed twice: a launch's supervisor ends its processes
        try:
            rd.request_stop(by="jupyter-ft lab extension", force=again)
        except OSError as exc:
            raise tornado.web.HTTPError(500, "could not write the stop request of run %r: %s", run_id, exc) from None
        self.set_status(202)
        self.reply({"run_id": rd.record.id, "status": status, "requested": True, "forced": again})


class SchemaHandler(_Base):
    @tornado.web.authenticated
    @authorized("read")
    def get(self) -> None:
        self.reply(config_schema())


class _SeriesHandler(_Base):
    key = ""

    @staticmethod
    def series_path(rd: RunDir) -> Path:
        """The run's append-only ``.jsonl`` file this handler serves (read incrementally by ``TAIL``)."""
        raise NotImplementedError

    @tornado.web.authenticated
    @authorized("read")
    def get(self, run_id: str) -> None:
        since = self.since()
        rd = self.open_run(run_id)
        rows = TAIL.read(self.series_path(rd), since)
        steps = [r["step"] for r in rows if number(r.get("step"))]
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
    @authorized("read")
    def get(self, run_id: str) -> None:
        rd = self.open_run(run_id)
        self.reply({"run_id": rd.record.id, "samples": read_rows(rd.samples_path), "eval": read_object(rd.eval_path)})


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
