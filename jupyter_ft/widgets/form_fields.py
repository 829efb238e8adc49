"""How a config field is shown and read back as text in the form: its kind, and the format/parse pair per kind.

Pure functions with no widgets, so the text round trip (value -> text in an input -> value) is testable on
its own and :mod:`.form` only builds and wires widgets. One kind per dataclass field, chosen from the
field's type and default:

=============================  =====================================================================
field                          kind (widget in the form)
=============================  =====================================================================
``bool``                       ``bool`` (``Checkbox``)
a fixed choice list            ``choice`` (``Dropdown``: ``DATA_FORMATS``, ``QUANT_METHODS``, ``SCHEDULERS``,
                               or ``field(metadata={"choices": (...)})`` on a new field)
``int``                        ``int`` (``IntText``)
``float``                      ``number`` (``Text`` parsed as a number, so ``2e-4`` is shown and typed as
                               ``2e-4``; a whole number stays an int: ``warmup: 10`` means ten steps)
``int | None``                 ``optional_int`` (``Text``; empty means ``None``: ``training.max_steps``)
``str`` / ``str | None``       ``str`` (``Text``; for ``str | None`` empty means ``None``)
``dict`` (``data.columns``)    ``mapping``: ``prompt=question, completion=answer`` (or ``{...}`` JSON/YAML)
``lora.target_modules``        ``modules``: ``all-linear``, or ``q_proj, v_proj`` / ``[q_proj]`` for a list
``Any`` (``data.source``)      ``object``: a path or ``demo:...``; the form keeps an in-memory source itself
anything else                  ``yaml``: a YAML value
=============================  =====================================================================

A parser returns text it cannot read unchanged, so validation reports it with the message a ``%%finetune``
cell would get (``must be a number (got 'abc')``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import types
import typing
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import yaml

from ..config import DATA_FORMATS, QUANT_METHODS, SCHEDULERS, Dumper, Loader

__all__ = [
    "CHOICES", "SPECIAL_KINDS", "field_kind", "format_mapping", "format_modules", "format_number", "format_yaml",
    "parse_mapping", "parse_modules", "parse_number", "parse_yaml",
]

#: Fixed choice lists of the fields that have one. A new field can declare its own with
#: ``field(default=..., metadata={"choices": (...)})`` instead of being added here.
CHOICES: dict[str, tuple[str, ...]] = {
    "data.format": DATA_FORMATS,
    "quantization.method": QUANT_METHODS,
    "training.scheduler": SCHEDULERS,
}
#: Fields with a syntax of their own (their dataclass type alone does not say enough).
SPECIAL_KINDS = {"data.columns": "mapping", "lora.target_modules": "modules"}

_INT = re.compile(r"^[-+]?[0-9][0-9_]*$")
_PLAIN = re.compile(r"^[^\s,=:{}\[\]'\"]+$")


def field_kind(path: str, f: dataclasses.Field, hint: Any) -> tuple[str, bool]:
    """Return (kind, optional) for one dataclass field."""
    args = typing.get_args(hint)
    optional = typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args
    if optional:
        rest = [a for a in args if a is not type(None)]
        hint = rest[0] if len(rest) == 1 else Any
    if path in SPECIAL_KINDS:
        return SPECIAL_KINDS[path], optional
    if f.metadata.get("choices") or path in CHOICES:
        return "choice", optional
    origin = typing.get_origin(hint) or hint
    if hint is bool:
        return "bool", optional
    if hint is int:
        return ("optional_int" if optional else "int"), optional
    if hint is float:
        return "number", optional
    if hint is str:
        return "str", optional
    if isinstance(origin, type) and issubclass(origin, Mapping):
        return "mapping", optional
    if hint is Any:
        return "object", True
    return "yaml", optional


def format_number(value: Any) -> str:
    """``2e-4`` rather than ``0.0002``; exact (``float(text) == value``), ints stay ints."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "" if value is None else str(value)
    if isinstance(value, int):
        return str(value)
    text = repr(value)
    if math.isfinite(value) and value != 0 and ("e" in text or abs(value) < 1e-3):
        short = format(Decimal(text), "e")
        if float(short) == value:
            return short
    return text


def parse_number(text: str) -> Any:
    """An int for whole-number text (``10``, ``1_000``), else a float; the text itself when it is neither."""
    s = text.strip()
    if _INT.match(s):
        return int(s)
    try:
        return float(s)
    except ValueError:
        return text  # validation reports "must be a number (got 'abc')"


def format_mapping(value: Any) -> str:
    """``prompt=question, completion=answer`` when every key and value is a plain word, else JSON."""
    if not isinstance(value, Mapping):
        return "" if value is None else str(value)
    if not value:
        return ""
    if all(isinstance(k, str) and isinstance(v, str) and _PLAIN.match(k) and _PLAIN.match(v) for k, v in value.items()):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    return json.dumps(dict(value), ensure_ascii=False)


def parse_mapping(text: str) -> Any:
    """``k=v, k2=v2`` (or ``k: v``) or a ``{...}`` YAML/JSON mapping as a dict; the text itself when it is neither."""
    s = text.strip()
    if not s:
        return {}
    if s.startswith("{"):
        try:
            loaded = yaml.load(s, Loader=Loader)
        except yaml.YAMLError:
            return text
        return loaded if isinstance(loaded, dict) else text
    out: dict[str, str] = {}
    for part in s.split(","):
        part = part.strip()
        if not part:
            continue
        sep = "=" if "=" in part else ":" if ":" in part else None
        if sep is None:
            return text  # validation reports "must map roles to column names (got 'foo')"
        key, _, val = part.partition(sep)
        if not key.strip():
            return text
        out[key.strip()] = val.strip()
    return out


def format_modules(value: Any) -> str:
    """``all-linear`` as is, a list as ``q_proj, v_proj`` (one module as ``[q_proj]``, so it stays a list)."""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(x, str) for x in value):
        return ", ".join(value) if len(value) > 1 else f"[{', '.join(value)}]"
    return "" if value is None else str(value)


def parse_modules(text: str) -> Any:
    """A list for ``a, b`` or ``[a]``; any other text (``all-linear``) as the string."""
    s = text.strip()
    bracketed = s.startswith("[") and s.endswith("]")
    if bracketed or "," in s:
        inner = s[1:-1] if bracketed else s
        return [x.strip().strip("'\"") for x in inner.split(",") if x.strip().strip("'\"")]
    return s


def format_yaml(value: Any) -> str:
    """``value`` as one line of flow-style YAML (empty for ``None``)."""
    if value is None:
        return ""
    text = yaml.dump(value, Dumper=Dumper, default_flow_style=True, width=10**9).strip()
    return text[: -len("...")].strip() if text.endswith("\n...") else text


def parse_yaml(text: str) -> Any:
    """The YAML value of ``text`` (``None`` when empty); the text itself when it is not YAML."""
    if not text.strip():
        return None
    try:
        return yaml.load(text, Loader=Loader)
    except yaml.YAMLError:
        return text
