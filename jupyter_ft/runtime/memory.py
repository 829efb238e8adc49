"""Memory is the scarce thing in a notebook: give it back, keep one model, and say what to lower.

- :func:`free_memory` returns a finished run's memory to the CUDA driver and, on Linux, to the system.
- :data:`model_slot` is the one model kept between cells (``%ft_eval`` / ``%ft_chat``); a training run
  empties it before loading its own model, so a T4 never holds two.
- :func:`out_of_memory_advice` turns an out-of-memory error into one line naming what to lower.
"""

from __future__ import annotations

import contextlib
import gc
import sys
import threading
from typing import Any, Callable, Iterator

from ..errors import EvalOutOfMemory
from . import registry

__all__ = ["free_memory", "trim_heap", "is_out_of_memory", "out_of_memory_advice", "ModelSlot", "model_slot"]


def free_memory() -> None:
    """Give a finished run's memory back: to the CUDA driver, and on Linux to the operating system.

    Freed CPU tensors stay in glibc's heap, so the kernel kept its training peak: after the quickstart the
    process held 1.8 GB where 0.6 GB were live, and the ``%ft_eval`` that followed peaked at 2.8 GB instead
    of 1.3 GB (measured), which killed the kernel in a 2 GB Binder pod. ``malloc_trim`` returns that heap.
    """
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001
        pass
    trim_heap()


def trim_heap() -> bool:
    """``malloc_trim(0)`` where the C library has it (glibc); True if it ran."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim(0)
        return True
    except (OSError, AttributeError):  # musl and other C libraries have no malloc_trim
        return False


def is_out_of_memory(exc: BaseException) -> bool:
    """torch's CUDA OOM, Python's MemoryError, or any error whose text says "out of memory"."""
    try:
        import torch

        if isinstance(exc, torch.OutOfMemoryError):
            return True
    except (ImportError, AttributeError):  # pragma: no cover
        pass
    return isinstance(exc, MemoryError) or "out of memory" in str(exc).lower()


@contextlib.contextmanager
def out_of_memory_advice(doing: str, advice: str) -> Iterator[None]:
    """Turn an out-of-memory error inside the block into :class:`EvalOutOfMemory` that says what was being
    done and what to lower, after giving the failed step's memory back. On a T4 this is the common failure of
    an evaluation (the generation batch, or a training run of the same kernel holding the card)."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - only out-of-memory is translated
        if not is_out_of_memory(exc):
            raise
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        del exc  # its traceback holds the failed step's tensors
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except Exception:  # noqa: BLE001 - cleanup must not mask the message
            pass
        live = sorted(registry.live_run_ids())
        busy = (f" Run {', '.join(live)} is training in this kernel and holds memory too: wait for it or stop it "
                "(%ft_stop)." if live else "")
        raise EvalOutOfMemory(f"Out of memory while {doing}. {advice}.{busy} ({first})") from None


class ModelSlot:
    """Holds at most one loaded model (with whatever goes with it) under a key.

    Asking for the same key again reuses the value; another key frees the old value first, then loads,
    so only one model is ever held. ``release`` empties the slot and gives the memory back.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key: str | None = None
        self._value: Any = None

    def get(self, key: str, load: Callable[[], Any]) -> Any:
        with self._lock:
            if self._key == key:
                return self._value
            self._release_locked()
            value = load()
            self._key, self._value = key, value
            return value

    @property
    def held(self) -> bool:
        return self._key is not None

    def release(self) -> bool:
        """Free the held model; True if one was held."""
        with self._lock:
            return self._release_locked()

    def _release_locked(self) -> bool:
        had = self._key is not None
        self._key, self._value = None, None
        if had:
            free_memory()  # the next run or model needs this memory back, not in the allocator's free lists
        return had


model_slot = ModelSlot()
