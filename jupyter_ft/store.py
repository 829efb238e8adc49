"""The run directory: the one record that the dashboard, ``%ft_eval``, the run list and the lab sidebar read.

Only the training thread writes a run; everyone else reads. ``run.json`` is replaced atomically, so a
reader never sees half a record; ``metrics.jsonl`` is append-only and readers skip a torn last line,
so a kernel killed mid-write costs at most one log line.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import secrets
import socket
import tempfile
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

__all__ = ["RunRecord", "RunStore", "append_jsonl", "read_jsonl", "write_json_atomic"]

ACTIVE = ("queued", "running", "stopping")
STATUSES = ("queued", "running", "stopping", "stopped", "finished", "failed", "interrupted")
RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
# Two small files of a run directory for the lab extension: the training thread's live progress (step,
# max_steps, ETA; rewritten about once a second), and a stop request the server writes for a run that
# lives in a kernel thread (the training callback honours it at the next step, like Run.stop()).
PROGRESS_FILE = "progress.json"
STOP_REQUEST_FILE = "stop-request.json"


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write temp file, fsync, rename: readers see the old or the new record, never a mix."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(obj, fh, indent=2, default=str)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def append_jsonl(path: Path, obj: Any) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(obj, default=str) + "\n")


def read_jsonl(path: Path, since_step: int | None = None) -> list[dict[str, Any]]:
    """All complete records (a torn last line from a crash is skipped), optionally only after a step."""
    out: list[dict[str, Any]] = []
    try:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                if not line.endswith("\n"):
                    break  # a writer died mid-line
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if since_step is None or rec.get("step", 0) > since_step:
                    out.append(rec)
    except FileNotFoundError:
        pass
    return out


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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


class RunDir:
    """One run's directory and the only code that writes inside it."""

    def __init__(self, path: Path, record: RunRecord) -> None:
        self.path = Path(path)
        self.record = record
        self._lock = threading.Lock()  # Stop (main thread) and the trainer may save at the same moment

    # paths
    @property
    def run_json(self) -> Path:
        return self.path / "run.json"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def probes_path(self) -> Path:
        return self.path / "probes.jsonl"

    @property
    def adapter_dir(self) -> Path:
        return self.path / "adapter"

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / "checkpoints"

    @property
    def dataset_dir(self) -> Path:
        return self.path / "dataset"

    def save(self, **changes: Any) -> None:
        with self._lock:
            for key, value in changes.items():
                setattr(self.record, key, value)
            write_json_atomic(self.run_json, self.record.to_dict())

    def tag(self, *tags: str, remove: bool = False) -> list[str]:
        """Add (or with ``remove=True`` drop) labels; returns the run's tags. Safe while the run trains
        as long as it is called on the live run's own ``RunDir`` (``RunStore.tag`` finds it)."""
        for t in tags:
            if not isinstance(t, str) or not t.strip() or any(c.isspace() for c in t.strip()):
                raise ValueError(f"invalid tag {t!r}: use a non-empty word without spaces")
        with self._lock:
            current = list(self.record.tags or [])
        for t in (t.strip() for t in tags):
            if remove and t in current:
                current.remove(t)
            elif not remove and t not in current:
                current.append(t)
        self.save(tags=current)
        return current

    def note(self, text: str, append: bool = False) -> str:
        """Set (or append a line to) the run's free-text notes; returns them."""
        if not isinstance(text, str):
            raise ValueError("a note must be a string")
        notes = f"{self.record.notes}\n{text}".strip() if append and self.record.notes else text
        self.save(notes=notes)
        return notes

    def log_metrics(self, entry: dict[str, Any]) -> None:
        append_jsonl(self.metrics_path, entry)

    def metrics(self, since_step: int | None = None) -> list[dict[str, Any]]:
        return read_jsonl(self.metrics_path, since_step)

    def last_checkpoint(self) -> Path | None:
        """The newest complete Trainer checkpoint (one with trainer_state.json), for resume."""
        if not self.checkpoints_dir.is_dir():
            return None
        cands = []
        for p in self.checkpoints_dir.glob("checkpoint-*"):
            m = re.fullmatch(r"checkpoint-(\d+)", p.name)
            if m and (p / "trainer_state.json").is_file():
                cands.append((int(m.group(1)), p))
        return max(cands)[1] if cands else None


class RunStore:
    """All runs under one root directory (default ``./ft_runs``)."""

    def __init__(self, root: str | os.PathLike[str] = "ft_runs") -> None:
        self.root = Path(root).expanduser()

    def new_id(self, name: str | None) -> str:
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", name or "run").strip("-.")[:40] or "run"
        return f"{stamp}-{slug}-{secrets.token_hex(2)}"

    def create(self, config: dict[str, Any], name: str | None = None) -> RunDir:
        self.root.mkdir(parents=True, exist_ok=True)
        run_id = self.new_id(name)
        path = self.root / run_id
        path.mkdir()
        record = RunRecord(id=run_id, name=name or run_id, config=config, pid=os.getpid(),
                           hostname=socket.gethostname(), path=str(path.resolve()))
        rd = RunDir(path, record)
        rd.save()
        return rd

    def path_of(self, run_id: str) -> Path:
        """The run's directory; ids are validated so no caller can step outside the root."""
        if not isinstance(run_id, str) or not RUN_ID.match(run_id) or run_id in (".", ".."):
            raise KeyError(f"invalid run id {run_id!r}")
        path = (self.root / run_id).resolve()
        if path.parent != self.root.resolve():
            raise KeyError(f"invalid run id {run_id!r}")
        return path

    def open(self, run_id: str) -> RunDir:
        path = self.path_of(run_id)
        if not (path / "run.json").is_file():
            known = ", ".join(r.id for r in self.list()[:5]) or "none"
            raise KeyError(f"no run '{run_id}' under {self.root} (latest: {known})")
        with open(path / "run.json", encoding="utf-8") as fh:
            record = RunRecord.from_dict(json.load(fh))
        record.path = str(path)
        self._mark_interrupted(record)
        return RunDir(path, record)

    def load(self, run_id: str) -> RunRecord:
        return self.open(run_id).record

    def _mark_interrupted(self, record: RunRecord) -> None:
        """A run still 'running' whose process is gone was cut off (kernel restart, crash, disconnect)."""
        if record.status not in ACTIVE:
            return
        from . import training  # local: the registry of this process's live runs

        if record.id in training.live_run_ids():
            return
        same_host = record.hostname in (None, socket.gethostname())
        if same_host and record.pid == os.getpid():
            record.status = "interrupted"  # this process owns it but no thread runs it any more
        elif same_host and not _pid_alive(record.pid):
            record.status = "interrupted"

    def __iter__(self) -> Iterator[RunRecord]:
        return iter(self.list())

    def list(self) -> list[RunRecord]:
        """Every run, newest first; unreadable directories are skipped, never fatal."""
        if not self.root.is_dir():
            return []
        out = []
        for p in self.root.iterdir():
            if (p / "run.json").is_file():
                try:
                    out.append(self.open(p.name).record)
                except (KeyError, ValueError, OSError):
                    continue
        out.sort(key=lambda r: (r.created_at, r.id), reverse=True)
        return out

    def latest(self) -> RunRecord | None:
        runs = self.list()
        return runs[0] if runs else None

    # ------------------------------------------------------------ management (notes, tags, delete)
    def live_dir(self, run_id: str) -> RunDir:
        """The run's ``RunDir``: the live run's own when it trains in this process (so a tag written now
        is not lost to the trainer's next save of its copy of the record), else read from disk."""
        from . import training

        path = self.path_of(run_id)
        live = training._LIVE.get(run_id)
        if live is not None and Path(live.run_dir.path).resolve() == path:
            return live.run_dir
        return self.open(run_id)

    def tag(self, run_id: str, *tags: str, remove: bool = False) -> list[str]:
        return self.live_dir(run_id).tag(*tags, remove=remove)

    def note(self, run_id: str, text: str, append: bool = False) -> str:
        return self.live_dir(run_id).note(text, append=append)

    def select(self, *, status: str | None = None, name: str | None = None, tag: str | None = None,
               sweep: str | None = None) -> list[RunRecord]:
        """Runs matching every filter given: ``status`` exactly, ``name`` as a case-insensitive substring of
        the name or id, ``tag`` exactly, ``sweep`` a sweep id (or its unique prefix)."""
        out = []
        for r in self.list():
            if status and r.status != status:
                continue
            if name and name.lower() not in f"{r.name}\n{r.id}".lower():
                continue
            if tag and tag not in (r.tags or []):
                continue
            if sweep and not str((r.sweep or {}).get("id", "")).startswith(sweep):
                continue
            out.append(r)
        return out

    def delete(self, run_id: str) -> Path:
        """Remove a run's directory. Refuses a run training in this process (or, by its record, in a live
        process on this host) and anything that is not a run directory directly under the root."""
        import shutil

        from . import training

        path = self.path_of(run_id)  # a valid id naming a direct child of the root, or KeyError
        if (self.root / run_id).is_symlink() or not path.is_dir() or not (path / "run.json").is_file():
            raise KeyError(f"no run '{run_id}' under {self.root}")
        if run_id in training.live_run_ids():
            raise RuntimeError(f"run {run_id} is training in this kernel; stop it first (%ft_stop {run_id})")
        record = self.open(run_id).record
        if record.status in ACTIVE:
            raise RuntimeError(f"run {run_id} is {record.status} in process {record.pid}; stop it before deleting")
        root = self.root.resolve()
        if path.parent != root or os.path.commonpath([root, path]) != str(root):
            raise KeyError(f"invalid run id {run_id!r}")
        shutil.rmtree(path)
        return path
