"""The probes' verdict words, how bad each is, and what to do about it: one table for every reader.

The training callback keeps the worst verdict of a run and the server's sidebar shows the worst one seen in
``probes.jsonl``; both rank verdicts with :data:`SEVERITY` and :func:`worst`. Imports nothing, so the server
can use it without loading torch.
"""

from __future__ import annotations

__all__ = ["FORGETTING_SUGGESTIONS", "SEVERITY", "SUGGESTIONS", "worst"]

SUGGESTIONS = {
    "suspected": "Watch the next evaluations; if the eval loss keeps rising, lower the learning rate or "
                 "train for fewer epochs.",
    "overfitting": "Lower training.learning_rate, train fewer epochs (or stop at the best step), add more "
                   "data, or raise lora.dropout.",
}
FORGETTING_SUGGESTIONS = {
    "mild": "The model drifts from its base: consider a lower learning rate or fewer steps.",
    "severe": "The model is losing general knowledge: lower training.learning_rate, train fewer steps, use a "
              "smaller lora.r, or mix general data into the training set.",
}
# How bad a verdict is: overfitting (ok < suspected < overfitting) and forgetting (none < mild < severe)
# share the scale; an unknown word counts as 0.
SEVERITY = {"ok": 0, "suspected": 1, "overfitting": 2, "none": 0, "mild": 1, "severe": 2}


def worst(a: str | None, b: str | None) -> str | None:
    """The more severe of two verdicts (``a`` on a tie); ``None`` means "not measured"."""
    if a is None:
        return b
    if b is None:
        return a
    return a if SEVERITY.get(a, 0) >= SEVERITY.get(b, 0) else b
