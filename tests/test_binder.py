"""binder/postBuild in a fresh virtual environment: it installs jupyter-ft with the pinned stack and the offline
model, enables the server and lab extensions and writes the default URL; then the new environment runs a dry
run of the quickstart's config. Fast enough for the suite because pip's cache is warm and the CPU torch wheel
is local (JUPYTER_FT_TORCH_INDEX= skips the remote PyTorch index)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
POSTBUILD = REPO / "binder" / "postBuild"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def fresh_env(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)  # the suite's Python, not its packages
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "JPY_", "VIRTUAL_ENV", "PYTHON"))}
    env.update({
        "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        "HOME": str(home),
        "JUPYTER_FT_TORCH_INDEX": "",
        # the converted model of the test cache: the conversion itself is covered by the SmolLM2 tests
        "JUPYTER_FT_CACHE": os.environ.get("JUPYTER_FT_CACHE", str(REPO / ".ft-test-cache")),
        "HF_HUB_OFFLINE": "1",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    })
    return venv, env


def test_postbuild_in_a_fresh_virtualenv(tmp_path: Path) -> None:
    venv, env = fresh_env(tmp_path)
    t0 = time.monotonic()
    result = subprocess.run(["bash", str(POSTBUILD)], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=540)
    seconds = time.monotonic() - t0
    log = result.stdout + result.stderr
    (tmp_path / "postBuild.log").write_text(log)
    assert result.returncode == 0, log[-4000:]
    assert "postBuild: done" in result.stdout, log[-2000:]
    py = venv / "bin" / "python"
    default_url = (tmp_path / "home" / ".jupyter" / "jupyter_server_config.py").read_text()
    assert "/lab/tree/examples/01_quickstart.ipynb" in default_url
    # the kernel side: the package, the magics and the offline model work in the new environment
    code = (
        "from IPython.core.interactiveshell import InteractiveShell\n"
        "ip = InteractiveShell.instance()\n"
        "ip.run_line_magic('load_ext', 'jupyter_ft')\n"
        "ip.run_cell_magic('finetune', '--dry-run', 'data:\\n  source: demo:support_tickets\\n  max_length: 256\\n')\n"
        "import torch, jupyter_ft; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())\n"
    )
    check = subprocess.run([str(py), "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=300)
    assert check.returncode == 0, check.stdout[-2000:] + check.stderr[-3000:]
    assert "detected format 'alpaca'" in check.stdout and "cuda False" in check.stdout
    assert "+cpu" in check.stdout  # the CPU build of torch, not the CUDA one
    print(f"postBuild took {seconds:.0f}s")


def test_postbuild_refuses_to_build_the_extension_without_node(tmp_path: Path) -> None:
    """A checkout without the built extension and no node on PATH: a clear message, before installing anything."""
    tree = tmp_path / "repo"
    (tree / "binder").mkdir(parents=True)
    shutil.copy(POSTBUILD, tree / "binder" / "postBuild")
    (tree / "constraints.txt").write_text("")
    env = {"PATH": "/usr/bin/does-not-exist", "HOME": str(tmp_path), "PYTHON": sys.executable}
    result = subprocess.run(["/bin/bash", str(tree / "binder" / "postBuild")], env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 1
    assert "node >= 18 is needed to build the JupyterLab extension" in result.stderr
