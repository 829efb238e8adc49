"""Did fine-tuning help? Base and tuned answers for the same prompts, from one model in memory.

The base answers come from the same weights with the LoRA adapter switched off (``disable_adapter``),
so the comparison costs no second copy of the model and uses identical decoding for both sides.
"""

from __future__ import annotations

import json
import re
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from .config import FineTuneConfig
from .store import RunDir, RunStore, append_jsonl, write_json_atomic

__all__ = ["EvalResult", "exact_match", "generate", "load_run_model", "compare_base_tuned", "normalize_answer"]

_PUNCT = re.compile(f"[{re.escape(string.punctuation)}]")


def normalize_answer(text: str) -> str:
    """Lower-case, drop punctuation and collapse whitespace: 'Billing.' and 'billing' are one answer."""
    return " ".join(_PUNCT.sub(" ", text.lower()).split())


def exact_match(predictions: Sequence[str], references: Sequence[str]) -> float:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    if not references:
        return 0.0
    hits = sum(normalize_answer(p) == normalize_answer(r) for p, r in zip(predictions, references))
    return hits / len(references)


def load_run_model(run_dir: RunDir) -> tuple[Any, Any, FineTuneConfig]:
    """The run's base model, quantized as it was trained, with its saved adapter attached."""
    from peft import PeftModel

    from . import models

    config = FineTuneConfig.from_dict(run_dir.record.config)
    if not (run_dir.adapter_dir / "adapter_config.json").is_file():
        raise FileNotFoundError(f"run {run_dir.record.id} has no saved adapter in {run_dir.adapter_dir} "
                                f"(status: {run_dir.record.status}).")
    resolved = models.resolve_model(config.model.name, config.model.revision)
    device = models.select_device()
    dtype = models.select_compute_dtype(device)
    tokenizer = models.load_tokenizer(resolved, config.model.trust_remote_code)
    base = models.load_base_model(config, resolved, device, dtype)
    model = PeftModel.from_pretrained(base, str(run_dir.adapter_dir))
    model.eval()
    return model, tokenizer, config


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


@dataclass
class EvalResult:
    rows: list[dict[str, Any]]
    metrics: dict[str, dict[str, float]]

    def table(self) -> str:
        lines = [f"{'metric':<14}{'base':>8}{'tuned':>8}{'delta':>8}"]
        for name, m in self.metrics.items():
            lines.append(f"{name:<14}{m['base']:>8.3f}{m['tuned']:>8.3f}{m['tuned'] - m['base']:>+8.3f}")
        return "\n".join(lines)


def compare_base_tuned(run: str | RunDir, *, root: str = "ft_runs", n: int | None = None, max_new_tokens: int = 16,
                       batch_size: int = 8, model: Any = None, tokenizer: Any = None) -> EvalResult:
    """Generate base (adapter off) and tuned answers on the run's held-out rows; score exact match.

    Writes ``samples.jsonl`` and ``eval.json`` into the run directory.
    """
    import datasets

    from .data import prompt_messages, render_prompt

    rd = run if isinstance(run, RunDir) else RunStore(root).open(run)
    if model is None:
        model, tokenizer, config = load_run_model(rd)
    else:
        config = FineTuneConfig.from_dict(rd.record.config)
    raw_dir = rd.dataset_dir / "eval_raw"
    if not raw_dir.is_dir():
        raise FileNotFoundError(f"run {rd.record.id} kept no held-out split ({raw_dir}); it trained with eval_split 0.")
    raw = datasets.load_from_disk(str(raw_dir))
    if n is not None:
        raw = raw.select(range(min(n, len(raw))))
    fmt, columns = rd.record.dataset["format"], rd.record.dataset["columns"]
    prompts, refs = [], []
    for row in raw:
        msgs, ref = prompt_messages(row, fmt, columns, config.data.system_prompt)
        prompts.append(render_prompt(msgs, tokenizer))
        refs.append(ref)
    with model.disable_adapter():
        base = generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size)
    tuned = generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size)
    rows = [{"prompt": p, "reference": r, "base": b, "tuned": t,
             "base_correct": normalize_answer(b) == normalize_answer(r),
             "tuned_correct": normalize_answer(t) == normalize_answer(r)}
            for p, r, b, t in zip(prompts, refs, base, tuned)]
    metrics = {"exact_match": {"base": exact_match(base, refs), "tuned": exact_match(tuned, refs)}}
    samples = Path(rd.path) / "samples.jsonl"
    samples.unlink(missing_ok=True)
    for row in rows:
        append_jsonl(samples, row)
    write_json_atomic(Path(rd.path) / "eval.json", {"n": len(rows), "metrics": metrics})
    return EvalResult(rows, metrics)


def dumps(result: EvalResult) -> str:
    return json.dumps({"metrics": result.metrics, "rows": result.rows}, indent=2)
