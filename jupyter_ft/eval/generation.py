"""Running the model for ``%ft_eval`` and ``%ft_chat``: prompts in the chat template, answers, perplexity.

Both sides of a comparison (adapter off and on) go through these functions with the same arguments, so
any difference in the answers comes from the adapter and not from decoding. torch loads on first call.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ..errors import EvalError

__all__ = ["generate", "perplexity", "render_chat_prompt"]


def generate(model: Any, tokenizer: Any, prompts: Sequence[str], *, max_new_tokens: int = 16, batch_size: int = 8,
             temperature: float = 0.0, seed: int = 0) -> list[str]:
    """Batched generation with left padding; greedy unless ``temperature > 0`` (then seeded sampling)."""
    import torch

    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    device = next(model.parameters()).device
    out: list[str] = []
    try:
        for start in range(0, len(prompts), batch_size):
            batch = tokenizer(list(prompts[start:start + batch_size]), return_tensors="pt", padding=True,
                              add_special_tokens=False).to(device)
            kwargs: dict[str, Any] = {"max_new_tokens": max_new_tokens, "pad_token_id": tokenizer.pad_token_id,
                                      "use_cache": True}
            if temperature > 0:
                torch.manual_seed(seed + start)
                kwargs.update(do_sample=True, temperature=temperature)
            else:
                kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
            with torch.inference_mode():
                ids = model.generate(**batch, **kwargs)
            new = ids[:, batch["input_ids"].shape[1]:]
            out += [t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True)]
    finally:
        tokenizer.padding_side = side
    return out


def perplexity(model: Any, tokenizer: Any, examples: Iterable[Mapping[str, Any]], *,
               batch_size: int = 8) -> dict[str, float]:
    """exp of the mean token NLL over the scored tokens (``labels != -100``) of tokenized examples
    (rows with ``input_ids`` and ``labels``: the run's ``dataset/eval``). Returns perplexity, nll, tokens, rows."""
    import torch
    import torch.nn.functional as F

    rows = list(examples)
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    total_nll, total_tokens = 0.0, 0
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        width = max(len(r["input_ids"]) for r in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        labels = torch.full((len(chunk), width), -100, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for i, r in enumerate(chunk):
            n = len(r["input_ids"])
            ids[i, :n] = torch.as_tensor(r["input_ids"])
            labels[i, :n] = torch.as_tensor(r["labels"])
            mask[i, :n] = 1
        with torch.inference_mode():
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
        shift_logits = logits[:, :-1].float()
        shift_labels = labels[:, 1:].to(device)
        nll = F.cross_entropy(shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels.reshape(-1),
                              ignore_index=-100, reduction="sum")
        total_nll += float(nll)
        total_tokens += int((shift_labels != -100).sum())
    if total_tokens == 0:
        raise EvalError("perplexity: the examples have no scored tokens (every label is -100)")
    mean = total_nll / total_tokens
    return {"perplexity": math.exp(mean), "nll": mean, "tokens": total_tokens, "rows": len(rows)}


def render_chat_prompt(messages: Sequence[Mapping[str, str]] | str, tokenizer: Any,
                       system_prompt: str | None = None) -> str:
    """A user prompt (or chat turns) as the text the model continues, with its chat template."""
    from ..data import render_prompt

    if isinstance(messages, str):
        msgs = [{"role": "user", "content": messages}]
    else:
        msgs = [{"role": m["role"], "content": m["content"]} for m in messages]
    if system_prompt and not any(m["role"] == "system" for m in msgs):
        msgs.insert(0, {"role": "system", "content": system_prompt})
    return render_prompt(msgs, tokenizer)
