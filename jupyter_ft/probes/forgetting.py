"""The forgetting probe: general knowledge and the base model's distribution, measured on the live model.

The base is the same model with the adapter switched off (``model.disable_adapter()``), never a second copy
in memory. torch is imported inside the methods, so importing this module stays cheap.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ..models.bnb import keep_4bit_weights_trainable
from .items import general_prompts, is_correct, load_probe_items, subset
from .verdicts import FORGETTING_SUGGESTIONS

__all__ = ["ForgettingProbe"]


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
        """From a ``ProbesConfig`` (item and prompt counts, thresholds, the user's probe file)."""
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

        # eval mode without grad would let bitsandbytes repack the 4-bit weights we keep training on
        keep_4bit_weights_trainable(model)
        was_training = model.training
        model.eval()
        t0 = time.perf_counter()
        try:
            with torch.inference_mode():
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
        """``verdict`` (none | mild | severe) from the KL and the log-likelihood drop, a message, a suggestion."""
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

