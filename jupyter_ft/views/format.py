"""The text every view of a run shares: durations, status, the progress line, curve smoothing.

One place for it, so the widget dashboard, the static one, the Colab view and the sweep dashboard say the
same thing in the same words; plain functions of plain values, testable without a frontend.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from ..store import TERMINAL

__all__ = ["ema", "finite", "format_duration", "progress_text", "status_text"]


def finite(v: Any) -> bool:
    """Whether ``v`` is a real, finite number (not a bool, ``None``, NaN or inf): a point worth plotting."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def ema(values: Sequence[float | None], weight: float) -> list[float | None]:
    """Debiased exponential moving average, as TensorBoard smooths curves.

    ``s_n = a_n / (1 - weight**n)`` with ``a_n = weight * a_{n-1} + (1 - weight) * v_n`` and ``a_0 = 0``:
    the debiasing keeps the first points from being pulled towards zero. ``weight=0`` returns the values
    unchanged; ``None`` / NaN / inf pass through and do not move the average.
    """
    if not 0.0 <= weight < 1.0:
        raise ValueError(f"smoothing weight must be in [0, 1), got {weight!r}")
    out: list[float | None] = []
    acc, n = 0.0, 0
    for v in values:
        if v is None or not math.isfinite(v):
            out.append(v)
            continue
        n += 1
        acc = weight * acc + (1.0 - weight) * v
        out.append(acc / (1.0 - weight ** n))
    return out


def format_duration(seconds: float | None) -> str:
    """``"0:41"``, ``"1:02:05"``, ``"2d 3:04:05"``; ``"–"`` when unknown."""
    if seconds is None or not isinstance(seconds, (int, float)) or not math.isfinite(seconds):
        return "–"
    total = max(0, int(round(seconds)))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}:{minutes:02d}:{secs:02d}"
    if hours:
        return f"{hours}:{minutes:02d}:{secs:02d}"
    return f"{minutes}:{secs:02d}"


def status_text(status: str, error: str | None = None) -> str:
    """``"running"``, or ``"failed: RuntimeError: boom"`` for a failed run with its error."""
    if status == "failed" and error:
        return f"failed: {error}"
    return status


def progress_text(progress: Mapping[str, Any], status: str = "running") -> str:
    """``"step 12/54 (22%) · epoch 0.22 · elapsed 0:41 · ETA 2:30"``; the ETA is left out once a run ended.
    On a GPU it ends with the run's memory peak so far against the card: ``GPU peak 2.1 of 15 GiB``."""
    step = progress.get("step")
    if step is None:
        if status == "queued":
            return "waiting for the training thread"
        if status in ("running", "stopping"):
            return "loading the model and data"
        return "no steps trained"
    total = progress.get("max_steps")
    parts = [f"step {step}/{total}" + (f" ({100 * step / total:.0f}%)" if total else "") if total
             else f"step {step}"]
    epoch = progress.get("epoch")
    if epoch is not None:
        parts.append(f"epoch {epoch:.2f}")
    if progress.get("elapsed") is not None:
        parts.append(f"elapsed {format_duration(progress['elapsed'])}")
    if status not in TERMINAL:
        parts.append(f"ETA {format_duration(progress.get('eta'))}")
    if progress.get("gpu_peak") and progress.get("gpu_total"):
        parts.append(f"GPU peak {progress['gpu_peak'] / 2**30:.1f} of {progress['gpu_total'] / 2**30:.0f} GiB")
    return " · ".join(parts)
