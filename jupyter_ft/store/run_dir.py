"""One run's directory: its paths, and the methods that write every file in it.

Only the worker training a run writes its training files; the UIs write through the same methods (a tag,
a note, a stop request, an evaluation), so each file has one code path that writes it.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import socket
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Protocol, runtime_checkable

from ..errors import RunStoreError
from .files import append_jsonl, dumps, now, read_json, read_jsonl, write_json_atomic
from .record import ACTIVE, RunRecord

__all__ = ["RunDir", "RunRef", "PROGRESS_FILE", "STOP_REQUEST_FILE", "HEARTBEAT_SECONDS", "STALE_SECONDS"]

# Two small files of a run directory for the lab extension: the training thread's live progress (step,
# max_steps, ETA; rewritten about once a second), and a stop request the server writes for a run that
# lives in a kernel thread (the training callback honours it at the next step, like Run.stop()).
PROGRESS_FILE = "progress.json"
STOP_REQUEST_FILE = "stop-request.json"
# The worker training a run stamps progress.json every HEARTBEAT_SECONDS, from a thread of its own, so that it
# beats through a long step, an evaluation or a model load. A reader calls the worker dead when the beat is older
# than STALE_SECONDS: on this host only when the pid says alive but the beat stopped (the pid was reused, or the
# process is frozen); on another host, where no pid can be checked, the beat is all there is, and clocks differ,
# so it waits five times as long.
HEARTBEAT_SECONDS = 5.0
STALE_SECONDS = 60.0


@runtime_checkable
class RunRef(Protocol):
    """What a live ``Run`` of this kernel and a ``RunDir`` read from disk both offer, so that views and
    use-cases take either without asking which one they got: ``run_dir`` is the directory (a ``RunDir`` is its
    own), ``done`` says whether it can still change (a ``Run`` knows; a ``RunDir`` goes by its record)."""

    @property
    def id(self) -> str: ...

    @property
    def run_dir(self) -> "RunDir": ...

    @property
    def done(self) -> bool: ...


class RunDir:
    """One run's directory and the only code that writes inside it."""

    def __init__(self, path: Path, record: RunRecord) -> None:
        self.path = Path(path)
        self.record = record
        self._lock = threading.Lock()  # Stop (main thread) and the trainer may save at the same moment
        self._progress_lock = threading.Lock()
        self._pending: dict[Path, list[dict[str, Any]]] = {}  # lines a full disk held back, per file

    # the RunRef protocol
    @property
    def id(self) -> str:
        return self.record.id

    @property
    def run_dir(self) -> "RunDir":
        return self

    @property
    def done(self) -> bool:
        return self.record.status not in ACTIVE

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

    @property
    def progress_path(self) -> Path:
        return self.path / PROGRESS_FILE

    @property
    def stop_request_path(self) -> Path:
        return self.path / STOP_REQUEST_FILE

    @property
    def samples_path(self) -> Path:
        return self.path / "samples.jsonl"

    @property
    def eval_path(self) -> Path:
        return self.path / "eval.json"

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
                raise RunStoreError(f"invalid tag {t!r}: use a non-empty word without spaces")
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
            raise RunStoreError("a note must be a string")
        notes = f"{self.record.notes}\n{text}".strip() if append and self.record.notes else text
        self.save(notes=notes)
        return notes

    # ------------------------------------------------------------ the other files of a run
    def append_metrics(self, entry: dict[str, Any]) -> None:
        """One logged step (train or eval) as a line of ``metrics.jsonl`` (see :meth:`_append`)."""
        self._append(self.metrics_path, entry)

    log_metrics = append_metrics

    def _append(self, path: Path, entry: dict[str, Any]) -> None:
        """Append a line, after the lines an earlier write could not (a full disk): those wait, in order, in
        memory, and go first when there is room again. ``OSError`` still reaches the caller, which says so once."""
        pending = self._pending.setdefault(path, [])
        pending.append(entry)
        self._flush(path)

    def _flush(self, path: Path) -> None:
        pending = self._pending.get(path) or []
        while pending:
            append_jsonl(path, pending[0])
            pending.pop(0)

    def flush_pending(self) -> int:
        """Write the lines a full disk held back; returns how many are still waiting."""
        for path in list(self._pending):
            try:
                self._flush(path)
            except OSError:
                pass
        return sum(len(v) for v in self._pending.values())

    def supersede_after(self, step: int) -> int:
        """Drop the metrics and probe lines logged after ``step`` (the checkpoint a resume starts from): the
        resumed run logs those steps again, and every step must be recorded, and drawn, once. Each file is
        replaced whole; returns how many lines were dropped."""
        dropped = 0
        for path in (self.metrics_path, self.probes_path):
            if not path.is_file():
                continue
            keep = [rec for rec in read_jsonl(path) if not (isinstance(rec.get("step"), (int, float))
                                                            and rec["step"] > step)]
            lines = path.read_text(encoding="utf-8", errors="replace").count("\n")
            if len(keep) == lines:
                continue
            dropped += lines - len(keep)
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text("".join(dumps(rec) + "\n" for rec in keep), encoding="utf-8")
            os.replace(tmp, path)
        return dropped

    def append_probe(self, entry: dict[str, Any]) -> None:
        """One probe measurement as a line of ``probes.jsonl`` (see :meth:`_append`)."""
        self._append(self.probes_path, entry)

    def probes(self) -> list[dict[str, Any]]:
        return read_jsonl(self.probes_path)

    def write_progress(self, progress: dict[str, Any]) -> None:
        """``progress.json``, the worker's heartbeat for readers in other processes (the lab's sidebar, a new
        kernel's ``%ft_runs``): the progress plus when (``heartbeat``), which process and which host wrote it."""
        beat = dict(progress, heartbeat=time.time(), pid=os.getpid(), hostname=socket.gethostname())
        with self._progress_lock:  # the callback and the heartbeat thread write it
            write_json_atomic(self.progress_path, beat)

    def heartbeat_age(self) -> float | None:
        """Seconds since the worker last stamped ``progress.json`` (None when it never did)."""
        beat = (self.progress() or {}).get("heartbeat")
        if not isinstance(beat, (int, float)) or isinstance(beat, bool):
            return None
        try:
            age = time.time() - float(beat)
        except OverflowError:  # an int past a float's range: not a time
            return None
        return max(0.0, age) if math.isfinite(age) else None

    def progress(self) -> dict[str, Any] | None:
        data = read_json(self.progress_path)
        return data if isinstance(data, dict) else None

    def request_stop(self, by: str, *, force: bool = False) -> None:
        """Ask whoever trains this run to stop after its current step (any process may ask). ``force``: a second
        Stop; the launch's supervisor then ends the run's processes at once instead of waiting for the step."""
        write_json_atomic(self.stop_request_path, {"requested_at": now(), "by": by, "force": bool(force)})

    def stop_request(self) -> dict[str, Any] | None:
        """The pending stop request (who asked, when, whether forced), or None."""
        if not self.stop_request_path.exists():
            return None
        data = read_json(self.stop_request_path)
        return data if isinstance(data, dict) else {}

    def stop_requested(self) -> bool:
        return self.stop_request_path.exists()

    def clear_stop_request(self) -> None:
        """Forget an old request, so that a resumed run is not stopped by it again."""
        self.stop_request_path.unlink(missing_ok=True)

    def write_eval(self, rows: Iterable[dict[str, Any]], info: dict[str, Any]) -> None:
        """``samples.jsonl`` (one row per evaluated example) and ``eval.json`` (the metric table), each
        replaced whole, so a reader sees the previous evaluation or this one."""
        tmp = self.samples_path.with_name(".samples.jsonl.tmp")
        tmp.unlink(missing_ok=True)
        tmp.touch()
        for row in rows:
            append_jsonl(tmp, row)
        os.replace(tmp, self.samples_path)
        write_json_atomic(self.eval_path, info)

    def eval_info(self) -> dict[str, Any] | None:
        data = read_json(self.eval_path)
        return data if isinstance(data, dict) else None

    def metrics(self, since_step: int | None = None) -> list[dict[str, Any]]:
        return read_jsonl(self.metrics_path, since_step)

    def save_dataset(self, train: Any, eval: Any = None, raw_eval: Any = None) -> None:
        """The tokenized split (``dataset/``), so a resume or ``%ft_eval`` sees exactly the rows trained on."""
        train.save_to_disk(str(self.dataset_dir / "train"))
        if eval is not None:
            eval.save_to_disk(str(self.dataset_dir / "eval"))
        if raw_eval is not None:
            raw_eval.save_to_disk(str(self.dataset_dir / "eval_raw"))

    def last_checkpoint(self) -> Path | None:
        """The newest complete Trainer checkpoint, for resume; an incomplete one (a kill mid-save) is passed
        over for the one before. The Trainer writes ``trainer_state.json`` after the weights and the optimizer
        state, so a checkpoint is complete when that file parses and names its step, and its weights are there."""
        if not self.checkpoints_dir.is_dir():
            return None
        cands = []
        for p in self.checkpoints_dir.glob("checkpoint-*"):
            m = re.fullmatch(r"checkpoint-(\d+)", p.name)
            if m and p.is_dir() and not p.is_symlink() and _complete_checkpoint(p, int(m.group(1))):
                cands.append((int(m.group(1)), p))
        return max(cands)[1] if cands else None

    def save_adapter(self, model: Any, tokenizer: Any, save: Any = None) -> None:
        """The final adapter, complete or absent: written beside ``adapter/`` and renamed into place, so a kill
        mid-save leaves the previous adapter (or none), never old config beside partial weights. ``save(path)``
        writes the weights instead of ``model.save_pretrained`` (the Trainer's ``save_model``, which gathers
        the shards of FSDP or ZeRO-3 from every rank)."""
        tmp = self.path / ".adapter.tmp"
        old = self.path / ".adapter.old"
        for leftover in (tmp, old):
            if leftover.exists():
                shutil.rmtree(leftover)
        if save is not None:
            save(str(tmp))
        else:
            model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if self.adapter_dir.exists():
            os.replace(self.adapter_dir, old)
        os.replace(tmp, self.adapter_dir)
        shutil.rmtree(old, ignore_errors=True)


def _complete_checkpoint(path: Path, step: int) -> bool:
    state = read_json(path / "trainer_state.json")
    if not isinstance(state, dict) or state.get("global_step") != step:
        return False
    weights = [path / name for name in ("adapter_model.safetensors", "model.safetensors", "adapter_model.bin",
                                        "pytorch_model.bin")]
    return any(w.is_file() and w.stat().st_size > 0 for w in weights) or any(path.glob("model-*.safetensors"))


class ReplicaRunDir(RunDir):
    """The run directory as a rank other than 0 of a launch sees it: it reads the run's files (its config, a
    resumed run's dataset and checkpoint) and writes none of them. Rank 0 is the one writer, so N ranks never
    race on ``run.json`` or log a step N times; what this rank records stays in its memory (and its own
    ``logs/rank-N.log``)."""

    @classmethod
    def of(cls, rd: RunDir) -> "ReplicaRunDir":
        return cls(rd.path, rd.record)

    def save(self, **changes: Any) -> None:
        with self._lock:
            for key, value in changes.items():
                setattr(self.record, key, value)

    def _append(self, path: Path, entry: dict[str, Any]) -> None:
        pass

    def supersede_after(self, step: int) -> int:
        return 0

    def write_progress(self, progress: dict[str, Any]) -> None:
        pass

    def clear_stop_request(self) -> None:
        pass

    def write_eval(self, rows: Iterable[dict[str, Any]], info: dict[str, Any]) -> None:
        pass

    def save_dataset(self, train: Any, eval: Any = None, raw_eval: Any = None) -> None:
        pass

    def save_adapter(self, model: Any, tokenizer: Any, save: Any = None) -> None:
        if save is not None:  # a sharded model: every rank takes part in gathering it; rank 0 writes
            save(str(self.path / ".adapter.tmp"))
