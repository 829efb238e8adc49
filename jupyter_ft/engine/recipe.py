"""The recipe: one function from a run's config to a trained adapter in its run directory.

Read it top to bottom, as a torchtune recipe: free the kept model, resolve the model, plan for the
hardware, load and tokenize the data (or reload a resumed run's exact split), check memory, load and wrap
the model, build the Trainer, train, evaluate once more, save. Every choice made on the way lives in the
run's :class:`~jupyter_ft.models.TrainingPlan`, decided once and read by the Trainer's arguments.
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import data as data_mod
from .. import models
from ..config import FineTuneConfig
from ..config.compute import topology
from ..errors import InsufficientMemory
from ..runtime import distributed
from ..runtime.environment import environment
from ..runtime.memory import is_out_of_memory, model_slot
from . import trainer as trainer_setup
from .tracking import tracking_session

if TYPE_CHECKING:  # pragma: no cover
    from .run import Run

__all__ = ["train", "release", "explain_failure"]


def train(run: "Run") -> None:
    """Train ``run`` to the end (or its Stop); writes the adapter and the summary into its directory."""
    cfg, rd = run.config, run.run_dir
    # One model in memory: a model kept by %ft_eval / %ft_chat is freed before this run loads its own,
    # which is what keeps a T4 from running out of memory on the second run of a session.
    model_slot.release()
    resolved = models.resolve_model(cfg.model.name, cfg.model.revision)
    rd.save(model=resolved.to_dict(), environment=environment())
    run.check_stop()

    plan = models.plan_training(cfg)
    run.plan = plan
    if plan.device == "cuda":  # the summary's peak is this run's, to set beside its memory estimate
        import torch

        with contextlib.suppress(Exception):  # a statistic: never a reason to fail the run
            torch.cuda.reset_peak_memory_stats()
    tokenizer = models.load_tokenizer(resolved, cfg.model.trust_remote_code)
    run.tokenizer = tokenizer
    train_ds, eval_ds = load_datasets(run, tokenizer)
    run.check_stop()

    run.plan = plan = plan_memory(run, plan, resolved, train_ds)
    # The adapter's initial weights are drawn here, before the Trainer seeds: seed now, so that a run's
    # result depends on training.seed, not on whatever drew random numbers earlier in the kernel.
    from transformers import set_seed

    set_seed(cfg.training.seed)
    model = models.apply_lora(models.load_base_model(cfg, resolved, plan.device, plan.torch_dtype), cfg, plan.device,
                              gradient_checkpointing=plan.gradient_checkpointing)
    run.model = model
    run.check_stop()

    trainer = trainer_setup.build_trainer(run, model, tokenizer, train_ds, eval_ds)
    with tracking_session(run, trainer):  # training.report_to: the Trainer's own integrations log into it
        if run.resume_from and trainer_setup.restore_if_complete(trainer, model, Path(run.resume_from)):
            pass  # the run had trained every step; what it lacked was the final save (a kill, a full disk)
        else:
            trainer.train(resume_from_checkpoint=run.resume_from)
        state = trainer.state
        if eval_ds is not None and not run.stop_asked:
            evaluated = [h for h in state.log_history if "eval_loss" in h]
            if not evaluated or evaluated[-1].get("step") != state.global_step:
                trainer.evaluate()
        # FSDP / ZeRO-3: the weights are sharded; the Trainer's save_model gathers them on every rank
        sharded = distributed.world_size() > 1 and topology(cfg).shards_parameters
        rd.save_adapter(model, tokenizer, save=trainer.save_model if sharded else None)
        run.record(summary=summarize(run, state))  # the adapter is saved: a full disk now must not fail the run


def load_datasets(run: "Run", tokenizer: Any) -> tuple[Any, Any]:
    """Prepare the data, or reload the exact split a resumed run trained on (kept in ``dataset/``)."""
    import datasets

    rd = run.run_dir
    train_dir, eval_dir = rd.dataset_dir / "train", rd.dataset_dir / "eval"
    if run.resume_from and train_dir.is_dir():
        return datasets.load_from_disk(str(train_dir)), (
            datasets.load_from_disk(str(eval_dir)) if eval_dir.is_dir() else None
        )
    prepared = data_mod.prepare_data(run.config.data, tokenizer, seed=run.config.training.seed)
    summary = prepared.summary()
    rd.save(dataset=summary)
    run.emit("data", **summary)
    rd.save_dataset(prepared.train, prepared.eval, prepared.raw_eval)
    return prepared.train, prepared.eval


def plan_memory(run: "Run", plan: "models.TrainingPlan", resolved: Any, train_ds: Any) -> "models.TrainingPlan":
    """Estimate memory from the longest tokenized row; refuse a run that cannot fit, warn when it is tight,
    and take what the estimate chose for a small machine (checkpointing, micro-batches) into the plan."""
    cfg = run.config
    estimate = models.estimate_memory(cfg, resolved, plan.device, longest=longest_row(train_ds))
    run.run_dir.save(memory_estimate=estimate.to_dict())
    if (estimate.verdict == "too_big" and (plan.device == "cuda" or estimate.hard_limit)
            and not os.environ.get("JUPYTER_FT_IGNORE_MEMORY_ESTIMATE")):
        # Past the estimate's error margin: say so now rather than fail with a CUDA OOM minutes later, or,
        # in a container with a hard memory limit (Binder's 2 GB), have the kernel killed with everything
        # the notebook held.
        where = ("GPU memory" if plan.device == "cuda" else
                 "memory in this container (past its limit the kernel is killed, not slowed)")
        raise InsufficientMemory(
            f"Not enough {where}: the estimate is {estimate}. To fit: {estimate.advice(cfg)}. "
            "(Set JUPYTER_FT_IGNORE_MEMORY_ESTIMATE=1 to try anyway.)")
    memory_plan = dict(estimate.plan or {})
    if memory_plan.get("reason") == "low memory":
        warning = (f"Little memory is free ({(estimate.available or 0) / 2**30:.1f} GiB): gradient checkpointing is "
                   "on for this run (about 30% slower, much less memory). Set training.gradient_checkpointing: "
                   "false to turn it off.")
        if memory_plan.get("micro_batch_size"):
            micro, factor = memory_plan["micro_batch_size"], memory_plan["grad_accum_factor"]
            warning += (f" Each batch of {cfg.training.batch_size} also runs as {factor} micro-batches of "
                        f"{micro}, accumulated: the same examples per optimizer step, {factor}x the passes.")
        run.warn(warning)
    if estimate.verdict in ("tight", "too_big"):
        run.warn(f"The memory estimate ({estimate}) is close to or above what is free; training may run "
                 f"out of memory. To make room: {estimate.advice(cfg)}.")
    return plan.with_memory_plan(memory_plan)


def summarize(run: "Run", state: Any) -> dict[str, Any]:
    """The run's summary in run.json: final and best losses, tokens, speed, probes' verdicts, GPU peak."""
    evals = [h for h in run.history if "eval_loss" in h]
    trains = [h for h in run.history if "loss" in h]
    best = min(evals, key=lambda h: h["eval_loss"]) if evals else None
    speeds = [h["tokens_per_s"] for h in trains if h.get("tokens_per_s")]
    final_eval = evals[-1]["eval_loss"] if evals else None
    restored_step = None
    if run.restores_best and state.best_model_checkpoint and state.best_metric is not None:
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
        "train_seconds": run.progress.get("elapsed"),
        "adapter": str(run.run_dir.adapter_dir),
        "probes": run.probes.summary() if run.probes is not None else None,
        "skipped_steps": list(run.nonfinite_steps),  # training.on_nonfinite: skip
        "world_size": distributed.world_size(),
        "examples_per_step": run.examples_per_step,
        **peak_gpu_memory(run.device),
    }


def release(run: "Run") -> None:
    """Drop what the run held: the model (and bitsandbytes' registry entries for it), the tokenizer, and the
    probes' references to the base model; the probes' summary stays."""
    if run.model is not None:
        models.forget_optimizer_registrations(run.model)
    run.model = None
    run.tokenizer = None
    if run.probes is not None:
        run.probes.forgetting = None


def longest_row(dataset: Any) -> int | None:
    """The longest tokenized training row (the ``length`` column prepare_data adds), or None."""
    try:
        lengths = dataset["length"]
    except (KeyError, TypeError):
        return None
    return int(max(lengths)) if len(lengths) else None


def peak_gpu_memory(device: str | None) -> dict[str, Any]:
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


def explain_failure(exc: BaseException, config: FineTuneConfig) -> str:
    """A one-paragraph message the dashboard shows; the traceback goes to run.json."""
    if is_out_of_memory(exc):
        try:
            gc_on = models.resolve_gradient_checkpointing(config, models.select_device())
        except Exception:  # noqa: BLE001 - the message must not fail
            gc_on = False
        last = ("training.gradient_checkpointing is already on, so also try a smaller lora.r or a smaller model"
                if gc_on else "or set training.gradient_checkpointing: true")
        return (f"Out of memory with training.batch_size={config.training.batch_size} and "
                f"data.max_length={config.data.max_length}. Lower the batch size (raise training.grad_accum to "
                f"keep the effective batch), shorten data.max_length, {last}. "
                f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})")
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        where = f" writing {exc.filename}" if exc.filename else ""
        return (f"The disk is full{where} ({exc.strerror or exc}). Free space under {config.output.root}; "
                "%ft_resume RUN then continues from the run's last complete checkpoint (a checkpoint cut short by "
                "the full disk is never used).")
    return f"{type(exc).__name__}: {exc}"
