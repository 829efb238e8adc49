"""YAML as users write it: safe loading, with ``2e-4`` read as a number (YAML 1.1 wants ``2.0e-4``), and
bounded: a body that nests absurdly deep or whose aliases expand to an absurd size is refused while it is
composed, with its line, before anything recurses over it or expands it."""

from __future__ import annotations

import re
import sys
from typing import Any

import yaml

from ..errors import short_repr

__all__ = ["Loader", "Dumper", "YAMLValueError", "MAX_DEPTH", "MAX_ALIAS_VALUES", "describe_error", "plain_scalar"]

MAX_DEPTH = 50  # lists and mappings inside each other; a config needs 3 (section: field: [values]), a sweep 5
MAX_ALIAS_VALUES = 100_000  # values that aliases (*name) may add in one document: far beyond any config


class YAMLValueError(yaml.MarkedYAMLError):
    """YAML that parses but no config can use: nested deeper than :data:`MAX_DEPTH`, aliases that expand to more
    than :data:`MAX_ALIAS_VALUES` values (an alias bomb), an alias inside the anchor it repeats, a scalar its
    tag cannot read (``2024-13-45``, a 5000-digit number). ``problem_mark`` is where; ``hint`` says what to do.
    Being a ``yaml.YAMLError``, it is handled wherever bad YAML is."""

    def __init__(self, problem: str, mark: Any, hint: str) -> None:
        super().__init__(problem=problem, problem_mark=mark)
        self.hint = hint


_DEPTH_HINT = ("A config needs only 'section: field: value'; look for brackets that are never closed or a "
               "value pasted into itself")
_SCALAR_KINDS = {"int": "a whole number", "float": "a number", "bool": "true or false", "timestamp": "a date"}


class Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also reads ``2e-4`` as a float, and refuses what no config needs.

    YAML 1.1 requires a dot in a float (``2.0e-4``), so plain safe_load returns the string '2e-4' for the
    way everyone writes a learning rate. Limits (each a :class:`YAMLValueError` naming the line): lists and
    mappings nest at most :data:`MAX_DEPTH` deep, counted through aliases too (the composer recurses per
    level, so 500 brackets would otherwise be a ``RecursionError``); the aliases of a document add at most
    :data:`MAX_ALIAS_VALUES` values (nine lists of nine aliases, seven times over, are 4.8 million values
    held as a few hundred nodes); an alias may not sit inside the anchor it repeats (a value that contains
    itself).
    """

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._open = 0  # lists and mappings being composed around the current node
        self._open_anchors: set[str] = set()
        self._alias_values = 0  # values the aliases of this document add when expanded
        self._extent: dict[int, tuple[int, int]] = {}  # id(node) -> (values, depth), each node measured once

    def compose_document(self) -> Any:
        self._alias_values, self._extent = 0, {}
        return super().compose_document()

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            node = super().compose_node(parent, index)
            self._check_alias(event, node)
            return node
        if not isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            return super().compose_node(parent, index)
        if self._open >= MAX_DEPTH:
            raise YAMLValueError(f"lists and mappings nest deeper than {MAX_DEPTH} levels", event.start_mark,
                                 _DEPTH_HINT)
        self._open += 1
        if event.anchor is not None:
            self._open_anchors.add(event.anchor)
        try:
            return super().compose_node(parent, index)
        finally:
            self._open -= 1
            if event.anchor is not None:
                self._open_anchors.discard(event.anchor)

    def _check_alias(self, event: Any, node: Any) -> None:
        name = event.anchor
        if name in self._open_anchors:
            raise YAMLValueError(f"the alias *{name} is inside the &{name} it repeats (a value that contains "
                                 "itself)", event.start_mark, f"Move *{name} out of the &{name} list or mapping")
        values, depth = self._measure(node)
        if self._open + depth > MAX_DEPTH:
            raise YAMLValueError(f"lists and mappings nest deeper than {MAX_DEPTH} levels through the alias "
                                 f"*{name}", event.start_mark, _DEPTH_HINT)
        self._alias_values += values
        if self._alias_values > MAX_ALIAS_VALUES:
            raise YAMLValueError(f"aliases expand to more than {MAX_ALIAS_VALUES} values (at *{name})",
                                 event.start_mark, "Repeat an anchor (&name) a few times, not aliases of "
                                 "aliases; write the values out")

    def _measure(self, root: Any) -> tuple[int, int]:
        """(values, depth) of ``root`` with its aliases expanded, without expanding them: a post-order walk
        of the node graph with an explicit stack, each node once (an alias is a shared node)."""
        extent = self._extent
        stack: list[tuple[Any, bool]] = [(root, False)]
        while stack:
            node, done = stack.pop()
            if id(node) in extent:
                continue
            kids = _children(node)
            if not done:
                stack.append((node, True))
                stack.extend((kid, False) for kid in kids if id(kid) not in extent)
                continue
            values = 1 + sum(extent[id(kid)][0] for kid in kids)
            depth = 0 if isinstance(node, yaml.ScalarNode) else 1 + max((extent[id(kid)][1] for kid in kids), default=0)
            extent[id(node)] = (values, depth)
        return extent[id(root)]

    def construct_object(self, node: Any, deep: bool = False) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            return super().construct_object(node, deep)
        try:
            return super().construct_object(node, deep)
        except yaml.YAMLError:
            raise
        except (ValueError, KeyError, AttributeError, TypeError, OverflowError) as exc:
            # `2024-13-45` (a 13th month), a 5000-digit number, `!!bool maybe`: the constructor's own error
            kind = node.tag.rsplit(":", 1)[-1]
            detail = str(exc).split(";")[0] if isinstance(exc, ValueError) else ""
            raise YAMLValueError(
                f"cannot read {short_repr(node.value, 40)} as {_SCALAR_KINDS.get(kind, kind)}"
                + (f" ({detail})" if detail else ""),
                node.start_mark, "Fix the value, or quote it to keep it as text") from None


_BREAK = re.compile("\r\n|[\n\r\x85\u2028\u2029]")  # the line breaks YAML counts (PyYAML's Mark.line)


def describe_error(exc: yaml.YAMLError, text: str) -> tuple[str, str]:
    """Where a YAML error is (``line L, column C``) and what it is, in one line each. A character the reader
    refuses (a control character pasted from a terminal) is a ``ReaderError``, which PyYAML places only by its
    offset in the text: the line is counted here, so that message too names its line."""
    if isinstance(exc, yaml.reader.ReaderError):
        head = text[: exc.position] if isinstance(text, str) else ""
        breaks = list(_BREAK.finditer(head))
        column = len(head) - (breaks[-1].end() if breaks else 0)
        what = (f"unacceptable character #x{exc.character:04x}: {exc.reason}" if isinstance(exc.character, int)
                else f"unreadable text: {exc.reason}")
        return f"line {len(breaks) + 1}, column {column + 1}", what
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
    return where, str(getattr(exc, "problem", None) or exc)


def plain_scalar(value: Any) -> Any:
    """A numpy scalar (``np.float64(3e-4)``, ``np.int64(8)``, ``np.bool_(True)``) as its Python value; anything
    else as it is. YAML cannot write numpy types and validation wants ``int``/``bool``, not ``np.int64``.
    numpy is never imported here: a value can only be a numpy scalar when numpy is loaded already."""
    numpy = sys.modules.get("numpy")
    if numpy is not None and isinstance(value, numpy.generic):
        return value.item()
    return value


def _children(node: Any) -> list[Any]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


_EXP_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")
Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    _EXP_FLOAT,
    list("-+0123456789"),
)


class Dumper(yaml.SafeDumper):
    """``yaml.SafeDumper`` that quotes strings ``Loader`` would read as floats ('1e5'), so to_yaml round-trips."""


Dumper.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    _EXP_FLOAT,
    list("-+0123456789"),
)
