"""All runs under one root directory: create, open, list, find by id or name, tag, delete."""

from __future__ import annotations

import builtins
import datetime as _dt
import json
import os
import re
import secrets
import socket
from pathlib import Path
from typing import Any, Iterator

from ..config.choices import DEFAULT_ROOT, PROCESS_LAUNCHERS
from ..errors import RunNotFound, RunStateError, RunStoreError
from ..runtime import registry
from .record import ACTIVE, CORRUPT, RUN_ID, RunRecord
from .files import open_regular
from .run_dir import STALE_SECONDS, RunDir

__all__ = ["RunStore"]


def _pid_alive(pid: int | None) -> bool:
    """Whether a process with this id runs on this host. A killed kernel stays a zombie until its parent (the
    Jupyter server) reaps it, and signal 0 still reaches a zombie: on Linux its state in /proc says so."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:  # 0 and negatives name process groups
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError, ValueError):
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            state = fh.read().rsplit(")", 1)[-1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        return True


def _worker_gone(rd: RunDir) -> bool:
    """Whether the worker of an active run is proven gone. On this host: this process owns the run but no thread
    of it trains it any more, or the pid is dead (zombies count as dead), or the pid lives but the heartbeat
    stopped (the pid was reused). On another host: the heartbeat stopped long ago; with no heartbeat at all
    nothing is proven, and the run keeps its status."""
    record = rd.record
    compute = record.config.get("compute")
    launcher = record.launch.get("launcher") or (compute.get("launcher") if isinstance(compute, dict) else None)
    if record.status == "queued" and launcher in PROCESS_LAUNCHERS:
        # a launch whose ranks have not begun (they load the model): its supervisor is what lives, once it
        # has said so; before that nothing is proven
        supervisor = record.launch.get("supervisor_pid")
        if supervisor is None or record.launch.get("hostname") not in (None, socket.gethostname()):
            return False
        return not _pid_alive(supervisor)
    age = rd.heartbeat_age() if record.status != "queued" else None  # a queued run has not begun to beat
    if record.hostname in (None, socket.gethostname()):
        if record.pid == os.getpid() or not _pid_alive(record.pid):
            return True
        return age is not None and age > STALE_SECONDS
    return age is not None and age > 5 * STALE_SECONDS


class RunStore:
    """All runs under one root directory (default ``./ft_runs``)."""

    def __init__(self, root: str | os.PathLike[str] = DEFAULT_ROOT) -> None:
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
        if not isinstance(run_id, str) or not RUN_ID.fullmatch(run_id) or run_id in (".", ".."):
            raise RunNotFound(f"invalid run id {run_id!r}")
        try:
            path = (self.root / run_id).resolve()
            root = self.root.resolve()
        except (OSError, RuntimeError):  # a link loop
            raise RunNotFound(f"no run '{run_id}' under {self.root}") from None
        if path.parent != root:
            raise RunNotFound(f"invalid run id {run_id!r}")
        return path

    def open(self, run_id: str) -> RunDir:
        """The run's directory and record; ``RunNotFound`` unless ``run_id`` names a real directory of the root
        (not a link, even to another run) with a run.json, ``RunStoreError`` when that record is unreadable."""
        path = self.path_of(run_id)
        if (self.root / run_id).is_symlink() or not (path / "run.json").is_file():
            # named from the directories, not from list(): list() opens each run, and a second directory without
            # a run.json (a kill between mkdir and the first save) would send the two into a recursion without end
            known = ", ".join(self._run_names()[:5]) or "none"
            raise RunNotFound(f"no run '{run_id}' under {self.root} (latest: {known})")
        if (path / "run.json").is_symlink():
            raise RunStoreError(f"{path / 'run.json'} is a link; a run's record must be a file in its directory")
        fh = open_regular(path / "run.json")
        if fh is None:
            raise RunStoreError(f"{path / 'run.json'} is not a regular file")
        try:
            with fh:
                data = json.loads(fh.read())
        except (ValueError, RecursionError) as exc:  # JSONDecodeError, bad UTF-8, an int past 4300 digits
            raise RunStoreError(f"{path / 'run.json'} is not valid JSON ({type(exc).__name__}: {exc})") from None
        if not isinstance(data, dict):
            raise RunStoreError(f"{path / 'run.json'} is not a run record (a JSON object)")
        # the directory's name is the id: a copied directory is its own run, and no record can name another
        record = RunRecord.from_dict(data, run_id=path.name)
        record.path = str(path)
        rd = RunDir(path, record)
        self._mark_interrupted(rd)
        return rd

    def _run_names(self) -> builtins.list[str]:
        """Names of the root's run directories (a run.json inside), newest id first; opens no record."""
        try:
            names = os.listdir(self.root)
        except OSError:
            return []
        return sorted((n for n in names if RUN_ID.fullmatch(n) and not (self.root / n).is_symlink()
                       and (self.root / n / "run.json").is_file()), reverse=True)

    def find(self, ref: str) -> RunDir:
        """A run by id, else the newest run of that name; ``RunNotFound`` names the latest runs otherwise."""
        ref = (ref or "").strip().strip("'\"")
        try:
            return self.open(ref)
        except RunNotFound:
            records = self.list()
            named = [r for r in records if r.name == ref]
            if named:
                return self.open(named[0].id)
            latest = ", ".join(r.id for r in records[:5]) or "none"
            raise RunNotFound(f"no run '{ref}' under {self.root} (latest: {latest})") from None

    def load(self, run_id: str) -> RunRecord:
        return self.open(run_id).record

    def _mark_interrupted(self, rd: RunDir) -> None:
        """A run still 'running' whose worker is gone was cut off (kernel restart, crash, disconnect): say so
        in its run.json, so that every reader, in any process, sees the same status."""
        record = rd.record
        if record.status not in ACTIVE or record.id in registry.live_run_ids():
            return
        if _worker_gone(rd):
            try:
                rd.save(status="interrupted")
            except OSError:  # a read-only store: the status is still right for this reader
                record.status = "interrupted"

    def __iter__(self) -> Iterator[RunRecord]:
        return iter(self.list())

    def entry(self, run_id: str) -> RunDir:
        """The run as a listing shows it: :meth:`open`'s, or, when its record cannot be read, a ``corrupt`` one
        with the reason (it can be removed), so one bad record never hides the others. ``RunNotFound`` when
        ``run_id`` names no run directory."""
        try:
            return self.open(run_id)
        except RunNotFound:
            raise
        except Exception as exc:  # noqa: BLE001 - whatever a hand-edited or foreign record makes fail
            path = self.root / run_id
            return RunDir(path, RunRecord(id=run_id, name=run_id, status=CORRUPT, created_at="", path=str(path),
                                          error=f"run.json cannot be read: {type(exc).__name__}: {exc}. "
                                                f"Remove the run with %ft_rm {run_id}."))

    def dirs(self) -> builtins.list[RunDir]:
        """Every run directory of the root (links and other entries left out), newest first."""
        try:
            names = os.listdir(self.root)
        except OSError:
            return []
        out = []
        for name in names:
            if not RUN_ID.fullmatch(name):
                continue
            try:
                out.append(self.entry(name))
            except RunNotFound:
                continue
        out.sort(key=lambda rd: (str(rd.record.created_at), rd.record.id), reverse=True)
        return out

    def list(self) -> builtins.list[RunRecord]:
        """Every run's record, newest first (see :meth:`dirs`); never fails on a bad one."""
        return [rd.record for rd in self.dirs()]

    def latest(self) -> RunRecord | None:
        runs = self.list()
        return runs[0] if runs else None

    # ------------------------------------------------------------ management (notes, tags, delete)
    def live_dir(self, run_id: str) -> RunDir:
        """The run's ``RunDir``: the live run's own when it trains in this process (so a tag written now
        is not lost to the trainer's next save of its copy of the record), else read from disk."""
        path = self.path_of(run_id)
        live = registry.get(run_id)
        if live is not None and Path(live.run_dir.path).resolve() == path:
            return live.run_dir
        return self.open(run_id)

    def tag(self, run_id: str, *tags: str, remove: bool = False) -> builtins.list[str]:
        return self.live_dir(run_id).tag(*tags, remove=remove)

    def note(self, run_id: str, text: str, append: bool = False) -> str:
        return self.live_dir(run_id).note(text, append=append)

    def select(self, *, status: str | None = None, name: str | None = None, tag: str | None = None,
               sweep: str | None = None) -> builtins.list[RunRecord]:
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

        path = self.path_of(run_id)  # a valid id naming a direct child of the root, or KeyError
        if (self.root / run_id).is_symlink() or not path.is_dir() or not (path / "run.json").is_file():
            raise RunNotFound(f"no run '{run_id}' under {self.root}")
        if run_id in registry.live_run_ids():
            raise RunStateError(f"run {run_id} is training in this kernel; stop it first (%ft_stop {run_id})")
        try:
            record = self.open(run_id).record
        except (ValueError, OSError):  # a corrupt record: removable, nothing can be training it
            record = RunRecord(id=run_id, name=run_id, status=CORRUPT)
        if record.status in ACTIVE:
            raise RunStateError(f"run {run_id} is {record.status} in process {record.pid}; stop it before deleting")
        root = self.root.resolve()
        if path.parent != root or os.path.commonpath([root, path]) != str(root):
            raise RunNotFound(f"invalid run id {run_id!r}")
        shutil.rmtree(path)
        return path
