"""``%ft_eval``: did fine-tuning help? Base (adapter off) and tuned answers for the same prompts, scored.

The package splits the job: :mod:`.metrics` (what a metric is, the built-in ones, resolving a user's spec),
:mod:`.examples` (prompts and references from the run's held-out split, data, or a prompt list),
:mod:`.generation` (answers and perplexity), :mod:`.model` (the run and its model in the one-model slot),
:mod:`.result` (:class:`EvalResult`) and :mod:`.evaluate` (:func:`evaluate_run`, which ties them together).
The HTML lives in :mod:`jupyter_ft.views.eval_html`, the widget in ``jupyter_ft.widgets.eval_widget``.
Importing the package is cheap: torch, ``evaluate`` and peft load on first use.
"""

from __future__ import annotations

from ..errors import EvalError, EvalOutOfMemory, RunNotFound
from .evaluate import compare_base_tuned, evaluate_run
from .generation import generate, perplexity, render_chat_prompt
from .metrics import (
    BUILTIN_METRICS,
    DEFAULT_METRICS,
    Metric,
    exact_match,
    label_ids,
    load_metric,
    resolve_metrics,
)
from .model import load_run_model, open_run, release_model, run_model
from .result import EvalResult

__all__ = [
    "BUILTIN_METRICS",
    "DEFAULT_METRICS",
    "EvalError",
    "EvalOutOfMemory",
    "EvalResult",
    "Metric",
    "RunNotFound",
    "compare_base_tuned",
    "evaluate_run",
    "exact_match",
    "generate",
    "label_ids",
    "load_metric",
    "load_run_model",
    "open_run",
    "perplexity",
    "release_model",
    "render_chat_prompt",
    "resolve_metrics",
    "run_model",
]
