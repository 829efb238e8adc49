"""Training runs in a daemon thread of the kernel, so the notebook stays usable while a model trains.

One worker thread per process runs one training at a time (two would fight over the same GPU and
cores); a second ``finetune()`` is queued behind it. Everything the UI shows comes from events this
module emits and from the run directory it writes; it never touches a widget itself.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import platform
import queue
import subprocess
import sys
import threading
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from .config import FineTuneConfig
from .store import ACTIVE, PROGRESS_FILE, STOP_REQUEST_FILE, RunDir, RunStore, now, write_json_atomic

__all__ = ["Event", "Run", "finetune", "resume", "live_run_ids", "active_run"]

log = logging.getLogger(__name__)
# Library chatter that says nothing to a notebook user and would land under the launching cell.
warnings.filterwarnings("ignore", message=r".*is_gradient_checkpointing.*", category=FutureWarning)
warnings.filterwarnings("ignore", message=r".*bitsandbytes::gemv_4bit.*autograd.*", category=UserWarning)

EventHandler = Callable[["Event"], None]


@dataclass(frozen=True)
class Event:
    """Something that happened in a run: ``status``, ``progress``, ``log``, ``eval``, ``checkpoint``,
    ``warning`` or ``data``. ``data`` is a plain dict, safe to serialise."""

    kind: str
    run_id: str
    data: dict[str, Any]
    time: float = field(default_factory=time.time)


class Subscribers:
    """The event handlers of a run or a sweep: subscribed from the notebook's thread, called from the
    training thread, so the list is copied under a lock before each delivery."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._handlers: list[EventHandler] = []

    def add(self, handler: EventHandler) -> Callable[[], None]:
        """Register ``handler``; returns a function that unsubscribes it."""
        with self._lock:
            self._handlers.append(handler)

        def unsubscribe() -> None:
            with self._lock:
                if handler in self._handlers:
                    self._handlers.remove(handler)

        return unsubscribe

    def __iter__(self) -> Iterator[EventHandler]:
        with self._lock:
            return iter(list(self._handlers))


class StopRequested(Exception):
    """Raised between set-up phases when the user pressed Stop before training began."""


# --------------------------------------------------------------------------- the worker
_LIVE: dict[str, "Run"] = {}
_LIVE_LOCK = threading.Lock()
_QUEUE: "queue.Queue[Run]" = queue.Queue()
_WORKER: threading.Thread | None = None


def live_run_ids() -> set[str]:
    """Runs this process is queued to train or is training now."""
    with _LIVE_LOCK:
        return set(_LIVE)


def active_run() -> "Run | None":
    """The run training now in this process, if any."""
    with _LIVE_LOCK:
        return next((r for r in _LIVE.values() if r.status in ("running", "stopping")), None)


def _ensure_worker() -> None:
    global _WORKER
    with _LIVE_LOCK:
        if _WORKER is None or not _WORKER.is_alive():
            _WORKER = threading.Thread(target=_work, name="jupyter-ft-trainer", daemon=True)
            _WORKER.start()


def _work() -> None:
    while True:
        run = _QUEUE.get()
        try:
            run._execute()
        except BaseException:  # noqa: BLE001 - the worker must outlive any run
            log.exception("jupyter-ft: unexpected error around run %s", run.id)
        finally:
            with _LIVE_LOCK:
                _LIVE.pop(run.id, None)
            run._done.set()


# --------------------------------------------------------------------------- the run
class Run:
    """A fine-tuning run: a directory plus (while it trains) the background thread's work.

    ``history`` holds every logged step; ``subscribe`` delivers events to the dashboard and probes.
    Handlers run in the training thread and must be quick; an exception in one is logged, never fatal.
    """

    def __init__(self, config: FineTuneConfig, run_dir: RunDir, *, resume_from: str | None = None) -> None:
        self.config = config
        self.run_dir = run_dir
        self.resume_from = resume_from
        self.history: list[dict[str, Any]] = []
        self.progress: dict[str, Any] = {}
        self.model: Any = None  # set only while training; freed afterwards
        self.tokenizer: Any = None
        self._subscribers = Subscribers()
        self._stop = threading.Event()
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._output_parent: Any = None

    # ------------------------------------------------------------ public API
    @property
    def id(self) -> str:
        return self.run_dir.record.id

    @property
    def name(self) -> str:
        return self.run_dir.record.name

    @property
    def status(self) -> str:
        return self.run_dir.record.status

    @property
    def error(self) -> str | None:
        return self.run_dir.record.error

    @property
    def path(self) -> Path:
        return self.run_dir.path

    @property
    def summary(self) -> dict[str, Any]:
        return self.run_dir.record.summary

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def start(self) -> "Run":
        """Queue the run on the process's training thread; returns at once."""
        with _LIVE_LOCK:
            if self.id in _LIVE:
                return self
            _LIVE[self.id] = self
        self._done.clear()
        self._output_parent = _capture_output_parent()
        self._set_status("queued")
        _QUEUE.put(self)
        _ensure_worker()
        return self

    def stop(self, wait: bool = False, timeout: float | None = None) -> "Run":
        """Ask the run to stop after the current optimizer step; it saves a checkpoint and the adapter."""
        self._stop.set()
        if self.status in ("running", "queued"):
            self._set_status("stopping")
        if wait:
            self.wait(timeout)
        return self

    def wait(self, timeout: float | None = None) -> str:
        """Block until the run ends (or ``timeout`` seconds pass); return its status."""
        self._done.wait(timeout)
        return self.status

    def subscribe(self, handler: EventHandler) -> Callable[[], None]:
        """Call ``handler(event)`` for every event from now on; returns a function that unsubscribes."""
        return self._subscribers.add(handler)

    def metrics(self, since_step: int | None = None) -> list[dict[str, Any]]:
        return self.run_dir.metrics(since_step)

    def tag(self, *tags: str, remove: bool = False) -> list[str]:
        """Label the run (shown and filtered in ``%ft_runs --tag``); safe while it trains."""
        return self.run_dir.tag(*tags, remove=remove)

    def note(self, text: str, append: bool = False) -> str:
        """Set (or append to) the run's free-text notes, kept in run.json."""
        return self.run_dir.note(text, append=append)

    def __repr__(self) -> str:
        step = self.progress.get("step")
        total = self.progress.get("max_steps")
        where = f", step {step}/{total}" if step is not None else ""
        return f"<Run {self.id} {self.status}{where}>"

    # ------------------------------------------------------------ events
    def emit(self, kind: str, **data: Any) -> None:
        event = Event(kind, self.id, data)
        for handler in self._subscribers:
            try:
                handler(event)
            except Exception:  # noqa: BLE001 - a broken dashboard must not kill training
                log.exception("jupyter-ft: event handler %r failed", handler)

    def _set_status(self, status: str, **fields: Any) -> None:
        previous = self.run_dir.record.status
        self.run_dir.save(status=status, **fields)
        if status != previous:
            self.emit("status", status=status, previous=previous, error=self.run_dir.record.error)

    def _check_stop(self) -> None:
        if self.poll_stop_request():
            raise StopRequested()

    def poll_stop_request(self) -> bool:
        """Whether Stop was asked for, here (``stop()``) or by the lab's Stop (a request file the server
        writes into the run directory: the run lives in this kernel's thread, out of the server's reach)."""
        if not self._stop.is_set() and os.path.exists(os.path.join(self.run_dir.path, STOP_REQUEST_FILE)):
            self.stop()
        return self._stop.is_set()

    # ------------------------------------------------------------ the work (training thread)
    def _execute(self) -> None:
        _route_output(self._output_parent)
        if self.poll_stop_request():
            self._set_status("stopped", finished_at=now())
            return
        self._set_status("running", started_at=now(), error=None, traceback=None, pid=os.getpid())
        trainer = None
        try:
            trainer = self._train()
            final = "stopped" if self._stop.is_set() else "finished"
            self._set_status(final, finished_at=now())
        except StopRequested:
            self._set_status("stopped", finished_at=now())
        except Exception as exc:  # noqa: BLE001 - a failed run is recorded, never raised into the kernel
            message = _explain(exc, self.config)
            self._set_status("failed", finished_at=now(), error=message, traceback=traceback.format_exc())
        finally:
            if self.model is not None:
                from .models import forget_optimizer_registrations

                forget_optimizer_registrations(self.model)
            self.model = None
            self.tokenizer = None
            if getattr(self, "_probes", None) is not None:  # its summary stays; its base-model references go
                self._probes.forgetting = None
            del trainer
            free_memory()

    def _train(self) -> Any:
        from . import data as data_mod
        from . import models
        from .evaluation import release_model

        cfg = self.config
        rd = self.run_dir
        # One model in memory: a model kept by %ft_eval / %ft_chat is freed before this run loads its own,
        # which is what keeps a T4 from running out of memory on the second run of a session.
        release_model()
        resolved = models.resolve_model(cfg.model.name, cfg.model.revision)
        rd.save(model=resolved.to_dict(), environment=environment())
        self._check_stop()
        device = models.select_device()
        self._device = device
        dtype = models.select_compute_dtype(device)
        if device == "cuda":  # the summary's peak is this run's, to set beside its memory estimate
            import torch

            with contextlib.suppress(Exception):  # a statistic: never a reason to fail the run
                torch.cuda.reset_peak_memory_stats()
        tokenizer = models.load_tokenizer(resolved, cfg.model.trust_remote_code)
        self.tokenizer = tokenizer
        train_ds, eval_ds = self._datasets(data_mod, tokenizer)
        self._check_stop()

        estimate = models.estimate_memory(cfg, resolved, device, longest=_longest_row(train_ds))
        rd.save(memory_estimate=estimate.to_dict())
        if (estimate.verdict == "too_big" and (device == "cuda" or estimate.hard_limit)
                and not os.environ.get("JUPYTER_FT_IGNORE_MEMORY_ESTIMATE")):
            # Past the estimate's error margin: say so now rather than fail with a CUDA OOM minutes later, or,
            # in a container with a hard memory limit (Binder's 2 GB), have the kernel killed with everything
            # the notebook held.
            where = ("GPU memory" if device == "cuda" else
                     "memory in this container (past its limit the kernel is killed, not slowed)")
            raise models.InsufficientMemory(
                f"Not enough {where}: the estimate is {estimate}. To fit: {estimate.advice(cfg)}. "
                "(Set JUPYTER_FT_IGNORE_MEMORY_ESTIMATE=1 to try anyway.)")
        self._memory_plan = dict(estimate.plan or {})
        if (estimate.plan or {}).get("reason") == "low memory":
            warning = (f"Little memory is free ({estimate.available / 2**30:.1f} GiB): gradient checkpointing is on "
                       "for this run (about 30% slower, much less memory). Set training.gradient_checkpointing: "
                       "false to turn it off.")
            if estimate.plan.get("micro_batch_size"):
                micro, factor = estimate.plan["micro_batch_size"], estimate.plan["grad_accum_factor"]
                warning += (f" Each batch of {cfg.training.batch_size} also runs as {factor} micro-batches of "
                            f"{micro}, accumulated: the same examples per optimizer step, {factor}x the passes.")
            rd.record.warnings.append(warning)
            rd.save()
            self.emit("warning", message=warning)
        if estimate.verdict in ("tight", "too_big"):
            warning = (f"The memory estimate ({estimate}) is close to or above what is free; training may run "
                       f"out of memory. To make room: {estimate.advice(cfg)}.")
            rd.record.warnings.append(warning)
            rd.save()
            self.emit("warning", message=warning)

        # The plan behind the estimate: "auto" checkpointing may have been turned on for a small machine.
        self._gradient_checkpointing = bool((estimate.plan or {}).get(
            "gradient_checkpointing", models.resolve_gradient_checkpointing(cfg, device)))
        model = models.apply_lora(models.load_base_model(cfg, resolved, device, dtype), cfg, device,
                                  gradient_checkpointing=self._gradient_checkpointing)
        self.model = model
        self._check_stop()
        trainer = self._trainer(model, tokenizer, train_ds, eval_ds, device, dtype)
        checkpoint = self.resume_from
        from .tracking import tracking_session

        with tracking_session(self, trainer):  # training.report_to: the Trainer's own integrations log into it
            trainer.train(resume_from_checkpoint=checkpoint)
            state = trainer.state
            if eval_ds is not None and not self._stop.is_set():
                evaluated = [h for h in state.log_history if "eval_loss" in h]
                if not evaluated or evaluated[-1].get("step") != state.global_step:
                    trainer.evaluate()
            model.save_pretrained(rd.adapter_dir)
            tokenizer.save_pretrained(rd.adapter_dir)
            rd.save(summary=self._summary(state))
        return trainer

    def _datasets(self, data_mod: Any, tokenizer: Any) -> tuple[Any, Any]:
        """Prepare the data, or reload the exact split a resumed run trained on."""
        import datasets

        rd = self.run_dir
        train_dir, eval_dir = rd.dataset_dir / "train", rd.dataset_dir / "eval"
        if self.resume_from and train_dir.is_dir():
            return datasets.load_from_disk(str(train_dir)), (
                datasets.load_from_disk(str(eval_dir)) if eval_dir.is_dir() else None
            )
        prepared = data_mod.prepare_data(self.config.data, tokenizer, seed=self.config.training.seed)
        summary = prepared.summary()
        rd.save(dataset=summary)
        self.emit("data", **summary)
        prepared.train.save_to_disk(str(train_dir))
        if prepared.eval is not None:
            prepared.eval.save_to_disk(str(eval_dir))
            prepared.raw_eval.save_to_disk(str(rd.dataset_dir / "eval_raw"))
        return prepared.train, prepared.eval

    def _trainer(self, model: Any, tokenizer: Any, train_ds: Any, eval_ds: Any, device: str, dtype: Any) -> Any:
        import torch
        from transformers import Trainer, TrainingArguments

        from . import models
        from .tracking import normalize_report_to

        t = self.config.training
        warmup = t.warmup if (isinstance(t.warmup, float) and t.warmup < 1) else int(t.warmup)
        has_eval = eval_ds is not None and len(eval_ds) > 0
        pr = self.config.probes
        early_stop = has_eval and pr.overfitting and pr.early_stop
        best_args: dict[str, Any] = {}
        self._restores_best = early_stop  # the final model is then the best checkpoint, not the last step
        if early_stop:  # the Trainer restores the best checkpoint, so it must save at every evaluation
            best_args = {"load_best_model_at_end": True, "metric_for_best_model": "eval_loss",
                         "greater_is_better": False}
        memory_plan = getattr(self, "_memory_plan", None) or {}
        micro = int(memory_plan.get("micro_batch_size") or t.batch_size)
        accum_factor = int(memory_plan.get("grad_accum_factor") or 1)
        args = TrainingArguments(
            output_dir=str(self.run_dir.checkpoints_dir),
            # a container's low memory may have split each batch into micro-batches (MemoryEstimate.plan):
            # the same examples per optimizer step, accumulated
            per_device_train_batch_size=micro,
            per_device_eval_batch_size=micro,
            gradient_accumulation_steps=t.grad_accum * accum_factor,
            learning_rate=t.learning_rate,
            num_train_epochs=float(t.epochs),
            max_steps=t.max_steps if t.max_steps is not None else -1,
            lr_scheduler_type=t.scheduler,
            warmup_steps=warmup,
            weight_decay=t.weight_decay,
            max_grad_norm=t.max_grad_norm,
            seed=t.seed,
            data_seed=t.seed,
            logging_steps=t.logging_every,
            logging_first_step=True,
            eval_strategy="steps" if has_eval else "no",
            eval_steps=t.eval_every if has_eval else None,
            save_strategy="steps",
            save_steps=t.eval_every if early_stop else t.save_every,
            save_total_limit=2,
            report_to=normalize_report_to(t.report_to),
            run_name=self.name,
            disable_tqdm=True,
            use_cpu=device == "cpu",
            bf16=device != "cpu" and dtype == torch.bfloat16,
            fp16=device != "cpu" and dtype == torch.float16,
            # training.optimizer / gradient_checkpointing "auto": paged 8-bit AdamW + checkpointing on CUDA
            optim=models.resolve_optimizer(self.config, device),
            **checkpointing_args(TrainingArguments, getattr(self, "_gradient_checkpointing", None)
                                 if getattr(self, "_gradient_checkpointing", None) is not None
                                 else models.resolve_gradient_checkpointing(self.config, device)),
            remove_unused_columns=False,
            train_sampling_strategy="random" if self.config.data.packing else "group_by_length",
            length_column_name="length",
            include_num_input_tokens_seen="non_padding",
            dataloader_num_workers=0,
            label_names=["labels"],
            **best_args,
        )
        from .probes import probe_callback

        self._probes = probe_callback(self) if (pr.overfitting and has_eval) or pr.forgetting else None
        trainer = Trainer(
            model=model,
            args=args,
            train_dataset=train_ds,
            eval_dataset=eval_ds if has_eval else None,
            data_collator=make_collator(tokenizer, packing=self.config.data.packing),
            processing_class=tokenizer,
            callbacks=[run_callback(self)] + ([self._probes] if self._probes is not None else []),
        )
        from transformers.trainer_callback import PrinterCallback, ProgressCallback

        for cb in (PrinterCallback, ProgressCallback):  # output from a thread lands in the wrong cell
            trainer.remove_callback(cb)
        return trainer

    def _summary(self, state: Any) -> dict[str, Any]:
        evals = [h for h in self.history if "eval_loss" in h]
        trains = [h for h in self.history if "loss" in h]
        best = min(evals, key=lambda h: h["eval_loss"]) if evals else None
        speeds = [h["tokens_per_s"] for h in trains if h.get("tokens_per_s")]
        final_eval = evals[-1]["eval_loss"] if evals else None
        restored_step = None
        if getattr(self, "_restores_best", False) and state.best_model_checkpoint and state.best_metric is not None:
            # load_best_model_at_end put the best checkpoint back: its eval loss is the final model's
            final_eval = state.best_metric
            restored_step = int(Path(state.best_model_checkpoint).name.rsplit("-", 1)[-1])
        return {
            "global_step": state.global_step,
            "max_steps": state.max_steps,
            "epoch": state.epoch,
            "tokens_seen": state.num_input_tokens_seen,
            "final_train_loss": trains[-1]["loss"] if trains else None,
            "final_eval_loss": final_eval,
            "restored_step": restored_step,
            "best_eval_loss": best["eval_loss"] if best else None,
            "best_eval_step": best["step"] if best else None,
            "mean_tokens_per_s": sum(speeds) / len(speeds) if speeds else None,
            "train_seconds": self.progress.get("elapsed"),
            "adapter": str(self.run_dir.adapter_dir),
            "probes": self._probes.summary() if getattr(self, "_probes", None) is not None else None,
            **_peak_gpu_memory(getattr(self, "_device", None)),
        }


def _longest_row(dataset: Any) -> int | None:
    """The longest tokenized training row (the ``length`` column prepare_data adds), or None."""
    try:
        lengths = dataset["length"]
    except (KeyError, TypeError):
        return None
    return int(max(lengths)) if len(lengths) else None


def _peak_gpu_memory(device: str | None) -> dict[str, Any]:
    """The run's measured CUDA peak (what torch's allocator handed out, and what it reserved from the card),
    so ``memory_estimate`` in run.json can be checked against reality; nothing on a CPU."""
    if device != "cuda":
        return {}
    import torch

    try:
        return {"peak_gpu_memory": int(torch.cuda.max_memory_allocated()),
                "peak_gpu_reserved": int(torch.cuda.max_memory_reserved())}
    except Exception:  # noqa: BLE001 - a statistic: never a reason to fail the run
        return {}


def checkpointing_args(args_cls: type, enabled: bool) -> dict[str, Any]:
    """Gradient checkpointing for ``TrainingArguments``: transformers 5.x renamed it
    ``activation_checkpointing`` (the old name warns); use whichever this version has."""
    fields = getattr(args_cls, "__dataclass_fields__", {})
    name = "activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing"
    return {name: enabled, f"{name}_kwargs": {"use_reentrant": False}}


def make_collator(tokenizer: Any, packing: bool) -> Callable[[list[dict[str, Any]]], dict[str, Any]]:
    """Dynamic padding (labels padded with -100) or, with packing, padding-free flattening: one row of
    all examples with position ids restarting per example, so attention never crosses examples."""
    from transformers import DataCollatorForSeq2Seq, DataCollatorWithFlattening

    if packing:
        inner: Any = DataCollatorWithFlattening(return_position_ids=True)
    else:
        inner = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100, return_tensors="pt")

    def collate(features: list[dict[str, Any]]) -> dict[str, Any]:
        return inner([{k: v for k, v in f.items() if k in ("input_ids", "labels")} for f in features])

    return collate


# --------------------------------------------------------------------------- trainer callback
_CALLBACK_CLASS: type | None = None


def run_callback(run: Run) -> Any:
    """A ``TrainerCallback`` for ``run``; the class is built on first use so importing this module stays
    cheap (the store imports it to know which runs are live)."""
    global _CALLBACK_CLASS
    if _CALLBACK_CLASS is None:
        from transformers import TrainerCallback

        _CALLBACK_CLASS = type("RunCallback", (_RunCallbackMixin, TrainerCallback), {})
    return _CALLBACK_CLASS(run)


class _RunCallbackMixin:
    """Turns Trainer hooks into run events, metrics lines, progress and ETA; honours Stop per step."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.t0 = time.perf_counter()
        self.last_time = self.t0
        self.last_tokens = 0
        self.eval_seconds = 0.0

    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.t0 = self.last_time = time.perf_counter()
        self.last_tokens = state.num_input_tokens_seen
        self.start_step = state.global_step
        self.run.emit("progress", step=state.global_step, max_steps=state.max_steps, epoch=state.epoch or 0.0,
                      elapsed=0.0, eta=None)
        self._write_progress({"step": state.global_step, "max_steps": state.max_steps, "epoch": state.epoch,
                              "elapsed": 0.0, "eta": None})

    def _gpu_memory(self) -> dict[str, Any]:
        """On CUDA, the run's peak so far and the card's size, for the progress line: watching the peak
        approach the card is how a T4 user sees an out-of-memory coming (reading the counters needs no sync)."""
        if getattr(self.run, "_device", None) != "cuda":
            return {}
        if not hasattr(self, "_gpu_total"):
            try:
                import torch

                self._gpu_total = int(torch.cuda.get_device_properties(0).total_memory)
            except Exception:  # noqa: BLE001 - a statistic: never a reason to fail the run
                self._gpu_total = None
        if self._gpu_total is None:
            return {}
        import torch

        return {"gpu_peak": int(torch.cuda.max_memory_allocated()), "gpu_total": self._gpu_total}

    def _write_progress(self, progress: dict[str, Any]) -> None:
        """progress.json for the lab's sidebar and status bar (another process: it cannot see events)."""
        self.progress_written = time.perf_counter()
        try:
            write_json_atomic(self.run.run_dir.path / PROGRESS_FILE, dict(progress, time=time.time()))
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
        stopping = self.run.poll_stop_request()
        if stopping or left <= 0 or time.perf_counter() - getattr(self, "progress_written", 0.0) >= 1.0:
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
            tokens = state.num_input_tokens_seen
            seconds = now_t - self.last_time - self.eval_seconds
            if seconds > 0 and tokens > self.last_tokens:
                entry["tokens_per_s"] = (tokens - self.last_tokens) / seconds
            entry["tokens_seen"] = tokens
            self.last_time, self.last_tokens, self.eval_seconds = now_t, tokens, 0.0
        entry.pop("num_input_tokens_seen", None)
        self.run.history.append(entry)
        self.run.run_dir.log_metrics(entry)
        self.run.emit("eval" if is_eval else "log", **entry)

    def on_save(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.run.emit("checkpoint", step=state.global_step,
                      path=str(self.run.run_dir.checkpoints_dir / f"checkpoint-{state.global_step}"))


# --------------------------------------------------------------------------- helpers
def _capture_output_parent() -> Any:
    """The Jupyter message that launched the run (ipykernel's stdout knows it), so that whatever the
    training thread prints lands under the launching cell instead of whichever cell runs last."""
    stream = sys.stdout
    if hasattr(stream, "set_thread_parent"):
        return getattr(stream, "parent_header", None)
    return None


def _route_output(parent: Any) -> None:
    if not parent:
        return
    for stream in (sys.stdout, sys.stderr):
        setter = getattr(stream, "set_thread_parent", None)
        if setter is not None:
            try:
                setter(parent)
            except Exception:  # noqa: BLE001 - output routing is best effort
                pass
    try:
        from IPython import get_ipython

        shell = get_ipython()
        for hook in (getattr(shell, "display_pub", None), getattr(shell, "displayhook", None)):
            setter = getattr(hook, "set_thread_parent", None)
            if setter is not None:
                setter(parent)
    except Exception:  # noqa: BLE001
        pass


def _explain(exc: BaseException, config: FineTuneConfig) -> str:
    """A one-paragraph message the dashboard shows; the traceback goes to run.json."""
    from .evaluation import is_out_of_memory

    if is_out_of_memory(exc):
        try:
            from .models import resolve_gradient_checkpointing, select_device

            gc_on = resolve_gradient_checkpointing(config, select_device())
        except Exception:  # noqa: BLE001 - the message must not fail
            gc_on = False
        last = ("training.gradient_checkpointing is already on, so also try a smaller lora.r or a smaller model"
                if gc_on else "or set training.gradient_checkpointing: true")
        return (f"Out of memory with training.batch_size={config.training.batch_size} and "
                f"data.max_length={config.data.max_length}. Lower the batch size (raise training.grad_accum to "
                f"keep the effective batch), shorten data.max_length, {last}. "
                f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})")
    return f"{type(exc).__name__}: {exc}"


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


def environment() -> dict[str, Any]:
    """Versions and hardware, so a run can be explained and reproduced later."""
    from importlib import metadata

    versions = {}
    for pkg in ("jupyter-ft", "torch", "transformers", "peft", "bitsandbytes", "trl", "datasets", "accelerate"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    env: dict[str, Any] = {"python": sys.version.split()[0], "platform": platform.platform(),
                           "cpu_count": os.cpu_count(), "versions": versions, "cwd": os.getcwd()}
    try:
        import torch

        env["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
        env["torch_threads"] = torch.get_num_threads()
    except Exception:  # noqa: BLE001
        pass
    try:
        env["git_commit"] = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                           timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        env["git_commit"] = None
    return env


def _coerce_config(config: FineTuneConfig | str | Mapping[str, Any] | None, overrides: Mapping[str, Any]) -> FineTuneConfig:
    if config is None:
        return FineTuneConfig.from_dict({}, **overrides)
    if isinstance(config, FineTuneConfig):
        return config.replace(**overrides) if overrides else config.validate()
    if isinstance(config, str):
        return FineTuneConfig.from_yaml(config, **overrides)
    return FineTuneConfig.from_dict(config, **overrides)


def finetune(config: FineTuneConfig | str | Mapping[str, Any] | None = None, *, wait: bool = False,
             **overrides: Any) -> Run:
    """Start a QLoRA run in the background thread and return its ``Run`` at once (or when done, ``wait=True``).

    ``config`` is a ``FineTuneConfig``, a YAML string or a dict; ``overrides`` use ``section__field``
    keys (``training__learning_rate=1e-4``). The run is recorded before anything can fail, so even a
    run that dies loading the model leaves its record behind.
    """
    cfg = _coerce_config(config, overrides)
    store = RunStore(cfg.output.root)
    rd = store.create(cfg.to_dict(), cfg.output.name)
    run = Run(cfg, rd).start()
    if wait:
        run.wait()
    return run


def resume(run_id: str, *, root: str = "ft_runs", wait: bool = False) -> Run:
    """Continue an interrupted or stopped run from its last checkpoint, in its own directory."""
    store = RunStore(root)
    rd = store.open(run_id)
    if rd.record.id in live_run_ids():
        raise RuntimeError(f"run {run_id} is already training in this kernel")
    checkpoint = rd.last_checkpoint()
    if checkpoint is None:
        raise RuntimeError(f"run {run_id} has no checkpoint to resume from (it saves every "
                           f"training.save_every steps); start a new run instead.")
    config = FineTuneConfig.from_dict(rd.record.config)
    rd.save(status=rd.record.status if rd.record.status not in ACTIVE else "interrupted")
    (rd.path / STOP_REQUEST_FILE).unlink(missing_ok=True)  # an old request from the lab must not stop it again
    run = Run(config, rd, resume_from=str(checkpoint))
    run.history = rd.metrics()
    run.start()
    if wait:
        run.wait()
    return run
