"""Did fine-tuning help? Base and tuned answers for the same prompts, from one model in memory.

The base answers come from the same weights with the LoRA adapter switched off (``disable_adapter``),
so the comparison costs no second copy of the model and uses identical decoding for both sides.

Public API:

* :func:`evaluate_run` - generate base and tuned answers (greedy, or seeded sampling), score them with
  text metrics (through ``evaluate``, offline: the modules ship in ``jupyter_ft/metrics``) and perplexity,
  write ``samples.jsonl`` and ``eval.json`` into the run directory, return an :class:`EvalResult`.
* :func:`compare_base_tuned` - the first version's entry point: the same with exact match only.
* :class:`EvalResult` - ``table()`` (text), ``to_html()`` / ``_repr_html_`` (the aggregate table and the
  side-by-side rows with word differences), ``widget()`` (sortable and filterable), ``worse_rows()``.
* :func:`load_run_model` (a fresh base + adapter) and :func:`run_model` (the same, kept in a one-model cache
  that :func:`release_model` empties); :func:`generate`; :func:`perplexity`.
* :func:`resolve_metrics` / :func:`load_metric` - built-in metrics (``exact_match``, ``accuracy``,
  ``rouge``, ``bleu``, ``perplexity``), a callable, an ``evaluate`` module, a local module path, or a hub
  module name when online.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import difflib
import gc
import html
import json
import math
import numbers
import os
import re
import string
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from .config import FineTuneConfig
from .store import ACTIVE, RunDir, RunStore, append_jsonl, write_json_atomic

__all__ = [
    "BUILTIN_METRICS",
    "DEFAULT_METRICS",
    "EvalError",
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
    "normalize_answer",
    "open_run",
    "perplexity",
    "release_model",
    "render_chat_prompt",
    "resolve_metrics",
    "run_model",
    "word_diff",
]

_PUNCT = re.compile(f"[{re.escape(string.punctuation)}]")

BUILTIN_METRICS = ("exact_match", "accuracy", "rouge", "bleu", "perplexity")
DEFAULT_METRICS = ("exact_match", "rouge", "bleu", "perplexity")
ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
MAX_HTML_ROWS = 500


class EvalError(ValueError):
    """A bad evaluation request (unknown metric, data without references, a run that cannot be evaluated);
    the message says what to change."""


class RunNotFound(EvalError, KeyError):
    """No run with that id or name in the store."""


class EvalOutOfMemory(EvalError):
    """Generation or perplexity ran out of (GPU) memory; the message says what to lower. The loaded model
    stays cached, so a retry with a smaller batch does not reload it."""


def is_out_of_memory(exc: BaseException) -> bool:
    try:
        import torch

        if isinstance(exc, torch.OutOfMemoryError):
            return True
    except (ImportError, AttributeError):  # pragma: no cover
        pass
    return isinstance(exc, MemoryError) or "out of memory" in str(exc).lower()


@contextlib.contextmanager
def out_of_memory_advice(doing: str, advice: str) -> Iterator[None]:
    """Turn an out-of-memory error inside the block into :class:`EvalOutOfMemory` that says what was being
    done and what to lower, after giving the failed step's memory back. On a T4 this is the common failure of
    an evaluation (the generation batch, or a training run of the same kernel holding the card)."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - only out-of-memory is translated
        if not is_out_of_memory(exc):
            raise
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        del exc  # its traceback holds the failed step's tensors
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except Exception:  # noqa: BLE001 - cleanup must not mask the message
            pass
        from .training import live_run_ids

        live = list(live_run_ids())
        busy = (f" Run {', '.join(live)} is training in this kernel and holds memory too: wait for it or stop it "
                "(%ft_stop)." if live else "")
        raise EvalOutOfMemory(f"Out of memory while {doing}. {advice}.{busy} ({first})") from None

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


# =========================================================================== text metrics
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


def label_ids(predictions: Sequence[str], references: Sequence[str]) -> tuple[list[int], list[int], list[str]]:
    """Map generated answers to class ids for ``accuracy``: the labels are the distinct normalized references.

    A prediction gets the id of the label it equals (after :func:`normalize_answer`); failing that, the one
    label it contains as whole words ("It goes to billing." -> ``billing``; a label found inside a longer
    label that also matches does not count); else ``-1`` (wrong: no label, or more than one).
    """
    refs = [normalize_answer(r) for r in references]
    labels = sorted(set(refs))
    index = {label: i for i, label in enumerate(labels)}
    pred_ids = []
    for p in predictions:
        text = normalize_answer(p)
        if text in index:
            pred_ids.append(index[text])
            continue
        found = [lab for lab in labels if lab and re.search(rf"(?<!\S){re.escape(lab)}(?!\S)", text)]
        found = [lab for lab in found if not any(lab != other and lab in other for other in found)]
        pred_ids.append(index[found[0]] if len(found) == 1 else -1)
    return pred_ids, [index[r] for r in refs], labels


_LOADED_MODULES: dict[str, Any] = {}
_MODULES_LOCK = threading.Lock()


def load_metric(name_or_path: str) -> Any:
    """An ``evaluate`` module: a built-in name (loaded from the local copy in ``jupyter_ft/metrics``, never
    downloaded), a path to a local module directory or script, or a hub module name (needs the network).
    Loaded once per process."""
    import evaluate

    from .metrics import LOCAL_METRICS, module_path

    path = str(module_path(name_or_path)) if name_or_path in LOCAL_METRICS else str(name_or_path)
    with _MODULES_LOCK:
        if path not in _LOADED_MODULES:
            _LOADED_MODULES[path] = evaluate.load(path, keep_in_memory=True)
        return _LOADED_MODULES[path]


@dataclass
class Metric:
    """A text metric: ``compute(predictions, references)`` gives ``{key: value}`` (one table row per key);
    ``per_row`` gives ``{key: [value per example]}`` or is ``None`` when a metric has no per-example score."""

    name: str
    compute: Callable[[list[str], list[str]], dict[str, float]]
    per_row: Callable[[list[str], list[str]], dict[str, list[float]]] | None = None
    higher_is_better: bool = True


def _em_metric() -> Metric:
    module = load_metric("exact_match")

    def compute(preds: list[str], refs: list[str]) -> dict[str, float]:
        out = module.compute(predictions=[normalize_answer(p) for p in preds],
                             references=[normalize_answer(r) for r in refs])
        return {"exact_match": float(out["exact_match"])}

    def per_row(preds: list[str], refs: list[str]) -> dict[str, list[float]]:
        return {"exact_match": [float(normalize_answer(p) == normalize_answer(r)) for p, r in zip(preds, refs)]}

    return Metric("exact_match", compute, per_row)


def _accuracy_metric() -> Metric:
    module = load_metric("accuracy")

    def compute(preds: list[str], refs: list[str]) -> dict[str, float]:
        pred_ids, ref_ids, _ = label_ids(preds, refs)
        return {"accuracy": float(module.compute(predictions=pred_ids, references=ref_ids)["accuracy"])}

    def per_row(preds: list[str], refs: list[str]) -> dict[str, list[float]]:
        pred_ids, ref_ids, _ = label_ids(preds, refs)
        return {"accuracy": [float(p == r) for p, r in zip(pred_ids, ref_ids)]}

    return Metric("accuracy", compute, per_row)


def _rouge_metric() -> Metric:
    module = load_metric("rouge")

    def compute(preds: list[str], refs: list[str]) -> dict[str, float]:
        out = module.compute(predictions=preds, references=refs, rouge_types=list(ROUGE_TYPES))
        return {k: float(out[k]) for k in ROUGE_TYPES}

    def per_row(preds: list[str], refs: list[str]) -> dict[str, list[float]]:
        out = module.compute(predictions=preds, references=refs, rouge_types=list(ROUGE_TYPES), use_aggregator=False)
        return {k: [float(v) for v in out[k]] for k in ROUGE_TYPES}

    return Metric("rouge", compute, per_row)


def _bleu_metric() -> Metric:
    module = load_metric("bleu")

    def compute(preds: list[str], refs: list[str]) -> dict[str, float]:
        # effective order: a corpus of answers shorter than four words still gets a score
        return {"bleu": float(module.compute(predictions=preds, references=refs, effective_order=True)["bleu"])}

    def per_row(preds: list[str], refs: list[str]) -> dict[str, list[float]]:
        import sacrebleu  # sentence BLEU: exponential smoothing and effective order, sacrebleu's defaults

        return {"bleu": [sacrebleu.sentence_bleu(p, [r]).score / 100.0 for p, r in zip(preds, refs)]}

    return Metric("bleu", compute, per_row)


_BUILTIN_FACTORIES: dict[str, Callable[[], Metric]] = {
    "exact_match": _em_metric, "accuracy": _accuracy_metric, "rouge": _rouge_metric, "bleu": _bleu_metric,
}


def _scalars(name: str, out: Any) -> dict[str, float]:
    if isinstance(out, Mapping):
        values = {str(k): float(v) for k, v in out.items()
                  if isinstance(v, numbers.Real) and not isinstance(v, bool)}
        if not values:
            raise EvalError(f"metric {name!r} returned no numbers: {out!r}")
        return values
    try:
        return {name: float(out)}
    except (TypeError, ValueError):
        raise EvalError(f"metric {name!r} must return a number or a dict of numbers, "
                        f"got {type(out).__name__}") from None


def _callable_metric(fn: Callable[..., Any], name: str | None = None) -> Metric:
    name = name or getattr(fn, "__name__", None) or type(fn).__name__
    if name == "<lambda>":
        name = "user_metric"

    def compute(preds: list[str], refs: list[str]) -> dict[str, float]:
        return _scalars(name, fn(list(preds), list(refs)))

    def per_row(preds: list[str], refs: list[str]) -> dict[str, list[float]]:
        rows = [_scalars(name, fn([p], [r])) for p, r in zip(preds, refs)]
        return {k: [row.get(k, float("nan")) for row in rows] for k in (rows[0] if rows else {})}

    return Metric(name, compute, per_row, bool(getattr(fn, "higher_is_better", True)))


def _module_metric(module: Any, name: str | None = None) -> Metric:
    name = name or getattr(module, "name", None) or "metric"

    def compute(preds: list[str], refs: list[str]) -> dict[str, float]:
        out = _scalars(name, module.compute(predictions=preds, references=refs))
        return {name: out[name]} if name in out else out

    return Metric(name, compute, None)


def _offline() -> bool:
    flags = [os.environ.get(k, "") for k in ("HF_HUB_OFFLINE", "HF_EVALUATE_OFFLINE", "HF_DATASETS_OFFLINE")]
    return any(f.strip() not in ("", "0", "false", "False") for f in flags)


def _named_metric(name: str, namespace: Mapping[str, Any] | None) -> Metric:
    if name in _BUILTIN_FACTORIES:
        return _BUILTIN_FACTORIES[name]()
    if namespace is not None and name in namespace and name.isidentifier():
        return _user_metric(namespace[name], name)
    path = Path(os.path.expanduser(name))
    if path.exists():
        try:
            return _module_metric(load_metric(str(path)), path.stem)
        except Exception as exc:  # noqa: BLE001 - any load failure is the user's module
            raise EvalError(f"metric {name!r}: could not load the evaluate module at {path}: {exc}") from None
    choices = ", ".join(BUILTIN_METRICS)
    hint = (f"Built-in metrics: {choices}. Or give a callable (predictions, references) -> number or dict, "
            "an evaluate module, or the path of a local evaluate module.")
    if re.fullmatch(r"[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)?", name) is None:
        raise EvalError(f"unknown metric {name!r}. {hint}")
    from .models import hub_reachable

    if _offline() or not hub_reachable(3.0):
        close = difflib.get_close_matches(name, BUILTIN_METRICS, n=1)
        did = f" Did you mean {close[0]!r}?" if close else ""
        raise EvalError(f"unknown metric {name!r}.{did} It is not built in, and the Hugging Face hub that has "
                        f"other evaluate modules cannot be reached (offline). {hint}")
    try:
        return _module_metric(load_metric(name), name.split("/")[-1])
    except Exception as exc:  # noqa: BLE001
        raise EvalError(f"unknown metric {name!r}: evaluate.load failed ({type(exc).__name__}: {exc}). "
                        f"{hint}") from None


def _user_metric(obj: Any, name: str | None = None) -> Metric:
    if isinstance(obj, Metric):
        return obj
    if hasattr(obj, "compute") and hasattr(obj, "_info"):  # an evaluate.EvaluationModule
        return _module_metric(obj, name)
    if callable(obj):
        return _callable_metric(obj, name)
    raise EvalError(f"metric {name or obj!r}: expected a name, a callable or an evaluate module, "
                    f"got {type(obj).__name__}")


def resolve_metrics(spec: str | Iterable[Any] | Mapping[str, Any] | None = None,
                    namespace: Mapping[str, Any] | None = None) -> tuple[list[Metric], bool]:
    """The text metrics to compute and whether perplexity was asked for.

    ``spec``: ``"rouge,bleu"``, a list of names / callables / evaluate modules / :class:`Metric`, or a dict
    ``{name: callable}``; ``None`` means :data:`DEFAULT_METRICS`. A name that is not built in is looked up in
    ``namespace`` (the notebook's variables), then as a local evaluate module path, then on the hub (online
    only). Unknown names raise :class:`EvalError` before any model is loaded.
    """
    if spec is None:
        items: list[tuple[str | None, Any]] = [(None, name) for name in DEFAULT_METRICS]
    elif isinstance(spec, str):
        items = [(None, s.strip()) for s in spec.split(",") if s.strip()]
        if not items:
            raise EvalError(f"no metric given; choose from {', '.join(BUILTIN_METRICS)}")
    elif isinstance(spec, Mapping):
        items = [(str(k), v) for k, v in spec.items()]
    else:
        items = [(None, s) for s in spec]
    metrics: list[Metric] = []
    want_ppl = False
    seen: set[str] = set()
    for name, obj in items:
        if isinstance(obj, str):
            if obj == "perplexity":
                want_ppl = True
                continue
            if obj in seen:
                continue
            seen.add(obj)
            metrics.append(_named_metric(obj, namespace))
        else:
            metrics.append(_user_metric(obj, name))
    return metrics, want_ppl


# =========================================================================== the model
def open_run(run: Any, root: str | os.PathLike[str] = "ft_runs") -> RunDir:
    """A ``RunDir`` from a run id or name, a ``Run`` of this kernel, or a ``RunDir``; raises ``RunNotFound``
    or ``EvalError`` (still training, no adapter)."""
    if isinstance(run, RunDir):
        rd = run
    elif isinstance(getattr(run, "run_dir", None), RunDir):
        if not getattr(run, "done", True):
            raise EvalError(f"run {run.id} is still {run.status}; wait for it (run.wait()) or stop it first.")
        rd = run.run_dir
    elif isinstance(run, str):
        store = RunStore(root)
        try:
            rd = store.open(run)
        except KeyError as exc:
            matches = [r for r in store.list() if r.name == run]
            if not matches:
                raise RunNotFound(str(exc.args[0]) if exc.args else f"no run {run!r} under {store.root}") from None
            rd = store.open(matches[0].id)
    else:
        raise EvalError(f"expected a run id, a Run or a RunDir, got {type(run).__name__}")
    if rd.record.status in ACTIVE:
        raise EvalError(f"run {rd.record.id} is still {rd.record.status}; evaluate it when it has ended.")
    if not (rd.adapter_dir / "adapter_config.json").is_file():
        raise EvalError(f"run {rd.record.id} has no saved adapter in {rd.adapter_dir} (status: {rd.record.status}); "
                        "only runs that finished or were stopped can be evaluated.")
    return rd


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


_CACHE: dict[str, Any] = {}
_CACHE_LOCK = threading.Lock()


def _adapter_key(rd: RunDir) -> str:
    weights = rd.adapter_dir / "adapter_model.safetensors"
    stamp = weights.stat().st_mtime_ns if weights.is_file() else 0
    return f"{Path(rd.path).resolve()}:{stamp}"


def run_model(run_dir: RunDir) -> tuple[Any, Any, FineTuneConfig]:
    """:func:`load_run_model` behind a one-model cache: evaluating or chatting with the same run again reuses
    the loaded model; another run replaces it (the old one is freed first, so only one model is ever held)."""
    key = _adapter_key(run_dir)
    with _CACHE_LOCK:
        if _CACHE.get("key") == key:
            return _CACHE["value"]
        _release_locked()
        value = load_run_model(run_dir)
        _CACHE.update(key=key, value=value)
        return value


def _release_locked() -> bool:
    had = bool(_CACHE)
    _CACHE.clear()
    if had:
        from .training import free_memory

        free_memory()  # the next run or model needs this memory back, not in the allocator's free lists
    return had


def release_model() -> bool:
    """Free the model kept by :func:`run_model` (``%ft_eval`` / ``%ft_chat``); True if one was held."""
    with _CACHE_LOCK:
        return _release_locked()


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


def perplexity(model: Any, tokenizer: Any, examples: Any, *, batch_size: int = 8) -> dict[str, float]:
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
    from .data import render_prompt

    if isinstance(messages, str):
        msgs = [{"role": "user", "content": messages}]
    else:
        msgs = [{"role": m["role"], "content": m["content"]} for m in messages]
    if system_prompt and not any(m["role"] == "system" for m in msgs):
        msgs.insert(0, {"role": "system", "content": system_prompt})
    return render_prompt(msgs, tokenizer)


# =========================================================================== the examples
@dataclass
class _Examples:
    messages: list[list[dict[str, str]]]
    references: list[str | None]
    source: str
    raw: Any = None            # rows to tokenize for perplexity (--data), or None
    fmt: str | None = None
    columns: dict[str, str] | None = None

    @property
    def has_references(self) -> bool:
        return bool(self.references) and all(r is not None for r in self.references)


def _rows_of(data: Any) -> tuple[Any, str]:
    from .data import DataError, load_rows, source_name

    if isinstance(data, (str, os.PathLike)) and not str(data).startswith("demo:"):
        path = Path(os.path.expanduser(str(data)))
        if not path.exists():
            raise EvalError(f"data: no such file or directory: {path}")
    try:
        train, ev = load_rows(data)
    except DataError as exc:
        raise EvalError(f"data: {exc}") from None
    # A DatasetDict with a validation/test split: evaluate on that split.
    return (ev if ev is not None else train), source_name(data)


def _examples_from_data(data: Any, config: FineTuneConfig, n: int | None) -> _Examples:
    from .config import DataConfig
    from .data import DataError, detect_format

    rows, name = _rows_of(data)
    cols = list(rows.column_names)
    fmt = columns = None
    for dc in (config.data, DataConfig(format="auto")):
        try:
            fmt, columns, _ = detect_format(cols, dc, name)
        except DataError:
            continue
        if fmt != "text":
            break
        fmt = None
    if fmt is None:
        raise EvalError(f"{name}: no reference column: the rows have columns {', '.join(cols)}; evaluation needs a "
                        f"prompt and a reference answer per row: prompt + completion, instruction (+ input) + output, "
                        "or messages ending with an assistant turn (reference columns: completion, answer, "
                        "response, output). Map other names "
                        "with data.columns in the run's config, or use --prompts for answers without references.")
    if n is not None:
        rows = rows.select(range(min(n, len(rows))))
    messages, refs = _split_rows(rows, fmt, columns, config.data.system_prompt, name)
    return _Examples(messages, refs, name, raw=rows, fmt=fmt, columns=columns)


def _split_rows(rows: Iterable[Mapping[str, Any]], fmt: str, columns: Mapping[str, str], system_prompt: str | None,
                name: str) -> tuple[list[list[dict[str, str]]], list[str | None]]:
    from .data import prompt_messages

    messages, refs = [], []
    for i, row in enumerate(rows):
        try:
            msgs, ref = prompt_messages(row, fmt, columns, system_prompt)
        except (KeyError, ValueError, TypeError) as exc:
            what = ("no assistant turn to use as the reference" if isinstance(exc, ValueError)
                    else f"{type(exc).__name__}: {exc}")
            raise EvalError(f"{name}, row {i + 1}: {what}") from None
        if not isinstance(ref, str):
            col = columns.get("completion") or columns.get("output") or "reference"
            raise EvalError(f"{name}, row {i + 1}, column '{col}': the reference must be text, got "
                            f"{type(ref).__name__} {ref!r}")
        messages.append(msgs)
        refs.append(ref)
    return messages, refs


def _examples_from_prompts(prompts: Any) -> _Examples:
    if isinstance(prompts, str):
        prompts = [prompts]
    try:
        items = list(prompts)
    except TypeError:
        raise EvalError("prompts: expected a list of strings (or of chat turns), "
                        f"got {type(prompts).__name__}") from None
    if not items:
        raise EvalError("prompts: the list is empty")
    messages = []
    for i, p in enumerate(items):
        if isinstance(p, str):
            messages.append([{"role": "user", "content": p}])
        elif isinstance(p, list) and all(isinstance(m, Mapping) and "role" in m and "content" in m for m in p):
            messages.append([{"role": m["role"], "content": m["content"]} for m in p])
        else:
            raise EvalError(f"prompts, item {i + 1}: expected a string or a list of {{role, content}} turns, "
                            f"got {type(p).__name__}")
    return _Examples(messages, [None] * len(messages), "prompts")


def _examples_from_run(rd: RunDir, config: FineTuneConfig, n: int | None) -> _Examples:
    import datasets

    raw_dir = rd.dataset_dir / "eval_raw"
    if not raw_dir.is_dir():
        raise EvalError(f"run {rd.record.id} kept no held-out split ({raw_dir}); it trained with eval_split 0. "
                        "Give data to evaluate on (--data PATH or a notebook variable) or --prompts.")
    datasets.disable_progress_bars()
    raw = datasets.load_from_disk(str(raw_dir))
    if n is not None:
        raw = raw.select(range(min(n, len(raw))))
    fmt, columns = rd.record.dataset["format"], rd.record.dataset["columns"]
    messages, refs = _split_rows(raw, fmt, columns, config.data.system_prompt, f"run {rd.record.id} held-out split")
    return _Examples(messages, refs, "held-out split")


def _tokenized_for_perplexity(rd: RunDir, examples: _Examples, config: FineTuneConfig, tokenizer: Any,
                              n: int | None) -> tuple[Any, str] | None:
    """Tokenized rows (input_ids, labels) to score perplexity on, and where they came from."""
    from .data import IGNORE_INDEX, to_messages, tokenize_messages

    if examples.raw is not None:  # --data: tokenize the given rows like training did
        rows = []
        for row in examples.raw:
            msgs = to_messages(row, examples.fmt, examples.columns, config.data.system_prompt)
            tok = tokenize_messages(msgs, tokenizer, config.data.max_length, config.data.completion_only_loss)
            if any(t != IGNORE_INDEX for t in tok["labels"]):
                rows.append(tok)
        return (rows, examples.source) if rows else None
    eval_dir = rd.dataset_dir / "eval"
    if not eval_dir.is_dir():
        return None
    import datasets

    ds = datasets.load_from_disk(str(eval_dir))
    if n is not None:
        ds = ds.select(range(min(n, len(ds))))
    return (ds, "held-out split (tokenized)") if len(ds) else None


# =========================================================================== the result
@dataclass
class EvalResult:
    """Base vs tuned: ``rows`` (one dict per example: prompt, user, reference, base, tuned, scores) and
    ``metrics`` (``{name: {"base": x, "tuned": y}}``); ``info`` has the run, decoding, data source, the
    per-row score used for "worse" (``primary``) and which metrics are better lower."""

    rows: list[dict[str, Any]]
    metrics: dict[str, dict[str, float]]
    info: dict[str, Any] = field(default_factory=dict)

    # ---------------------------------------------------------------- text
    def table(self) -> str:
        lines = [f"{'metric':<14}{'base':>8}{'tuned':>8}{'delta':>8}"]
        for name, m in self.metrics.items():
            lines.append(f"{name:<14}{_fmt(m['base'])}{_fmt(m['tuned'])}{_fmt(m['tuned'] - m['base'], sign=True)}")
        return "\n".join(lines)

    def higher_is_better(self, name: str) -> bool:
        return name not in set(self.info.get("lower_is_better", ("perplexity",)))

    @property
    def primary(self) -> str | None:
        """The per-row score that decides whether tuned is better or worse on a row."""
        return self.info.get("primary")

    def row_scores(self, metric: str | None = None) -> list[tuple[float | None, float | None]]:
        metric = metric or self.primary
        out = []
        for row in self.rows:
            s = row.get("scores") or {}
            out.append((s.get("base", {}).get(metric), s.get("tuned", {}).get(metric)))
        return out

    def worse_rows(self, metric: str | None = None) -> list[dict[str, Any]]:
        """Rows where the tuned answer scores below the base answer (on ``metric``, default the primary)."""
        metric = metric or self.primary
        lower = not self.higher_is_better(metric) if metric else False
        out = []
        for row, (b, t) in zip(self.rows, self.row_scores(metric)):
            if b is not None and t is not None and ((t > b) if lower else (t < b)):
                out.append(row)
        return out

    def summary(self) -> str:
        i = self.info
        source = i.get("source")
        parts = [f"base vs tuned on {len(self.rows)} example(s)" + (f" of the {source}" if source == "held-out split"
                                                                     else f" from {source}" if source else "")]
        if i.get("run_id"):
            parts[0] += f" of run {i['run_id']}"
        d = i.get("decoding") or {}
        if d:
            how = (f"sampling, temperature {d['temperature']}, seed {d['seed']}" if d.get("temperature", 0) > 0
                   else "greedy")
            parts.append(f"{how}, up to {d.get('max_new_tokens')} new tokens; adapter switched off for the base")
        return "; ".join(parts)

    def __repr__(self) -> str:
        lines = [self.summary(), self.table()]
        if self.rows:
            lines.append("")
            lines.append(self.rows_text(limit=10))
        return "\n".join(lines)

    def rows_text(self, limit: int | None = 10) -> str:
        """The first rows as text: prompt, reference, base and tuned answers."""
        out = []
        rows = self.rows if limit is None else self.rows[:limit]
        scores = self.row_scores()
        for k, row in enumerate(rows):
            b, t = scores[k]
            mark = "" if b is None or t is None else f"  [{self.primary} {_short(b)} -> {_short(t)}]"
            out.append(f"#{row.get('index', k)} {_clip(row.get('user') or row['prompt'], 80)!r}{mark}")
            if row.get("reference") is not None:
                out.append(f"    reference: {_clip(row['reference'], 100)!r}")
            out.append(f"    base:      {_clip(row['base'], 100)!r}")
            out.append(f"    tuned:     {_clip(row['tuned'], 100)!r}")
        if limit is not None and len(self.rows) > limit:
            out.append(f"... {len(self.rows) - limit} more rows (samples.jsonl has them all)")
        return "\n".join(out)

    # ---------------------------------------------------------------- html
    def aggregate_html(self) -> str:
        if not self.metrics:
            return "<p><i>no metrics (no references)</i></p>"
        body = []
        for name, m in self.metrics.items():
            delta = m["tuned"] - m["base"]
            up = self.higher_is_better(name)
            good = delta > 0 if up else delta < 0
            color = "#1a7f37" if good else ("#cf222e" if delta != 0 else "inherit")
            arrow = "↑" if up else "↓"
            body.append(f"<tr><td style='text-align:left'>{html.escape(name)} <span title='"
                        f"{'higher' if up else 'lower'} is better' style='color:#888'>{arrow}</span></td>"
                        f"<td>{_fmt(m['base']).strip()}</td><td>{_fmt(m['tuned']).strip()}</td>"
                        f"<td style='color:{color};font-weight:600'>{_fmt(delta, sign=True).strip()}</td></tr>")
        return ("<table class='jft-agg'><thead><tr><th style='text-align:left'>metric</th><th>base</th><th>tuned</th>"
                f"<th>delta</th></tr></thead><tbody>{''.join(body)}</tbody></table>")

    def rows_html(self, *, metric: str | None = None, sort: str = "index", only_worse: bool = False,
                  contains: str = "", limit: int = MAX_HTML_ROWS, table_id: str | None = None) -> str:
        """The side-by-side table; ``sort`` is ``index``, ``delta`` (worst first), ``-delta`` (best first),
        ``base`` or ``tuned`` (score, low first)."""
        metric = metric or self.primary
        lower = bool(metric) and not self.higher_is_better(metric)
        entries = []
        for k, (row, (b, t)) in enumerate(zip(self.rows, self.row_scores(metric))):
            delta = None if b is None or t is None else (t - b)
            if delta is not None and lower:
                delta = -delta  # positive = tuned better, whatever the metric's direction
            state = "" if delta is None else ("worse" if delta < 0 else "better" if delta > 0 else "same")
            if only_worse and state != "worse":
                continue
            if contains:
                hay = " ".join(str(row.get(c) or "") for c in ("user", "prompt", "reference", "base", "tuned")).lower()
                if contains.lower() not in hay:
                    continue
            entries.append((k, row, b, t, delta, state))
        keys: dict[str, Callable[[tuple[Any, ...]], Any]] = {
            "index": lambda e: e[0],
            "delta": lambda e: (e[4] is None, e[4] if e[4] is not None else 0.0, e[0]),
            "-delta": lambda e: (e[4] is None, -(e[4] if e[4] is not None else 0.0), e[0]),
            "base": lambda e: (e[2] is None, e[2] if e[2] is not None else 0.0, e[0]),
            "tuned": lambda e: (e[3] is None, e[3] if e[3] is not None else 0.0, e[0]),
        }
        if sort not in keys:
            raise ValueError(f"sort must be one of {', '.join(keys)}")
        entries.sort(key=keys[sort])
        shown = entries[:limit]
        has_ref = any(row.get("reference") is not None for _, row, *_ in shown) or not shown
        tid = table_id or f"jft-rows-{uuid.uuid4().hex[:8]}"
        body = []
        for k, row, b, t, delta, state in shown:
            base_html, tuned_html = word_diff(row["base"], row["tuned"])
            prompt = html.escape(row.get("user") or row["prompt"])
            full = html.escape(row["prompt"], quote=True)
            score = "" if b is None or t is None else f"{_short(b)} → {_short(t)}"
            ref = "" if not has_ref else f"<td>{html.escape(row.get('reference') or '')}</td>"
            attrs = (f" data-i='{row.get('index', k)}'" + ("" if b is None else f" data-base='{b}'")
                     + ("" if t is None else f" data-tuned='{t}'")
                     + ("" if delta is None else f" data-delta='{delta}'"))
            body.append(f"<tr class='{state}'{attrs}><td>{row.get('index', k)}</td>"
                        f"<td title=\"{full}\">{prompt}</td>{ref}<td>{base_html}</td><td>{tuned_html}</td>"
                        f"<td class='jft-score'>{score}</td></tr>")
        ref_head = "<th>reference</th>" if has_ref else ""
        head = (f"<tr><th data-k='i' title='sort'>#</th><th>prompt</th>{ref_head}<th>base</th><th>tuned</th>"
                f"<th data-k='delta' title='sort by tuned - base'>{html.escape(metric or 'score')}<br>"
                "base → tuned</th></tr>")
        more = (f"<p style='color:#888'>{len(entries) - len(shown)} more rows not shown; samples.jsonl has them "
                "all.</p>" if len(entries) > len(shown) else "")
        return (f"<table class='jft-rows' id='{tid}'><thead>{head}</thead><tbody>{''.join(body)}</tbody></table>"
                + more)

    def to_html(self, *, metric: str | None = None) -> str:
        """Static HTML: the aggregate table, then the rows with word differences between base and tuned.
        A checkbox hides all but the rows where tuned is worse (CSS only) and the # and score headers sort
        the rows where scripts run (trusted notebooks, exported HTML)."""
        uid = uuid.uuid4().hex[:8]
        worse = len(self.worse_rows(metric))
        # The checkbox, its label and the table are siblings, so that `:checked ~ table` can hide rows.
        toggle = (f"<input type='checkbox' id='jft-worse-{uid}' class='jft-worse'>"
                  f"<label for='jft-worse-{uid}'> only rows where tuned is worse ({worse})</label>")
        style = _STYLE + f"#jft-worse-{uid}:checked ~ table tbody tr:not(.worse){{display:none}}"
        script = _SORT_SCRIPT.replace("TABLE_ID", f"jft-rows-{uid}")
        return (f"<div class='jft-eval'><style>{style}</style>"
                f"<div style='margin-bottom:4px'>{html.escape(self.summary())}</div>{self.aggregate_html()}"
                f"{toggle}{self.rows_html(metric=metric, table_id=f'jft-rows-{uid}')}"
                f"<script>{script}</script></div>")

    def _repr_html_(self) -> str:
        return self.to_html()

    def widget(self) -> Any:
        """An ipywidgets view: the aggregate table, then the rows with a score, sort and filter controls."""
        return EvalWidget(self).widget

    def to_dict(self) -> dict[str, Any]:
        return {"metrics": self.metrics, "info": self.info, "rows": self.rows}


_STYLE = (".jft-eval table{border-collapse:collapse;margin:4px 0}"
          ".jft-eval td,.jft-eval th{border:1px solid #ddd;padding:3px 6px;vertical-align:top;text-align:left;"
          "white-space:pre-wrap;max-width:28em}"
          ".jft-agg td{text-align:right;font-family:monospace}"
          ".jft-rows tr.worse td.jft-score{background:#ffebe9}.jft-rows tr.better td.jft-score{background:#dafbe1}"
          ".jft-eval th[data-k]{cursor:pointer;text-decoration:underline dotted}"
          ".jft-del{background:#ffebe9;color:#82071e;text-decoration:line-through}"
          ".jft-ins{background:#dafbe1;color:#116329}")

_SORT_SCRIPT = (
    "(function(){var t=document.getElementById('TABLE_ID');if(!t)return;"
    "t.querySelectorAll('th[data-k]').forEach(function(th){th.addEventListener('click',function(){"
    "var k=th.getAttribute('data-k'),b=t.tBodies[0],rs=Array.prototype.slice.call(b.rows),"
    "d=th.getAttribute('data-dir')==='asc'?'desc':'asc';th.setAttribute('data-dir',d);"
    "rs.sort(function(x,y){var a=parseFloat(x.getAttribute('data-'+k)),c=parseFloat(y.getAttribute('data-'+k));"
    "if(isNaN(a))a=Infinity;if(isNaN(c))c=Infinity;return d==='asc'?a-c:c-a;});"
    "rs.forEach(function(r){b.appendChild(r);});});});})();"
)


class EvalWidget:
    """The interactive view of an :class:`EvalResult`: pick the per-row score, sort (worst first, ...), keep
    only the rows where tuned is worse, or filter by text. Parts: ``score``, ``sort``, ``only_worse``,
    ``search``, ``table`` and ``widget``."""

    SORTS = (("row order", "index"), ("tuned − base, worst first", "delta"), ("tuned − base, best first", "-delta"),
             ("base score", "base"), ("tuned score", "tuned"))

    def __init__(self, result: EvalResult) -> None:
        import ipywidgets as W

        self.result = result
        keys = sorted({k for row in result.rows for k in (row.get("scores") or {}).get("base", {})},
                      key=lambda k: (k != result.primary, k))
        self.score = W.Dropdown(options=keys or ["—"], value=(keys[0] if keys else "—"), description="score",
                                layout=W.Layout(width="220px"))
        self.sort = W.Dropdown(options=list(self.SORTS), value="index", description="sort",
                               layout=W.Layout(width="300px"))
        self.only_worse = W.Checkbox(value=False, description="only rows where tuned is worse", indent=False)
        self.search = W.Text(placeholder="filter: text in prompt/answers", layout=W.Layout(width="240px"),
                             continuous_update=False)
        self.table = W.HTML()
        self.count = W.HTML()
        for w in (self.score, self.sort, self.only_worse, self.search):
            w.observe(self._render, names="value")
        controls = W.HBox([self.score, self.sort, self.only_worse, self.search, self.count],
                          layout=W.Layout(flex_flow="row wrap", align_items="center", gap="8px"))
        head = W.HTML(f"<div class='jft-eval'><style>{_STYLE}</style><div>{html.escape(result.summary())}</div>"
                      f"{result.aggregate_html()}</div>")
        self.widget = W.VBox([head, controls, self.table])
        self._render()

    def _render(self, _change: Any = None) -> None:
        metric = self.score.value if self.score.value != "—" else None
        worse = len(self.result.worse_rows(metric)) if metric else 0
        self.count.value = f"<span style='color:#888'>{worse} row(s) where tuned is worse</span>"
        self.table.value = (f"<div class='jft-eval'><style>{_STYLE}</style>"
                            + self.result.rows_html(metric=metric, sort=self.sort.value,
                                                    only_worse=self.only_worse.value, contains=self.search.value)
                            + "</div>")


def word_diff(a: str, b: str) -> tuple[str, str]:
    """HTML of ``a`` and ``b`` with the words that differ marked: removed from ``a`` (``jft-del``), added in
    ``b`` (``jft-ins``). Whitespace and line breaks are kept."""
    ta, tb = re.findall(r"\S+\s*|\s+", a), re.findall(r"\S+\s*|\s+", b)
    sm = difflib.SequenceMatcher(None, [t.strip() for t in ta], [t.strip() for t in tb], autojunk=False)
    out_a, out_b = [], []
    for tag, i1, i2, j1, j2 in sm.get_opcodes():
        pa, pb = html.escape("".join(ta[i1:i2])), html.escape("".join(tb[j1:j2]))
        if tag == "equal":
            out_a.append(pa)
            out_b.append(pb)
            continue
        if pa:
            out_a.append(f"<span class='jft-del'>{pa}</span>")
        if pb:
            out_b.append(f"<span class='jft-ins'>{pb}</span>")
    return "".join(out_a), "".join(out_b)


def _fmt(value: float, sign: bool = False) -> str:
    """Right-aligned in 8 columns with at least one space before it: 3 decimals, fewer for large values."""
    if not math.isfinite(value):
        return f"{value:>8}"
    spec = "+" if sign else ""
    for decimals in (3, 2, 1, 0):
        text = f"{value:{spec}.{decimals}f}"
        if len(text) <= 7:
            return f"{text:>8}"
    return f" {value:{spec}.2e}"


def _short(value: float | None, sign: bool = False) -> str:
    if value is None:
        return ""
    if not math.isfinite(value):
        return str(value)
    if float(value).is_integer() and abs(value) < 1e6 and not sign:
        return str(int(value))
    return f"{value:+.3f}" if sign else (f"{value:.3f}" if abs(value) < 1000 else f"{value:.1f}")


def _clip(text: str, width: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1] + "…"


# =========================================================================== evaluate a run
def _score(metrics: list[Metric], base: list[str], tuned: list[str], refs: list[str]
           ) -> tuple[dict[str, dict[str, float]], dict[str, list[float]], dict[str, list[float]], set[str]]:
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
        except Exception as exc:  # noqa: BLE001 - a user metric's failure, named
            raise EvalError(f"metric {m.name!r} failed: {type(exc).__name__}: {exc}") from exc
        for key in vb:
            name = key if key not in aggregate else f"{m.name}.{key}"
            aggregate[name] = {"base": float(vb[key]), "tuned": float(vt.get(key, float("nan")))}
            if not m.higher_is_better:
                lower.add(name)
            if key in pb:
                rows_b[name], rows_t[name] = pb[key], pt[key]
    return aggregate, rows_b, rows_t, lower


def evaluate_run(run: Any, *, root: str | os.PathLike[str] = "ft_runs", data: Any = None, prompts: Any = None,
                 n: int | None = None, metrics: Any = None, max_new_tokens: int = 32, batch_size: int = 8,
                 temperature: float = 0.0, seed: int = 0, model: Any = None, tokenizer: Any = None,
                 namespace: Mapping[str, Any] | None = None, write: bool = True) -> EvalResult:
    """Base (adapter switched off) vs tuned answers of a run, scored; results in ``samples.jsonl``/``eval.json``.

    ``run``: a run id or name under ``root``, a ``Run`` or a ``RunDir`` - any finished or stopped run, also
    from before a kernel restart (the adapter is loaded onto the base model; one model is kept, see
    :func:`run_model`). Examples: the run's held-out split by default, ``data`` (a file, datasets dir,
    DataFrame, list of dicts or Dataset with a prompt and a reference column), or ``prompts`` (strings, no
    references: answers only). ``n`` keeps the first n examples. ``metrics``: see :func:`resolve_metrics`;
    perplexity is computed on the tokenized eval split (or on ``data``) for both models. Decoding is
    identical for both sides: greedy, or sampling with ``temperature`` and ``seed``.
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
        examples = _examples_from_prompts(prompts)
        if n is not None:
            examples.messages, examples.references = examples.messages[:n], examples.references[:n]
        if text_metrics and explicit:
            raise EvalError(f"prompts have no references, so {', '.join(m.name for m in text_metrics)} cannot be "
                            "scored; give data with a reference column instead (or only perplexity).")
        text_metrics = []
    elif data is not None:
        examples = _examples_from_data(data, config, n)
    else:
        examples = _examples_from_run(rd, config, n)
    if model is None:
        with out_of_memory_advice(f"loading the model of run {rd.record.id}",
                                  "Free memory first: stop or wait for a training run, or restart the kernel"):
            model, tokenizer, _ = run_model(rd)
    elif tokenizer is None:
        raise EvalError("give the tokenizer with the model")

    prompt_texts = [render_chat_prompt(m, tokenizer) for m in examples.messages]
    decode = {"max_new_tokens": max_new_tokens, "batch_size": batch_size, "temperature": temperature, "seed": seed}
    lower = (f"Lower batch_size (%ft_eval --batch-size, now {batch_size}) or max_new_tokens (--max-new-tokens, "
             f"now {max_new_tokens}), or evaluate fewer rows (--n)")
    with out_of_memory_advice(f"generating answers to {len(prompt_texts)} prompts", lower):
        with model.disable_adapter():
            base = generate(model, tokenizer, prompt_texts, **decode)
        tuned = generate(model, tokenizer, prompt_texts, **decode)

    refs = examples.references
    aggregate: dict[str, dict[str, float]] = {}
    rows_b: dict[str, list[float]] = {}
    rows_t: dict[str, list[float]] = {}
    lower: set[str] = {"perplexity"}
    if examples.has_references and text_metrics:
        aggregate, rows_b, rows_t, low = _score(text_metrics, base, tuned, refs)  # type: ignore[arg-type]
        lower |= low

    ppl_info: dict[str, Any] | None = None
    if want_ppl:
        tokenized = _tokenized_for_perplexity(rd, examples, config, tokenizer, n)
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
                    pb = perplexity(model, tokenizer, rows_ppl, batch_size=batch_size)
                pt = perplexity(model, tokenizer, rows_ppl, batch_size=batch_size)
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
        _write(rd, result)
    return result


def _write(rd: RunDir, result: EvalResult) -> None:
    samples = Path(rd.path) / "samples.jsonl"
    tmp = samples.with_name(".samples.jsonl.tmp")
    tmp.unlink(missing_ok=True)
    for row in result.rows:
        append_jsonl(tmp, row)
    if not result.rows:
        tmp.touch()
    os.replace(tmp, samples)
    metrics = {name: {"base": m["base"], "tuned": m["tuned"], "delta": m["tuned"] - m["base"],
                      "higher_is_better": result.higher_is_better(name)} for name, m in result.metrics.items()}
    write_json_atomic(Path(rd.path) / "eval.json", {**result.info, "metrics": metrics})


def compare_base_tuned(run: str | RunDir, *, root: str = "ft_runs", n: int | None = None, max_new_tokens: int = 16,
                       batch_size: int = 8, model: Any = None, tokenizer: Any = None,
                       metrics: Any = ("exact_match",), temperature: float = 0.0, seed: int = 0) -> EvalResult:
    """Generate base (adapter off) and tuned answers on the run's held-out rows; score exact match (or
    ``metrics``). Writes ``samples.jsonl`` and ``eval.json`` into the run directory. See :func:`evaluate_run`.
    """
    return evaluate_run(run, root=root, n=n, max_new_tokens=max_new_tokens, batch_size=batch_size, model=model,
                        tokenizer=tokenizer, metrics=list(metrics), temperature=temperature, seed=seed)


def dumps(result: EvalResult) -> str:
    return json.dumps({"metrics": result.metrics, "rows": result.rows}, indent=2)
