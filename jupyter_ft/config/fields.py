"""How a config field carries its meaning: ``metadata["help"]`` beside its default, read by the docs generator
(``scripts/gen_docs.py``), the form's tooltips and the lab's schema."""

from __future__ import annotations

from dataclasses import field
from typing import Any

__all__ = ["_doc"]


def _doc(default: Any, help: str, **meta: Any) -> Any:
    """A dataclass field that carries its meaning in ``metadata["help"]``: docs/configuration.md
    (``scripts/gen_docs.py``) and the form's tooltips read it, so the meaning lives next to the default."""
    if isinstance(default, (list, dict)):
        empty = type(default)
        return field(default_factory=lambda: empty(default), metadata={"help": help, **meta})
    return field(default=default, metadata={"help": help, **meta})
