"""The overfitting probe: pure logic over a run's loss history, no model needed.

It runs at every evaluation (see :mod:`.callback`) and decides early stopping; being torch-free it is also
what a test or a finished run's log can be judged with.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ..views.format import finite
from .verdicts import SUGGESTIONS

__all__ = ["OverfittingProbe"]


class OverfittingProbe:
    """Pure logic over the eval/train history; ``verdict(history)`` returns a plain dict.

    ``history`` is the run's log: dicts with ``step`` and ``loss`` (train) or ``eval_loss``. The train loss
    at an evaluation is the mean of the train losses logged since the previous evaluation.
    """

    def __init__(self, patience: int = 2, rise_threshold: float = 0.1, gap_ratio: float = 1.5) -> None:
        self.patience = patience
        self.rise_threshold = rise_threshold
        self.gap_ratio = gap_ratio

    @classmethod
    def from_config(cls, cfg: Any) -> OverfittingProbe:
        """From a ``ProbesConfig`` (patience, rise_threshold, gap_ratio)."""
        return cls(cfg.patience, cfg.rise_threshold, cfg.gap_ratio)

    @staticmethod
    def points(history: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """One point per evaluation: step, eval loss and the train loss around it."""
        out: list[dict[str, Any]] = []
        window: list[float] = []
        last_train: float | None = None
        for h in history:
            if finite(h.get("loss")):
                window.append(float(h["loss"]))
                last_train = float(h["loss"])
            if finite(h.get("eval_loss")):
                train = sum(window) / len(window) if window else last_train
                if out and out[-1]["step"] == h.get("step"):
                    out[-1]["eval_loss"] = float(h["eval_loss"])  # the same step evaluated twice
                else:
                    out.append({"step": h.get("step"), "eval_loss": float(h["eval_loss"]), "train_loss": train})
                window = []
        return out

    def verdict(self, history: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
        """``status`` (ok | suspected | overfitting), the losses behind it, a message and a suggestion."""
        pts = self.points(history)
        if not pts:
            return {"status": "ok", "evaluations": 0, "best_eval_loss": None, "best_step": None, "eval_loss": None,
                    "train_loss": None, "gap": None, "gap_ratio": None, "rise": None, "rising_for": 0,
                    "since_best": 0, "message": "No evaluation yet.", "suggestion": ""}
        best_i = min(range(len(pts)), key=lambda i: pts[i]["eval_loss"])  # first of equal minima
        best = pts[best_i]
        last = pts[-1]
        rising = 0
        for i in range(len(pts) - 1, 0, -1):
            if pts[i]["eval_loss"] > pts[i - 1]["eval_loss"]:
                rising += 1
            else:
                break
        since_best = len(pts) - 1 - best_i
        train, ev = last["train_loss"], last["eval_loss"]
        gap = ev - train if train is not None else None
        ratio = ev / train if train is not None and train > 0 else None
        rise = (ev - best["eval_loss"]) / best["eval_loss"] if best["eval_loss"] > 0 else 0.0
        start = pts[len(pts) - 1 - rising]
        train_falling = (rising > 0 and train is not None and start["train_loss"] is not None
                         and train < start["train_loss"])
        status = "ok"
        if since_best > 0 and (rise > self.rise_threshold or (ratio is not None and ratio > self.gap_ratio)):
            status = "overfitting"
        elif rising >= self.patience and train_falling:
            status = "suspected"
        if status == "overfitting":
            why = []
            if rise > self.rise_threshold:
                why.append(f"the eval loss is {rise:.0%} above its best ({best['eval_loss']:.4f} at step "
                           f"{best['step']})")
            if ratio is not None and ratio > self.gap_ratio:
                why.append(f"eval loss is {ratio:.2f}x the train loss")
            message = "Overfitting: " + " and ".join(why) + "."
        elif status == "suspected":
            message = (f"Possible overfitting: the eval loss rose for {rising} evaluations in a row while the "
                       "train loss kept falling.")
        elif since_best == 0:
            message = f"No overfitting: the eval loss is at its best ({best['eval_loss']:.4f})."
        else:
            message = (f"No overfitting yet: best eval loss {best['eval_loss']:.4f} at step {best['step']}, "
                       f"now {ev:.4f}.")
        return {"status": status, "evaluations": len(pts), "best_eval_loss": best["eval_loss"],
                "best_step": best["step"], "eval_loss": ev, "train_loss": train, "gap": gap, "gap_ratio": ratio,
                "rise": rise, "rising_for": rising, "since_best": since_best, "message": message,
                "suggestion": SUGGESTIONS.get(status, "")}

    def should_stop(self, verdict: Mapping[str, Any]) -> bool:
        """Early stopping: flagged, or no better eval loss for ``patience`` evaluations."""
        return verdict["status"] != "ok" or verdict.get("since_best", 0) >= self.patience

