"""The run's ``TrainerCallback``: Trainer hooks become run events, metrics lines, progress and ETA, and a
Stop (from ``Run.stop()`` or the lab's request file) is honoured after the current step."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Mapping

from ..runtime import distributed

if TYPE_CHECKING:  # pragma: no cover
    from .run import Run

__all__ = ["run_callback", "RunCallbackMixin"]

_CALLBACK_CLASS: type | None = None


def run_callback(run: "Run") -> Any:
    """A ``TrainerCallback`` for ``run``; the class is built on first use so importing the engine stays
    cheap (transformers loads only when a run trains)."""
    global _CALLBACK_CLASS
    if _CALLBACK_CLASS is None:
        from transformers import TrainerCallback

        _CALLBACK_CLASS = type("RunCallback", (RunCallbackMixin, TrainerCallback), {})
    return _CALLBACK_CLASS(run)


class RunCallbackMixin:
    """Turns Trainer hooks into run events, metrics lines, progress and ETA; honours Stop per step."""

    def __init__(self, run: "Run") -> None:
        self.run = run
        self.t0 = time.perf_counter()
        self.last_time = self.t0
        self.last_tokens = 0
        self.eval_seconds = 0.0
        self.start_step = 0
        self.last_loss_step = 0  # the step of the last logged train loss
        self.progress_written = 0.0
        self.gpu_total: int | None = None
        # the global batch (per-device batch x accumulation x world size): the same for 1 and N processes
        self.examples_per_step = run.examples_per_step
        if run.device == "cuda":
            self.gpu_total = _card_size()

    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.t0 = self.last_time = time.perf_counter()
        self.last_tokens = state.num_input_tokens_seen
        self.start_step = self.last_loss_step = state.global_step
        self.run.progress = {"step": state.global_step, "max_steps": state.max_steps, "epoch": state.epoch or 0.0,
                             "elapsed": 0.0, "eta": None}
        self.run.emit("progress", **self.run.progress)
        self._write_progress(self.run.progress)

    def _gpu_memory(self) -> dict[str, Any]:
        """On CUDA, the run's peak so far and the card's size, for the progress line: watching the peak
        approach the card is how a T4 user sees an out-of-memory coming (reading the counters needs no sync)."""
        if self.gpu_total is None:
            return {}
        import torch

        return {"gpu_peak": int(torch.cuda.max_memory_allocated()), "gpu_total": self.gpu_total}

    def _write_progress(self, progress: dict[str, Any]) -> None:
        """progress.json for the lab's sidebar and status bar (another process: it cannot see events)."""
        self.progress_written = time.perf_counter()
        try:
            self.run.run_dir.write_progress(dict(progress, time=time.time()))
        except OSError:  # a full disk must not stop training; the sidebar just lags
            pass

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        elapsed = time.perf_counter() - self.t0
        done = state.global_step - self.start_step
        left = state.max_steps - state.global_step
        eta = elapsed / done * left if done else None
        self.run.progress = {"step": state.global_step, "max_steps": state.max_steps, "epoch": state.epoch,
                             "elapsed": elapsed, "eta": eta, **self._gpu_memory()}
        self.run.emit("progress", **self.run.progress)
        # every rank stops at this same step: rank 0's request (or any rank's signal) reaches all through the
        # process group, never through each rank reading a file of its own (another node may not share it)
        stopping = distributed.agree_any(self.run.poll_stop_request())
        if stopping and not self.run.stop_asked:
            self.run.stop()
        if stopping or left <= 0 or time.perf_counter() - self.progress_written >= 1.0:
            self._write_progress(self.run.progress)
        if stopping:
            # Stop-and-save: the Trainer writes a resumable checkpoint of this exact step, then exits.
            control.should_training_stop = True
            control.should_save = True

    def on_log(self, args: Any, state: Any, control: Any, logs: Mapping[str, Any] | None = None, **kw: Any) -> None:
        logs = dict(logs or {})
        now_t = time.perf_counter()
        entry: dict[str, Any] = {"step": state.global_step, "epoch": state.epoch, "time": time.time(),
                                 "elapsed": now_t - self.t0}
        is_eval = any(k.startswith("eval_") for k in logs)
        for key, value in logs.items():
            if key.startswith("train_") and key != "train_loss":
                continue
            entry[key] = value
        if is_eval:
            self.eval_seconds += float(logs.get("eval_runtime", 0.0))
        elif "loss" in logs:
            skipped = set(self.run.nonfinite_steps)
            window = range(self.last_loss_step + 1, state.global_step + 1)
            if skipped and window and all(step in skipped for step in window):
                # every step since the last line was skipped (training.on_nonfinite): the Trainer's average of
                # them is a made-up number (0.0), not a loss
                del entry["loss"]
                entry["skipped"] = True
            self.last_loss_step = state.global_step
            tokens = state.num_input_tokens_seen
            seconds = now_t - self.last_time - self.eval_seconds
            if seconds > 0 and tokens > self.last_tokens:
                entry["tokens_per_s"] = (tokens - self.last_tokens) / seconds
            entry["tokens_seen"] = tokens
            entry["examples_per_step"] = self.examples_per_step
            self.last_time, self.last_tokens, self.eval_seconds = now_t, tokens, 0.0
        entry.pop("num_input_tokens_seen", None)
        self.run.history.append(entry)
        self.run.write_line(self.run.run_dir.append_metrics, entry)
        self.run.emit("eval" if is_eval else "log", **entry)

    def on_save(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.run.emit("checkpoint", step=state.global_step,
                      path=str(self.run.run_dir.checkpoints_dir / f"checkpoint-{state.global_step}"))


def _card_size() -> int | None:
    try:
        import torch

        return int(torch.cuda.get_device_properties(0).total_memory)
    except Exception:  # noqa: BLE001 - a statistic: never a reason to fail the run
        return None
