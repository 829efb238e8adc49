"""The jupyter-ft server extension: REST handlers over the run store (auth, listing, polling, traversal).

The pytest-jupyter fixtures are imported into this module only (not registered as a global plugin), so
their autouse fixtures and hooks do not touch the rest of the suite; the tests are plain functions that
drive the server's event loop themselves.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import pytest

pytest.importorskip("pytest_jupyter")
pytest.importorskip("jupyter_server")

from pytest_jupyter.jupyter_server import *  # noqa: E402,F403  (fixtures: jp_fetch, jp_serverapp, ...)
from tornado.httpclient import HTTPClientError  # noqa: E402

from jupyter_ft.server.handlers import resolve_root  # noqa: E402
from jupyter_ft.store import RunStore, append_jsonl  # noqa: E402

API = "jupyter-ft/api"
SECRET = "TOPSECRET-do-not-serve"
REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def jp_server_config():
    # the run root is left at its default ("ft_runs", relative to root_dir): the tests create runs there
    return {"ServerApp": {"jpserver_extensions": {"jupyter_ft": True}}}


@pytest.fixture
def run_root(jp_root_dir) -> Path:
    return Path(jp_root_dir) / "ft_runs"


@pytest.fixture
def runs(run_root, jp_root_dir):
    """Two runs (an older finished one with metrics, probes, samples; a newer failed one) and, next to
    the run root, things no request may read: a secret file and a run-shaped directory outside it."""
    store = RunStore(run_root)
    old = store.create({"model": {"name": "tiny-llama"}, "training": {"learning_rate": 1e-3, "max_steps": 6},
                        "lora": {"r": 8}}, name="old run")
    old.save(status="finished", created_at="2026-01-01T00:00:00+00:00", started_at="2026-01-01T00:00:01+00:00",
             finished_at="2026-01-01T00:01:00+00:00", summary={"train_loss": 1.5})
    for step in range(1, 7):
        old.log_metrics({"step": step, "loss": 3.0 - step * 0.1})
    for step in (2, 4, 6):
        append_jsonl(old.probes_path, {"step": step, "probe": "p0", "value": step / 10})
    append_jsonl(old.path / "samples.jsonl", {"prompt": "hi", "base": "b", "tuned": "t", "reference": "r"})
    (old.path / "eval.json").write_text(json.dumps({"metrics": {"rougeL": {"base": 0.1, "tuned": 0.5}}}))

    new = store.create({"model": {"name": "tiny-llama"}}, name="new run")
    new.save(status="failed", created_at="2026-02-01T00:00:00+00:00", error="boom")

    root = Path(jp_root_dir)
    (root / "secret.txt").write_text(json.dumps({"step": 99, "secret": SECRET}) + "\n")
    outside = root / "outside"
    outside.mkdir()
    (outside / "run.json").write_text(json.dumps({"id": "outside", "name": SECRET, "status": "finished"}))
    (outside / "metrics.jsonl").write_text(json.dumps({"step": 1, "secret": SECRET}) + "\n")
    (outside / "samples.jsonl").write_text(json.dumps({"prompt": SECRET}) + "\n")
    try:  # a link inside the root that points outside it
        (run_root / "escape").symlink_to(outside, target_is_directory=True)
    except OSError:
        pass
    return {"old": old.record.id, "new": new.record.id}


@pytest.fixture
def get(jp_fetch, jp_asyncio_loop):
    """GET an API path with the token; returns (code, parsed JSON body)."""

    def _get(*parts: str, params: dict | None = None):
        try:
            resp = jp_asyncio_loop.run_until_complete(jp_fetch(API, *parts, params=params))
        except HTTPClientError as err:
            body = err.response.body if err.response is not None else b""
            return err.code, (json.loads(body) if body.startswith(b"{") else body.decode())
        return resp.code, json.loads(resp.body)

    return _get


@pytest.fixture
def raw_get(jp_serverapp, http_server_client, jp_auth_header, jp_base_url, jp_asyncio_loop):
    """GET a raw (not re-escaped) path under ``<base_url>jupyter-ft/api/``; returns (code, body text)."""

    def _raw(path: str, headers: dict | None = None):
        url = jp_base_url.rstrip("/") + "/" + API + "/" + path
        hdrs = dict(jp_auth_header) if headers is None else headers
        resp = jp_asyncio_loop.run_until_complete(
            http_server_client.fetch(url, headers=hdrs, raise_error=False, follow_redirects=False,
                                     request_timeout=20))
        return resp.code, (resp.body or b"").decode("utf-8", "replace")

    return _raw


# --------------------------------------------------------------------------- auth


ALL_PATHS = ["status", "runs", "runs/{old}", "runs/{old}/metrics", "runs/{old}/metrics?since=2",
             "runs/{old}/probes", "runs/{old}/samples", "schema"]


@pytest.mark.parametrize("path", ALL_PATHS)
def test_every_handler_refuses_requests_without_the_token(runs, raw_get, path):
    code, body = raw_get(path.format(**runs), headers={})
    assert code == 403
    assert "tiny-llama" not in body and "loss" not in body


@pytest.mark.parametrize("path", ALL_PATHS)
def test_every_handler_refuses_a_wrong_token(runs, raw_get, path):
    code, _ = raw_get(path.format(**runs), headers={"Authorization": "token not-the-token"})
    assert code == 403


@pytest.mark.parametrize("path", ALL_PATHS)
def test_every_handler_answers_with_the_token(runs, raw_get, path):
    code, body = raw_get(path.format(**runs))
    assert code == 200, body
    json.loads(body)


# --------------------------------------------------------------------------- the API


def test_status_reports_version_and_default_root_under_root_dir(get, run_root, runs):
    import jupyter_ft

    code, body = get("status")
    assert code == 200
    assert body["version"] == jupyter_ft.__version__
    assert body["run_root"] == str(run_root.resolve())
    assert body["exists"] is True


def test_list_runs_newest_first_and_light(get, runs):
    code, body = get("runs")
    assert code == 200
    assert [r["id"] for r in body["runs"]] == [runs["new"], runs["old"]]
    new, old = body["runs"]
    assert new["status"] == "failed" and new["error"] == "boom" and new["name"] == "new run"
    assert old["status"] == "finished" and old["summary"] == {"train_loss": 1.5}
    assert old["config"] == {"model": "tiny-llama", "lora_r": 8, "learning_rate": 1e-3, "max_steps": 6}
    assert old["started_at"] and old["finished_at"]
    assert "environment" not in old and "traceback" not in old
    # the "escape" symlink and the directory outside the root are not runs of this root
    assert SECRET not in json.dumps(body)


def test_list_runs_of_an_empty_or_missing_root(get):
    code, body = get("runs")
    assert code == 200 and body["runs"] == []
    code, body = get("status")
    assert body["exists"] is False


def test_one_run_is_the_full_record(get, runs):
    code, body = get("runs", runs["old"])
    assert code == 200
    assert body["id"] == runs["old"]
    assert body["config"]["model"] == {"name": "tiny-llama"}
    assert body["summary"] == {"train_loss": 1.5}
    assert set(body) >= {"environment", "dataset", "memory_estimate", "traceback", "warnings"}


def test_metrics_whole_and_incremental(get, runs, run_root):
    code, body = get("runs", runs["old"], "metrics")
    assert code == 200
    assert [m["step"] for m in body["metrics"]] == [1, 2, 3, 4, 5, 6]
    assert body["last_step"] == 6 and body["since"] is None and body["status"] == "finished"

    code, body = get("runs", runs["old"], "metrics", params={"since": "4"})
    assert [m["step"] for m in body["metrics"]] == [5, 6]
    assert body["since"] == 4 and body["last_step"] == 6

    # nothing new: an empty page that keeps the cursor where it was
    code, body = get("runs", runs["old"], "metrics", params={"since": "6"})
    assert body["metrics"] == [] and body["last_step"] == 6

    # the kernel appends two steps and a torn line; a poll from the cursor gets exactly the new steps
    path = run_root / runs["old"] / "metrics.jsonl"
    append_jsonl(path, {"step": 7, "loss": 2.2})
    append_jsonl(path, {"step": 8, "loss": 2.1})
    with open(path, "a") as fh:
        fh.write('{"step": 9, "lo')
    code, body = get("runs", runs["old"], "metrics", params={"since": "6"})
    assert [m["step"] for m in body["metrics"]] == [7, 8] and body["last_step"] == 8


def test_metrics_of_a_run_without_any(get, runs):
    code, body = get("runs", runs["new"], "metrics")
    assert code == 200 and body["metrics"] == [] and body["last_step"] is None


@pytest.mark.parametrize("since", ["abc", "1.5", "4; rm -rf /"])
def test_since_must_be_an_integer(get, runs, since):
    code, body = get("runs", runs["old"], "metrics", params={"since": since})
    assert code == 400
    assert body["message"] == f"since must be an integer step, not {since!r}"


def test_probes_whole_and_incremental(get, runs):
    code, body = get("runs", runs["old"], "probes")
    assert code == 200
    assert [p["step"] for p in body["probes"]] == [2, 4, 6]
    code, body = get("runs", runs["old"], "probes", params={"since": "3"})
    assert [p["step"] for p in body["probes"]] == [4, 6] and body["last_step"] == 6
    code, body = get("runs", runs["new"], "probes")
    assert code == 200 and body["probes"] == []


def test_samples_and_eval(get, runs):
    code, body = get("runs", runs["old"], "samples")
    assert code == 200
    assert body["samples"] == [{"prompt": "hi", "base": "b", "tuned": "t", "reference": "r"}]
    assert body["eval"]["metrics"]["rougeL"]["tuned"] == 0.5
    code, body = get("runs", runs["new"], "samples")
    assert code == 200 and body["samples"] == [] and body["eval"] is None


@pytest.mark.parametrize("suffix", ["", "/metrics", "/probes", "/samples"])
def test_unknown_run_is_404_json(get, runs, suffix):
    parts = ["runs", "20990101-000000-nope-0000"] + ([suffix.strip("/")] if suffix else [])
    code, body = get(*parts)
    assert code == 404
    assert body["message"] == "no run '20990101-000000-nope-0000'"


# --------------------------------------------------------------------------- bad ids and traversal

# raw paths (sent as written, not re-escaped) after <base_url>jupyter-ft/api/
TRAVERSALS = [
    "runs/..",
    "runs/../metrics",
    "runs/%2e%2e",
    "runs/%2E%2E/metrics",
    "runs/..%2fsecret.txt",
    "runs/..%2Foutside",
    "runs/..%2Foutside/metrics",
    "runs/..%2Foutside/samples",
    "runs/%2e%2e%2foutside/probes",
    "runs/a%2F..%2F..%2Foutside",
    "runs/a/../../outside",
    "runs/a/../../outside/metrics",
    "runs/../../secret.txt",
    "runs/%2Fetc%2Fpasswd",
    "runs/%2Fetc/metrics",
    "runs//etc/passwd",
    "runs/.hidden",
    "runs/escape",
    "runs/escape/metrics",
    "runs/escape/samples",
    "runs/%252e%252e%252fsecret.txt",
    "runs/..%5Csecret.txt",
    "runs/%00",
    "runs/a%00b/metrics",
    "runs/~",
    "runs/" + "a" * 200,
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_traversal_attempts_never_read_outside_the_root(runs, raw_get, path):
    code, body = raw_get(path)
    assert code in (400, 404), (code, body)
    if code == 400:  # the handler saw the id and refused it (404s are paths no route matches)
        assert json.loads(body)["message"].startswith("invalid run id")
    assert SECRET not in body
    assert "root:" not in body  # /etc/passwd


@pytest.mark.parametrize("run_id", ["..", ".", "../outside", "a/../../outside", "/etc/passwd", ".hidden",
                                    "escape", "a\\b", "x" * 200, "-leading-dash"])
@pytest.mark.parametrize("suffix", ["", "metrics", "probes", "samples"])
def test_invalid_ids_are_400_json(raw_get, runs, run_id, suffix):
    # the id escaped into one path segment (slashes become %2F): the handler sees the id as is
    code, body = raw_get("runs/" + quote(run_id, safe="") + (f"/{suffix}" if suffix else ""))
    assert code == 400, (code, body)
    assert "invalid run id" in json.loads(body)["message"]
    assert SECRET not in body


def test_escape_symlink_exists_but_is_refused(runs, run_root, raw_get):
    link = run_root / "escape"
    if not link.is_symlink():
        pytest.skip("symlinks not supported here")
    assert (link / "metrics.jsonl").read_text().count(SECRET) == 1  # the file is there to be stolen
    code, body = raw_get("runs/escape/metrics")
    assert code == 400 and SECRET not in body


# --------------------------------------------------------------------------- configuration


class TestConfiguredRoot:
    """``JupyterFT.run_root`` set in the server config (absolute path) wins over the default."""

    @pytest.fixture
    def custom_root(self, tmp_path) -> Path:
        return tmp_path / "elsewhere" / "my_runs"

    @pytest.fixture
    def jp_server_config(self, custom_root):
        return {"ServerApp": {"jpserver_extensions": {"jupyter_ft": True}},
                "JupyterFT": {"run_root": str(custom_root)}}

    def test_runs_come_from_the_configured_root(self, get, custom_root, run_root, runs):
        # `runs` wrote under root_dir/ft_runs, which this server does not serve
        only = RunStore(custom_root).create({"model": {"name": "m"}}, name="configured")
        code, body = get("status")
        assert body["run_root"] == str(custom_root.resolve())
        code, body = get("runs")
        assert [r["id"] for r in body["runs"]] == [only.record.id]
        code, body = get("runs", runs["old"])
        assert code == 404


class TestRelativeConfiguredRoot:
    @pytest.fixture
    def jp_server_config(self):
        return {"ServerApp": {"jpserver_extensions": {"jupyter_ft": True}},
                "JupyterFT": {"run_root": "sub/runs"}}

    def test_relative_root_resolves_against_root_dir(self, get, jp_root_dir):
        rd = RunStore(Path(jp_root_dir) / "sub" / "runs").create({}, name="rel")
        code, body = get("status")
        assert body["run_root"] == str((Path(jp_root_dir) / "sub" / "runs").resolve())
        code, body = get("runs", rd.record.id)
        assert code == 200 and body["name"] == "rel"


def test_resolve_root(tmp_path):
    assert resolve_root("ft_runs", str(tmp_path)) == (tmp_path / "ft_runs").resolve()
    assert resolve_root(str(tmp_path / "abs"), "/somewhere/else") == (tmp_path / "abs").resolve()
    assert resolve_root("~/x", str(tmp_path)) == (Path.home() / "x").resolve()


def test_extension_points_and_light_package_import():
    import jupyter_ft
    import jupyter_ft.server

    assert jupyter_ft._jupyter_server_extension_points() == [{"module": "jupyter_ft.server"}]
    assert jupyter_ft.server._jupyter_server_extension_points() == [{"module": "jupyter_ft.server"}]
    out = subprocess.run([sys.executable, "-c", "import sys, jupyter_ft, jupyter_ft.server; "
                          "print(sorted(m for m in ('torch', 'tornado', 'transformers') if m in sys.modules))"],
                         capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"


def test_config_file_enables_the_extension():
    data = json.loads((REPO / "jupyter-config" / "jupyter_server_config.d" / "jupyter_ft.json").read_text())
    assert data == {"ServerApp": {"jpserver_extensions": {"jupyter_ft": True}}}


def test_jupyter_server_extension_list_shows_it_enabled():
    """The installed package (the venv's etc/jupyter) enables the extension, and it validates."""
    jupyter = Path(sys.executable).with_name("jupyter")
    if not jupyter.exists():
        pytest.skip("no jupyter executable next to this python")
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTER_")}
    out = subprocess.run([str(jupyter), "server", "extension", "list"], capture_output=True, text=True,
                         timeout=180, env=env)
    text = (out.stdout + out.stderr).replace("\x1b[32m", "").replace("\x1b[0m", "")
    assert "jupyter_ft enabled" in text, text
    assert "jupyter_ft" in text and "OK" in text.split("Validating jupyter_ft...", 1)[1].splitlines()[1], text


# --------------------------------------------------------------------------- lab extension: live facts, schema, stop
# (the sidebar's progress / verdicts / best eval loss, the editor's unknown-key hints, Stop from the lab)

from jupyter_ft.store import PROGRESS_FILE, STOP_REQUEST_FILE  # noqa: E402


@pytest.fixture
def post(jp_serverapp, http_server_client, jp_auth_header, jp_base_url, jp_asyncio_loop):
    """POST a raw path under ``<base_url>jupyter-ft/api/``; returns (code, body text)."""

    def _post(path: str, headers: dict | None = None):
        url = jp_base_url.rstrip("/") + "/" + API + "/" + path
        hdrs = dict(jp_auth_header) if headers is None else headers
        resp = jp_asyncio_loop.run_until_complete(
            http_server_client.fetch(url, method="POST", body=b"", headers=hdrs, raise_error=False,
                                     follow_redirects=False, request_timeout=20))
        return resp.code, (resp.body or b"").decode("utf-8", "replace")

    return _post


@pytest.fixture
def live(run_root):
    """A run some other live process (this test's parent) is training: progress.json, evaluations, probes."""
    rd = RunStore(run_root).create({"model": {"name": "tiny-llama"}}, name="live run")
    rd.save(status="running", started_at="2026-03-01T00:00:00+00:00", pid=os.getppid())
    (rd.path / PROGRESS_FILE).write_text(json.dumps({"step": 12, "max_steps": 30, "epoch": 0.4, "elapsed": 6.0,
                                                     "eta": 9.0, "time": 1.0}))
    for step, key, value in [(5, "loss", 2.0), (5, "eval_loss", 2.4), (10, "loss", 1.5), (10, "eval_loss", 2.1)]:
        rd.log_metrics({"step": step, key: value})
    append_jsonl(rd.probes_path, {"step": 5, "overfitting": {"status": "ok"}, "forgetting": {"verdict": "mild"}})
    append_jsonl(rd.probes_path, {"step": 10, "overfitting": {"status": "suspected"}, "forgetting": {"verdict": "none"}})
    return rd


def test_list_carries_progress_verdicts_and_best_eval_loss_of_a_live_run(get, runs, live):
    code, body = get("runs")
    by_id = {r["id"]: r for r in body["runs"]}
    mine = by_id[live.record.id]
    assert mine["status"] == "running"  # its pid (our parent) is alive: not marked interrupted
    assert mine["progress"] == {"step": 12, "max_steps": 30, "epoch": 0.4, "elapsed": 6.0, "eta": 9.0, "time": 1.0}
    assert mine["best_eval_loss"] == 2.1  # the best so far, from the metrics
    assert mine["verdicts"] == {"overfitting": "suspected", "forgetting": "mild"}  # the worst so far
    # a finished run without probes or progress file
    assert by_id[runs["old"]]["progress"] is None
    assert by_id[runs["old"]]["verdicts"] == {"overfitting": None, "forgetting": None}
    code, record = get("runs", live.record.id)
    assert record["progress"]["step"] == 12 and record["config"] == {"model": {"name": "tiny-llama"}}


def test_a_finished_run_shows_the_verdicts_of_its_summary(get, run_root):
    rd = RunStore(run_root).create({}, name="done")
    rd.save(status="finished", summary={"best_eval_loss": 0.9,
                                        "probes": {"overfitting": "overfitting", "forgetting": "none"}})
    append_jsonl(rd.probes_path, {"step": 1, "overfitting": {"status": "ok"}})  # the summary wins
    code, body = get("runs")
    (only,) = body["runs"]
    assert only["verdicts"] == {"overfitting": "overfitting", "forgetting": "none"}
    assert only["best_eval_loss"] == 0.9


def test_schema_lists_every_section_and_field_of_the_config(get):
    import dataclasses

    from jupyter_ft.config import SECTIONS

    code, body = get("schema")
    assert code == 200
    assert list(body["sections"]) == list(SECTIONS)
    for name, cls in SECTIONS.items():
        assert list(body["sections"][name]["fields"]) == [f.name for f in dataclasses.fields(cls)]
    lr = body["sections"]["training"]["fields"]["learning_rate"]
    assert lr == {"type": "float", "default": 2e-4}
    assert body["sections"]["training"]["fields"]["max_steps"]["type"] == "int | None"
    assert body["sections"]["model"]["doc"]


def test_schema_carries_the_nested_keys_the_editor_checks(get):
    """What the editor's nested hints rely on agrees with what the config and sweep parsers accept."""
    from jupyter_ft.config import ConfigError, FineTuneConfig
    from jupyter_ft.config.sweep_plan import parse_sweep

    code, body = get("schema")
    assert code == 200
    probes = body["sections"]["probes"]["fields"]
    assert {"early_stop", "forgetting_every", "kl_severe", "probe_file"} <= set(probes)
    roles = body["sections"]["data"]["fields"]["columns"]["keys"]
    FineTuneConfig.from_dict({"data": {"columns": {role: "col" for role in roles}}})  # every listed role is valid
    with pytest.raises(ConfigError, match="data.columns.promt"):
        FineTuneConfig.from_dict({"data": {"columns": {"promt": "q"}}})
    assert "keys" not in body["sections"]["training"]["fields"]["learning_rate"]

    sweep = body["sweep"]
    assert set(sweep["reserved"]) == {"method", "n", "seed", "params"}
    assert sweep["methods"] == ["grid", "random"]
    assert "training.learning_rate" in sweep["sweepable"] and "lora.r" in sweep["sweepable"]
    assert not [k for k in sweep["sweepable"] if k.startswith("output.")]  # the runs share output.*
    # every key and distribution listed is accepted by the sweep parser; a misspelt key or output.* is not
    spec = parse_sweep({key: [None] for key in sweep["sweepable"]})
    assert list(spec.params) == sweep["sweepable"]
    for dist in sweep["distributions"]:
        parse_sweep({"method": "random", "n": 1, "training.batch_size": {dist: [1, 2]}})
    with pytest.raises(ConfigError, match="unknown config key"):
        parse_sweep({"training.learning_rte": [1e-4]})
    with pytest.raises(ConfigError, match="cannot be swept"):
        parse_sweep({"output.name": ["a"]})


def test_stop_needs_the_token(post, live):
    code, body = post(f"runs/{live.record.id}/stop", headers={})
    assert code == 403
    code, _ = post(f"runs/{live.record.id}/stop", headers={"Authorization": "token not-the-token"})
    assert code == 403
    assert not (live.path / STOP_REQUEST_FILE).exists()


def test_stop_writes_the_request_file_of_an_active_run(post, raw_get, live):
    code, body = post(f"runs/{live.record.id}/stop")
    assert code == 202, body
    assert json.loads(body) == {"run_id": live.record.id, "status": "running", "requested": True, "forced": False}
    request = json.loads((live.path / STOP_REQUEST_FILE).read_text())
    assert request["requested_at"] and request["by"] and request["force"] is False
    code, body = post(f"runs/{live.record.id}/stop")  # pressed again: a launch's supervisor ends its processes
    assert code == 202 and json.loads(body)["forced"] is True
    assert json.loads((live.path / STOP_REQUEST_FILE).read_text())["force"] is True
    code, _ = raw_get(f"runs/{live.record.id}/stop")  # GET is not a way to stop
    assert code == 405


def test_stop_refuses_a_run_that_is_not_active(post, runs, run_root):
    code, body = post(f"runs/{runs['old']}/stop")
    assert code == 409
    assert json.loads(body)["message"] == f"run {runs['old']!r} is finished: only a queued or running run can be stopped"
    assert not (run_root / runs["old"] / STOP_REQUEST_FILE).exists()


@pytest.mark.parametrize("path", ["runs/..%2Foutside/stop", "runs/escape/stop", "runs/%2e%2e/stop", "runs/.hidden/stop",
                                  "runs/" + quote("../outside", safe="") + "/stop", "runs/a/../../outside/stop",
                                  "runs/20990101-000000-nope-0000/stop"])
def test_stop_with_bad_ids_writes_nothing_anywhere(post, runs, jp_root_dir, path):
    code, body = post(path)
    assert code in (400, 404), (code, body)
    assert SECRET not in body
    assert not list(Path(jp_root_dir).rglob(STOP_REQUEST_FILE))


def test_stop_from_the_lab_stops_a_real_training_run(post, get, run_root, tiny_model_dir):
    """The tiny model trains in a thread of this process (as in a kernel); the server's POST writes the
    request file, the training callback honours it at the next step: status stopped, checkpoint saved."""
    import time

    import jupyter_ft
    from jupyter_ft.engine import resume
    from tests.test_training import make_config

    run = jupyter_ft.finetune(make_config(tiny_model_dir, run_root, max_steps=400, eval_every=1000,
                                          save_every=1000))
    progress = run.path / PROGRESS_FILE
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if json.loads(progress.read_text())["step"] >= 2:
                break
        except (OSError, ValueError, KeyError):
            pass
        assert run.status in ("queued", "running"), (run.status, run.error)
        time.sleep(0.1)
    else:
        pytest.fail(f"the run never reported step 2 in {PROGRESS_FILE} ({run.status})")
    code, body = get("runs")
    (listed,) = [r for r in body["runs"] if r["id"] == run.id]
    assert listed["status"] == "running" and listed["progress"]["max_steps"] == 400
    assert listed["progress"]["step"] >= 2 and listed["progress"]["eta"] is not None

    code, body = post(f"runs/{run.id}/stop")
    assert code == 202, body
    assert run.wait(120) == "stopped", run.error
    final = run.summary["global_step"]
    assert 2 <= final < 400
    assert run.run_dir.last_checkpoint() is not None and run.run_dir.last_checkpoint().name == f"checkpoint-{final}"
    assert (run.path / "adapter").is_dir()
    assert json.loads(progress.read_text())["step"] == final  # the last progress is the stopped step
    code, body = get("runs", run.id)
    assert body["status"] == "stopped"
    code, body = post(f"runs/{run.id}/stop")  # nothing left to stop
    assert code == 409

    # resuming drops the old request, so it does not stop the resumed run at once
    again = resume(run.id, root=str(run_root))
    assert not (run.path / STOP_REQUEST_FILE).exists()
    again.stop(wait=True, timeout=120)


def test_jupyter_labextension_list_shows_the_lab_extension_enabled():
    """The lab side: built into jupyter_ft/labextension (pip install / make labextension) and found by
    JupyterLab in the venv's share/jupyter/labextensions."""
    import jupyter_ft

    built = REPO / "jupyter_ft" / "labextension" / "package.json"
    if not built.is_file() and not os.environ.get("CI"):
        pytest.skip("the lab extension is not built (make labextension; needs node)")
    assert jupyter_ft._jupyter_labextension_paths() == [{"src": "labextension", "dest": "jupyter-ft"}]
    meta = json.loads(built.read_text())
    assert meta["name"] == "jupyter-ft" and meta["jupyterlab"]["_build"]["load"].startswith("static/remoteEntry.")
    jupyter = Path(sys.executable).with_name("jupyter")
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTER_")}
    env["PATH"] = f"{jupyter.parent}{os.pathsep}{env.get('PATH', '')}"
    out = subprocess.run([str(jupyter), "labextension", "list"], capture_output=True, text=True, timeout=180, env=env)
    text = (out.stdout + out.stderr).replace("\x1b[32m", "").replace("\x1b[0m", "")
    assert any("jupyter-ft" in line and "enabled" in line and "OK" in line for line in text.splitlines()), text


# --------------------------------------------------------------------------- incremental reading
def test_jsonl_tail_reads_only_what_was_appended(tmp_path, monkeypatch):
    """The sidebar and the run panel poll every few seconds: a long run's files are parsed once, then only
    their new lines; a torn last line waits for its newline; a replaced or shrunk file is read afresh."""
    import json as _json

    from jupyter_ft.server.reading import JsonlTail

    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(_json.dumps({"step": i, "loss": 1.0 / i}) + "\n" for i in range(1, 4)))
    tail = JsonlTail(max_files=2)
    parsed: list[bytes] = []
    real_loads = _json.loads
    monkeypatch.setattr("jupyter_ft.store.files.json.loads", lambda s, *a, **k: parsed.append(s) or real_loads(s))
    assert [r["step"] for r in tail.read(path)] == [1, 2, 3]
    assert len(parsed) == 3
    with open(path, "a") as fh:
        fh.write(_json.dumps({"step": 4, "loss": 0.2}) + "\n" + '{"step": 5, "lo')  # a writer mid-line
    assert [r["step"] for r in tail.read(path, since_step=2)] == [3, 4]
    assert len(parsed) == 4  # only the new complete line was parsed
    with open(path, "a") as fh:
        fh.write('ss": 0.1}\n')
    assert [r["step"] for r in tail.read(path)] == [1, 2, 3, 4, 5]
    assert tail.read(path, since_step=5) == []

    replaced = tmp_path / "new.jsonl"  # a deleted and recreated run: another file at the same path
    replaced.write_text(_json.dumps({"step": 1, "loss": 9.0}) + "\n")
    replaced.replace(path)
    assert tail.read(path) == [{"step": 1, "loss": 9.0}]
    path.write_text("")  # shrunk in place
    assert tail.read(path) == []
    path.unlink()
    assert tail.read(path) == []

    for name in ("a", "b", "c"):  # bounded: the least recently read file is dropped
        (tmp_path / f"{name}.jsonl").write_text('{"step": 1}\n')
        tail.read(tmp_path / f"{name}.jsonl")
    assert len(tail._files) == 2 and str(tmp_path / "a.jsonl") not in tail._files


# --------------------------------------------------------------------------- issue #14: what is read, how it answers
# (links are not followed, one odd run.json never breaks the listing, strict JSON on the wire, the server's
# authorizer, XSRF under cookie auth)

import math  # noqa: E402

from jupyter_server.auth.authorizer import Authorizer  # noqa: E402

RUN_FILES = ["progress.json", "metrics.jsonl", "probes.jsonl", "samples.jsonl", "eval.json"]


def _strict_json(body: str):
    """The body as the browser's JSON.parse reads it: a bare NaN or Infinity fails the test."""
    return json.loads(body, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c} in {body[:300]}"))


def _live_run(run_root, name: str):
    rd = RunStore(run_root).create({"model": {"name": "tiny-llama"}}, name=name)
    rd.save(status="running", started_at="2026-03-01T00:00:00+00:00", pid=os.getppid())  # a live process
    return rd


def test_linked_run_files_are_not_followed(runs, run_root, jp_root_dir, raw_get):
    """A run's progress, metrics, probes, samples and eval files that are links (outside the root, or to
    another run's file) read as absent: nothing they point to is served."""
    outside = Path(jp_root_dir) / "outside"
    (outside / "progress.json").write_text(json.dumps({"step": 1, "secret": SECRET}))
    (outside / "eval.json").write_text(json.dumps({"metrics": {}, "secret": SECRET}))
    rd = _live_run(run_root, "linked files")
    targets = {"progress.json": outside / "progress.json", "metrics.jsonl": run_root / runs["old"] / "metrics.jsonl",
               "probes.jsonl": Path(jp_root_dir) / "secret.txt", "samples.jsonl": outside / "samples.jsonl",
               "eval.json": outside / "eval.json"}
    for name, target in targets.items():
        try:
            (rd.path / name).symlink_to(target)
        except OSError:
            pytest.skip("symlinks not supported here")
    rid = rd.record.id
    code, body = raw_get("runs")
    assert code == 200 and SECRET not in body
    (mine,) = [r for r in _strict_json(body)["runs"] if r["id"] == rid]
    assert mine["progress"] is None and mine["best_eval_loss"] is None
    assert mine["verdicts"] == {"overfitting": None, "forgetting": None}
    code, body = raw_get(f"runs/{rid}")
    assert code == 200 and SECRET not in body and _strict_json(body)["progress"] is None
    for route, key in [("metrics", "metrics"), ("probes", "probes"), ("samples", "samples")]:
        code, body = raw_get(f"runs/{rid}/{route}")
        assert code == 200 and SECRET not in body, (route, body)
        assert _strict_json(body)[key] == [], (route, body)  # not the other run's metrics either
    assert _strict_json(raw_get(f"runs/{rid}/samples")[1])["eval"] is None
    # the same files, regular, are read
    for name in targets:
        (rd.path / name).unlink()
    (rd.path / "progress.json").write_text(json.dumps({"step": 3, "max_steps": 9}))
    rd.log_metrics({"step": 3, "loss": 1.0})
    code, body = raw_get(f"runs/{rid}/metrics")
    assert [m["step"] for m in _strict_json(body)["metrics"]] == [3]
    assert _strict_json(raw_get(f"runs/{rid}")[1])["progress"] == {"step": 3, "max_steps": 9}


def test_run_files_that_are_not_regular_files_read_as_absent(runs, run_root, raw_get):
    """A FIFO (whose open would block the server) or a directory in place of a run's file reads as absent."""
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs here")
    rd = _live_run(run_root, "odd files")
    for name in ("progress.json", "samples.jsonl", "metrics.jsonl"):
        os.mkfifo(rd.path / name)
    (rd.path / "eval.json").mkdir()
    (rd.path / "probes.jsonl").mkdir()
    rid = rd.record.id
    code, body = raw_get("runs")
    assert code == 200 and rid in body
    for route in ("", "/metrics", "/probes", "/samples"):
        code, body = raw_get(f"runs/{rid}{route}")
        assert code == 200, (route, body)
    assert _strict_json(raw_get(f"runs/{rid}/samples")[1]) == {"run_id": rid, "samples": [], "eval": None}


def test_a_linked_run_json_is_not_served(runs, run_root, jp_root_dir, raw_get):
    """A run directory whose run.json links to another record (here one naming the secret) is no run."""
    odd = run_root / "20260301-000000-linkrec-0000"
    odd.mkdir()
    try:
        (odd / "run.json").symlink_to(Path(jp_root_dir) / "outside" / "run.json")
    except OSError:
        pytest.skip("symlinks not supported here")
    code, body = raw_get("runs")
    assert code == 200 and SECRET not in body
    assert {runs["old"], runs["new"]} <= {r["id"] for r in _strict_json(body)["runs"]}
    for route in ("", "/metrics", "/probes", "/samples"):
        code, body = raw_get(f"runs/{odd.name}{route}")
        assert code in (200, 404) and SECRET not in body, (route, code, body)
        if code == 200:
            assert _strict_json(body).get("status", "corrupt") == "corrupt"


def test_run_directories_that_are_links_are_neither_listed_nor_served(runs, run_root, post, raw_get):
    """A link inside the root to a run of the same root is not a second run; a link loop is nothing."""
    alias = run_root / "20990101-000000-alias-0000"
    try:
        alias.symlink_to(run_root / runs["old"], target_is_directory=True)
        (run_root / "loop").symlink_to(run_root / "loop")
    except OSError:
        pytest.skip("symlinks not supported here")
    code, body = raw_get("runs")
    assert code == 200, body
    ids = [r["id"] for r in _strict_json(body)["runs"]]
    assert ids == [runs["new"], runs["old"]]  # once each; no alias, no loop
    for run_id in (alias.name, "loop"):
        for route in ("", "/metrics", "/probes", "/samples"):
            code, body = raw_get(f"runs/{run_id}{route}")
            assert code == 404, (run_id, route, code, body)
            assert _strict_json(body)["message"] == f"no run {run_id!r}"
        code, body = post(f"runs/{run_id}/stop")
        assert code == 404, (run_id, code, body)
    assert not (run_root / runs["old"] / STOP_REQUEST_FILE).exists()


ODD_RECORDS = {
    "list": b"[]",
    "null": b"null",
    "string": b'"x"',
    "number": b"5",
    "invalid-json": b'{"id": "x", "name": ',
    "empty": b"",
    "not-utf8": b'{"name": "\xff\xfe"}',
    "deep": b"[" * 100000,
    "no-name-no-created": b'{"status": "finished"}',
    "no-created": b'{"name": "odd", "status": "finished"}',
    "created-number": b'{"name": "odd", "created_at": 5}',
    "created-null": b'{"name": "odd", "created_at": null}',
    "odd-types": b'{"name": 5, "status": [], "summary": [1], "config": "x", "tags": 5, "error": {"a": 1}}',
    "odd-sections": b'{"name": "odd", "config": {"model": "x", "training": [1]}, "summary": {"probes": [1]}}',
    "huge-pid": b'{"name": "odd", "status": "running", "pid": 1000000000000000000000000000000}',
    "pid-string": b'{"name": "odd", "status": "running", "pid": "x"}',
}


@pytest.mark.parametrize("content", list(ODD_RECORDS.values()), ids=list(ODD_RECORDS))
def test_an_odd_run_json_never_breaks_the_listing_nor_hides_the_others(runs, run_root, raw_get, post, content):
    odd = run_root / "20260301-000000-odd-0000"
    odd.mkdir()
    (odd / "run.json").write_bytes(content)
    code, body = raw_get("runs")
    assert code == 200, body
    listed = {r["id"]: r for r in _strict_json(body)["runs"]}
    assert {runs["old"], runs["new"]} <= set(listed)  # the good runs are always there
    assert listed[runs["old"]]["status"] == "finished"
    parsed_object = content.startswith(b"{") and content.endswith(b"}") and b"\xff" not in content
    if odd.name in listed and not parsed_object:
        assert listed[odd.name]["status"] == "corrupt"
    for route in ("", "/metrics", "/probes", "/samples"):
        code, body = raw_get(f"runs/{odd.name}{route}")
        assert code in (200, 404), (route, code, body)
        if code == 200 and not parsed_object and route != "/samples":  # samples carry no status
            assert _strict_json(body)["status"] == "corrupt", (route, body)
    code, body = post(f"runs/{odd.name}/stop")
    assert code in (202, 404, 409), (code, body)


def test_odd_metrics_lines_never_fail_a_poll(runs, run_root, raw_get):
    path = run_root / runs["old"] / "metrics.jsonl"
    with open(path, "a") as fh:
        fh.write('{"step": "seven", "loss": 1}\n{"step": null}\n{"step": [1]}\n' + "[" * 100000 + "\n"
                 + '{"step": 7, "loss": 0.5}\n')
    for since in (None, "4"):
        code, body = raw_get(f"runs/{runs['old']}/metrics" + (f"?since={since}" if since else ""))
        assert code == 200, (since, body)
        steps = [m.get("step") for m in _strict_json(body)["metrics"]]
        assert steps[-1] == 7 and _strict_json(body)["last_step"] == 7
        if since:
            assert steps == [5, 6, 7]


def _write_json_nan(path: Path, obj) -> None:
    path.write_text(json.dumps(obj))  # Python writes NaN and Infinity bare (allow_nan)


def test_non_finite_numbers_reach_the_browser_as_null(runs, run_root, raw_get):
    """A NaN in a summary or a metrics line (an fp16 overflow of grad_norm) must not make a reply unparseable
    for JSON.parse (the sidebar would show "No runs yet")."""
    nan, inf = float("nan"), float("inf")
    rd = _live_run(run_root, "nan run")
    record = json.loads(rd.run_json.read_text())
    record["summary"] = {"train_loss": nan, "best_eval_loss": None, "losses": [1.0, nan, {"x": -inf}]}
    record["config"]["training"] = {"learning_rate": nan}
    _write_json_nan(rd.run_json, record)
    with open(rd.metrics_path, "a") as fh:
        fh.write(json.dumps({"step": 1, "loss": nan, "grad_norm": inf}) + "\n")
        fh.write(json.dumps({"step": 2, "loss": 1.0, "eval_loss": -inf, "nested": [nan, {"a": inf}]}) + "\n")
        fh.write(json.dumps({"step": nan, "loss": 2.0}) + "\n")
    with open(rd.probes_path, "a") as fh:
        fh.write(json.dumps({"step": 1, "value": nan, "overfitting": {"status": "ok", "gap": inf}}) + "\n")
    with open(rd.samples_path, "a") as fh:
        fh.write(json.dumps({"prompt": "p", "score": nan}) + "\n")
    _write_json_nan(rd.eval_path, {"metrics": {"rougeL": {"base": nan, "tuned": inf}}})
    _write_json_nan(rd.progress_path, {"step": 2, "max_steps": 9, "eta": inf})
    rid = rd.record.id

    code, body = raw_get("runs")
    assert code == 200
    (mine,) = [r for r in _strict_json(body)["runs"] if r["id"] == rid]
    assert mine["summary"] == {"train_loss": None, "best_eval_loss": None, "losses": [1.0, None, {"x": None}]}
    assert mine["config"]["learning_rate"] is None and mine["progress"]["eta"] is None
    assert mine["best_eval_loss"] is None  # -inf is no loss
    code, body = raw_get(f"runs/{rid}")
    assert code == 200 and _strict_json(body)["summary"]["train_loss"] is None
    code, body = raw_get(f"runs/{rid}/metrics")
    metrics = _strict_json(body)
    assert code == 200 and metrics["last_step"] == 2
    assert metrics["metrics"][:2] == [{"step": 1, "loss": None, "grad_norm": None},
                                      {"step": 2, "loss": 1.0, "eval_loss": None, "nested": [None, {"a": None}]}]
    code, body = raw_get(f"runs/{rid}/probes")
    assert code == 200 and _strict_json(body)["probes"][0]["overfitting"] == {"status": "ok", "gap": None}
    code, body = raw_get(f"runs/{rid}/samples")
    samples = _strict_json(body)
    assert samples["samples"] == [{"prompt": "p", "score": None}]
    assert samples["eval"] == {"metrics": {"rougeL": {"base": None, "tuned": None}}}


def test_the_reply_encoder_is_strict():
    from jupyter_ft.server.handlers import strict_json

    obj = {"a": float("nan"), "b": [float("inf"), (1, -float("inf"))], "c": {"d": 1.5, "e": "NaN"}, "f": True}
    assert _strict_json(strict_json(obj)) == {"a": None, "b": [None, [1, None]], "c": {"d": 1.5, "e": "NaN"},
                                              "f": True}
    assert math.isnan(obj["a"])  # the caller's object is left as it was


class _Calls:
    seen: list[tuple[str, str]] = []


class DenyJupyterFT(Authorizer):
    """Allows the rest of the server, nothing of jupyter-ft."""

    def is_authorized(self, handler, user, action, resource):
        if resource == "jupyter_ft":
            _Calls.seen.append((action, resource))
            return False
        return True


class ReadOnlyJupyterFT(Authorizer):
    def is_authorized(self, handler, user, action, resource):
        if resource == "jupyter_ft":
            _Calls.seen.append((action, resource))
            return action == "read"
        return True


class TestDenyingAuthorizer:
    @pytest.fixture
    def jp_server_config(self):
        _Calls.seen.clear()
        return {"ServerApp": {"jpserver_extensions": {"jupyter_ft": True}, "authorizer_class": DenyJupyterFT}}

    @pytest.mark.parametrize("path", ALL_PATHS)
    def test_every_read_is_refused(self, runs, raw_get, path):
        code, body = raw_get(path.format(**runs))
        assert code == 403, body
        assert "tiny-llama" not in body and "loss" not in body
        assert _Calls.seen == [("read", "jupyter_ft")]

    def test_stop_is_refused_and_writes_nothing(self, post, live):
        code, body = post(f"runs/{live.record.id}/stop")
        assert code == 403, body
        assert not (live.path / STOP_REQUEST_FILE).exists()
        assert _Calls.seen == [("write", "jupyter_ft")]


class TestReadOnlyAuthorizer:
    @pytest.fixture
    def jp_server_config(self):
        _Calls.seen.clear()
        return {"ServerApp": {"jpserver_extensions": {"jupyter_ft": True}, "authorizer_class": ReadOnlyJupyterFT}}

    @pytest.mark.parametrize("path", ALL_PATHS)
    def test_reads_work(self, runs, raw_get, path):
        code, body = raw_get(path.format(**runs))
        assert code == 200, body
        assert _Calls.seen == [("read", "jupyter_ft")]

    def test_stop_is_refused_and_writes_nothing(self, post, live):
        code, body = post(f"runs/{live.record.id}/stop")
        assert code == 403, body
        assert not (live.path / STOP_REQUEST_FILE).exists()
        assert _Calls.seen == [("write", "jupyter_ft")]


def test_stop_under_cookie_auth_needs_the_xsrf_token(raw_get, post, live, jp_serverapp, http_server_client,
                                                     jp_auth_header, jp_base_url, jp_asyncio_loop):
    """A browser's request carries the login cookie by itself; a POST must also carry the XSRF token (which
    a cross-site page cannot read), else it is refused and nothing is written."""
    from http.cookies import SimpleCookie

    url = jp_base_url.rstrip("/") + "/" + API + "/status"
    resp = jp_asyncio_loop.run_until_complete(http_server_client.fetch(url, headers=dict(jp_auth_header),
                                                                       request_timeout=20))
    cookies = SimpleCookie()
    for header in resp.headers.get_list("Set-Cookie"):
        cookies.load(header)
    login = "; ".join(f"{k}={m.value}" for k, m in cookies.items() if k != "_xsrf")
    assert login, "the token request set no login cookie"
    stop = f"runs/{live.record.id}/stop"
    code, _ = raw_get("status", headers={"Cookie": login})  # the cookie alone authenticates a GET
    assert code == 200
    code, body = post(stop, headers={"Cookie": login})
    assert code == 403, body
    code, body = post(stop, headers={"Cookie": login + "; _xsrf=0123abcd", "X-XSRFToken": "ffff0000"})
    assert code == 403, body  # a token that is not the cookie's
    assert not (live.path / STOP_REQUEST_FILE).exists()
    code, body = post(stop, headers={"Cookie": login + "; _xsrf=0123abcd", "X-XSRFToken": "0123abcd"})
    assert code == 202, body  # the same request with the token is honoured
    assert (live.path / STOP_REQUEST_FILE).exists()
