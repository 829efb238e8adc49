"""The body of a ``%%finetune`` cell: notebook variables, YAML, and the config or sweep plan it describes.

Kept apart from the magics so that parsing is testable without a shell (``expand_variables`` and ``locate``
are plain functions) and every problem message names the line of the cell it comes from.
"""

from __future__ import annotations

import re
from typing import Any

import yaml
from IPython.core.error import UsageError

from ..config import ConfigError, FineTuneConfig, Loader, Problem
from ..config.sweep_plan import SweepPlan, plan_sweep
from ..config.yaml_io import YAMLValueError, describe_error, plain_scalar

__all__ = [
    "expand_variables",
    "format_problems",
    "has_sweep",
    "locate",
    "parse_body",
    "parse_config",
    "parse_sweep",
]

_VAR = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)|\{([A-Za-z_][A-Za-z0-9_]*)\}")
_PLACEHOLDER = "__jupyter_ft_var_{}__"
_SCALARS = (bool, int, float, str, type(None))


def expand_variables(text: str, namespace: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Expand ``$name`` and ``{name}`` from the notebook namespace before YAML parsing.

    Scalars are written into the text as YAML; objects (a DataFrame, a list of rows, a Dataset) are
    replaced by a placeholder and put back after parsing, so ``source: $df`` hands over the object
    itself. ``{...}`` that is not a plain known name (a YAML flow mapping such as ``{output: answer}``)
    is left alone.
    """
    objects: dict[str, Any] = {}

    def repl(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        if name not in namespace:
            if m.group(1):
                raise UsageError(f"${name}: no variable named '{name}' in the notebook")
            return m.group(0)
        value = plain_scalar(namespace[name])  # np.float64(3e-4) -> 3e-4: YAML cannot write numpy types
        if isinstance(value, _SCALARS):
            try:
                dumped = yaml.safe_dump(value, default_flow_style=True).strip()
            except yaml.YAMLError:  # a subclass YAML cannot write (an IntEnum, a library's own float type)
                base = next(t.__name__ for t in _SCALARS if isinstance(value, t))
                raise UsageError(f"{m.group(0)}: a value of type {type(value).__name__} cannot be written into "
                                 f"the YAML; convert it first, e.g. {base}({name})") from None
            return dumped[: -len("...")].strip() if dumped.endswith("...") else dumped
        key = _PLACEHOLDER.format(len(objects))
        objects[key] = value
        return key

    return _VAR.sub(repl, text), objects


def _restore(data: Any, objects: dict[str, Any]) -> Any:
    if isinstance(data, dict):
        return {k: _restore(v, objects) for k, v in data.items()}
    if isinstance(data, list):
        return [_restore(v, objects) for v in data]
    if isinstance(data, str) and data in objects:
        return objects[data]
    return data


def locate(text: str, path: str) -> int | None:
    """1-based line of the deepest key of ``path`` present in the YAML ``text`` (for error messages)."""
    try:
        node = yaml.compose(text, Loader=Loader)  # the same limits as parsing: never a RecursionError
    except yaml.YAMLError:
        return None
    line = None
    parts = path.split(".")
    i = 0
    while i < len(parts) and isinstance(node, yaml.MappingNode):
        # the longest dotted key first: a sweep names fields as `training.learning_rate: [...]`
        for j in range(len(parts), i, -1):
            want = ".".join(parts[i:j])
            found = next(((k, v) for k, v in node.value if k.value == want), None)
            if found is not None:
                line, node, i = found[0].start_mark.line + 1, found[1], j
                break
        else:
            break
    return line


def format_problems(problems: list[Problem], text: str) -> str:
    """The problems of a cell, one per line, each with the cell line it is on."""
    lines = [f"{len(problems)} problem(s) in the %%finetune cell; nothing was launched."]
    for p in problems:
        where = locate(text, p.path) if p.path != "yaml" else None
        lines.append(f"  {'line ' + str(where) + ': ' if where else ''}{p}")
    return "\n".join(lines)


def has_sweep(body: str) -> bool:
    """Whether the body has a top-level ``sweep:`` key (checked on the text, before variables expand)."""
    return re.search(r"^sweep\s*:", body, flags=re.MULTILINE) is not None


def _is_data_object(value: Any) -> bool:
    return isinstance(value, list) or type(value).__name__ in ("DataFrame", "Dataset", "DatasetDict")


def parse_body(body: str, namespace: dict[str, Any], name: str | None = None) -> tuple[dict[str, Any], str]:
    """The cell body as a mapping (variables expanded, objects put back) and the expanded text."""
    text, objects = expand_variables(body, namespace)
    try:
        data = yaml.load(text, Loader=Loader) if text.strip() else {}
    except yaml.YAMLError as exc:
        where, problem = describe_error(exc, text)
        if isinstance(exc, YAMLValueError):  # parses, but too deep, an alias bomb, an unreadable scalar
            raise UsageError(f"unusable YAML in the %%finetune cell at {where}: {problem}. {exc.hint}; "
                             "nothing was launched.") from None
        raise UsageError(f"invalid YAML in the %%finetune cell at {where}: {problem}; nothing was launched.") from None
    if data is None:  # only comments, or `~`: every field at its default, as FineTuneConfig.from_yaml reads it
        data = {}
    if not isinstance(data, dict):
        raise UsageError("the %%finetune cell must be a YAML mapping of sections (model:, data:, training:, "
                         "...); nothing was launched. See %ft_help.")
    data = _restore(data, objects)
    section = data.get("data")
    if isinstance(section, dict):
        for key in ("source", "eval_source"):  # `source: df` names a notebook variable
            value = section.get(key)
            if isinstance(value, str) and value.isidentifier() and _is_data_object(namespace.get(value)):
                section[key] = namespace[value]
    if name:
        data.setdefault("output", {})
        if isinstance(data["output"], dict):
            data["output"]["name"] = name
    return data, text


def parse_config(body: str, namespace: dict[str, Any], name: str | None = None) -> FineTuneConfig:
    """The cell body as a validated config; problems raise ``UsageError`` naming line and field."""
    data, text = parse_body(body, namespace, name)
    if "sweep" in data:
        raise UsageError("this cell has a sweep: key; it launches several runs (run it as a %%finetune cell, "
                         "or use jupyter_ft.start_sweep())")
    try:
        return FineTuneConfig.from_dict(data)
    except ConfigError as exc:
        raise UsageError(format_problems(exc.problems, text)) from None


def parse_sweep(body: str, namespace: dict[str, Any], name: str | None = None) -> SweepPlan:
    """A body with a ``sweep:`` key as a :class:`~jupyter_ft.config.sweep_plan.SweepPlan` (every run validated)."""
    data, text = parse_body(body, namespace, name)
    try:
        return plan_sweep(data, name=name)
    except ConfigError as exc:
        raise UsageError(format_problems(exc.problems, text)) from None
