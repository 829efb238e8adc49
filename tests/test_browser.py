"""End to end in a real browser: JupyterLab (started here, on 127.0.0.1) driven by Playwright with the
system Chromium. A ``%%finetune`` cell on the tiny model must show the live dashboard, its loss curve must
grow and its status reach ``finished``; a second, long run is stopped with the dashboard's Stop button.

Needs the ``playwright`` Python package (``.[dev]``) and a ``chromium`` on PATH
(``scripts/install_browser.sh``); Playwright's own browser download is never used. Skipped when either is
missing. Screenshots, the page HTML, the browser console and the server log go to ``tests/artifacts/``.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

# Typically 60-90 s on 2 busy cores; every wait below is bounded, and this caps the whole (fixtures included).
pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

CHROMIUM = shutil.which("chromium")
if os.environ.get("CI") and CHROMIUM is None:  # CI installs it (make test -> scripts/install_browser.sh)
    raise RuntimeError("CI: no `chromium` on PATH; scripts/install_browser.sh should have installed it")
sync_api = pytest.importorskip("playwright.sync_api", reason="the browser test needs `pip install playwright`")
if CHROMIUM is None:
    pytest.skip("no `chromium` on PATH (run scripts/install_browser.sh)", allow_module_level=True)

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
NOTEBOOK = "test.ipynb"
# Flags for a headless Chromium in a container with a closed network: without the background-networking
# ones it tries to reach Google's services and the machine refuses the connections.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
OK_STEPS = 30

# Cell indexes in the notebook written below.
CELL_LOAD, CELL_OK, CELL_STOP = 0, 1, 2


# =========================================================================== the notebook and the server
def finetune_cell(name: str, model_dir: Path, root: Path, max_steps: int) -> str:
    return f"""%%finetune --name {name}
model:
  name: {model_dir}
data:
  source: demo:support_tickets
  max_length: 128
lora:
  r: 4
  alpha: 8
training:
  max_steps: {max_steps}
  batch_size: 4
  learning_rate: 1e-3
  logging_every: 1
  eval_every: 10
  save_every: 1000
output:
  root: {root}
"""


def write_notebook(path: Path, model_dir: Path, runs_root: Path) -> None:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nb.cells = [
        nbformat.v4.new_code_cell("%load_ext jupyter_ft"),
        nbformat.v4.new_code_cell(finetune_cell("browser-ok", model_dir, runs_root, OK_STEPS)),
        nbformat.v4.new_code_cell(finetune_cell("browser-stop", model_dir, runs_root, 2000)),
    ]
    nbformat.write(nb, str(path))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _api(url: str, method: str = "GET", timeout: float = 5.0) -> Any:
    req = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        body = resp.read()
    return json.loads(body) if body else None


def _descendants(pid: int) -> list[Any]:
    try:
        import psutil

        return psutil.Process(pid).children(recursive=True)
    except Exception:  # psutil missing or the process already gone
        return []


class LabServer:
    """``jupyter lab`` on 127.0.0.1 with its config, data, runtime and settings dirs under ``home``."""

    def __init__(self, home: Path, root_dir: Path, log_path: Path) -> None:
        self.port = free_port()
        self.token = secrets.token_hex(16)
        self.base = f"http://127.0.0.1:{self.port}"
        self.root_dir = root_dir
        self.log_path = log_path
        env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "JPY_"))}
        env.pop("JUPYTER_FT_DASHBOARD", None)  # the kernel must pick the widget dashboard itself
        dirs = {name: home / name for name in ("config", "data", "runtime", "ipython", "settings", "workspaces")}
        for d in dirs.values():
            d.mkdir(parents=True, exist_ok=True)
        # No "get Jupyter news?" toast and no update check: they would cover the notebook and go online.
        notif = dirs["settings"] / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
        notif.parent.mkdir(parents=True, exist_ok=True)
        notif.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
        env.update({
            "JUPYTER_CONFIG_DIR": str(dirs["config"]),
            "JUPYTER_DATA_DIR": str(dirs["data"]),
            "JUPYTER_RUNTIME_DIR": str(dirs["runtime"]),
            "JUPYTERLAB_SETTINGS_DIR": str(dirs["settings"]),
            "JUPYTERLAB_WORKSPACES_DIR": str(dirs["workspaces"]),
            "IPYTHONDIR": str(dirs["ipython"]),
            "JUPYTER_FT_CACHE": os.environ.get("JUPYTER_FT_CACHE", str(home / "ft-cache")),
            "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "PYTHONUNBUFFERED": "1",
        })
        cmd = [
            sys.executable, "-m", "jupyter", "lab", "--no-browser",
            f"--port={self.port}", "--port-retries=0",
            "--ServerApp.ip=127.0.0.1",
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={root_dir}",
            "--ServerApp.open_browser=False",
            "--ServerApp.terminals_enabled=False",
            # Nothing that goes online: no update check, no PyPI-backed extension manager.
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--LabApp.extension_manager=readonly",
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            cmd.append("--allow-root")  # CI containers run as root
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(cmd, cwd=root_dir, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)

    def url(self, path: str) -> str:
        sep = "&" if "?" in path else "?"
        return f"{self.base}{path}{sep}token={self.token}"

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                _api(self.url("/api/status"), timeout=3)
                return
            except (urllib.error.URLError, OSError, ValueError):
                time.sleep(0.5)
        raise RuntimeError(f"jupyter lab did not answer /api/status within {timeout:.0f}s:\n{self.log_tail()}")

    def stop(self) -> None:
        """Shut the server and its kernels down; bounded, escalating to SIGKILL. Kernels run in their own
        sessions (jupyter_client starts them so), so they are collected before the server goes."""
        procs = _descendants(self.proc.pid)
        if self.proc.poll() is None:
            try:
                _api(self.url("/api/shutdown"), method="POST", timeout=10)
            except Exception:
                pass
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                pass
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        for p in procs:  # anything the server left behind (a kernel that ignored the shutdown)
            try:
                if p.is_running():
                    p.kill()
            except Exception:
                pass
        self._log.close()


# =========================================================================== fixtures
@pytest.fixture(scope="module")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    for old in ARTIFACTS.glob("browser-*"):  # no stale picture from an earlier run
        old.unlink()
    return ARTIFACTS


@contextlib.contextmanager
def running_lab(home: Path, root_dir: Path, log_path: Path) -> Iterator[LabServer]:
    """A JupyterLab on localhost serving ``root_dir``, ready; stopped with its kernels afterwards."""
    server = LabServer(home, root_dir, log_path)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def lab_page(lab: LabServer, console_log: Path, viewport: dict[str, int], *,
             clipboard: bool = False) -> Iterator[Any]:
    """A page of headless Chromium that never leaves 127.0.0.1; its console and page errors, and any request
    that tried to leave the machine (none so far: listed, not failed on), go to ``console_log``."""
    console: list[str] = []
    blocked: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS, timeout=60_000)
        try:
            context = browser.new_context(viewport=viewport)
            context.set_default_timeout(30_000)
            if clipboard:
                try:
                    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=lab.base)
                except Exception:  # older Chromium: the copy is refused, a new cell is still written
                    pass

            def only_localhost(route: Any) -> None:
                url = route.request.url
                if url.startswith(("http://127.0.0.1:", "ws://127.0.0.1:", "data:", "blob:")):
                    route.continue_()
                else:
                    blocked.append(url)
                    route.abort()

            context.route("**/*", only_localhost)
            pg = context.new_page()
            pg.on("console", lambda m: console.append(f"[{m.type}] {m.text}"))
            pg.on("pageerror", lambda e: console.append(f"[pageerror] {e}"))
            yield pg
        finally:
            console_log.write_text("\n".join(console + [f"[blocked] {u}" for u in blocked]) + "\n")
            browser.close()


@pytest.fixture(scope="module")
def lab(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory, artifacts: Path):
    home = tmp_path_factory.mktemp("lab-home")
    root_dir = tmp_path_factory.mktemp("lab-root")
    write_notebook(root_dir / NOTEBOOK, tiny_model_dir, home / "ft_runs")
    with running_lab(home, root_dir, artifacts / "browser-jupyter-server.log") as server:
        yield server


@pytest.fixture()
def page(lab: LabServer, artifacts: Path):
    with lab_page(lab, artifacts / "browser-console.log", {"width": 1280, "height": 1000}) as pg:
        yield pg
        if os.environ.get("JUPYTER_FT_BROWSER_DEBUG"):
            _dump(pg, artifacts / "browser-debug")


def _dump(page: Any, stem: Path) -> None:
    try:
        page.screenshot(path=f"{stem}.png", full_page=True, timeout=15_000)
    except Exception:
        pass
    try:
        Path(f"{stem}.html").write_text(page.content())
    except Exception:
        pass


# =========================================================================== reading the page
# One snapshot of a cell's dashboard: the plot's traces (as plotly.js holds them: ``gd.data``), the status
# badge, the progress label, the Stop button. The badge and the label are the first two HTML widgets of the
# header row (WidgetDashboard: VBox([HBox([status_badge, progress_bar, progress_label, stop_button]), ...])).
DASHBOARD_JS = """
(idx) => {
  const cells = document.querySelectorAll('.jp-Notebook .jp-Cell');
  const cell = cells[idx];
  if (!cell) return {found: false};
  const out = cell.querySelector('.jp-OutputArea');
  const text = out ? out.innerText : '';
  const gd = out ? out.querySelector('.js-plotly-plot') : null;
  // The dashboard is the output that holds the plot (a tqdm bar from the training thread is an HBox too).
  const dash = gd ? gd.closest('.jp-OutputArea-output') : null;
  const header = dash ? dash.querySelector('.widget-hbox') : null;
  const htmls = header ? [...header.querySelectorAll('.widget-html-content')] : [];
  const button = header ? header.querySelector('button') : null;
  const traces = gd && gd.data ? gd.data.map(t => ({name: t.name || '', n: t.x ? t.x.length : 0})) : null;
  return {
    found: true,
    plot: !!gd,
    traces: traces,
    status: htmls.length ? htmls[0].innerText.trim() : null,
    progress: htmls.length > 1 ? htmls[1].innerText.trim() : null,
    button: button ? {text: button.innerText.trim(), disabled: button.disabled} : null,
    errors: out ? [...out.querySelectorAll('[data-mime-type="application/vnd.jupyter.stderr"]')]
                    .map(e => e.innerText).join('\\n').slice(-4000) : '',
    text: text.slice(-3000),
  };
}
"""


def output(page: Any, idx: int) -> Any:
    return page.locator(".jp-Notebook .jp-Cell").nth(idx).locator(".jp-OutputArea")


def snapshot(page: Any, idx: int) -> dict[str, Any]:
    return page.evaluate(DASHBOARD_JS, idx)


def points(snap: dict[str, Any], trace: str = "train loss") -> int:
    for t in snap.get("traces") or []:
        if t["name"] == trace:
            return t["n"]
    return 0


def poll(page: Any, idx: int, done: Callable[[dict[str, Any]], bool], timeout: float, what: str,
         seen: list[dict[str, Any]] | None = None, interval: float = 0.25) -> dict[str, Any]:
    """Snapshot cell ``idx`` until ``done(snapshot)``; fails with the last snapshot after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    snap: dict[str, Any] = {}
    while True:
        snap = snapshot(page, idx)
        if seen is not None:
            seen.append({k: snap.get(k) for k in ("status", "progress", "traces")})
        if done(snap):
            return snap
        if "Failed to load model class" in snap.get("text", "") or "Error displaying widget" in snap.get("text", ""):
            pytest.fail(f"the dashboard widget did not render in the browser: {snap.get('text')}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}; last state of cell {idx}:\n"
                        f"{json.dumps(snap, indent=1)[:6000]}")
        page.wait_for_timeout(interval * 1000)


# The kernel is ready when the status bar names it and says Idle. (The notebook's execution indicator says
# "idle" already while the status bar still reads "No Kernel | Initializing": keys pressed then are lost.)
KERNEL_IDLE_JS = """() => {
  const bar = document.querySelector('#jp-main-statusbar');
  const text = bar ? bar.innerText : '';
  return text.includes('Python 3') && /\\bIdle\\b/.test(text) && !text.includes('No Kernel');
}"""


def wait_kernel_idle(page: Any, timeout: float) -> None:
    page.wait_for_function(KERNEL_IDLE_JS, timeout=timeout * 1000, polling=250)


def prompt(page: Any, idx: int) -> str:
    return page.locator(".jp-Notebook .jp-Cell").nth(idx).locator(".jp-InputPrompt").inner_text().strip()


def run_cell(page: Any, idx: int, attempts: int = 2) -> None:
    """Click into cell ``idx`` and run it with Shift+Enter, as a user would; checks that the kernel took it
    (the prompt turns from ``[ ]:`` into ``[*]:`` or ``[n]:``)."""
    cell = page.locator(".jp-Notebook .jp-Cell").nth(idx)
    for attempt in range(attempts):
        cell.locator(".jp-InputArea-editor").click()
        page.keyboard.press("Shift+Enter")
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if prompt(page, idx) not in ("[ ]:", ""):
                return
            page.wait_for_timeout(200)
        print(f"cell {idx} did not start after Shift+Enter (attempt {attempt + 1}); prompt {prompt(page, idx)!r}")
    pytest.fail(f"cell {idx} did not run after {attempts} Shift+Enter presses")


# =========================================================================== the test
def test_dashboard_in_a_real_browser(page: Any, lab: LabServer, artifacts: Path) -> None:
    try:
        _drive(page, lab, artifacts)
    except BaseException:
        _dump(page, artifacts / "browser-failure")  # a full-page picture and the HTML, to see why
        raise


def _drive(page: Any, lab: LabServer, artifacts: Path) -> None:
    t0 = time.monotonic()
    page.goto(lab.url(f"/lab/tree/{NOTEBOOK}"), wait_until="domcontentloaded", timeout=90_000)
    page.locator(".jp-Notebook .jp-Cell").nth(CELL_STOP).wait_for(state="visible", timeout=120_000)
    wait_kernel_idle(page, 120)
    print(f"lab + kernel ready in {time.monotonic() - t0:.1f}s")

    # ---- run 1: %load_ext, then a 30-step run that must finish with its curve drawn
    run_cell(page, CELL_LOAD)
    run_cell(page, CELL_OK)
    seen: list[dict[str, Any]] = []
    snap = poll(page, CELL_OK, lambda s: s.get("plot") and s.get("status") is not None, 120,
                "the dashboard (plot and status badge) under the first %%finetune cell", seen)
    first_points = points(snap)
    snap = poll(page, CELL_OK, lambda s: s.get("status") in ("finished", "failed", "stopped", "interrupted"),
                180, "the first run to end", seen)
    assert snap["status"] == "finished", f"first run ended {snap['status']!r}:\n{snap['text']}"
    # The last points reach plotly.js a moment after the status (separate comm messages).
    snap = poll(page, CELL_OK, lambda s: points(s) >= OK_STEPS, 30, f"{OK_STEPS} train-loss points")
    counts = [points(s) for s in seen if s.get("traces")]
    assert points(snap) == OK_STEPS, snap["traces"]
    assert points(snap, "eval loss") >= 2, snap["traces"]
    assert points(snap, "learning rate") == OK_STEPS, snap["traces"]
    assert first_points < OK_STEPS and len(set(counts)) >= 2, (
        f"the plot never showed the curve growing (train-loss point counts seen: {sorted(set(counts))})")
    assert f"step {OK_STEPS}/{OK_STEPS}" in (snap["progress"] or ""), snap["progress"]
    snap = poll(page, CELL_OK, lambda s: bool(s.get("button") and s["button"]["disabled"]), 30,
                "the Stop button to be disabled once finished")
    assert snap["button"] and snap["button"]["disabled"], f"Stop should be disabled once finished: {snap['button']}"
    assert "Traceback" not in snap["text"], snap["text"]
    page.wait_for_timeout(500)  # let plotly finish its last redraw before the picture
    # Only the dashboard, not the warnings the training thread printed below it.
    dashboard = output(page, CELL_OK).locator(".jp-OutputArea-child", has=page.locator(".js-plotly-plot"))
    dashboard.scroll_into_view_if_needed()
    dashboard.screenshot(path=str(artifacts / "browser-dashboard.png"))
    page.screenshot(path=str(artifacts / "browser-finished.png"))
    print(f"run 1 finished at {time.monotonic() - t0:.1f}s; point counts seen {sorted(set(counts))}")

    # ---- run 2: a 2000-step run, stopped from its dashboard's Stop button once it trains
    run_cell(page, CELL_STOP)
    snap = poll(page, CELL_STOP, lambda s: s.get("status") == "running" and points(s) >= 1, 150,
                "the second run to train at least one step")
    before = points(snap)
    snap = poll(page, CELL_STOP, lambda s: points(s) > before, 60, "the second run's curve to grow")
    assert snap["button"] == {"text": "Stop", "disabled": False}, snap["button"]
    # A CSS locator, scrolled to: get_by_role("button", name="Stop") did not find the button while the cell's
    # top was scrolled out of view (JupyterLab's windowed notebook), and timed out.
    stop = output(page, CELL_STOP).locator("button.widget-button", has_text="Stop")
    stop.scroll_into_view_if_needed()
    stop.click()
    snap = poll(page, CELL_STOP, lambda s: s.get("status") in ("stopped", "finished", "failed", "interrupted"),
                90, "the second run to stop")
    assert snap["status"] == "stopped", f"second run ended {snap['status']!r}:\n{snap['text']}"
    steps = points(snap)
    assert 1 <= steps < 2000, snap["traces"]
    assert snap["button"] and snap["button"]["disabled"], snap["button"]
    page.screenshot(path=str(artifacts / "browser-stopped.png"))
    print(f"run 2 stopped after {steps} steps at {time.monotonic() - t0:.1f}s")
