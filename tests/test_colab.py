"""The Colab adapter against a fake ``google.colab`` that records registrations and lets the test play the
browser: invoke the registered poll/stop callbacks the way ``google.colab.kernel.invokeFunction`` does.
Runs and sweeps are real tiny-model runs in the background thread."""

from __future__ import annotations

import contextlib
import json
import sys
import time
import types
from pathlib import Path
from typing import Any, Iterator

import pytest

import jupyter_ft
from jupyter_ft.store import RunStore
from jupyter_ft.config.sweep_plan import plan_sweep
from jupyter_ft.sweep import Sweep, start_sweep
from jupyter_ft.engine import Event
from jupyter_ft.views.format import ema
from jupyter_ft.views.sweep_state import SWEEP_STATUS_COLORS
from jupyter_ft.widgets import dashboard as dashboard_mod
from jupyter_ft.widgets import sweep_dashboard as sweep_dashboard_mod
from jupyter_ft.widgets.colab import ColabDashboard, ColabSweepDashboard, TrackedSeries, in_colab, setup_colab
from jupyter_ft.widgets.dashboard import dashboard_for
from jupyter_ft.widgets.sweep_dashboard import StaticSweepDashboard, sweep_dashboard_for
from test_sweep import fast_config  # the shared tiny-sweep config
from test_training import make_config  # noqa: E402 - the shared tiny-run config


class FakeColab:
    """``google``, ``google.colab`` and ``google.colab.output`` with the two functions jupyter-ft calls."""

    def __init__(self) -> None:
        self.callbacks: dict[str, Any] = {}
        self.widget_manager_calls = 0
        self.google = types.ModuleType("google")
        self.google.__path__ = []  # a package
        self.colab = types.ModuleType("google.colab")
        self.colab.__path__ = []
        self.output = types.ModuleType("google.colab.output")
        self.output.register_callback = self.register_callback
        self.output.enable_custom_widget_manager = self.enable_custom_widget_manager
        self.colab.output = self.output
        self.google.colab = self.colab

    def register_callback(self, name: str, callback: Any) -> None:
        self.callbacks[name] = callback

    def enable_custom_widget_manager(self) -> None:
        self.widget_manager_calls += 1

    def invoke(self, name: str, *args: Any) -> Any:
        """What ``google.colab.kernel.invokeFunction(name, args, {})`` resolves to in JavaScript:
        the callback's display data, arguments and answer going through JSON both ways."""
        args = json.loads(json.dumps(list(args)))
        result = self.callbacks[name](*args)
        data = getattr(result, "data", result)
        return json.loads(json.dumps(data, allow_nan=False))


@pytest.fixture()
def colab(monkeypatch: pytest.MonkeyPatch) -> FakeColab:
    fake = FakeColab()
    monkeypatch.setitem(sys.modules, "google", fake.google)
    monkeypatch.setitem(sys.modules, "google.colab", fake.colab)
    monkeypatch.setitem(sys.modules, "google.colab.output", fake.output)
    monkeypatch.delenv("JUPYTER_FT_DASHBOARD", raising=False)
    # setup_colab registers the "colab" views and makes them the default; undo that for the other tests.
    monkeypatch.setattr(dashboard_mod, "_DASHBOARDS", dict(dashboard_mod._DASHBOARDS))
    monkeypatch.setattr(dashboard_mod, "_AUTO_MODE", None)
    monkeypatch.setattr(sweep_dashboard_mod, "_SWEEP_DASHBOARDS", dict(sweep_dashboard_mod._SWEEP_DASHBOARDS))
    return fake


def poll_until(fake: FakeColab, dash: ColabDashboard | ColabSweepDashboard, cond, timeout: float = 120.0, cursor=None):
    """Poll like the browser does (cursor carried over) until ``cond(answer)``; returns all answers."""
    answers = []
    deadline = time.monotonic() + timeout
    while True:
        answer = fake.invoke(dash.poll_callback, cursor)
        answers.append(answer)
        cursor = answer["cursor"]
        if cond(answer) or time.monotonic() > deadline:
            return answers
        time.sleep(0.05)


def rebuild(answers: list[dict], key: str, trial: int | None = None) -> tuple[list, list]:
    """The browser's copy of one series (of one trial, for a sweep) after applying every answer in order."""
    x: list = []
    y: list = []
    for a in answers:
        s = a["series"][key] if trial is None else a["series"][trial][key]
        if s["mode"] == "replace":
            x, y = list(s["x"]), list(s["y"])
        else:
            x += s["x"]
            y += s["y"]
    return x, y


# --------------------------------------------------------------------------- detection and set-up
def test_not_colab_here() -> None:
    assert not in_colab()
    assert setup_colab() is False
    assert "colab" not in dashboard_mod._DASHBOARDS and "colab" not in sweep_dashboard_mod._SWEEP_DASHBOARDS


def test_load_ext_in_colab_enables_widget_manager_and_picks_the_colab_view(colab: FakeColab, tmp_path: Path) -> None:
    from IPython.core.interactiveshell import InteractiveShell

    assert in_colab()
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "jupyter_ft")
    shell.extension_manager.reload_extension("jupyter_ft")  # load_ext is a no-op if another test loaded it
    assert colab.widget_manager_calls >= 1
    rd = RunStore(tmp_path / "runs").create({}, "past")
    rd.log_metrics({"step": 1, "loss": 2.0, "learning_rate": 1e-3})
    rd.save(status="finished")
    dash = dashboard_for(rd)
    assert isinstance(dash, ColabDashboard)
    assert set(colab.callbacks) == {dash.poll_callback, dash.stop_callback}
    assert dash.poll_callback.startswith("jupyter_ft.poll.") and dash.stop_callback.startswith("jupyter_ft.stop.")
    # the environment variable still wins over the adapter
    import os

    os.environ["JUPYTER_FT_DASHBOARD"] = "static"
    try:
        assert type(dashboard_for(rd)).__name__ == "StaticDashboard"
    finally:
        del os.environ["JUPYTER_FT_DASHBOARD"]


def test_view_html_calls_the_registered_callbacks(colab: FakeColab, tmp_path: Path) -> None:
    rd = RunStore(tmp_path / "runs").create({}, "view </script> name")
    rd.save(status="finished")
    setup_colab()
    dash = dashboard_for(rd)
    page = dash.html()
    assert f'"poll": "{dash.poll_callback}"' in page and f'"stop": "{dash.stop_callback}"' in page
    assert "google.colab.kernel.invokeFunction" in page and "Plotly.extendTraces" in page
    assert "https://cdn.plot.ly/plotly-" in page
    assert page.count("</script>") == 1  # the config JSON can never close the script tag early
    assert "view &lt;/script&gt; name" in page


# --------------------------------------------------------------------------- cursor semantics (synthetic)
def test_poll_returns_only_new_points_and_replaces_after_a_rewind(colab: FakeColab, tmp_path: Path) -> None:
    rd = RunStore(tmp_path / "runs").create({}, "synthetic")
    for step in (1, 2, 3):
        rd.log_metrics({"step": step, "loss": 3.0 - step / 10, "learning_rate": 1e-3, "tokens_per_s": 100.0})
    rd.save(status="finished")
    setup_colab()
    dash = dashboard_for(rd)
    first = colab.invoke(dash.poll_callback, None)
    assert first["series"]["loss"] == {"mode": "replace", "x": [1, 2, 3], "y": [2.9, 2.8, 2.7]}
    assert len(first["series"]["loss_smooth"]["y"]) == 3 and first["done"] is True
    again = colab.invoke(dash.poll_callback, first["cursor"])
    assert again["series"]["loss"] == {"mode": "extend", "x": [], "y": []}  # nothing new: nothing sent
    # new points arrive as events (what a live run emits); only they come back
    for step in (4, 5):
        dash._on_event(Event("log", rd.record.id, {"step": step, "loss": 2.0, "learning_rate": 1e-3}))
    new = colab.invoke(dash.poll_callback, again["cursor"])
    assert new["series"]["loss"] == {"mode": "extend", "x": [4, 5], "y": [2.0, 2.0]}
    assert new["series"]["lr"]["x"] == [4, 5] and new["series"]["tps"]["x"] == []
    # the smoothed tail equals the tail of the smoothed whole (EMA is causal)
    full_smooth = ema([2.9, 2.8, 2.7, 2.0, 2.0], dash.smoothing)
    assert new["series"]["loss_smooth"]["y"] == pytest.approx(full_smooth[3:])
    # a resumed run re-logs step 3: the browser's copy is stale, so the whole series comes back
    dash._on_event(Event("log", rd.record.id, {"step": 3, "loss": 1.5, "learning_rate": 1e-3}))
    rewound = colab.invoke(dash.poll_callback, new["cursor"])
    assert rewound["series"]["loss"] == {"mode": "replace", "x": [1, 2, 3], "y": [2.9, 2.8, 1.5]}
    assert rewound["series"]["eval"]["mode"] == "extend"  # untouched series stay incremental
    # a garbage cursor is treated as "send everything", never an error
    assert colab.invoke(dash.poll_callback, {"loss": "x", "warnings": -1})["series"]["loss"]["mode"] == "replace"


def test_tracked_series_counts_rewinds() -> None:
    s = TrackedSeries()
    for x in (1, 2, 3):
        s.add(x, 1.0)
    assert s.epoch == 0
    s.add(2, 0.5)
    assert (s.x, s.epoch) == ([1, 2], 1)
    s.clear()
    assert s.epoch == 2 and len(s) == 0


# --------------------------------------------------------------------------- a real run
def test_live_run_polls_incrementally_with_status_and_eta(colab: FakeColab, tiny_model_dir: Path,
                                                          tmp_path: Path) -> None:
    setup_colab()
    run = jupyter_ft.finetune(make_config(tiny_model_dir, tmp_path / "runs", max_steps=12, eval_every=4,
                                          save_every=100))
    dash = dashboard_for(run)
    assert isinstance(dash, ColabDashboard) and not dash.auto_flush  # nothing renders from the training thread
    answers = poll_until(colab, dash, lambda a: a["done"])
    assert answers[-1]["done"] and answers[-1]["status"] == "finished", run.run_dir.record.traceback
    running = [a for a in answers if a["status"] == "running" and a["progress"]["step"]]
    assert running, "never saw the run training"
    assert any(a["progress"]["eta"] is not None and "ETA" in a["progress_text"] for a in running)
    assert all(0.0 <= a["fraction"] <= 1.0 for a in running)
    # after the first answer every series is sent incrementally, and no point is sent twice
    for a in answers[1:]:
        assert all(s["mode"] == "extend" for s in a["series"].values()), a["series"]
    sent = sum(len(a["series"]["loss"]["x"]) for a in answers)
    x, y = rebuild(answers, "loss")
    logged = [h for h in run.history if "loss" in h]
    assert sent == len(x) == len(logged) and x == [h["step"] for h in logged]
    assert y == pytest.approx([h["loss"] for h in logged])
    ex, _ = rebuild(answers, "eval")
    assert ex == [h["step"] for h in run.history if "eval_loss" in h] and ex
    assert answers[-1]["best"]["x"] and answers[-1]["can_stop"] is False
    assert sum(1 for a in answers if any(a["series"][k]["x"] for k in ("loss", "eval"))) >= 2  # it grew live


def test_stop_callback_stops_a_real_run_and_keeps_its_checkpoint(colab: FakeColab, tiny_model_dir: Path,
                                                                 tmp_path: Path) -> None:
    setup_colab()
    run = jupyter_ft.finetune(make_config(tiny_model_dir, tmp_path / "runs", max_steps=2000, eval_every=1000,
                                          save_every=1000))
    dash = dashboard_for(run)
    answers = poll_until(colab, dash, lambda a: (a["progress"]["step"] or 0) >= 3, timeout=120)
    assert answers[-1]["can_stop"] is True
    assert colab.invoke(dash.stop_callback) == {"status": "stopping", "stopping": True}
    answers += poll_until(colab, dash, lambda a: a["done"], cursor=answers[-1]["cursor"])
    assert run.status == "stopped" and answers[-1]["status"] == "stopped"
    step = run.summary["global_step"]
    assert step < 2000
    assert run.run_dir.last_checkpoint() is not None and run.run_dir.last_checkpoint().name == f"checkpoint-{step}"
    assert (run.run_dir.adapter_dir / "adapter_config.json").is_file()
    assert any(a["status"] == "stopping" for a in answers) or answers[-1]["status"] == "stopped"
    # Stop on a finished dashboard is harmless
    assert colab.invoke(dash.stop_callback)["status"] == "stopped"


def test_failed_run_shows_its_error(colab: FakeColab, tiny_model_dir: Path, tmp_path: Path) -> None:
    setup_colab()
    config = make_config(tiny_model_dir, tmp_path / "runs")
    config["data"]["source"] = str(tmp_path / "missing.jsonl")
    run = jupyter_ft.finetune(config)
    dash = dashboard_for(run)
    answers = poll_until(colab, dash, lambda a: a["done"], timeout=60)
    assert answers[-1]["status"] == "failed" and "missing.jsonl" in answers[-1]["error"]
    assert answers[-1]["status_text"].startswith("failed:")


# --------------------------------------------------------------------------- the JavaScript views, in Chromium
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
FAKE_KERNEL = """<script>window.google = {colab: {kernel: {invokeFunction: async (name, args, kwargs) =>
    ({data: {"application/json": await window.pyInvoke(name, args)}})}}};</script>"""


def chromium_or_skip() -> tuple[Any, str, Path]:
    """Playwright's sync API, the system Chromium and plotly.js from the plotly package (no network)."""
    import shutil

    import plotly

    chromium = shutil.which("chromium")
    sync_api = pytest.importorskip("playwright.sync_api")
    if chromium is None:
        pytest.skip("no `chromium` on PATH (run scripts/install_browser.sh)")
    return sync_api, chromium, Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


class ColabPage:
    """A view's HTML in headless Chromium, ``google.colab.kernel.invokeFunction`` played by a page function
    that calls the registered Python callbacks through the fake Colab (JSON both ways)."""

    def __init__(self, page: Any, errors: list[str], calls: list[str], answers: list[dict[str, Any]],
                 timeout_error: type[Exception]) -> None:
        self.page, self.errors, self.calls, self.answers = page, errors, calls, answers
        self._timeout_error = timeout_error

    def wait_for_traces(self, train: int, eval_: int, timeout_ms: int, screenshot: str, context: str) -> None:
        """Wait until trace ``train`` has 3 points and trace ``eval_`` one; on timeout, a screenshot in
        tests/artifacts and an error naming the page errors, the callback calls and ``context``."""
        try:
            self.page.wait_for_function(f"""() => {{ const p = document.querySelector('[data-role="plot"]');
                return p && p.data && p.data[{train}].x.length >= 3 && p.data[{eval_}].x.length >= 1; }}""",
                                        timeout=timeout_ms)
        except self._timeout_error:
            self.page.screenshot(path=str(ARTIFACTS / screenshot))
            raise AssertionError(f"no live points; page errors: {self.errors}; calls: {len(self.calls)}; "
                                 f"{context}") from None


@contextlib.contextmanager
def colab_page(colab: FakeColab, dash: Any, browser: tuple[Any, str, Path], height: int) -> Iterator[ColabPage]:
    sync_api, chromium, plotly_js = browser
    calls: list[str] = []
    answers: list[dict[str, Any]] = []

    def py_invoke(name: str, args: list) -> Any:
        calls.append(name)
        answer = colab.invoke(name, *args)
        if name == dash.poll_callback:
            answers.append(answer)
        return answer

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as pw:
        chrome = pw.chromium.launch(executable_path=chromium, headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        try:
            page = chrome.new_page(viewport={"width": 1100, "height": height})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
            page.route("https://cdn.plot.ly/**", lambda route: route.fulfill(
                path=str(plotly_js), content_type="application/javascript"))
            page.expose_function("pyInvoke", py_invoke)
            page.set_content(f"<!doctype html><html><body>{FAKE_KERNEL}{dash.html()}</body></html>")
            yield ColabPage(page, errors, calls, answers, sync_api.TimeoutError)
        finally:
            chrome.close()


@pytest.mark.browser
@pytest.mark.timeout(240)
def test_view_in_a_real_browser_draws_live_points_and_stops(colab: FakeColab, tiny_model_dir: Path,
                                                            tmp_path: Path) -> None:
    """The HTML+JS view in headless Chromium, with ``google.colab.kernel.invokeFunction`` played by a page
    function that calls the registered Python callbacks and plotly.js served from the plotly package."""
    browser = chromium_or_skip()
    setup_colab()
    run = jupyter_ft.finetune(make_config(tiny_model_dir, tmp_path / "runs", max_steps=2000, eval_every=5,
                                          save_every=1000))
    dash = dashboard_for(run)
    with colab_page(colab, dash, browser, 800) as view:
        page, errors, calls, answers = view.page, view.errors, view.calls, view.answers
        plot = '[data-role="plot"]'
        # loss points arrive while it trains, and the eval curve gets its first points
        view.wait_for_traces(0, 2, 120_000, "colab-dashboard-timeout.png", f"run: {run.status}")
        assert page.inner_text('[data-role="status"]') == "running"
        assert "ETA" in page.inner_text('[data-role="progress"]')
        page.screenshot(path=str(ARTIFACTS / "colab-dashboard.png"))
        page.click('[data-role="stop"]')
        page.wait_for_function("""() => document.querySelector('[data-role="status"]').textContent === 'stopped'""",
                               timeout=60_000)
        # "stopped" can show one poll before the thread's last logged point: let the view catch up
        # (it polls until the run is done and nothing is pending), then it must hold every point, once
        assert run.wait(30) == "stopped"
        expected = len([h for h in run.history if "loss" in h])
        page.wait_for_function(f"document.querySelector('{plot}').data[0].x.length >= {expected}",
                               timeout=30_000)
        page.wait_for_timeout(1500)  # a further poll must not add duplicates
        n_points = page.evaluate(f"document.querySelector('{plot}').data[0].x.length")
        assert not errors, errors
    assert run.wait(30) == "stopped" and run.run_dir.last_checkpoint() is not None
    # how many polls it takes depends on the machine's speed (a fast one logs every point before the first
    # poll); what must hold is that the view kept polling and sent its cursor back, so later answers extend
    assert dash.stop_callback in calls and len(answers) >= 2
    assert [a["series"]["loss"]["mode"] for a in answers[1:]] == ["extend"] * (len(answers) - 1)
    assert n_points == len([h for h in run.history if "loss" in h])  # the browser holds every point, once


def test_probe_verdicts_come_with_the_poll(colab: FakeColab, tmp_path: Path) -> None:
    rd = RunStore(tmp_path / "runs").create({}, "probes")
    rd.save(status="finished")
    setup_colab()
    dash = dashboard_for(rd)
    dash._on_event(Event("probe", rd.record.id, {"step": 6, "forgetting": {
        "verdict": "severe", "message": "Forgetting: severe. KL from base 9.1 nats/token.",
        "suggestion": "Lower the learning rate."}}))
    dash._on_event(Event("probe", rd.record.id, {"step": 6, "overfitting": {
        "status": "suspected", "message": "the eval loss rose twice", "suggestion": ""}}))
    probes = colab.invoke(dash.poll_callback, None)["probes"]
    assert probes["forgetting"] == "Forgetting: severe. KL from base 9.1 nats/token. Lower the learning rate."
    assert probes["overfitting"] == "suspected: the eval loss rose twice"


# --------------------------------------------------------------------------- sweeps
def wait_for_step(run: Any, step: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while (run.progress.get("step") or 0) < step and time.monotonic() < deadline and not run.done:
        time.sleep(0.05)
    assert (run.progress.get("step") or 0) >= step, (run.status, run.error)


def test_auto_picks_the_colab_sweep_view_after_setup(colab: FakeColab, tiny_model_dir: Path, tmp_path: Path) -> None:
    cfg = fast_config(tiny_model_dir, tmp_path / "runs", max_steps=1)
    sweep = start_sweep(cfg, {"training.learning_rate": [1e-4, 1e-3]}, name="pick </script> me")
    before = sweep_dashboard_for(sweep, "auto")  # widget or static, depending on the shell the tests left behind
    assert not isinstance(before, ColabSweepDashboard) and not colab.callbacks
    before.close()
    assert setup_colab() is True
    dash = sweep_dashboard_for(sweep, "auto")
    assert isinstance(dash, ColabSweepDashboard) and not dash.auto_flush  # nothing renders from the training thread
    assert set(colab.callbacks) == {dash.poll_callback, dash.stop_callback}
    assert dash.poll_callback.startswith("jupyter_ft.poll.") and dash.stop_callback.startswith("jupyter_ft.stop.")
    assert isinstance(sweep_dashboard_for(sweep, "colab"), ColabSweepDashboard)
    import os

    os.environ["JUPYTER_FT_DASHBOARD"] = "static"  # the environment variable still wins over the adapter
    try:
        assert isinstance(sweep_dashboard_for(sweep), StaticSweepDashboard)
    finally:
        del os.environ["JUPYTER_FT_DASHBOARD"]
    page = dash.html()
    assert f'"poll": "{dash.poll_callback}"' in page and f'"stop": "{dash.stop_callback}"' in page
    assert "google.colab.kernel.invokeFunction" in page and "Plotly.extendTraces" in page
    assert page.count("</script>") == 1 and "sweep pick &lt;/script&gt; me" in page
    config = json.loads(page.split("const cfg = ", 1)[1].split(";\n", 1)[0].replace("<\\/", "</"))
    assert config["traces"] == [[0, 1], [2, 3]] and len(config["figure"]["data"]) == 4
    assert [t["line"]["color"] for t in config["figure"]["data"][::2]] == [r.color for r in dash.state.runs]
    assert sweep.wait(120) == ["finished", "finished"], [r.error for r in sweep.runs]


def test_sweep_poll_sends_each_trials_new_points_and_the_best(colab: FakeColab, tiny_model_dir: Path,
                                                              tmp_path: Path) -> None:
    setup_colab()
    cfg = fast_config(tiny_model_dir, tmp_path / "runs", max_steps=4, eval_every=2, save_every=100)
    sweep = Sweep(plan_sweep(cfg, {"training.learning_rate": [1e-4, 3e-3]}, name="poll"))
    sweep.start()
    dash = sweep_dashboard_for(sweep)
    assert isinstance(dash, ColabSweepDashboard)
    answers = poll_until(colab, dash, lambda a: a["done"])
    last = answers[-1]
    assert last["done"] and last["status"] == "finished", [r.error for r in sweep.runs]
    assert [t["status"] for t in last["trials"]] == ["finished", "finished"]
    assert last["ended"] == last["total"] == 2 and last["fraction"] == 1.0
    assert last["can_stop"] is False and last["can_skip"] is False
    assert any(t["status"] == "running" and t["step"] for a in answers for t in a["trials"]), "never saw a trial train"
    # after the first answer every curve of every trial is sent incrementally; the copies add up to the history
    for a in answers[1:]:
        assert all(c["mode"] == "extend" for s in a["series"] for c in s.values()), a["series"]
    for i, run in enumerate(sweep.runs):
        x, y = rebuild(answers, "loss", trial=i)
        logged = [h for h in run.history if "loss" in h]
        assert x == [h["step"] for h in logged] and y == pytest.approx([h["loss"] for h in logged])
        assert sum(len(a["series"][i]["loss"]["x"]) for a in answers) == len(logged)  # no point sent twice
        ex, ey = rebuild(answers, "eval", trial=i)
        assert ex == [2, 4] and ey == pytest.approx([h["eval_loss"] for h in run.history if "eval_loss" in h])
    best = min(range(2), key=lambda i: sweep.runs[i].summary["best_eval_loss"])
    assert last["best"]["index"] == best and last["best"]["name"] == sweep.runs[best].name
    assert last["best"]["eval_loss"] == pytest.approx(sweep.runs[best].summary["best_eval_loss"])
    assert [t["best"] for t in last["trials"]] == [i == best for i in range(2)]
    assert "status" in last["columns"] and "learning_rate" in last["columns"]
    assert last["trials"][0]["cells"][last["columns"].index("step")] == "4/4"

    # new points of one trial come back alone; a rewind replaces that trial's curve only
    cursor = last["cursor"]
    dash._on_event(Event("log", sweep.runs[1].id, {"step": 5, "loss": 0.5}))
    new = colab.invoke(dash.poll_callback, cursor)
    assert new["series"][1]["loss"] == {"mode": "extend", "x": [5], "y": [0.5]}
    assert new["series"][0]["loss"] == {"mode": "extend", "x": [], "y": []}
    dash._on_event(Event("log", sweep.runs[0].id, {"step": 2, "loss": 9.0}))
    rewound = colab.invoke(dash.poll_callback, new["cursor"])
    assert rewound["series"][0]["loss"]["mode"] == "replace" and rewound["series"][0]["loss"]["x"] == [1, 2]
    assert rewound["series"][0]["loss"]["y"][-1] == 9.0
    assert rewound["series"][0]["eval"]["mode"] == "extend" and rewound["series"][1]["loss"]["mode"] == "extend"
    # a garbage cursor is "send everything", never an error
    garbage = colab.invoke(dash.poll_callback, ["not", "a", "cursor"])
    assert all(c["mode"] == "replace" for s in garbage["series"] for c in s.values())


def test_sweep_stop_callback_stops_the_trial_and_cancels_the_queued(colab: FakeColab, tiny_model_dir: Path,
                                                                   tmp_path: Path) -> None:
    setup_colab()
    root = tmp_path / "runs"
    cfg = fast_config(tiny_model_dir, root, max_steps=300, eval_every=1000, save_every=1000)
    sweep = start_sweep(cfg, {"training.learning_rate": [1e-4, 2e-4, 3e-4]}, name="cancel")
    dash = sweep_dashboard_for(sweep)
    first = sweep.runs[0]
    wait_for_step(first, 1)
    answers = poll_until(colab, dash, lambda a: (a["trials"][0]["step"] or 0) >= 1, timeout=60)
    assert answers[-1]["can_stop"] is True and answers[-1]["can_skip"] is True
    assert [t["status"] for t in answers[-1]["trials"]] == ["running", "queued", "queued"]
    stopped = colab.invoke(dash.stop_callback, True)  # what the page sends for "Stop sweep"
    assert stopped["stopping"] is True and stopped["cancelled"] == [1, 2]
    answers += poll_until(colab, dash, lambda a: a["done"], cursor=answers[-1]["cursor"])
    last = answers[-1]
    assert [t["status"] for t in last["trials"]] == ["stopped", "cancelled", "cancelled"]
    assert last["status"] == "stopped" and last["ended"] == 3 and last["can_stop"] is False
    assert [t["fraction"] for t in last["trials"][1:]] == [None, None]  # never started
    assert first.summary["global_step"] < 300 and first.run_dir.last_checkpoint() is not None
    for run in sweep.runs[1:]:
        record = RunStore(root).load(run.id)
        assert record.started_at is None and record.sweep["cancelled"] is True
    assert colab.invoke(dash.stop_callback, True) == {"status": "stopped", "stopping": False, "cancelled": []}


def test_sweep_poll_shows_a_failed_trials_error(colab: FakeColab, tiny_model_dir: Path, tmp_path: Path) -> None:
    setup_colab()
    good = tmp_path / "good.jsonl"
    good.write_text("".join(json.dumps(r) + "\n" for r in fast_config(tiny_model_dir, tmp_path)["data"]["source"]))
    cfg = fast_config(tiny_model_dir, tmp_path / "runs")
    sweep = start_sweep(cfg, {"data.source": [str(tmp_path / "missing.jsonl"), str(good)]}, name="fails")
    dash = sweep_dashboard_for(sweep)
    answers = poll_until(colab, dash, lambda a: a["done"], timeout=120)
    last = answers[-1]
    failed, ok = last["trials"]
    assert failed["status"] == "failed" and "missing.jsonl" in failed["error"], failed
    assert failed["status_color"] == SWEEP_STATUS_COLORS["failed"]
    assert ok["status"] == "finished" and ok["error"] is None  # the sweep went on with the next trial
    assert last["status"] == "failed" and last["best"]["index"] == 1


@pytest.mark.browser
@pytest.mark.timeout(300)
def test_sweep_view_in_a_real_browser_draws_trials_shows_errors_and_stops(colab: FakeColab, tiny_model_dir: Path,
                                                                          tmp_path: Path) -> None:
    """The sweep's HTML+JS view in headless Chromium, the kernel played as in the single-run browser test:
    two trials fail (their errors show), the third trains live (its curves grow, it is the best), Stop sweep
    stops it and cancels the fourth."""
    browser = chromium_or_skip()
    setup_colab()
    good = tmp_path / "good.jsonl"
    good.write_text("".join(json.dumps(r) + "\n" for r in fast_config(tiny_model_dir, tmp_path)["data"]["source"]))
    cfg = fast_config(tiny_model_dir, tmp_path / "runs", max_steps=2000, eval_every=5, save_every=1000)
    sweep = start_sweep(cfg, {"data.source": [str(tmp_path / "missing.jsonl"), str(good)],
                              "training.learning_rate": [1e-4, 2e-4]}, name="browser")
    dash = sweep_dashboard_for(sweep)
    assert isinstance(dash, ColabSweepDashboard)
    statuses = "() => Array.from(document.querySelectorAll('[data-role=\"trial-status\"]')).map(e => e.textContent)"
    with colab_page(colab, dash, browser, 900) as view:
        page, errors, calls, answers = view.page, view.errors, view.calls, view.answers
        plot = '[data-role="plot"]'
        # the third trial's train (trace 4) and eval (trace 5) curves grow while it trains
        view.wait_for_traces(4, 5, 150_000, "colab-sweep-dashboard-timeout.png",
                             f"trials: {[r.status for r in sweep.runs]}")
        assert page.evaluate(statuses) == ["failed", "failed", "running", "queued"]
        trial_errors = page.locator('[data-role="trial-error"]').all_inner_texts()
        assert len(trial_errors) == 2 and all("missing.jsonl" in e for e in trial_errors), trial_errors
        assert page.inner_text('[data-role="status"]') == "sweep running"
        assert page.inner_text('[data-role="best"]').startswith("\u2605 best: browser-3")
        assert page.evaluate(f"document.querySelector('{plot}').data[4].name").startswith("\u2605 ")
        assert page.evaluate(f"document.querySelector('{plot}').data[4].line.width") == 3.0
        assert "2/4 runs done" in page.inner_text('[data-role="progress"]')
        page.screenshot(path=str(ARTIFACTS / "colab-sweep-dashboard.png"))
        page.click('[data-role="stop"]')
        page.wait_for_function(
            "() => document.querySelector('[data-role=\"status\"]').textContent === 'sweep failed'", timeout=60_000)
        assert page.evaluate(statuses) == ["failed", "failed", "stopped", "cancelled"]
        assert sweep.wait(30) == ["failed", "failed", "stopped", "stopped"]
        expected = len([h for h in sweep.runs[2].history if "loss" in h])
        page.wait_for_function(f"document.querySelector('{plot}').data[4].x.length >= {expected}", timeout=30_000)
        page.wait_for_timeout(1500)  # a further poll must not add duplicates
        n_points = page.evaluate(f"document.querySelector('{plot}').data[4].x.length")
        assert page.evaluate("document.querySelector('[data-role=\"stop\"]').disabled") is True
        assert page.evaluate("document.querySelector('[data-role=\"skip\"]').disabled") is True
        assert not errors, errors
    assert dash.stop_callback in calls and len(answers) >= 2
    assert all(c["mode"] == "extend" for a in answers[1:] for s in a["series"] for c in s.values())
    assert n_points == expected  # the browser holds every point of the trial, once
    assert sweep.runs[2].run_dir.last_checkpoint() is not None and sweep.status_of(sweep.runs[3]) == "cancelled"


def test_a_run_trained_by_processes_of_its_own_polls_live_from_its_directory(colab: FakeColab,
                                                                            tmp_path: Path) -> None:
    """``compute.launcher: torchrun``: rank 0 (played here by this test, in another process's name) writes the
    run directory; the Colab view follows it through ``ProcessRun`` without any training in this kernel."""
    import os
    import socket
    import subprocess

    from jupyter_ft.engine import ProcessRun

    rank0 = subprocess.Popen(["sleep", "60"])  # a live pid for the record: the worker is alive
    try:
        rd = RunStore(tmp_path / "runs").create({"compute": {"launcher": "torchrun", "processes": 2}}, "launched")
        rd.save(status="running", pid=rank0.pid, hostname=socket.gethostname(), started_at="2026-12-02T00:00:00",
                launch={"launcher": "torchrun", "world_size": 2})
        rd.write_progress({"step": 1, "max_steps": 4, "elapsed": 1.0, "eta": 3.0})
        rd.log_metrics({"step": 1, "loss": 2.5, "learning_rate": 1e-3})
        setup_colab()
        dash = dashboard_for(rd.path)
        assert isinstance(dash, ColabDashboard) and isinstance(dash.run, ProcessRun)
        first = poll_until(colab, dash, lambda a: a["series"]["loss"]["x"] == [1], timeout=10)[-1]
        for step in (2, 3, 4):
            rd.log_metrics({"step": step, "loss": 2.5 - step / 10, "learning_rate": 1e-3})
        rd.write_progress({"step": 4, "max_steps": 4, "elapsed": 4.0, "eta": 0.0})
        rd.save(status="finished", finished_at="2026-12-02T00:00:05")
        answers = poll_until(colab, dash, lambda a: a["done"], timeout=20, cursor=first["cursor"])
        x, _ = rebuild([first] + answers, "loss")
        assert x == [1, 2, 3, 4] and answers[-1]["done"] and dash.run.done
        assert dash.state.status == "finished" and os.getpid() != rank0.pid
    finally:
        rank0.kill()
        rank0.wait()
