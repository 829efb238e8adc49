"""Notebooks executed in a real kernel: the quickstart end to end, and kernel behaviour while training."""

from __future__ import annotations

import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[1]


def execute(nb: nbformat.NotebookNode, cwd: Path, timeout: int = 600) -> nbformat.NotebookNode:
    NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}).execute()
    return nb


def text_of(cell: nbformat.NotebookNode) -> str:
    parts = []
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream":
            parts.append(out["text"])
        elif "data" in out:
            parts.append(str(out["data"].get("text/plain", "")))
    return "".join(parts)


def test_thread_output_is_tagged_with_the_launching_cell_and_kernel_stays_responsive(tiny_model_dir: Path,
                                                                                     tmp_path: Path) -> None:
    """Prints from the training thread carry the launching cell's parent header (so a frontend never shows
    them under whatever cell runs later), and other cells execute promptly while the run trains."""
    from jupyter_client.manager import start_new_kernel

    body = (f"model:\n  name: {tiny_model_dir}\ndata:\n  max_length: 128\n"
            "training:\n  max_steps: 80\n  batch_size: 4\n  logging_every: 5\n  eval_every: 1000\n"
            f"  save_every: 1000\noutput:\n  root: {tmp_path / 'runs'}\n")
    km, kc = start_new_kernel(kernel_name="python3", cwd=str(tmp_path))
    try:
        def run(code: str, timeout: float = 120) -> tuple[str, list[dict]]:
            msg_id = kc.execute(code)
            kc.get_shell_msg(timeout=timeout)
            return msg_id, []

        run("%load_ext jupyter_ft")
        launch_id, _ = run("%%finetune --out run\n" + body)
        subscribe_id, _ = run("run.subscribe(lambda e: print('LOG', e.data['step']) if e.kind == 'log' else None)")
        t0 = time.perf_counter()
        other_id, _ = run("x = sum(range(1000)); print('OTHER', run.status)")
        other_seconds = time.perf_counter() - t0
        wait_id, _ = run("print(run.wait(300))", timeout=300)
        streams: dict[str, str] = {}
        while True:
            try:
                msg = kc.get_iopub_msg(timeout=2)
            except Exception:  # queue.Empty: nothing more
                break
            if msg["msg_type"] == "stream":
                parent = msg["parent_header"].get("msg_id")
                streams[parent] = streams.get(parent, "") + msg["content"]["text"]
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    assert "OTHER running" in streams.get(other_id, "")
    assert "finished" in streams.get(wait_id, "")
    assert "LOG" in streams.get(launch_id, "")
    for cell in (subscribe_id, other_id, wait_id):
        assert "LOG" not in streams.get(cell, "")
    assert other_seconds < 30  # generous: the point is "not blocked until training ends"


@pytest.mark.slow
def test_quickstart_notebook_executes_on_cpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JUPYTER_FT_MAX_STEPS", "4")  # CPU-sized; `make demo` trains the full epoch
    nb = nbformat.read(REPO / "examples" / "01_quickstart.ipynb", as_version=4)
    execute(nb, tmp_path, timeout=900)
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    compare = next(c for c in nb.cells if c.cell_type == "code" and "ft_eval" in c.source)
    assert "exact_match" in text_of(compare)
    dry = next(c for c in nb.cells if c.cell_type == "code" and "--dry-run" in c.source)
    assert "detected format 'alpaca'" in text_of(dry)
    assert len(list((tmp_path / "ft_runs").iterdir())) == 1


# --------------------------------------------------------------------------- the workshop and the Colab notebook
def read_example(name: str) -> nbformat.NotebookNode:
    return nbformat.read(REPO / "examples" / name, as_version=4)


def errors_of(nb: nbformat.NotebookNode) -> list[str]:
    return [f"{o['ename']}: {o['evalue']}" for c in nb.cells for o in c.get("outputs", [])
            if o.get("output_type") == "error"]


def cell_with(nb: nbformat.NotebookNode, text: str) -> nbformat.NotebookNode:
    return next(c for c in nb.cells if c.cell_type == "code" and text in c.source)


def test_colab_notebook_is_ready_for_colab() -> None:
    nb = read_example("03_colab_gpu.ipynb")
    intro = nb.cells[0].source
    assert ("https://colab.research.google.com/github/jupyter-ft/jupyter-ft/blob/main/examples/03_colab_gpu.ipynb"
            in intro and "colab-badge.svg" in intro)
    assert "estimates" in intro and "GiB" in intro  # expected time and memory, said to be estimates
    install = cell_with(nb, "pip install")
    assert install.source.startswith("import sys") and "if 'google.colab' in sys.modules:" in install.source
    params = cell_with(nb, "MODEL = ")
    assert "parameters" in params.metadata.get("tags", []) and "SmolLM2-1.7B-Instruct" in params.source
    assert nb.metadata["accelerator"] == "GPU"


def test_workshop_compares_its_runs_and_shows_a_sweep_cell() -> None:
    nb = read_example("02_workshop.ipynb")
    compare = cell_with(nb, "%ft_compare")
    assert all(name in compare.source for name in ("lr-too-high", "lr-sane", "lr-sane-2ep-early-stop"))
    sweep = cell_with(nb, "sweep:")
    assert sweep.source.startswith("%%finetune --dry-run") and "training.learning_rate: [3e-3, 3e-4, 3e-5]" in sweep.source


@pytest.mark.slow
def test_workshop_notebook_executes_on_cpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The lesson with every run capped at 4 steps and 8 evaluation rows (about 2 minutes on 2 idle cores)."""
    monkeypatch.setenv("JUPYTER_FT_MAX_STEPS", "4")
    nb = read_example("02_workshop.ipynb")
    execute(nb, tmp_path, timeout=900)
    assert not errors_of(nb)
    runs = sorted(p.name.split("-", 2)[2].rsplit("-", 1)[0] for p in (tmp_path / "ft_runs").iterdir())
    assert runs == ["lr-sane", "lr-sane-2ep-early-stop", "lr-too-high"]
    assert "detected format 'alpaca'" in text_of(cell_with(nb, "--dry-run"))
    assert "capped at 4 here" in text_of(cell_with(nb, "steps_per_epoch ="))
    assert "exact_match" in text_of(cell_with(nb, "%ft_eval lr-sane"))
    assert "forgetting:" in text_of(cell_with(nb, "hot.wait()"))
    table = text_of(cell_with(nb, "%ft_runs"))
    assert all(name in table for name in runs)
    compared = text_of(cell_with(nb, "%ft_compare"))
    assert "3 run(s) ranked by best_eval_loss" in compared and "training.learning_rate" in compared
    planned = text_of(cell_with(nb, "sweep:"))
    assert "3 run(s) (grid)" in planned and "nothing launched" in planned


@pytest.mark.slow
def test_colab_notebook_executes_with_the_cpu_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The T4 notebook with JUPYTER_FT_SMOKE=1: the offline 135M model, 3 steps, 4 evaluation rows."""
    monkeypatch.setenv("JUPYTER_FT_SMOKE", "1")
    monkeypatch.setenv("JUPYTER_FT_MAX_STEPS", "3")
    nb = read_example("03_colab_gpu.ipynb")
    execute(nb, tmp_path, timeout=900)
    assert not errors_of(nb)
    assert text_of(cell_with(nb, "pip install")) == ""  # not Colab: nothing installed
    hardware = text_of(cell_with(nb, "plan_training(config)"))
    assert "device='cpu'" in hardware and "optimizer='adamw_torch'" in hardware
    assert "finished" in text_of(cell_with(nb, "run.wait()"))
    assert "exact_match" in text_of(cell_with(nb, "%ft_eval"))
    assert (tmp_path / "smollm2-1.7b-tickets-adapter" / "adapter_config.json").is_file()


@pytest.mark.slow
def test_scale_out_notebook_executes_two_ranks_on_cpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """examples/04_scale_out.ipynb with JUPYTER_FT_SMOKE=1: torchrun, 2 gloo ranks of the offline SmolLM2-135M."""
    monkeypatch.setenv("JUPYTER_FT_SMOKE", "1")
    monkeypatch.setenv("JUPYTER_FT_MAX_STEPS", "4")
    monkeypatch.setenv("JUPYTER_FT_DASHBOARD", "static")
    nb = read_example("04_scale_out.ipynb")
    execute(nb, tmp_path, timeout=900)
    assert not errors_of(nb)
    dry = text_of(cell_with(nb, "%%finetune --dry-run"))
    assert "torch.distributed.run --nproc_per_node 2" in dry and "memory per process" in dry
    assert "finished" in text_of(cell_with(nb, "run.wait()"))
    launch = text_of(cell_with(nb, "launch['command']"))
    assert "'world_size': 2" in launch and "'examples_per_step': 8" in launch and "rank-1.log" in launch
    # the forgetting probe ran on rank 0 while rank 1 waited at the barrier: measured, and no deadlock
    from jupyter_ft.store import read_jsonl

    run_dir = next((tmp_path / "ft_runs").glob("*scale-out*"))
    assert any(rec.get("forgetting") for rec in read_jsonl(run_dir / "probes.jsonl"))
    assert "exact_match" in text_of(cell_with(nb, "%ft_eval"))
