"""What ``run.json`` holds, and the statuses a run goes through."""

from __future__ import annotations

import re
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

from .files import now

__all__ = ["ACTIVE", "CORRUPT", "STATUSES", "TERMINAL", "RUN_ID", "RunRecord"]

ACTIVE = ("queued", "running", "stopping")
STATUSES = ("queued", "running", "stopping", "stopped", "finished", "failed", "interrupted")
TERMINAL = ("stopped", "finished", "failed", "interrupted")
# fullmatch, never match with "$": "$" also matches before a trailing newline, so "run\n" passed as an id
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
CORRUPT = "corrupt"  # the status a listing gives a run directory whose run.json cannot be read


_OPTIONAL_KINDS = {"str | None": str, "int | None": int, "dict[str, Any] | None": dict}


@dataclass
class RunRecord:
    """What ``run.json`` holds."""

    id: str
    name: str
    status: str = "queued"
    config: dict[str, Any] = field(default_factory=dict)
    created_at: str = field(default_factory=now)
    started_at: str | None = None
    finished_at: str | None = None
    error: str | None = None
    traceback: str | None = None
    environment: dict[str, Any] = field(default_factory=dict)
    dataset: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    memory_estimate: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    pid: int | None = None
    hostname: str | None = None
    path: str = ""
    tags: list[str] = field(default_factory=list)
    notes: str = ""
    sweep: dict[str, Any] | None = None  # {id, index, total, method, params} for a run of a sweep
    # compute: how the run was launched: {launcher, strategy, world_size, processes, nodes, command,
    # supervisor_pid, examples_per_step, ...}; empty for a run of the kernel's thread
    launch: dict[str, Any] = field(default_factory=dict)
    tracking: dict[str, Any] = field(default_factory=dict)  # {"mlflow": {run_id, tracking_uri, experiment_id}}

    @classmethod
    def from_dict(cls, data: dict[str, Any], run_id: str | None = None) -> "RunRecord":
        """The record from ``run.json``'s object. Unknown keys are dropped and a field of the wrong kind takes
        its default (a hand-edited or foreign file must not break every listing); ``run_id`` (the directory's
        name) is the id."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in data:
                continue
            value = data[f.name]
            default = f.default_factory() if f.default_factory is not MISSING else f.default
            kind = type(default) if default not in (None, MISSING) else _OPTIONAL_KINDS.get(str(f.type))
            if kind is not None and not (isinstance(value, kind) and not isinstance(value, bool)) and not (
                    value is None and default is None):
                continue  # e.g. "tags": 5, "status": [], "sweep": "x" -> the default
            values[f.name] = value
        values["id"] = run_id if run_id is not None else str(data.get("id") or "")
        if not isinstance(values.get("name"), str) or not values["name"]:
            values["name"] = values["id"]
        if not isinstance(values.get("pid"), int) or isinstance(values.get("pid"), bool):
            values.pop("pid", None)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
