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
    "StopRequested", "NonFiniteLoss", "short_repr",
]


SHORT_REPR = 80
_BRACKETS: dict[type, tuple[str, str]] = {
    list: ("[", "]"), tuple: ("(", ")"), set: ("{", "}"), frozenset: ("frozenset({", "})"), dict: ("{", "}")}


def short_repr(value: Any, limit: int = SHORT_REPR) -> str:
    """``repr(value)``, cut to ``limit`` characters ending in "…". Containers are written item by item and
    only until the limit, so a value from a YAML alias bomb (millions of items) or a 500-deep nesting costs
    as little as a short one: a one-line message must never become megabytes."""
    parts: list[str] = []
    _repr_into(value, parts, limit + 1)
    text = "".join(parts)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _repr_into(value: Any, parts: list[str], room: int) -> int:
    """Append the repr of ``value`` to ``parts`` until ``room`` characters are written; returns the room left.
    Every level writes at least its opening bracket, so the recursion is never deeper than ``room``."""
    kind = type(value)
    if kind in _BRACKETS and value:
        head, tail = _BRACKETS[kind]
        parts.append(head)
        room -= len(head)
        for i, item in enumerate(value):
            if room <= 0:
                return room
            if i:
                parts.append(", ")
                room -= 2
            room = _repr_into(item, parts, room)
            if kind is dict and room > 0:
                parts.append(": ")
                room = _repr_into(value[item], parts, room - 2)
        if kind is tuple and len(value) == 1:
            tail = ",)"
        parts.append(tail)
        return room - len(tail)
    if kind is str and len(value) > room:
        value = value[:room]  # cut before repr: a 100 MB string is not copied whole
    try:
        text = repr(value)
    except Exception:  # an int beyond Python's digit limit, a broken __repr__
        if isinstance(value, int):
            text = f"<int of ~{int(abs(value).bit_length() * 0.30103) + 1} digits>"
        else:
            text = f"<{kind.__name__}>"
    parts.append(text)
    return room - len(text)


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
            text += f" (got {short_repr(self.value)})"
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


class NonFiniteLoss(JupyterFTError, FloatingPointError):
    """The training loss became NaN or infinite (``training.on_nonfinite``); the message names the step."""
