"""The transformers ``Trainer`` for a run: its arguments from the config and the plan, its collator,
its callbacks (the run's own and the probes'), and none of the console printers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from ..probes import probe_callback
from .callback import run_callback
from .tracking import normalize_report_to

if TYPE_CHECKING:  # pragma: no cover
    from .run import Run

__all__ = ["build_trainer", "training_arguments", "checkpointing_args", "make_collator"]


def build_trainer(run: "Run", model: Any, tokenizer: Any, train_ds: Any, eval_ds: Any) -> Any:
    """The Trainer that trains ``run``; sets ``run.probes`` and ``run.restores_best``."""
    from transformers import Trainer
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    has_eval = eval_ds is not None and len(eval_ds) > 0
    pr = run.config.probes
    run.restores_best = has_eval and pr.overfitting and pr.early_stop
    args = training_arguments(run, has_eval)
    run.probes = probe_callback(run) if (pr.overfitting and has_eval) or pr.forgetting else None
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=eval_ds if has_eval else None,
        data_collator=make_collator(tokenizer, packing=run.config.data.packing),
        processing_class=tokenizer,
        callbacks=[run_callback(run)] + ([run.probes] if run.probes is not None else []),
    )
    for cb in (PrinterCallback, ProgressCallback):  # output from a thread lands in the wrong cell
        trainer.remove_callback(cb)
    return trainer


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
    micro = int(plan.micro_batch_size or t.batch_size)
    return TrainingArguments(
        output_dir=str(run.run_dir.checkpoints_dir),
        per_device_train_batch_size=micro,
        per_device_eval_batch_size=micro,
        gradient_accumulation_steps=t.grad_accum * plan.grad_accum_factor,
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
    )


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
