"""The run store: every file of a run directory, written and read in one place.

``RunDir`` is one run's directory and the only code that writes a file in it; ``RunStore`` is every run
under a root (list, open, ``find(ref)`` by id or name, tag, delete). The store knows which runs are live in
this process from ``runtime.registry``, never from the engine.
"""

from __future__ import annotations

from .files import append_jsonl, dumps, now, read_json, read_jsonl, strict, write_json_atomic
from .record import ACTIVE, CORRUPT, RUN_ID, STATUSES, TERMINAL, RunRecord
from .run_dir import HEARTBEAT_SECONDS, PROGRESS_FILE, STALE_SECONDS, STOP_REQUEST_FILE, ReplicaRunDir, RunDir, RunRef
from .run_store import RunStore

__all__ = ["ACTIVE", "CORRUPT", "HEARTBEAT_SECONDS", "PROGRESS_FILE", "STALE_SECONDS", "RUN_ID", "STATUSES", "STOP_REQUEST_FILE", "TERMINAL", "ReplicaRunDir", "RunDir", "RunRecord", "RunRef",
           "RunStore", "append_jsonl", "dumps", "now", "strict", "read_json", "read_jsonl", "write_json_atomic"]
