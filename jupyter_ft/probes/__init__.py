"""Live probes of a training run: overfitting (from the loss history) and catastrophic forgetting
(general knowledge and the base model's distribution, measured on the same model with the adapter
switched off and on, never a second copy in memory).

They run through :func:`probe_callback`: overfitting at every evaluation, forgetting at the start, every
``forgetting_every`` evaluations and at the last one; each measurement is a line of
``probes.jsonl`` in the run directory and a ``probe`` event. Importing this module stays torch-free: the
``TrainerCallback`` class is built on first use, like ``training.run_callback``.
"""

from __future__ import annotations

import json
import math
import random
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = [
    "ForgettingProbe",
    "OverfittingProbe",
    "general_prompts",
    "load_probe_items",
    "probe_callback",
]

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
_ORDER = {"ok": 0, "suspected": 1, "overfitting": 2, "none": 0, "mild": 1, "severe": 2}


# =========================================================================== data
def _read_jsonl(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def load_probe_items(probe_file: str | None = None) -> list[dict[str, Any]]:
    """The bundled general-knowledge items (``category``, ``prompt``, ``answer``) plus the user's file."""
    text = resources.files(__name__).joinpath("general_knowledge.jsonl").read_text(encoding="utf-8")
    items = _read_jsonl(text)
    if probe_file:
        extra = _read_jsonl(Path(probe_file).read_text(encoding="utf-8"))
        for i, row in enumerate(extra):
            if not isinstance(row, Mapping) or not row.get("prompt") or row.get("answer") in (None, ""):
                raise ValueError(f"{probe_file}, line {i + 1}: each line needs 'prompt' and 'answer'")
            items.append({"category": str(row.get("category", "user")), "prompt": str(row["prompt"]),
                          "answer": str(row["answer"])})
    return items


def general_prompts() -> list[str]:
    """General prompts on which the tuned distribution is compared with the base one (KL)."""
    text = resources.files(__name__).joinpath("general_prompts.jsonl").read_text(encoding="utf-8")
    return [row["prompt"] for row in _read_jsonl(text)]


def subset(items: Sequence[dict[str, Any]], n: int, seed: int = 0) -> list[dict[str, Any]]:
    """A deterministic subset of ``n`` items spread over the categories (round robin), user items first."""
    if n >= len(items):
        return list(items)
    rng = random.Random(seed)
    by_cat: dict[str, list[dict[str, Any]]] = {}
    for item in items:
        by_cat.setdefault(item.get("category", ""), []).append(item)
    cats = sorted(by_cat, key=lambda c: (c != "user", c))
    for c in cats:
        if c != "user":
            rng.shuffle(by_cat[c])
    out: list[dict[str, Any]] = []
    while len(out) < n:
        for c in cats:
            if by_cat[c] and len(out) < n:
                out.append(by_cat[c].pop(0))
    return out


def normalize(text: str) -> str:
    text = text.lower().strip()
    text = re.sub(r"[^\w\s]", " ", text)
    text = re.sub(r"\b(the|a|an)\b", " ", text)
    return " ".join(text.split())


def is_correct(output: str, answer: str) -> bool:
    """Exact-ish match: the normalised answer is the output, or appears in it as whole words."""
    out, ans = normalize(output), normalize(answer)
    if not ans:
        return False
    return out == ans or f" {ans} " in f" {out} "


# =========================================================================== overfitting
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
        return cls(cfg.patience, cfg.rise_threshold, cfg.gap_ratio)

    @staticmethod
    def points(history: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """One point per evaluation: step, eval loss and the train loss around it."""
        out: list[dict[str, Any]] = []
        window: list[float] = []
        last_train: float | None = None
        for h in history:
            if _finite(h.get("loss")):
                window.append(float(h["loss"]))
                last_train = float(h["loss"])
            if _finite(h.get("eval_loss")):
                train = sum(window) / len(window) if window else last_train
                if out and out[-1]["step"] == h.get("step"):
                    out[-1]["eval_loss"] = float(h["eval_loss"])  # the same step evaluated twice
                else:
                    out.append({"step": h.get("step"), "eval_loss": float(h["eval_loss"]), "train_loss": train})
                window = []
        return out

    def verdict(self, history: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
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


# =========================================================================== forgetting
class ForgettingProbe:
    """Measures the live peft model against its own base (``model.disable_adapter()``).

    ``measure(model)`` returns mean answer log-likelihood (per token), greedy accuracy and mean per-token
    KL(base || tuned) over the base model's own replies to general prompts, plus the change against the
    base (measured and cached on first use).

    Everything is asked in the model's *default* chat format, with no system prompt of ours. An earlier
    version asked "Answer with a single word or number.": on SmolLM2 tuned on a one-word routing task that
    instruction triggered the task's format (answers like "capital" or "refund") and reported accuracy
    22% -> 0% while the same model, asked plainly, still answered as well as its base. The KL is taken where
    the model speaks (its reply), not on the user's words, which no chat model is ever asked to predict.
    """

    def __init__(self, tokenizer: Any, *, items: Sequence[dict[str, Any]] | None = None,
                 prompts: Sequence[str] | None = None, n_items: int = 16, n_prompts: int = 6,
                 kl_mild: float = 0.1, kl_severe: float = 0.5, loglik_mild: float = 0.25,
                 loglik_severe: float = 1.0, seed: int = 0, max_new_tokens: int = 8, reply_tokens: int = 12,
                 batch_size: int = 32, probe_file: str | None = None, system_prompt: str | None = None) -> None:
        self.tokenizer = tokenizer
        all_items = list(items) if items is not None else load_probe_items(probe_file)
        self.items = subset(all_items, n_items, seed)
        self.prompts = list(prompts if prompts is not None else general_prompts())[:n_prompts]
        self.thresholds = {"kl_mild": kl_mild, "kl_severe": kl_severe, "loglik_mild": loglik_mild,
                           "loglik_severe": loglik_severe}
        self.system_prompt = system_prompt
        self.max_new_tokens = max_new_tokens
        self.reply_tokens = reply_tokens
        self.batch_size = batch_size
        self.base: dict[str, Any] | None = None
        self._qa = [self._encode_qa(it) for it in self.items]
        self._kl_prompts = [self._encode(self._chat(p)) for p in self.prompts]
        self._kl_seqs: list[list[int]] = []  # prompt + the base model's greedy reply
        self._base_logprobs: list[Any] = []  # base log-probs over each reply's positions

    @classmethod
    def from_config(cls, tokenizer: Any, cfg: Any, seed: int = 0) -> ForgettingProbe:
        return cls(tokenizer, n_items=cfg.forgetting_items, n_prompts=cfg.kl_prompts, kl_mild=cfg.kl_mild,
                   kl_severe=cfg.kl_severe, loglik_mild=cfg.loglik_mild, loglik_severe=cfg.loglik_severe,
                   seed=seed, probe_file=cfg.probe_file)

    # ------------------------------------------------------------ encoding
    def _chat(self, prompt: str) -> str:
        tok = self.tokenizer
        system = self.system_prompt
        if getattr(tok, "chat_template", None):
            messages = ([{"role": "system", "content": system}] if system else []) + [
                {"role": "user", "content": prompt}]
            return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return (f"{system}\n" if system else "") + f"Question: {prompt}\nAnswer:"

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _encode_qa(self, item: Mapping[str, Any]) -> tuple[list[int], list[int]]:
        prompt = self._encode(self._chat(item["prompt"]))
        sep = "" if getattr(self.tokenizer, "chat_template", None) else " "
        answer = self._encode(sep + str(item["answer"]))
        return prompt, answer

    def _pad_id(self) -> int:
        tok = self.tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        return int(pad or 0)

    # ------------------------------------------------------------ measuring
    def measure(self, model: Any) -> dict[str, Any]:
        """Base values (first call, adapter off) and the tuned state now (adapter on); restores train mode.

        While the adapter is still the identity (LoRA ``B`` all zero, as at step 0) the tuned state *is*
        the base, so it is not measured twice.
        """
        import torch

        was_training = model.training
        model.eval()
        t0 = time.perf_counter()
        try:
            with torch.inference_mode(), _keep_bnb_weights_trainable(model):
                if self.base is None:
                    with _adapter_disabled(model):
                        self.base = self._measure(model, base=True)
                now = self.base if _adapter_is_identity(model) else self._measure(model, base=False)
        finally:
            model.train(was_training)
        base = self.base
        out = {**now, "base_loglik": base["loglik"], "base_accuracy": base["accuracy"],
               "loglik_drop": base["loglik"] - now["loglik"], "accuracy_drop": base["accuracy"] - now["accuracy"],
               "items": len(self.items), "prompts": len(self.prompts), "seconds": time.perf_counter() - t0}
        out.update(self.judge(out))
        return out

    def judge(self, m: Mapping[str, Any]) -> dict[str, Any]:
        th = self.thresholds
        kl, drop = m.get("kl") or 0.0, m.get("loglik_drop") or 0.0
        if kl >= th["kl_severe"] or drop >= th["loglik_severe"]:
            verdict = "severe"
        elif kl >= th["kl_mild"] or drop >= th["loglik_mild"]:
            verdict = "mild"
        else:
            verdict = "none"
        acc = f"accuracy {m.get('base_accuracy', 0):.0%} → {m.get('accuracy', 0):.0%}"
        message = (f"Forgetting: {verdict}. KL from base {kl:.3f} nats/token, answer log-likelihood "
                   f"{-drop:+.3f} nats/token, {acc}.")
        return {"verdict": verdict, "message": message, "suggestion": FORGETTING_SUGGESTIONS.get(verdict, "")}

    def _device(self, model: Any) -> Any:
        return next(p for p in model.parameters()).device

    def _batch(self, seqs: Sequence[Sequence[int]], left: bool = False) -> tuple[Any, Any]:
        import torch

        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self._pad_id(), dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, s in enumerate(seqs):
            where = slice(width - len(s), width) if left else slice(0, len(s))
            ids[i, where] = torch.tensor(list(s), dtype=torch.long)
            mask[i, where] = 1
        return ids, mask

    def _tail_logprobs(self, model: Any, seqs: Sequence[Sequence[int]], keep: int) -> Any:
        """Log-probs at the last ``keep`` positions of each sequence (left padded, so all end together).

        Only those positions go through the 49k-word LM head and the softmax (``logits_to_keep``): on a CPU
        the full-vocabulary logits of every prompt token cost more than the transformer layers.
        """
        import torch

        device = self._device(model)
        ids, mask = self._batch(seqs, left=True)
        kwargs = {"input_ids": ids.to(device), "attention_mask": mask.to(device),
                  "position_ids": (mask.cumsum(-1) - 1).clamp_min(0).to(device)}
        try:
            logits = model(**kwargs, logits_to_keep=keep).logits
        except TypeError:  # a model class without logits_to_keep
            logits = model(**kwargs).logits
        return torch.log_softmax(logits[:, -keep:].float(), dim=-1)

    def _generate(self, model: Any, prompts: Sequence[list[int]], max_new_tokens: int) -> list[list[int]]:
        """Greedy continuations (token ids, EOS and padding dropped), left-padded batches."""
        device = self._device(model)
        eos = self.tokenizer.eos_token_id
        out: list[list[int]] = []
        for chunk in _chunks(prompts, self.batch_size):
            ids, mask = self._batch(chunk, left=True)
            gen = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), do_sample=False,
                                 max_new_tokens=max_new_tokens, pad_token_id=self._pad_id(), eos_token_id=eos,
                                 temperature=None, top_p=None, top_k=None)
            for row in gen[:, ids.shape[1]:].tolist():
                if eos in row:
                    row = row[:row.index(eos)]
                out.append(row)
        return out

    def _measure(self, model: Any, base: bool) -> dict[str, Any]:
        import torch

        device = self._device(model)
        # answer log-likelihood: one forward of prompt + answer per item, batched; the answers end each row
        lls: list[float] = []
        for chunk in _chunks(self._qa, self.batch_size):
            keep = max(len(a) for _, a in chunk) + 1
            logp = self._tail_logprobs(model, [p + a for p, a in chunk], keep)
            for i, (_, a) in enumerate(chunk):
                pos = torch.arange(keep - len(a) - 1, keep - 1, device=device)  # the positions predicting a
                lls.append(float(logp[i, pos, torch.tensor(a, device=device)].mean()))
        # greedy accuracy: the answer appears (as whole words) in a short greedy reply
        outputs = [self.tokenizer.decode(g, skip_special_tokens=True)
                   for g in self._generate(model, [p for p, _ in self._qa], self.max_new_tokens)]
        correct = sum(is_correct(text, item["answer"]) for text, item in zip(outputs, self.items))
        # KL(base || tuned) per token over the base model's own replies to the general prompts
        if base and self.prompts:
            replies = self._generate(model, self._kl_prompts, self.reply_tokens)
            self._kl_seqs = [p + r for p, r in zip(self._kl_prompts, replies)]
        kls: list[float] = []
        for start in range(0, len(self._kl_seqs), self.batch_size):
            chunk = self._kl_seqs[start:start + self.batch_size]
            # per sequence: the positions predicting each reply token (at least one: the reply's first)
            spans = [max(len(seq) - len(self._kl_prompts[start + i]), 1) for i, seq in enumerate(chunk)]
            keep = max(spans) + 1
            tail = self._tail_logprobs(model, chunk, keep)
            for i, seq in enumerate(chunk):
                j = start + i
                first = keep - 1 - (len(seq) - len(self._kl_prompts[j]))  # predicts the reply's first token
                logp = tail[i, first:first + spans[i]]
                if base:
                    # a copy in host memory: ``logp`` is a view of the whole batch's (tokens x vocabulary)
                    # log-probabilities, which kept ~100 MB of a 49k-vocabulary model on the GPU for the
                    # whole run (measured on an H100), and after it
                    self._base_logprobs.append(logp.to("cpu", copy=True))
                    kls.append(0.0)
                else:
                    ref = self._base_logprobs[j].to(logp.device)
                    kls.append(float((ref.exp() * (ref - logp)).sum(-1).clamp_min(0.0).mean()))
        n = max(1, len(self.items))
        return {"loglik": sum(lls) / len(lls) if lls else 0.0, "accuracy": correct / n,
                "kl": sum(kls) / len(kls) if kls else 0.0, "samples": outputs[:5]}


def _adapter_is_identity(model: Any) -> bool:
    """True while every LoRA ``B`` matrix is zero (peft's initialisation): the adapter changes nothing yet."""
    found = False
    for name, p in model.named_parameters():
        if "lora_B" in name:
            found = True
            if bool(p.detach().any()):
                return False
    return found


class _keep_bnb_weights_trainable:
    """Keep bitsandbytes' 4-bit layers in training mode while a probe runs the model in eval mode.

    On CPUs with AVX512-BF16, ``Linear4bit.forward`` in eval mode without grad repacks its weight into a
    one-way CPU inference layout; training then continues on the repacked weights and the loss climbs
    (seen on SmolLM2: 4.4 -> 5.3 over six steps instead of 4.4 -> 2.1). The layers have no dropout, so
    their ``training`` flag only controls that repacking.
    """

    def __init__(self, model: Any) -> None:
        try:
            import bitsandbytes as bnb

            self.layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
        except ImportError:
            self.layers = []
        self.flags: list[bool] = []

    def __enter__(self) -> None:
        self.flags = [m.training for m in self.layers]
        for m in self.layers:
            m.training = True

    def __exit__(self, *exc: object) -> None:
        for m, flag in zip(self.layers, self.flags):
            m.training = flag


class _adapter_disabled:
    """``model.disable_adapter()`` for a peft model; a plain model is its own base."""

    def __init__(self, model: Any) -> None:
        self.ctx = model.disable_adapter() if hasattr(model, "disable_adapter") else None

    def __enter__(self) -> None:
        if self.ctx is not None:
            self.ctx.__enter__()

    def __exit__(self, *exc: object) -> None:
        if self.ctx is not None:
            self.ctx.__exit__(*exc)


def _chunks(seq: Sequence[Any], n: int) -> Iterable[Sequence[Any]]:
    for i in range(0, len(seq), n):
        yield seq[i:i + n]


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def worst(a: str | None, b: str | None) -> str | None:
    if a is None:
        return b
    if b is None:
        return a
    return a if _ORDER.get(a, 0) >= _ORDER.get(b, 0) else b


# =========================================================================== trainer callback
_CALLBACK_CLASS: type | None = None


def probe_callback(run: Any) -> Any:
    """A ``TrainerCallback`` running the configured probes for ``run`` (class built on first use)."""
    global _CALLBACK_CLASS
    if _CALLBACK_CLASS is None:
        from transformers import TrainerCallback

        _CALLBACK_CLASS = type("ProbeCallback", (_ProbeCallbackMixin, TrainerCallback), {})
    return _CALLBACK_CLASS(run)


class _ProbeCallbackMixin:
    def __init__(self, run: Any) -> None:
        self.run = run
        self.cfg = run.config.probes
        self.overfitting = OverfittingProbe.from_config(self.cfg) if self.cfg.overfitting else None
        self.forgetting: ForgettingProbe | None = None
        self.evaluations = 0
        self.seconds = 0.0
        self.records: list[dict[str, Any]] = []
        self.worst_overfitting: str | None = None
        self.worst_forgetting: str | None = None
        self.stopped_early_at: int | None = None
        self.last_overfitting: dict[str, Any] | None = None
        self.last_forgetting: dict[str, Any] | None = None

    # ------------------------------------------------------------ hooks
    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if self.cfg.forgetting and self.run.model is not None and self.run.tokenizer is not None:
            t0 = time.perf_counter()
            self.forgetting = ForgettingProbe.from_config(self.run.tokenizer, self.cfg,
                                                          seed=self.run.config.training.seed)
            self._record(state, forgetting=self.forgetting.measure(self.run.model), start=True)
            self.seconds += time.perf_counter() - t0

    def on_evaluate(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        t0 = time.perf_counter()
        self.evaluations += 1
        over = self.overfitting.verdict(self.run.history) if self.overfitting is not None else None
        if (over is not None and self.cfg.early_stop and state.global_step < state.max_steps
                and self.overfitting.should_stop(over) and not control.should_training_stop):
            control.should_training_stop = True
            self.stopped_early_at = state.global_step
            over["early_stop"] = {"step": state.global_step, "restore_step": over["best_step"]}
            self.run.emit("warning", message=f"Early stopping at step {state.global_step}: {over['message']} "
                          f"Restoring the best checkpoint (step {over['best_step']}).")
        forget = None
        # every `forgetting_every` evaluations, and always at the last one, so the final verdict is current
        last = state.global_step >= state.max_steps or control.should_training_stop
        if self.forgetting is not None and (self.evaluations % self.cfg.forgetting_every == 0 or last):
            forget = self.forgetting.measure(self.run.model)
        self.seconds += time.perf_counter() - t0
        self._record(state, overfitting=over, forgetting=forget)

    # ------------------------------------------------------------ records
    def _record(self, state: Any, overfitting: dict[str, Any] | None = None,
                forgetting: dict[str, Any] | None = None, start: bool = False) -> None:
        rec: dict[str, Any] = {"step": state.global_step, "epoch": state.epoch, "time": time.time(),
                               "start": start, "overfitting": overfitting, "forgetting": forgetting,
                               "probe_seconds": self.seconds}
        if overfitting is not None:
            self.last_overfitting = overfitting
            self.worst_overfitting = worst(self.worst_overfitting, overfitting["status"])
        if forgetting is not None:
            self.last_forgetting = forgetting
            self.worst_forgetting = worst(self.worst_forgetting, forgetting["verdict"])
        rec = json.loads(json.dumps(rec, default=str))
        self.records.append(rec)
        from ..store import append_jsonl

        append_jsonl(self.run.run_dir.probes_path, rec)
        self.run.emit("probe", **rec)

    def summary(self) -> dict[str, Any]:
        """Final verdicts for the run's summary."""
        over, forget = self.last_overfitting, self.last_forgetting
        return {
            "overfitting": self.worst_overfitting,
            "overfitting_message": over["message"] if over else None,
            "best_eval_step": over["best_step"] if over else None,
            "stopped_early_at": self.stopped_early_at,
            "forgetting": self.worst_forgetting,
            "forgetting_final": forget["verdict"] if forget else None,
            "forgetting_message": forget["message"] if forget else None,
            "kl": forget["kl"] if forget else None,
            "loglik_drop": forget["loglik_drop"] if forget else None,
            "accuracy": forget["accuracy"] if forget else None,
            "base_accuracy": forget["base_accuracy"] if forget else None,
            "probe_seconds": self.seconds,
        }
