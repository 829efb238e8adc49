"""Live probes of a training run: overfitting (from the loss history) and catastrophic forgetting
(general knowledge and the base model's distribution, measured on the same model with the adapter
switched off and on, never a second copy in memory).

They run through :func:`probe_callback`: overfitting at every evaluation, forgetting at the start, every
``forgetting_every`` evaluations and at the last one; each measurement is a line of
``probes.jsonl`` in the run directory and a ``probe`` event. The package splits along those jobs:
:mod:`.items` (the questions and answer checking), :mod:`.overfitting`, :mod:`.forgetting`,
:mod:`.verdicts` (the one severity table, which the server reads too) and :mod:`.callback` (the
``TrainerCallback``, its class built on first use). Importing it stays torch-free.
"""

from __future__ import annotations

from .callback import ProbeCallbackMixin, probe_callback
from .forgetting import ForgettingProbe
from .items import general_prompts, is_correct, load_probe_items, subset
from .overfitting import OverfittingProbe
from .verdicts import FORGETTING_SUGGESTIONS, SEVERITY, SUGGESTIONS, worst

__all__ = [
    "FORGETTING_SUGGESTIONS",
    "SEVERITY",
    "SUGGESTIONS",
    "ForgettingProbe",
    "OverfittingProbe",
    "ProbeCallbackMixin",
    "general_prompts",
    "is_correct",
    "load_probe_items",
    "probe_callback",
    "subset",
    "worst",
]
