"""Small checks that each append a :class:`Problem` instead of raising, so validation reports everything."""

from __future__ import annotations

import difflib
import math
from dataclasses import fields
from typing import Any

from ..errors import Problem

__all__ = ["field_names", "unknown_key", "choice_problem", "check_bool", "check_str", "check_int", "check_number"]


def field_names(section_cls: type) -> list[str]:
    return [f.name for f in fields(section_cls)]


def unknown_key(path: str, key: str, known: Any) -> Problem:
    match = difflib.get_close_matches(key, [str(k) for k in known], n=1, cutoff=0.6)
    hint = f"Did you mean '{match[0]}'?" if match else f"Known keys: {', '.join(sorted(map(str, known)))}"
    return Problem(path, "unknown key", hint=hint)


def choice_problem(path: str, value: Any, choices: tuple[str, ...]) -> Problem:
    match = [c for c in choices if str(value) and c.startswith(str(value))][:1]
    match = match or difflib.get_close_matches(str(value), choices, n=1, cutoff=0.6)
    hint = f"Did you mean '{match[0]}'?" if match else f"Choose one of: {', '.join(choices)}"
    return Problem(path, "is not a valid choice", value, hint)


def check_bool(p: list[Problem], path: str, value: Any) -> None:
    if not isinstance(value, bool):
        p.append(Problem(path, "must be true or false", value))


def check_str(p: list[Problem], path: str, value: Any, nonempty: bool = False, hint: str = "") -> None:
    if not isinstance(value, str) or (nonempty and not value.strip()):
        p.append(Problem(path, "must be a non-empty string" if nonempty else "must be a string", value, hint))


def check_int(p: list[Problem], path: str, value: Any, lo: int | None = None, hi: int | None = None,
               hint: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        p.append(Problem(path, "must be a whole number", value, hint))
    elif lo is not None and value < lo:
        p.append(Problem(path, f"must be >= {lo}", value, hint))
    elif hi is not None and value > hi:
        p.append(Problem(path, f"must be <= {hi}", value, hint))


def check_number(p: list[Problem], path: str, value: Any, lo: float | None = None, hi: float | None = None,
                  strict_lo: bool = False, hint: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        p.append(Problem(path, "must be a number", value, hint))
    elif lo is not None and (value <= lo if strict_lo else value < lo):
        p.append(Problem(path, f"must be {'>' if strict_lo else '>='} {lo:g}", value, hint))
    elif hi is not None and value > hi:
        p.append(Problem(path, f"must be <= {hi:g}", value, hint))

