"""What ``run.json`` holds, and the statuses a run goes through."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from .files import now

__all__ = ["ACTIVE", "STATUSES", "TERMINAL", "RUN_ID", "RunRecord"]

ACTIVE = ("queued", "running", "stopping")
STATUSES = ("queued", "running", "stopping", "stopped", "finished", "failed", "interrupted")
TERMINAL = ("stopped", "finished", "failed", "interrupted")
RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


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
    tracking: dict[str, Any] = field(default_factory=dict)  # {"mlflow": {run_id, tracking_uri, experiment_id}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunRecord":
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
