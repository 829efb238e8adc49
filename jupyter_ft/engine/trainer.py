"""The transformers ``Trainer`` for a run: its arguments from the config and the plan, its collator,
its callbacks (the run's own and the probes'), and none of the console printers."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ..config.compute import split_global_batch, topology
from ..errors import NonFiniteLoss
from ..probes import probe_callback
from ..runtime import distributed
from .callback import run_callback
from .tracking import normalize_report_to

if TYPE_CHECKING:  # pragma: no cover
    from .run import Run

__all__ = ["build_trainer", "trainer_class", "training_arguments", "checkpointing_args", "make_collator",
           "STAGING_DIR"]

# Where a checkpoint is written before it is renamed into ``checkpoints/checkpoint-N`` (a name the Trainer's
# rotation and our resume never match): a kill mid-save leaves this folder, never a half checkpoint.
STAGING_DIR = ".staging"
_TRAINER_CLASS: type | None = None


def build_trainer(run: "Run", model: Any, tokenizer: Any, train_ds: Any, eval_ds: Any) -> Any:
    """The Trainer that trains ``run``; sets ``run.probes`` and ``run.restores_best``."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    has_eval = eval_ds is not None and len(eval_ds) > 0
    pr = run.config.probes
    run.restores_best = has_eval and pr.overfitting and pr.early_stop
    args = training_arguments(run, has_eval)
    run.probes = probe_callback(run) if (pr.overfitting and has_eval) or pr.forgetting else None
    trainer = trainer_class()(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=eval_ds if has_eval else None,
        data_collator=make_collator(tokenizer, packing=run.config.data.packing),
        processing_class=tokenizer,
        callbacks=[run_callback(run)] + ([run.probes] if run.probes is not None else []),
    )
    trainer.jft_run = run
    check_strategy(run, trainer)
    for cb in (PrinterCallback, ProgressCallback):  # output from a thread lands in the wrong cell
        trainer.remove_callback(cb)
    return trainer


def check_strategy(run: "Run", trainer: Any) -> None:
    """Refuse to train with another strategy than the one asked for: accelerate falls back to DDP without a word
    where it cannot shard (FSDP on a CPU), and a run that was meant to fit by sharding would then run out of
    memory, or pass a test it should not."""
    wanted = topology(run.config).strategy
    if wanted not in ("fsdp", "deepspeed"):
        return
    got = ("deepspeed" if getattr(trainer, "is_deepspeed_enabled", False) else
           "fsdp" if getattr(trainer, "is_fsdp_enabled", False) else "ddp")
    if got != wanted:
        raise RuntimeError(f"compute.strategy is {wanted}, but the Trainer set up {got} on this machine "
                           f"({run.device or 'cpu'}); use compute.strategy: {got}, or a machine where {wanted} runs.")


def trainer_class() -> type:
    """transformers' ``Trainer`` whose checkpoints are complete or absent (built on first use, so importing the
    engine does not import transformers)."""
    global _TRAINER_CLASS
    if _TRAINER_CLASS is None:
        from transformers import Trainer

        _TRAINER_CLASS = type("RunTrainer", (NonFiniteGuardMixin, StagedCheckpointsMixin, LabelledLossMixin, Trainer),
                              {})
    return _TRAINER_CLASS


class LabelledLossMixin:
    """The training loss from the logits of the positions that carry a label, not of every position.

    A causal LM's head maps every position's hidden state to the whole vocabulary (49,152 logits per token for
    SmolLM2), and the model's own loss then ignores every position whose next token is masked: with
    ``completion_only_loss`` on short answers that is most of them (about 96% on the demo). Here the head runs only
    at the positions where some row of the batch has a label next (transformers' own ``logits_to_keep``, given
    those positions), and the cross-entropy is the model's own: the same sum over labelled tokens, divided as the
    Trainer would (by the tokens of the whole accumulated batch when it counts them, else by this batch's). What
    is learned does not change; a test checks loss and gradients against the model's own loss. Evaluation and
    models without ``logits_to_keep`` use the model's own loss.
    """

    model_accepts_loss_kwargs: bool
    accelerator: Any
    args: Any
    _keeps_logits: bool | None = None

    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        import torch

        labels = inputs.get("labels")
        if return_outputs or labels is None or not model.training or not self._accepts_logits_to_keep(model):
            return super().compute_loss(model, inputs, return_outputs=return_outputs,  # type: ignore[misc]
                                        num_items_in_batch=num_items_in_batch)
        shifted = labels[:, 1:]
        keep = (shifted != -100).any(dim=0).nonzero().squeeze(-1)  # positions whose next token is trained
        if keep.numel() == 0:
            return super().compute_loss(model, inputs, num_items_in_batch=num_items_in_batch)  # type: ignore[misc]
        outputs = model(**{k: v for k, v in inputs.items() if k != "labels"}, logits_to_keep=keep)
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
        targets = shifted[:, keep].to(logits.device)
        loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                                 ignore_index=-100, reduction="sum")
        if self.model_accepts_loss_kwargs and num_items_in_batch is not None:
            loss = loss / num_items_in_batch  # the whole accumulated batch's tokens: the Trainer does not divide again
            if self.args.average_tokens_across_devices:
                loss = loss * self.accelerator.num_processes  # as the Trainer does: the gradients are averaged
        else:
            loss = loss / (targets != -100).sum().clamp(min=1)
        return loss

    def _accepts_logits_to_keep(self, model: Any) -> bool:
        if self._keeps_logits is None:
            import inspect

            base = self.accelerator.unwrap_model(model)
            base = base.get_base_model() if hasattr(base, "get_base_model") else base
            self._keeps_logits = "logits_to_keep" in inspect.signature(base.forward).parameters
        return self._keeps_logits


# training.on_nonfinite: skip gives up after this many bad steps in a row: the model itself has gone bad
MAX_SKIPPED_IN_A_ROW = 10


class NonFiniteGuardMixin:
    """``training.on_nonfinite``: a NaN or infinite training loss stops the run at that step, or skips its update.

    The Trainer itself only hides such a loss from the logged average (``logging_nan_inf_filter``) and steps the
    optimizer on the NaN gradients anyway, which turns every weight of the adapter into NaN: the run goes on
    drawing a flat curve of nonsense. The check reads one number per micro-batch, which the Trainer's own filter
    already synchronises on.
    """

    jft_run: Any = None  # the Run being trained (set by build_trainer)
    state: Any
    optimizer: Any

    def training_step(self, *args: Any, **kwargs: Any) -> Any:
        import torch

        loss = super().training_step(*args, **kwargs)  # type: ignore[misc]
        run = self.jft_run
        # every rank decides the same (any rank's NaN is every rank's: the gradients are averaged over them all)
        finite = bool(torch.isfinite(loss.detach()).all())
        if run is None or not distributed.agree_any(not finite):
            if run is not None and run.nonfinite_in_a_row and self.state.global_step + 1 > run.nonfinite_steps[-1]:
                run.nonfinite_in_a_row = 0
            return loss
        step = self.state.global_step + 1  # the optimizer step this micro-batch belongs to
        value = float(loss.detach().float().mean())
        policy = run.config.training.on_nonfinite
        advice = ("Lower training.learning_rate, keep training.max_grad_norm on (1.0), or check the data of that "
                  "step; with fp16, bf16 (or fp32) avoids overflows.")
        if policy == "stop":
            raise NonFiniteLoss(f"The training loss was {value} at step {step} (training.on_nonfinite: stop); the "
                                f"run stopped there and keeps its last checkpoint, from before. {advice}")
        if not run.nonfinite_steps or run.nonfinite_steps[-1] != step:
            run.nonfinite_steps.append(step)
            run.nonfinite_in_a_row += 1
            if len(run.nonfinite_steps) <= 3:
                run.warn(f"step {step}: the training loss was {value}; that step's update was skipped "
                         "(training.on_nonfinite: skip)." + (" Further skipped steps are counted in the summary."
                                                             if len(run.nonfinite_steps) == 3 else ""))
        if run.nonfinite_in_a_row >= MAX_SKIPPED_IN_A_ROW:
            raise NonFiniteLoss(f"The training loss was not finite for {run.nonfinite_in_a_row} steps in a row, up to "
                                f"step {step}: the model no longer trains. {advice}")
        self.optimizer.zero_grad(set_to_none=True)  # this step's gradients are NaN: drop them, keep the weights
        return loss  # the Trainer leaves it out of the logged average (logging_nan_inf_filter)


class StagedCheckpointsMixin:
    """Checkpoints written under a temporary name and renamed when complete.

    The Trainer writes ``checkpoint-N`` in place: weights, then optimizer, scheduler and RNG state, then
    ``trainer_state.json``; a kill in between leaves a folder that looks like a checkpoint and is not one. Here the
    Trainer's own ``_save_checkpoint`` writes into ``checkpoints/.staging/`` (its output folder, for the length of
    the call), and the finished folder is renamed into place (one ``rename``, atomic on a POSIX file system);
    rotation (``save_total_limit``) then runs over the real folder, as the Trainer would have.
    """

    args: Any  # the Trainer's
    state: Any
    _staging: str | None = None

    def _get_output_dir(self, trial: Any) -> str:
        if self._staging is not None:
            return self._staging
        return super()._get_output_dir(trial)  # type: ignore[misc]

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        from transformers.trainer_utils import rotate_checkpoints

        args, state = self.args, self.state
        real = Path(self._get_output_dir(trial))
        staging = real / STAGING_DIR
        name = f"checkpoint-{state.global_step}"
        if args.should_save and staging.exists():
            shutil.rmtree(staging)  # what a kill mid-save left behind
        distributed.barrier()  # no rank writes into the staging folder before rank 0 has emptied it
        self._staging = str(staging)
        try:
            super()._save_checkpoint(model, trial)  # type: ignore[misc]
        finally:
            self._staging = None
        distributed.barrier()  # every rank's part (its RNG state, its shard) is written before the rename
        if not args.should_save:  # another rank of a distributed run: rank 0 renames
            return
        written, final = staging / name, real / name
        best = state.best_model_checkpoint
        if best is not None and Path(best).parent == staging:  # the best is this step: name its real folder
            state.best_model_checkpoint = str(real / Path(best).name)
            state.save_to_json(str(written / "trainer_state.json"))
        if final.exists():  # this step was saved before (a resume that stopped at once): the new one wins
            shutil.rmtree(final)
        os.replace(written, final)
        with contextlib.suppress(OSError):
            staging.rmdir()  # empty now; a folder left here means a save was cut short
        rotate_checkpoints(output_dir=str(real), save_total_limit=args.save_total_limit,
                           best_model_checkpoint=state.best_model_checkpoint, use_mtime=True)


def restore_if_complete(trainer: Any, model: Any, checkpoint: Path) -> bool:
    """When ``checkpoint`` is the run's last step, load its adapter weights and Trainer state and return True.

    ``Trainer.train(resume_from_checkpoint=...)`` from a checkpoint at ``max_steps`` trains one step more than
    asked (and logs it); a run cut off after its last step, in its final evaluation or save, only needs the
    weights back to finish."""
    from transformers import TrainerState

    state_file = checkpoint / "trainer_state.json"
    state = TrainerState.load_from_json(str(state_file))
    if not state.max_steps or state.global_step < state.max_steps:
        return False
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    weights = checkpoint / "adapter_model.safetensors"
    if not weights.is_file():
        return False  # not an adapter checkpoint: let the Trainer load it
    set_peft_model_state_dict(model, load_file(str(weights)))
    trainer.state = state
    return True


def training_arguments(run: "Run", has_eval: bool) -> Any:
    """``TrainingArguments`` from the config and the run's plan (device, dtype, optimizer, checkpointing,
    micro-batches); with early stopping the Trainer saves at every evaluation and restores the best."""
    from transformers import TrainingArguments

    plan = run.plan
    assert plan is not None, "the recipe plans before it builds the trainer"
    t = run.config.training
    warmup = t.warmup if (isinstance(t.warmup, float) and t.warmup < 1) else int(t.warmup)
    best_args: dict[str, Any] = {}
    if run.restores_best:  # the Trainer restores the best checkpoint, so it must save at every evaluation
        best_args = {"load_best_model_at_end": True, "metric_for_best_model": "eval_loss",
                     "greater_is_better": False}
    # a container's low memory may have split each batch into micro-batches (MemoryEstimate.plan):
    # the same examples per optimizer step, accumulated
    micro, accum = int(plan.micro_batch_size or t.batch_size), t.grad_accum * plan.grad_accum_factor
    world = distributed.world_size()
    if world > 1:  # the config's batch is the global one: split over the ranks, the same examples per step
        micro, accum = split_global_batch(t.batch_size, t.grad_accum, world) or (t.batch_size, t.grad_accum)
    return TrainingArguments(
        output_dir=str(run.run_dir.checkpoints_dir),
        per_device_train_batch_size=micro,
        per_device_eval_batch_size=micro,
        gradient_accumulation_steps=accum,
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
        save_steps=t.eval_every if run.restores_best else t.save_every,
        save_total_limit=2,
        report_to=normalize_report_to(t.report_to),
        run_name=run.name,
        disable_tqdm=True,
        use_cpu=plan.device == "cpu",
        bf16=plan.bf16,
        fp16=plan.fp16,
        # training.optimizer / gradient_checkpointing "auto": paged 8-bit AdamW + checkpointing on CUDA
        optim=plan.optimizer,
        **checkpointing_args(TrainingArguments, plan.gradient_checkpointing),
        remove_unused_columns=False,
        train_sampling_strategy="random" if run.config.data.packing else "group_by_length",
        length_column_name="length",
        include_num_input_tokens_seen="non_padding",
        dataloader_num_workers=0,
        label_names=["labels"],
        **best_args,
        **strategy_args(run),
    )


def strategy_args(run: "Run") -> dict[str, Any]:
    """``compute.strategy`` as the Trainer's own arguments: DDP (the default of a launch), FSDP, or DeepSpeed
    ZeRO (the user's JSON file, or one built from ``zero_stage`` and ``offload`` with the Trainer's "auto"
    values, so batch, accumulation, clipping and precision come from the same arguments as without it)."""
    if distributed.world_size() == 1 and run.config.compute.launcher not in ("torchrun", "accelerate", "deepspeed"):
        return {}
    c = run.config.compute
    strategy = topology(run.config).strategy
    if strategy == "deepspeed":
        if c.deepspeed_config:
            return {"deepspeed": str(Path(c.deepspeed_config).expanduser())}
        zero: dict[str, Any] = {"stage": c.zero_stage}
        if c.offload == "cpu":
            zero["offload_optimizer"] = {"device": "cpu", "pin_memory": run.device == "cuda"}
            if c.zero_stage == 3:
                zero["offload_param"] = {"device": "cpu", "pin_memory": run.device == "cuda"}
        if c.zero_stage == 3:
            zero["stage3_gather_16bit_weights_on_model_save"] = True  # the adapter is saved whole
        return {"deepspeed": {"zero_optimization": zero, "train_micro_batch_size_per_gpu": "auto",
                              "gradient_accumulation_steps": "auto", "train_batch_size": "auto",
                              "gradient_clipping": "auto", "bf16": {"enabled": "auto"}, "fp16": {"enabled": "auto"}}}
    if strategy == "fsdp":
        return {"fsdp": "full_shard auto_wrap" + (" offload" if c.offload == "cpu" else ""),
                "fsdp_config": {"fsdp_version": 2, "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
                                "cpu_ram_efficient_loading": False, "reshard_after_forward": True}}
    # DDP: every LoRA weight takes part in every step; no search for unused parameters
    return {"ddp_find_unused_parameters": False}


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
