"""Did fine-tuning help? Base and tuned answers for the same prompts, from one model in memory, scored.

The base answers come from the same weights with the LoRA adapter switched off (``disable_adapter``), so
the comparison costs no second copy of the model and uses identical decoding for both sides.
:func:`evaluate_run` checks every input first (run, metrics, data: :class:`EvalError` before any model
loads), then generates, scores, and writes ``samples.jsonl`` / ``eval.json`` through ``RunDir.write_eval``.
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Mapping
from typing import Any

from ..config import DEFAULT_ROOT, FineTuneConfig
from ..data.answers import normalize_answer
from ..errors import EvalError
from ..runtime.memory import out_of_memory_advice
from ..store import RunDir
from . import generation
from .examples import examples_from_data, examples_from_prompts, examples_from_run, tokenized_for_perplexity
from .metrics import Metric, resolve_metrics
from .model import open_run, run_model
from .result import EvalResult

__all__ = ["compare_base_tuned", "evaluate_run", "score", "write_result"]


def score(metrics: list[Metric], base: list[str], tuned: list[str], refs: list[str]
          ) -> tuple[dict[str, dict[str, float]], dict[str, list[float]], dict[str, list[float]], set[str]]:
    """Both sides under each metric: the aggregate ``{name: {base, tuned}}``, the per-row scores of each
    side, and the names where lower is better. A metric's own failure becomes an :class:`EvalError`."""
    aggregate: dict[str, dict[str, float]] = {}
    rows_b: dict[str, list[float]] = {}
    rows_t: dict[str, list[float]] = {}
    lower: set[str] = set()
    for m in metrics:
        try:
            vb, vt = m.compute(base, refs), m.compute(tuned, refs)
            pb = m.per_row(base, refs) if m.per_row else {}
            pt = m.per_row(tuned, refs) if m.per_row else {}
        except EvalError:
            raise
        except Exception as exc:  # a user metric's failure, named
            raise EvalError(f"metric {m.name!r} failed: {type(exc).__name__}: {exc}") from exc
        for key in vb:
            name = key if key not in aggregate else f"{m.name}.{key}"
            aggregate[name] = {"base": float(vb[key]), "tuned": float(vt.get(key, float("nan")))}
            if not m.higher_is_better:
                lower.add(name)
            if key in pb:
                rows_b[name], rows_t[name] = pb[key], pt[key]
    return aggregate, rows_b, rows_t, lower


def evaluate_run(run: Any, *, root: str | os.PathLike[str] = DEFAULT_ROOT, data: Any = None, prompts: Any = None,
                 n: int | None = None, metrics: Any = None, max_new_tokens: int = 32, batch_size: int = 8,
                 temperature: float = 0.0, seed: int = 0, model: Any = None, tokenizer: Any = None,
                 namespace: Mapping[str, Any] | None = None, write: bool = True,
                 trust_remote_code: bool = False) -> EvalResult:
    """Base (adapter switched off) vs tuned answers of a run, scored; results in ``samples.jsonl``/``eval.json``.

    ``run``: a run id or name under ``root``, a ``Run`` or a ``RunDir`` - any finished or stopped run, also
    from before a kernel restart (the adapter is loaded onto the base model; one model is kept, see
    :func:`~jupyter_ft.eval.model.run_model`). Examples: the run's held-out split by default, ``data`` (a
    file, datasets dir, DataFrame, list of dicts or Dataset with a prompt and a reference column), or
    ``prompts`` (strings, no references: answers only). ``n`` keeps the first n examples. ``metrics``: see
    :func:`~jupyter_ft.eval.metrics.resolve_metrics`; perplexity is computed on the tokenized eval split (or
    on ``data``) for both models. Decoding is identical for both sides: greedy, or sampling with
    ``temperature`` and ``seed``. The model repository's own code runs only with ``trust_remote_code=True``,
    never because the run's record says so (a run directory may come from someone else).
    Bad inputs raise :class:`EvalError` (``RunNotFound`` for an unknown run) before any model is loaded.
    """
    if data is not None and prompts is not None:
        raise EvalError("give data or prompts, not both")
    if n is not None and n < 1:
        raise EvalError(f"n must be >= 1 (got {n})")
    if max_new_tokens < 1:
        raise EvalError(f"max_new_tokens must be >= 1 (got {max_new_tokens})")
    if temperature < 0:
        raise EvalError(f"temperature must be >= 0 (got {temperature})")
    rd = open_run(run, root)
    explicit = metrics is not None
    text_metrics, want_ppl = resolve_metrics(metrics, namespace)
    config = FineTuneConfig.from_dict(rd.record.config)
    if prompts is not None:
        examples = examples_from_prompts(prompts)
        if n is not None:
            examples.messages, examples.references = examples.messages[:n], examples.references[:n]
        if text_metrics and explicit:
            raise EvalError(f"prompts have no references, so {', '.join(m.name for m in text_metrics)} cannot be "
                            "scored; give data with a reference column instead (or only perplexity).")
        text_metrics = []
    elif data is not None:
        examples = examples_from_data(data, config, n)
    else:
        examples = examples_from_run(rd, config, n)
    if model is None:
        with out_of_memory_advice(f"loading the model of run {rd.record.id}",
                                  "Free memory first: stop or wait for a training run, or restart the kernel"):
            model, tokenizer, _ = run_model(rd, trust_remote_code=trust_remote_code)
    elif tokenizer is None:
        raise EvalError("give the tokenizer with the model")

    prompt_texts = [generation.render_chat_prompt(m, tokenizer) for m in examples.messages]
    decode: dict[str, Any] = {"max_new_tokens": max_new_tokens, "batch_size": batch_size, "temperature": temperature, "seed": seed}
    advice = (f"Lower batch_size (%ft_eval --batch-size, now {batch_size}) or max_new_tokens (--max-new-tokens, "
              f"now {max_new_tokens}), or evaluate fewer rows (--n)")
    with out_of_memory_advice(f"generating answers to {len(prompt_texts)} prompts", advice):
        with model.disable_adapter():
            base = generation.generate(model, tokenizer, prompt_texts, **decode)
        tuned = generation.generate(model, tokenizer, prompt_texts, **decode)

    refs = examples.references
    aggregate: dict[str, dict[str, float]] = {}
    rows_b: dict[str, list[float]] = {}
    rows_t: dict[str, list[float]] = {}
    lower: set[str] = {"perplexity"}
    if examples.has_references and text_metrics:
        aggregate, rows_b, rows_t, low = score(text_metrics, base, tuned, refs)  # type: ignore[arg-type]
        lower |= low

    ppl_info: dict[str, Any] | None = None
    if want_ppl:
        tokenized = tokenized_for_perplexity(rd, examples, config, tokenizer, n)
        if tokenized is None:
            if explicit:
                raise EvalError(f"perplexity: run {rd.record.id} has no tokenized eval split (dataset/eval) and no "
                                "data was given; pass data with a reference column.")
        else:
            rows_ppl, where = tokenized
            with out_of_memory_advice(f"computing perplexity on {len(rows_ppl)} rows",
                                      f"Lower batch_size (%ft_eval --batch-size, now {batch_size}), evaluate fewer "
                                      "rows (--n), or leave perplexity out of --metrics"):
                with model.disable_adapter():
                    pb = generation.perplexity(model, tokenizer, rows_ppl, batch_size=batch_size)
                pt = generation.perplexity(model, tokenizer, rows_ppl, batch_size=batch_size)
            aggregate["perplexity"] = {"base": pb["perplexity"], "tuned": pt["perplexity"]}
            ppl_info = {"source": where, "rows": pb["rows"], "tokens": pb["tokens"],
                        "base": pb, "tuned": pt}

    rows = []
    for i, (msgs, prompt, ref, b, t) in enumerate(zip(examples.messages, prompt_texts, refs, base, tuned)):
        user = next((m["content"] for m in reversed(msgs) if m["role"] == "user"), msgs[-1]["content"] if msgs else "")
        row: dict[str, Any] = {"index": i, "prompt": prompt, "user": user, "reference": ref, "base": b, "tuned": t}
        if ref is not None:
            row["base_correct"] = normalize_answer(b) == normalize_answer(ref)
            row["tuned_correct"] = normalize_answer(t) == normalize_answer(ref)
        row["scores"] = {"base": {k: v[i] for k, v in rows_b.items()}, "tuned": {k: v[i] for k, v in rows_t.items()}}
        rows.append(row)
    primary = next(iter(rows_b), None)
    info = {
        "run_id": rd.record.id, "run_name": rd.record.name, "path": str(rd.path),
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "n": len(rows), "source": examples.source, "decoding": decode,
        "metrics_requested": [m.name for m in text_metrics] + (["perplexity"] if want_ppl else []),
        "primary": primary, "lower_is_better": sorted(k for k in aggregate if k in lower),
        "perplexity": ppl_info,
    }
    result = EvalResult(rows, aggregate, info)
    if write:
        write_result(rd, result)
    return result


def write_result(rd: RunDir, result: EvalResult) -> None:
    """``samples.jsonl`` (the rows) and ``eval.json`` (info and each metric's base, tuned, delta, direction)."""
    metrics = {name: {"base": m["base"], "tuned": m["tuned"], "delta": m["tuned"] - m["base"],
                      "higher_is_better": result.higher_is_better(name)} for name, m in result.metrics.items()}
    rd.write_eval(result.rows, {**result.info, "metrics": metrics})


def compare_base_tuned(run: str | RunDir, *, root: str | os.PathLike[str] = DEFAULT_ROOT, n: int | None = None,
                       max_new_tokens: int = 16, batch_size: int = 8, model: Any = None, tokenizer: Any = None,
                       metrics: Any = ("exact_match",), temperature: float = 0.0, seed: int = 0) -> EvalResult:
    """Generate base (adapter off) and tuned answers on the run's held-out rows; score exact match (or
    ``metrics``). Writes ``samples.jsonl`` and ``eval.json`` into the run directory. See :func:`evaluate_run`.
    """
    return evaluate_run(run, root=root, n=n, max_new_tokens=max_new_tokens, batch_size=batch_size, model=model,
                        tokenizer=tokenizer, metrics=list(metrics), temperature=temperature, seed=seed)
