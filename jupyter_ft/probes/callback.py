"""The probes inside a training run: a ``TrainerCallback`` measuring at the start and at evaluations.

Overfitting is judged at every evaluation (and may stop the run early), forgetting at the start, every
``forgetting_every`` evaluations and at the last one; each measurement is a line of ``probes.jsonl``
(through ``run.run_dir.append_probe``) and a ``probe`` event. The ``TrainerCallback`` class is built on
first use, so importing this module does not import transformers.
"""

from __future__ import annotations

import json
import time
from typing import Any

from ..config.compute import topology
from ..runtime import distributed
from .forgetting import ForgettingProbe
from .overfitting import OverfittingProbe
from .verdicts import worst

__all__ = ["ProbeCallbackMixin", "probe_callback"]

_CALLBACK_CLASS: type | None = None


def probe_callback(run: Any) -> Any:
    """A ``TrainerCallback`` running the configured probes for ``run`` (class built on first use)."""
    global _CALLBACK_CLASS
    if _CALLBACK_CLASS is None:
        from transformers import TrainerCallback

        _CALLBACK_CLASS = type("ProbeCallback", (ProbeCallbackMixin, TrainerCallback), {})
    return _CALLBACK_CLASS(run)


class ProbeCallbackMixin:
    """The probe callback's hooks and records; :func:`probe_callback` mixes it with ``TrainerCallback``."""

    def __init__(self, run: Any) -> None:
        self.run = run
        self.cfg = run.config.probes
        self.overfitting = OverfittingProbe.from_config(self.cfg) if self.cfg.overfitting else None
        self.forgetting: ForgettingProbe | None = None
        self.evaluations = 0
        self.seconds = 0.0
        self.records: list[dict[str, Any]] = []
        self.worst_overfitting: str | None = None
        self.worst_forgetting: str | None = None
        self.stopped_early_at: int | None = None
        self.last_overfitting: dict[str, Any] | None = None
        self.last_forgetting: dict[str, Any] | None = None
        # Under a launch, forgetting is measured on rank 0 while the others wait at a barrier (a DDP replica
        # holds the whole model); under FSDP or ZeRO-3 a forward needs every rank's shard, so all ranks measure.
        self.sharded = distributed.world_size() > 1 and topology(run.config).shards_parameters

    def _measure_forgetting(self) -> dict[str, Any] | None:
        assert self.forgetting is not None
        if self.sharded or distributed.is_main():
            result = self.forgetting.measure(self.run.model)
        else:
            result = None
        if not self.sharded:
            distributed.barrier()
        return result

    # ------------------------------------------------------------ hooks
    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if self.cfg.forgetting and self.run.model is not None and self.run.tokenizer is not None:
            t0 = time.perf_counter()
            self.forgetting = ForgettingProbe.from_config(self.run.tokenizer, self.cfg,
                                                          seed=self.run.config.training.seed)
            self._record(state, forgetting=self._measure_forgetting(), start=True)
            self.seconds += time.perf_counter() - t0

    def on_evaluate(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        t0 = time.perf_counter()
        self.evaluations += 1
        over = self.overfitting.verdict(self.run.history) if self.overfitting is not None else None
        stop_early = (over is not None and self.overfitting is not None and self.cfg.early_stop
                      and state.global_step < state.max_steps and self.overfitting.should_stop(over)
                      and not control.should_training_stop)
        # decided once, for every rank (each has the same gathered losses; the process group makes it certain)
        if distributed.agree_any(stop_early) and over is not None:
            control.should_training_stop = True
            self.stopped_early_at = state.global_step
            over["early_stop"] = {"step": state.global_step, "restore_step": over["best_step"]}
            self.run.emit("warning", message=f"Early stopping at step {state.global_step}: {over['message']} "
                          f"Restoring the best checkpoint (step {over['best_step']}).")
        forget = None
        # every `forgetting_every` evaluations, and always at the last one, so the final verdict is current
        last = state.global_step >= state.max_steps or control.should_training_stop
        if self.forgetting is not None and (self.evaluations % self.cfg.forgetting_every == 0 or last):
            forget = self._measure_forgetting()
        self.seconds += time.perf_counter() - t0
        self._record(state, overfitting=over, forgetting=forget)

    # ------------------------------------------------------------ records
    def _record(self, state: Any, overfitting: dict[str, Any] | None = None,
                forgetting: dict[str, Any] | None = None, start: bool = False) -> None:
        rec: dict[str, Any] = {"step": state.global_step, "epoch": state.epoch, "time": time.time(),
                               "start": start, "overfitting": overfitting, "forgetting": forgetting,
                               "probe_seconds": self.seconds}
        if overfitting is not None:
            self.last_overfitting = overfitting
            self.worst_overfitting = worst(self.worst_overfitting, overfitting["status"])
        if forgetting is not None:
            self.last_forgetting = forgetting
            self.worst_forgetting = worst(self.worst_forgetting, forgetting["verdict"])
        rec = json.loads(json.dumps(rec, default=str))
        self.records.append(rec)
        self.run.write_line(self.run.run_dir.append_probe, rec)
        self.run.emit("probe", **rec)

    def summary(self) -> dict[str, Any]:
        """Final verdicts for the run's summary."""
        over, forget = self.last_overfitting, self.last_forgetting
        return {
            "overfitting": self.worst_overfitting,
            "overfitting_message": over["message"] if over else None,
            "best_eval_step": over["best_step"] if over else None,
            "stopped_early_at": self.stopped_early_at,
            "forgetting": self.worst_forgetting,
            "forgetting_final": forget["verdict"] if forget else None,
            "forgetting_message": forget["message"] if forget else None,
            "kl": forget["kl"] if forget else None,
            "loglik_drop": forget["loglik_drop"] if forget else None,
            "accuracy": forget["accuracy"] if forget else None,
            "base_accuracy": forget["base_accuracy"] if forget else None,
            "probe_seconds": self.seconds,
        }
