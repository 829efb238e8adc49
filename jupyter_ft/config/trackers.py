"""Which experiment trackers ``training.report_to`` may name, and whether each is installed here.

Checked with ``importlib.util.find_spec`` only, so validating a config never imports a tracker.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from ..errors import Problem

__all__ = ["INTEGRATIONS", "normalize_report_to", "report_to_problems"]

# name -> (modules, any of which makes it available; the pip install that provides one)
INTEGRATIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "mlflow": (("mlflow",), "pip install mlflow-skinny  (or mlflow)"),
    "tensorboard": (("tensorboard", "tensorboardX"), "pip install tensorboard"),
    "trackio": (("trackio",), "pip install trackio"),
}


def normalize_report_to(value: Any) -> list[str]:
    """``"mlflow"`` / ``["mlflow"]`` / ``"none"`` / ``None`` as a list of integration names."""
    if value is None or value == "none" or value == ["none"]:
        return []
    if isinstance(value, str):
        return [value]
    return list(value)


def installed(name: str) -> bool:
    modules, _ = INTEGRATIONS[name]
    for module in modules:
        try:
            if importlib.util.find_spec(module) is not None:
                return True
        except (ImportError, ValueError):
            continue
    return False


def report_to_problems(value: Any) -> list[Problem]:
    """Every problem with ``training.report_to``: not a list of names, unknown names, uninstalled trackers."""
    import difflib

    path = "training.report_to"
    if not (value is None or isinstance(value, str) or
            (isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value))):
        return [Problem(path, "must be a list of tracker names", value,
                        f"e.g. [mlflow]; known: {', '.join(INTEGRATIONS)}")]
    problems = []
    for name in normalize_report_to(value):
        if name not in INTEGRATIONS:
            match = difflib.get_close_matches(name, list(INTEGRATIONS), n=1, cutoff=0.6)
            hint = f"Did you mean '{match[0]}'?" if match else f"Supported: {', '.join(INTEGRATIONS)}"
            problems.append(Problem(path, "unknown tracker", name, hint))
        elif not installed(name):
            problems.append(Problem(path, f"'{name}' is not installed in this kernel's environment", name,
                                    f"Install it ({INTEGRATIONS[name][1]}) and restart the kernel, or remove it"))
    return problems


