"""Every exception jupyter-ft raises, under one base class.

The magics catch :class:`JupyterFTError` and show its message as one line under the cell (no traceback),
so a message must say which field, file or run is wrong and what to do. The classes also keep the
built-in base a Python caller would expect (``ValueError`` for bad input, ``KeyError`` for a missing run,
``RuntimeError`` for a state that forbids the call), so ``except ValueError`` in user code keeps working.
This module imports nothing of the package: every layer may raise these.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = [
    "JupyterFTError", "Problem", "ConfigError", "DataError", "ModelResolutionError", "InsufficientMemory",
    "RunNotFound", "RunStoreError", "RunStateError", "EvalError", "EvalOutOfMemory", "ExportError", "CompareError",
    "StopRequested",
]


class JupyterFTError(Exception):
    """The base of every error jupyter-ft raises on purpose; its message is meant for the user."""

    def __str__(self) -> str:  # KeyError subclasses would otherwise quote the message
        return str(self.args[0]) if len(self.args) == 1 else super().__str__()


@dataclass(frozen=True)
class Problem:
    """One validation problem: where it is, what was given, and what to do about it."""

    path: str
    message: str
    value: Any = None
    hint: str = ""

    def __str__(self) -> str:
        text = f"{self.path}: {self.message}"
        if self.value is not None:
            text += f" (got {self.value!r})"
        if self.hint:
            text += f". {self.hint}"
        return text


class ConfigError(JupyterFTError, ValueError):
    """Raised with every problem in a configuration; ``problems`` keeps them structured for the form."""

    def __init__(self, problems: list[Problem], source: str = "config") -> None:
        self.problems = list(problems)
        self.source = source
        lines = [f"{len(self.problems)} problem(s) in the {source}:"]
        lines += [f"  - {p}" for p in self.problems]
        super().__init__("\n".join(lines))


class DataError(JupyterFTError, ValueError):
    """The data cannot be used as given; the message names the file, row or column and the fix."""


class ModelResolutionError(JupyterFTError, RuntimeError):
    """``model.name`` names nothing that can be loaded here (not local, not cached, hub unreachable)."""


class InsufficientMemory(JupyterFTError, RuntimeError):
    """The memory estimate says the run cannot fit; raised before any weight is loaded."""


class RunNotFound(JupyterFTError, KeyError):
    """No run with that id or name under the run root."""


class RunStoreError(JupyterFTError, ValueError):
    """A run record or a value written into it is unusable (not a JSON object, an invalid tag)."""


class RunStateError(JupyterFTError, RuntimeError):
    """The run's state forbids the call: still training, nothing to resume from, live elsewhere."""


class EvalError(JupyterFTError, ValueError):
    """``%ft_eval`` / ``evaluate_run`` cannot run as asked (bad metric, data, run state)."""


class EvalOutOfMemory(EvalError):
    """Generation or perplexity ran out of (GPU) memory; the message says what to lower. The loaded model
    stays cached, so a retry with a smaller batch does not reload it."""


class ExportError(JupyterFTError, ValueError):
    """``%ft_export`` refuses a target (it exists, or it would overwrite something it must not)."""


class CompareError(JupyterFTError, ValueError):
    """``%ft_compare`` / ``compare_runs`` cannot compare as asked (no runs chosen, an unknown metric or axis)."""


class StopRequested(JupyterFTError):
    """Raised between set-up phases when the user pressed Stop before training began."""
