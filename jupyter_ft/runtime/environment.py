"""What a run records about the machine it trained on, so it can be explained and reproduced later."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from typing import Any

__all__ = ["environment"]

PACKAGES = ("jupyter-ft", "torch", "transformers", "peft", "bitsandbytes", "trl", "datasets", "accelerate")


def environment() -> dict[str, Any]:
    """Versions of the ML stack, Python, platform, CPU count, CUDA device, torch threads, git commit."""
    from importlib import metadata

    versions: dict[str, str | None] = {}
    for pkg in PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    env: dict[str, Any] = {"python": sys.version.split()[0], "platform": platform.platform(),
                           "cpu_count": os.cpu_count(), "versions": versions, "cwd": os.getcwd()}
    try:
        import torch

        env["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
        env["torch_threads"] = torch.get_num_threads()
    except Exception:  # noqa: BLE001
        pass
    try:
        env["git_commit"] = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                           timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        env["git_commit"] = None
    return env
