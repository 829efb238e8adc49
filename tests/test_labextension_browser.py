"""The JupyterLab extension in a real browser: JupyterLab (started here, on 127.0.0.1, with the extension
as installed in this venv) driven by Playwright with the system Chromium.

One lab, one notebook, one pass (the steps depend on each other and a lab start is the expensive part):

* runs written by the real store before the lab starts are listed in the "Fine-tuning runs" sidebar with
  their status badge, best eval loss and probe verdicts;
* the ``%%finetune`` cells are highlighted as YAML (CodeMirror's ``tok-*`` classes of the YAML tokens; the
  Python cell next to them is not), and an unknown config key is underlined with a "did you mean" hint;
* a ``%%finetune`` run on the tiny model appears as ``running``, the status bar shows its progress and
  ETA, its panel draws the loss curve, and the panel's Stop stops it (server -> stop file -> callback);
* the form's "Copy as %%finetune" button writes a new cell below the form.

Screenshots go to ``tests/artifacts/labext-*.png`` and ``docs/labextension.png`` (the README's picture).
Skipped like tests/test_browser.py when Playwright or Chromium is missing, and when the extension is not
installed (``make install`` builds and links it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from jupyter_ft.store import RunStore, append_jsonl

pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]

# The server, the Chromium flags and the notebook helpers are tests/test_browser.py's (importing it also
# applies its skips: no playwright, no chromium).
from tests.test_browser import (  # noqa: E402
    LabServer,
    _dump,
    lab_page,
    running_lab,
    finetune_cell,
    run_cell,
    wait_kernel_idle,
)


REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
DOCS_SHOT = REPO / "docs" / "labextension.png"
NOTEBOOK = "labext.ipynb"
CELL_LOAD, CELL_TRAIN, CELL_FORM, CELL_TYPO = 0, 1, 2, 3
TYPO_CELL = """%%finetune --dry-run
training:
  learning_rat: 1e-3
  max_steps: 5
"""


def _extension_installed() -> bool:
    jupyter = Path(sys.executable).with_name("jupyter")
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTER_")}
    env["PATH"] = f"{jupyter.parent}{os.pathsep}{env.get('PATH', '')}"
    out = subprocess.run([str(jupyter), "labextension", "list"], capture_output=True, text=True, timeout=120,
                         env=env)
    text = (out.stdout + out.stderr).replace("\x1b[32m", "").replace("\x1b[0m", "")
    return any("jupyter-ft" in line and "enabled" in line and "OK" in line for line in text.splitlines())


@pytest.fixture(scope="module")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    for old in ARTIFACTS.glob("labext-*"):
        old.unlink()
    return ARTIFACTS


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The lab's root directory with two runs already in ./ft_runs (the server's default root)."""
    root_dir = tmp_path_factory.mktemp("labext-root")
    store = RunStore(root_dir / "ft_runs")
    done = store.create({"model": {"name": "tiny-llama"}, "training": {"max_steps": 40}}, name="seeded-finished")
    done.save(status="finished", started_at="2026-01-05T14:02:00+00:00", finished_at="2026-01-05T14:10:00+00:00",
              summary={"best_eval_loss": 1.2345, "best_eval_step": 30,
                       "probes": {"overfitting": "suspected", "forgetting": "none"}})
    for step in range(1, 41):
        done.log_metrics({"step": step, "loss": 3.0 / (1 + step / 10)})
        if step % 10 == 0:
            done.log_metrics({"step": step, "eval_loss": 1.2345 + abs(step - 30) / 100})
    (done.path / "progress.json").write_text(json.dumps({"step": 40, "max_steps": 40, "eta": 0.0}))
    failed = store.create({"model": {"name": "tiny-llama"}}, name="seeded-failed")
    failed.save(status="failed", error="ValueError: data.source: no such file 'nope.jsonl'")
    append_jsonl(failed.path / "metrics.jsonl", {"step": 1, "loss": 9.0})
    return {"root_dir": root_dir, "finished": done.record.id, "failed": failed.record.id}


@pytest.fixture(scope="module")
def lab(seeded: dict[str, Any], tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory, artifacts: Path):
    if not _extension_installed():
        if os.environ.get("CI"):  # make test builds and links it: missing there is a failure, not a skip
            raise RuntimeError("CI: the jupyter-ft lab extension is not installed (make labextension)")
        pytest.skip("the jupyter-ft lab extension is not installed in this venv (make install builds it)")
    import nbformat

    root_dir: Path = seeded["root_dir"]
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nb.cells = [
        nbformat.v4.new_code_cell("%load_ext jupyter_ft"),
        # no forgetting probe: its baseline at the first step costs seconds this test does not need
        nbformat.v4.new_code_cell(finetune_cell("lab-live", tiny_model_dir, root_dir / "ft_runs", 5000)
                                  + "probes:\n  forgetting: false\n"),
        nbformat.v4.new_code_cell("%ft_form"),
        nbformat.v4.new_code_cell(TYPO_CELL),
    ]
    nbformat.write(nb, str(root_dir / NOTEBOOK))
    with running_lab(tmp_path_factory.mktemp("labext-home"), root_dir,
                     artifacts / "labext-jupyter-server.log") as server:
        yield server


@pytest.fixture()
def page(lab: LabServer, artifacts: Path):
    with lab_page(lab, artifacts / "labext-console.log", {"width": 1400, "height": 900}, clipboard=True) as pg:
        yield pg


# --------------------------------------------------------------------------- reading the page
def sidebar_rows(page: Any) -> dict[str, dict[str, Any]]:
    return page.evaluate("""() => Object.fromEntries([...document.querySelectorAll('#jupyter-ft-runs .jft-run')]
      .map(r => [r.querySelector('.jft-run-name').innerText, {
        id: r.dataset.runId, status: r.dataset.status,
        badge: r.querySelector('.jft-badge').innerText,
        badgeClass: r.querySelector('.jft-badge').className,
        text: r.innerText}]))""")


def wait_for(page: Any, what: str, fn: Any, timeout: float, interval: float = 0.3) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        page.wait_for_timeout(interval * 1000)
    try:  # what the server says now, to tell a stale page from a stale run directory
        server = page.evaluate("""async () => {
          const base = location.href.replace(/\\/lab\\/.*$/, '/');
          const token = new URLSearchParams(location.search).get('token');
          const r = await fetch(base + 'jupyter-ft/api/runs?token=' + token);
          return (await r.text()).slice(0, 3000); }""")
    except Exception as exc:  # noqa: BLE001
        server = f"(could not ask the server: {exc})"
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}\nserver: {server}")


def cell_editor(page: Any, idx: int) -> Any:
    return page.locator(".jp-Notebook .jp-Cell").nth(idx).locator(".cm-editor")


# --------------------------------------------------------------------------- the test
def test_lab_extension_in_a_real_browser(page: Any, lab: LabServer, seeded: dict[str, Any], artifacts: Path) -> None:
    try:
        _drive(page, lab, seeded, artifacts)
    except BaseException:
        _dump(page, artifacts / "labext-failure")
        raise


def _drive(page: Any, lab: LabServer, seeded: dict[str, Any], artifacts: Path) -> None:
    t0 = time.monotonic()
    page.goto(lab.url(f"/lab/tree/{NOTEBOOK}"), wait_until="domcontentloaded", timeout=90_000)
    page.locator(".jp-Notebook .jp-Cell").nth(CELL_TYPO).wait_for(state="visible", timeout=120_000)
    wait_kernel_idle(page, 120)
    print(f"lab + kernel ready in {time.monotonic() - t0:.1f}s")

    # ---- %%finetune cells are YAML: keys are YAML atoms (tok-atom), the magic cell gets the class
    train_editor = cell_editor(page, CELL_TRAIN)
    train_editor.locator(".tok-atom", has_text="training").first.wait_for(timeout=30_000)
    atoms = train_editor.locator(".tok-atom").all_inner_texts()
    assert {"model", "data", "training", "max_steps", "learning_rate"} <= {a.strip() for a in atoms}, atoms
    assert "jft-finetune-cell" in (train_editor.get_attribute("class") or "")
    load_editor = cell_editor(page, CELL_LOAD)
    assert "jft-finetune-cell" not in (load_editor.get_attribute("class") or "")
    assert load_editor.locator(".tok-atom").count() == 0  # a Python cell keeps its language
    # an unknown key is underlined with a hint naming the right one
    typo = cell_editor(page, CELL_TYPO).locator(".jft-unknown-key")
    typo.wait_for(timeout=30_000)
    assert typo.inner_text() == "learning_rat"
    assert "Did you mean 'learning_rate'?" in (typo.get_attribute("title") or "")
    assert cell_editor(page, CELL_TYPO).locator(".jft-unknown-key").count() == 1  # max_steps is fine

    # ---- the palette's command opens the sidebar, which lists the seeded runs with their facts
    page.locator(".jp-Notebook").first.click()  # focus in the lab (command mode), not in an editor
    page.keyboard.press("Escape")
    page.keyboard.press("Control+Shift+C")
    page.locator(".lm-CommandPalette-input").fill("Fine-tuning")
    items = page.locator(".lm-CommandPalette-item")
    items.first.wait_for(timeout=15_000)
    labels = [t.strip() for t in items.all_inner_texts()]
    assert any("Fine-tuning: Open Runs Panel" in t for t in labels), labels
    assert any("Fine-tuning: Stop Active Run" in t for t in labels), labels
    items.filter(has_text="Fine-tuning: Open Runs Panel").first.click()
    page.locator("#jupyter-ft-runs").wait_for(state="visible", timeout=15_000)
    rows = wait_for(page, "the seeded runs in the sidebar",
                    lambda: (r := sidebar_rows(page)) and {"seeded-finished", "seeded-failed"} <= set(r) and r, 30)
    done, failed = rows["seeded-finished"], rows["seeded-failed"]
    assert done["status"] == "finished" and done["badge"] == "finished" and "jft-badge-ok" in done["badgeClass"]
    assert "best eval loss 1.23" in done["text"] and "step 40/40 (100%)" in done["text"]
    assert "overfitting: suspected" in done["text"] and "forgetting: none" in done["text"]
    assert failed["badge"] == "failed" and "jft-badge-error" in failed["badgeClass"]
    assert "no such file 'nope.jsonl'" in failed["text"]

    # ---- a live run: running in the sidebar, progress and ETA in the status bar
    run_cell(page, CELL_LOAD)
    run_cell(page, CELL_TRAIN)
    live = wait_for(page, "the live run to be listed as running with progress",
                    lambda: (r := sidebar_rows(page).get("lab-live")) and r["status"] == "running"
                    and "step " in r["text"] and r, 120)
    assert live["badge"] == "running" and "jft-badge-active" in live["badgeClass"]
    status_item = page.locator(".jft-statusbar")
    text = wait_for(page, "the status bar to show the run's progress and ETA",
                    lambda: (t := status_item.inner_text()) and "lab-live: step" in t and "/5000" in t
                    and "ETA" in t and "ETA —" not in t and t, 60)
    print(f"status bar: {text!r} at {time.monotonic() - t0:.1f}s")

    # ---- its panel: loss curve drawn, then Stop from the lab
    page.locator(f'#jupyter-ft-runs .jft-run[data-run-id="{live["id"]}"]').click()
    panel = page.locator(f'.jft-run-panel[data-run-id="{live["id"]}"]')
    panel.wait_for(timeout=30_000)
    wait_for(page, "the train loss curve in the run panel",
             lambda: (d := panel.locator("path.jft-series-train").first.get_attribute("d") if
                      panel.locator("path.jft-series-train").count() else None) and d.count("L") >= 3, 60)
    assert "learning_rate: 0.001" in panel.locator(".jft-config").inner_text()
    page.wait_for_timeout(300)
    page.screenshot(path=str(artifacts / "labext-running.png"))
    DOCS_SHOT.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(DOCS_SHOT))
    page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab", has_text=NOTEBOOK).click()
    panel.wait_for(state="hidden", timeout=10_000)
    status_item.click()  # the status bar item opens the active run's panel
    panel.wait_for(state="visible", timeout=10_000)
    panel.locator("button.jft-stop").click()
    wait_for(page, "the live run to stop after the lab's Stop",
             lambda: (r := sidebar_rows(page).get("lab-live")) and r["status"] == "stopped", 90)
    stopped = RunStore(seeded["root_dir"] / "ft_runs").load(live["id"])
    assert stopped.status == "stopped" and 1 <= stopped.summary["global_step"] < 5000
    wait_for(page, "the status bar item to go once no run is active", lambda: not status_item.is_visible(), 30)
    print(f"stopped at step {stopped.summary['global_step']} at {time.monotonic() - t0:.1f}s")

    # ---- the form's "Copy as %%finetune" writes a new cell below the form
    page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab", has_text=NOTEBOOK).click()  # back from the run panel
    cells_before = page.locator(".jp-Notebook .jp-Cell").count()
    run_cell(page, CELL_FORM)
    copy = page.locator(".jp-Notebook .jp-Cell").nth(CELL_FORM).locator("button.jft-copy")
    copy.wait_for(timeout=60_000)
    wait_for(page, "the Copy button to be enabled (a valid form)", lambda: copy.is_enabled(), 30)
    copy.scroll_into_view_if_needed()
    copy.click()
    wait_for(page, "a new cell", lambda: page.locator(".jp-Notebook .jp-Cell").count() == cells_before + 1, 15)
    new_editor = cell_editor(page, CELL_FORM + 1)
    new_text = new_editor.locator(".cm-content").inner_text()
    assert new_text.startswith("%%finetune"), new_text
    assert "learning_rate" in new_text and "model:" in new_text
    wait_for(page, "the new cell to be highlighted as YAML",
             lambda: "jft-finetune-cell" in (new_editor.get_attribute("class") or ""), 15)
    assert cell_editor(page, CELL_FORM + 2).locator(".cm-content").inner_text().startswith("%%finetune --dry-run")
    status = page.locator(".jp-Notebook .jp-Cell").nth(CELL_FORM).locator(".jp-OutputArea").inner_text()
    wait_for(page, "the form to say the cell was written",
             lambda: "Wrote the %%finetune cell below" in
             page.locator(".jp-Notebook .jp-Cell").nth(CELL_FORM).locator(".jp-OutputArea").inner_text(), 15)
    page.screenshot(path=str(artifacts / "labext-form-cell.png"))
    print(f"done in {time.monotonic() - t0:.1f}s ({len(status)} chars of form output)")
