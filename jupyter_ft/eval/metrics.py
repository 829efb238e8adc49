"""The text metrics of ``%ft_eval``: what a metric is, the built-in ones, and turning a user's spec into metrics.

A metric scores predictions against references as a whole (``compute``) and, where it can, per example
(``per_row``: the side-by-side view needs a score per row). The built-in metrics run through ``evaluate``
with the modules shipped in ``jupyter_ft/metrics`` (offline); a user gives a callable, an ``evaluate``
module, a local module path, or a hub module name (online only). :func:`resolve_metrics` checks every name
before any model is loaded, so a typo costs nothing.
"""

from __future__ import annotations

import difflib
import numbers
import os
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..data.answers import normalize_answer
from ..errors import EvalError

__all__ = [
    "BUILTIN_METRICS", "DEFAULT_METRICS", "ROUGE_TYPES", "Metric", "exact_match", "label_ids", "load_metric",
    "resolve_metrics",
]

BUILTIN_METRICS = ("exact_match", "accuracy", "rouge", "bleu", "perplexity")
DEFAULT_METRICS = ("exact_match", "rouge", "bleu", "perplexity")
ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


def exact_match(predictions: Sequence[str], references: Sequence[str]) -> float:
    """The share of predictions equal to their reference after ``jupyter_ft.data.normalize_answer``."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    if not references:
        return 0.0
    hits = sum(normalize_answer(p) == normalize_answer(r) for p, r in zip(predictions, references))
    return hits / len(references)


def label_ids(predictions: Sequence[str], references: Sequence[str]) -> tuple[list[int], list[int], list[str]]:
    """Map generated answers to class ids for ``accuracy``: the labels are the distinct normalized references.

    A prediction gets the id of the label it equals (after ``normalize_answer``); failing that, the one
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

    from ..metrics import LOCAL_METRICS, module_path

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


# --------------------------------------------------------------------------- the built-in metrics
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


# --------------------------------------------------------------------------- a user's metrics
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
    from ..models import hub_reachable

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
