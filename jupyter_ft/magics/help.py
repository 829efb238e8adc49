"""``%ft_help``: the one-screen reference of the magics and of every config field with its default.

The config part is built from the dataclasses, so a new field shows up here (and in docs) by itself.
"""

from __future__ import annotations

import dataclasses

from ..config import SECTIONS

__all__ = ["help_text"]


def help_text() -> str:
    """The ``%ft_help`` text: every magic in one line or two, sweeps, and each config field's default."""
    lines = [
        "jupyter-ft magics",
        "  %%finetune [--name N] [--wait] [--dry-run] [--form] [--out VAR]   train with the YAML body as config",
        "  %ft_form                      the hyperparameter form",
        "  %ft_runs [--status S] [--name TEXT] [--tag T] [--sweep ID]   table of runs (with sweep, tags, notes)",
        "  %ft_compare RUN RUN ... | --sweep [ID] | --last N [--metric NAME] [--x step|tokens]",
        "                                runs side by side: differing config, metrics, verdicts, overlaid curves",
        "  %ft_tag RUN TAG ... [--remove]   label a run;  %ft_note RUN TEXT [--append]   a note on a run",
        "  %ft_rm RUN [--yes]            delete a run's directory (asks first; never a live run)",
        "  %ft_status [RUN]              one line on a run",
        "  %ft_show [RUN]                the dashboard of a run (also after a kernel restart)",
        "  %ft_stop [RUN] [--sweep]      stop after the current step (checkpoint + adapter saved);",
        "                                --sweep: the last sweep's current run, and cancel its queued runs",
        "  %ft_resume [RUN] [--wait] [--out VAR]   continue a stopped, failed or interrupted run from its",
        "                                last checkpoint (after a crash, a kernel restart, a Colab disconnect)",
        "  %ft_eval [RUN] [--data PATH|VAR] [--n N] [--metrics rouge,bleu,exact_match,accuracy,perplexity]",
        "           [--max-new-tokens K] [--temperature T] [--seed S] [--prompts VAR] [--interactive]",
        "                                base vs tuned: metrics, answers side by side (samples.jsonl, eval.json)",
        "  %ft_chat [RUN] [--prompt P]   type a prompt, see base and tuned answers side by side",
        "  %ft_export RUN --out DIR [--merge] [--force]   the adapter, or the merged model, with a model card",
        "  %ft_help                      this reference",
        "",
        "Sweeps: a 'sweep:' key in a %%finetune body trains one run per combination, one after another:",
        "  sweep: {training.learning_rate: [1e-4, 3e-4], lora.r: [8, 16]}           # grid: 4 runs",
        "  sweep: {method: random, n: 6, seed: 0, params: {training.learning_rate: {log_uniform: [1e-5, 1e-3]},",
        "          lora.r: [8, 16, 32]}}                                            # random: 6 runs",
        "  (also uniform: [lo, hi] and int_uniform: [lo, hi]); --dry-run lists the runs and memory estimates.",
        "",
        "Config fields (section.field: default):",
    ]
    for name, cls in SECTIONS.items():
        lines.append(f"  {name}:")
        for f in dataclasses.fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc, operator]
            lines.append(f"    {f.name}: {default!r}")
    return "\n".join(lines)
