"""Every problem with a config's values, collected in one pass (a user fixes all typos in one go)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping

from ..errors import Problem
from .checks import (check_bool, check_int, check_number, check_seed, check_str, choice_problem, finite, key_text,
                     unknown_key)
from .compute import compute_problems
from .trackers import report_to_problems
from .choices import BUILTIN_MODEL, DATA_FORMATS, NONFINITE_POLICIES, OPTIMIZERS, QUANT_METHODS, SCHEDULERS, COLUMN_ROLES

if TYPE_CHECKING:  # pragma: no cover
    from .schema import FineTuneConfig

__all__ = ["config_problems"]


def config_problems(config: "FineTuneConfig") -> list[Problem]:
    """Every problem with the current values; empty when the config is valid."""
    p: list[Problem] = []
    m, d, l, q, t, o = config.model, config.data, config.lora, config.quantization, config.training, config.output

    check_str(p, "model.name", m.name, nonempty=True, hint="Use a hub id, a local directory, a .gguf file or "
               f"'{BUILTIN_MODEL}'")
    if m.revision is not None:
        check_str(p, "model.revision", m.revision)
    check_bool(p, "model.trust_remote_code", m.trust_remote_code)

    if d.source is None or (isinstance(d.source, str) and not d.source.strip()):
        p.append(Problem("data.source", "is required", d.source,
                         "Give a file (.jsonl/.json/.csv/.parquet), a datasets directory, a DataFrame or "
                         "'demo:support_tickets'"))
    if d.format not in DATA_FORMATS:
        p.append(choice_problem("data.format", d.format, DATA_FORMATS))
    if not isinstance(d.columns, Mapping):
        p.append(Problem("data.columns", "must map roles to column names", d.columns,
                         f"Roles: {', '.join(COLUMN_ROLES)}, e.g. {{output: answer}}"))
    else:
        for role, col in d.columns.items():
            if role not in COLUMN_ROLES:
                p.append(unknown_key(f"data.columns.{key_text(role)}", key_text(role), COLUMN_ROLES))
            elif not isinstance(col, str) or not col:
                p.append(Problem(f"data.columns.{role}", "must be a column name", col))
    check_number(p, "data.eval_split", d.eval_split, lo=0.0, hi=0.9, hint="Use a fraction such as 0.1, "
                  "or 0 to skip evaluation")
    check_int(p, "data.max_length", d.max_length, lo=16, hint="Typical values are 256-2048 tokens")
    check_bool(p, "data.packing", d.packing)
    check_bool(p, "data.completion_only_loss", d.completion_only_loss)
    if d.system_prompt is not None:
        check_str(p, "data.system_prompt", d.system_prompt)

    check_int(p, "lora.r", l.r, lo=1, hi=1024, hint="Common ranks are 8, 16, 32, 64")
    check_number(p, "lora.alpha", l.alpha, lo=0.0, strict_lo=True, hint="Usually 2 x r")
    if l.dropout != "auto":
        check_number(p, "lora.dropout", l.dropout, lo=0.0, hi=0.9, hint="A probability such as 0.05, or auto")
    check_bool(p, "lora.use_dora", l.use_dora)
    check_bool(p, "lora.use_rslora", l.use_rslora)
    tm = l.target_modules
    if not (isinstance(tm, str) and tm) and not (isinstance(tm, list) and tm and all(isinstance(x, str) for x in tm)):
        p.append(Problem("lora.target_modules", "must be 'all-linear' or a list of module names", tm,
                         "e.g. [q_proj, v_proj]"))

    if q.method not in QUANT_METHODS:
        p.append(choice_problem("quantization.method", q.method, QUANT_METHODS))
    check_bool(p, "quantization.double_quant", q.double_quant)
    p += compute_problems(config)  # compute: and what it asks of quantization and the batch

    check_number(p, "training.learning_rate", t.learning_rate, lo=0.0, strict_lo=True, hi=1.0,
                  hint="LoRA usually trains well between 1e-5 and 1e-3")
    if t.max_steps is None:
        check_number(p, "training.epochs", t.epochs, lo=0.0, strict_lo=True, hi=1000,
                      hint="Set epochs > 0 or give training.max_steps")
    else:
        check_int(p, "training.max_steps", t.max_steps, lo=1, hint="Use null to train for training.epochs")
    check_int(p, "training.batch_size", t.batch_size, lo=1, hi=4096, hint="Lower it if you run out of memory")
    check_int(p, "training.grad_accum", t.grad_accum, lo=1, hi=4096)
    if isinstance(t.warmup, bool) or not isinstance(t.warmup, (int, float)) or not finite(t.warmup) or t.warmup < 0 or (
        isinstance(t.warmup, float) and not t.warmup.is_integer() and t.warmup >= 1
    ):
        p.append(Problem("training.warmup", "must be a ratio in [0, 1) or a whole number of steps", t.warmup))
    if t.scheduler not in SCHEDULERS:
        p.append(choice_problem("training.scheduler", t.scheduler, SCHEDULERS))
    check_number(p, "training.weight_decay", t.weight_decay, lo=0.0, hi=1.0)
    check_number(p, "training.max_grad_norm", t.max_grad_norm, lo=0.0)
    check_seed(p, "training.seed", t.seed)  # also the train/eval split's seed
    for name in ("eval_every", "save_every", "logging_every"):
        check_int(p, f"training.{name}", getattr(t, name), lo=1, hint="A number of optimizer steps")
    if t.gradient_checkpointing != "auto":
        check_bool(p, "training.gradient_checkpointing", t.gradient_checkpointing)
    if t.optimizer not in OPTIMIZERS:
        p.append(choice_problem("training.optimizer", t.optimizer, OPTIMIZERS))
    if t.on_nonfinite not in NONFINITE_POLICIES:
        p.append(choice_problem("training.on_nonfinite", t.on_nonfinite, NONFINITE_POLICIES))
    p += report_to_problems(t.report_to)

    check_str(p, "output.root", o.root, nonempty=True)
    if o.name is not None:
        check_str(p, "output.name", o.name, nonempty=True)

    pr = config.probes
    for name in ("overfitting", "early_stop", "forgetting"):
        check_bool(p, f"probes.{name}", getattr(pr, name))
    check_int(p, "probes.patience", pr.patience, lo=1, hi=100, hint="Evaluations in a row with a rising eval loss")
    check_number(p, "probes.rise_threshold", pr.rise_threshold, lo=0.0, strict_lo=True, hi=10.0,
                  hint="A fraction of the best eval loss, e.g. 0.1 for a 10% rise")
    check_number(p, "probes.gap_ratio", pr.gap_ratio, lo=1.0, strict_lo=True, hi=100.0,
                  hint="Eval loss / train loss above which the run is overfitting, e.g. 1.5")
    check_int(p, "probes.forgetting_items", pr.forgetting_items, lo=1, hi=10000,
               hint="How many probe items each measurement uses; 32 keeps the overhead small")
    check_int(p, "probes.forgetting_every", pr.forgetting_every, lo=1,
               hint="Measure forgetting every N evaluations")
    check_int(p, "probes.kl_prompts", pr.kl_prompts, lo=0, hi=1000, hint="0 skips the KL measurement")
    for kind in ("kl", "loglik"):
        mild, severe = getattr(pr, f"{kind}_mild"), getattr(pr, f"{kind}_severe")
        before = len(p)
        check_number(p, f"probes.{kind}_mild", mild, lo=0.0, strict_lo=True, hint="Nats per token")
        check_number(p, f"probes.{kind}_severe", severe, lo=0.0, strict_lo=True, hint="Nats per token")
        if len(p) == before and severe < mild:
            p.append(Problem(f"probes.{kind}_severe", f"must be >= probes.{kind}_mild ({mild:g})", severe))
    if pr.probe_file is not None:
        check_str(p, "probes.probe_file", pr.probe_file, nonempty=True,
                   hint="A .jsonl file of {\"prompt\": ..., \"answer\": ...} lines, or null")
    return p
