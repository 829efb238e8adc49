"""Small checks that each append a :class:`Problem` instead of raising, so validation reports everything."""

from __future__ import annotations

import difflib
import math
from dataclasses import fields
from typing import Any, Mapping

from ..errors import Problem, short_repr

__all__ = ["field_names", "key_text", "unknown_key", "choice_problem", "check_bool", "check_str", "check_int",
           "check_number", "check_seed", "finite", "nesting_problem", "INT_MAX", "SEED_MAX"]

SEED_MAX = 2**32 - 1  # numpy.random.seed and transformers.set_seed take 0 <= seed < 2**32
# a whole number without a field-specific limit still goes to torch, numpy, arrow and the Trainer's float maths
# (a 400-digit max_steps overflows in the warm-up): int64 is the most any of them takes
INT_MAX = 2**63 - 1


def field_names(section_cls: type) -> list[str]:
    return [f.name for f in fields(section_cls)]


def key_text(key: Any, limit: int = 80) -> str:
    """A key as a problem's path names it: as written, unless it is empty, blank, not printable or long; then
    quoted and cut (``''``, ``'a\\nb'``), so that a problem always names something and stays one short line."""
    try:
        text = key if isinstance(key, str) else str(key)
    except Exception:  # noqa: BLE001 - an int past Python's digit limit, a broken __str__
        return short_repr(key, limit)
    if text.strip() and text.isprintable() and len(text) <= limit:
        return text
    return short_repr(text, limit)


def unknown_key(path: str, key: str, known: Any) -> Problem:
    match = difflib.get_close_matches(key, [str(k) for k in known], n=1, cutoff=0.6)
    hint = f"Did you mean '{match[0]}'?" if match else f"Known keys: {', '.join(sorted(map(str, known)))}"
    return Problem(path, "unknown key", hint=hint)


def choice_problem(path: str, value: Any, choices: tuple[str, ...]) -> Problem:
    text = value if isinstance(value, str) else short_repr(value)  # str() of an alias bomb would be megabytes
    match = [c for c in choices if text and c.startswith(text)][:1]
    match = match or difflib.get_close_matches(text, choices, n=1, cutoff=0.6)
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
    hi = INT_MAX if hi is None else hi
    if isinstance(value, bool) or not isinstance(value, int):
        p.append(Problem(path, "must be a whole number", value, hint))
    elif lo is not None and value < lo:
        p.append(Problem(path, f"must be >= {lo}", value, hint))
    elif value > hi:
        p.append(Problem(path, f"must be <= {hi}", value, hint))


def check_seed(p: list[Problem], path: str, value: Any) -> None:
    """A whole number that numpy, torch and ``transformers.set_seed`` accept: 0 <= seed < 2**32."""
    if isinstance(value, int) and not isinstance(value, bool) and value > SEED_MAX:
        p.append(Problem(path, f"must be <= {SEED_MAX}", value,
                         "numpy and torch take seeds below 2**32; use a smaller seed such as 42"))
    else:
        check_int(p, path, value, lo=0)


def check_number(p: list[Problem], path: str, value: Any, lo: float | None = None, hi: float | None = None,
                  strict_lo: bool = False, hint: str = "") -> None:
    """A number a float holds: ``.inf`` would be written to run.json as null (strict JSON) and fail the resume,
    and an int past 1.8e308 overflows wherever it meets a float (``math.isnan`` itself)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            isinstance(value, float) and math.isnan(value)):
        p.append(Problem(path, "must be a number", value, hint))
    elif not finite(value):
        p.append(Problem(path, "must be a finite number", value, hint))
    elif lo is not None and (value <= lo if strict_lo else value < lo):
        p.append(Problem(path, f"must be {'>' if strict_lo else '>='} {lo:g}", value, hint))
    elif hi is not None and value > hi:
        p.append(Problem(path, f"must be <= {hi:g}", value, hint))


def finite(value: int | float) -> bool:
    """Whether a number is one a float holds: not NaN, not an infinity, not an int past 1.8e308."""
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond a float's range
        return False


def nesting_problem(value: Any, limit: int) -> Problem | None:
    """A problem when mappings inside ``value`` nest more than ``limit`` deep (the top mapping is level 1), found
    without recursion, so a 500-deep or self-containing dict from Python is a ConfigError, not a RecursionError.
    The path names the section and field it starts under."""
    stack: list[tuple[Any, int, str]] = [(value, 1, "")]
    while stack:
        node, depth, path = stack.pop()
        if depth > limit:
            return Problem(path or "config", f"nests deeper than {limit} levels of mappings",
                           hint="A config is 'section: field: value'; look for a mapping that contains itself")
        for key, child in node.items():
            if isinstance(child, Mapping):
                where = f"{path}.{key_text(key)}" if path else key_text(key)
                stack.append((child, depth + 1, where if depth <= 2 else path))  # section.field, no deeper
    return None
