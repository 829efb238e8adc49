"""Compare runs side by side: the config fields that differ, final/best metrics, probe verdicts, curves.

Everything is read from the run store (``run.json``, ``metrics.jsonl``, ``probes.jsonl``, ``eval.json``), so a
comparison works for finished runs after a kernel restart, and for runs another kernel trained. The functions
here return data (:class:`Comparison`); rendering (text, HTML, a plotly figure) is separate, so ``%ft_compare``
stays a thin magic and tests can assert on the data.
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

from .config import DEFAULT_ROOT
from .errors import CompareError, RunNotFound
from .store import CORRUPT, RunDir, RunStore, read_jsonl
from .views.figures import PALETTE, RunCurves, overlay_figure

if TYPE_CHECKING:  # pragma: no cover
    import plotly.graph_objects as go

__all__ = ["Comparison", "compare_runs", "differing_fields", "run_curves", "select_runs"]

# The metrics every run has (from its summary or metrics.jsonl), in table order.
BASE_METRICS = ("best_eval_loss", "final_eval_loss", "final_train_loss", "best_eval_step", "global_step",
                "tokens_seen", "train_seconds", "mean_tokens_per_s")
ALIASES = {"eval_loss": "best_eval_loss", "loss": "final_train_loss", "train_loss": "final_train_loss",
           "steps": "global_step", "tokens": "tokens_seen", "speed": "mean_tokens_per_s"}
HIGHER_IS_BETTER = {"mean_tokens_per_s", "global_step", "tokens_seen"}
# Never shown as a "differing field": names and paths that differ by construction.
IGNORED_FIELDS = ("output.name",)


@dataclass
class Comparison:
    """The data of a comparison, runs in rank order (best first; runs without the metric last)."""

    records: list[Any]
    metric: str
    higher_is_better: bool
    differing: dict[str, dict[str, Any]]  # field -> run id -> value
    metrics: dict[str, dict[str, Any]]  # run id -> metric -> value
    verdicts: dict[str, dict[str, str | None]]  # run id -> {overfitting, forgetting}
    curves: list[RunCurves]
    x: str = "step"
    metric_names: list[str] = field(default_factory=list)

    @property
    def ranking(self) -> list[str]:
        return [r.id for r in self.records]

    @property
    def best(self) -> str | None:
        """The best run's id, or ``None`` when no run has the metric."""
        if self.records and _number(self.metrics[self.records[0].id].get(self.metric)) is not None:
            return self.records[0].id
        return None

    def rows(self) -> list[dict[str, Any]]:
        """One row per run: rank, best mark, id, name, status, the differing fields, metrics, verdicts."""
        out = []
        for rank, r in enumerate(self.records, 1):
            m = self.metrics[r.id]
            has = _number(m.get(self.metric)) is not None
            row: dict[str, Any] = {"rank": rank if has else "–", "best": "★" if r.id == self.best else "",
                                   "run": r.id, "name": r.name, "status": r.status}
            for key, values in self.differing.items():
                row[key] = values.get(r.id)
            for name in self.metric_names:
                row[name] = m.get(name)
            row["overfitting"] = self.verdicts[r.id].get("overfitting")
            row["forgetting"] = self.verdicts[r.id].get("forgetting")
            out.append(row)
        return out

    # ------------------------------------------------------------ rendering
    def text(self) -> str:
        rows = self.rows()
        if not rows:
            return "no runs to compare"
        cols = [c for c in rows[0] if c != "run"]
        cells = [[_fmt(row.get(c)) for c in cols] for row in rows]
        widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(cols)]
        fmt = "  ".join(f"{{:<{w}}}" for w in widths)
        direction = "higher" if self.higher_is_better else "lower"
        lines = [f"{len(rows)} run(s) ranked by {self.metric} ({direction} is better)"]
        if not self.differing:
            lines.append("(the configs do not differ)")
        lines += [fmt.format(*cols)] + [fmt.format(*r) for r in cells]
        best = self.best
        if best:
            lines.append(f"best: {best} ({self.metric} {_fmt(self.metrics[best][self.metric])})")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.text()

    def to_html(self) -> str:
        rows = self.rows()
        if not rows:
            return "<p>no runs to compare</p>"
        cols = list(rows[0])
        groups = {c: "config" for c in self.differing} | {c: "metric" for c in self.metric_names}
        head = "".join(
            f"<th style='text-align:left{';background:#eef' if groups.get(c) == 'config' else ''}"
            f"{';background:#efe' if c == self.metric else ''}'>{html.escape(c)}</th>" for c in cols)
        body = []
        for row in rows:
            style = " style='font-weight:bold;background:#fff8dc'" if row["best"] else ""
            cells = "".join(f"<td style='text-align:left'>{html.escape(_fmt(row.get(c)))}</td>" for c in cols)
            body.append(f"<tr{style}>{cells}</tr>")
        direction = "higher" if self.higher_is_better else "lower"
        note = "" if self.differing else "<p><i>The configs do not differ.</i></p>"
        return (f"<p><b>{len(rows)} run(s)</b> ranked by <code>{html.escape(self.metric)}</code> ({direction} is "
                f"better); ★ marks the best. Blue columns: config fields that differ.</p>{note}"
                f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")

    def _repr_html_(self) -> str:
        return self.to_html()

    def figure(self, title: str | None = None) -> "go.Figure":
        return overlay_figure(self.curves, x=self.x, title=title or f"loss by run ({self.metric} ranks them)")


# =========================================================================== selecting runs
def select_runs(root: str | Any = DEFAULT_ROOT, refs: Sequence[str] = (), *, sweep: str | None = None,
                last: int | None = None) -> list[RunDir]:
    """Runs by id or name (``refs``), by sweep id (or a unique prefix; ``"last"`` = the newest sweep), or the
    ``last`` N runs; exactly one of the three. Raises ``RunNotFound`` (a ``KeyError``) or ``CompareError`` (a
    ``ValueError``) with what to do."""
    store = root if isinstance(root, RunStore) else RunStore(root)
    given = sum(bool(x) for x in (list(refs), sweep, last))
    if given != 1:
        raise CompareError("give run ids/names, or --sweep ID, or --last N (one of them)")
    if not sweep and not last:
        return [store.find(ref) for ref in refs]  # by id, else the newest run of that name
    records = [r for r in store.list() if r.status != CORRUPT]
    if sweep:
        sweeps = _sweeps(records)
        if sweep == "last":
            if not sweeps:
                raise RunNotFound(f"no sweep under {store.root}")
            sweep_id = sweeps[0]
        else:
            matches = [s for s in sweeps if s == sweep] or [s for s in sweeps if s.startswith(sweep)]
            if len(matches) != 1:
                known = ", ".join(sweeps[:5]) or "none"
                what = "is ambiguous" if matches else "not found"
                raise RunNotFound(f"sweep '{sweep}' {what} under {store.root} (latest sweeps: {known})")
            sweep_id = matches[0]
        chosen = sorted((r for r in records if (r.sweep or {}).get("id") == sweep_id),
                        key=lambda r: (r.sweep or {}).get("index", 0))
        return [store.open(r.id) for r in chosen]
    if last is None or last < 1:
        raise CompareError("--last needs a number of runs >= 1")
    return [store.open(r.id) for r in records[:last]][::-1]


def _sweeps(records: Iterable[Any]) -> list[str]:
    """Sweep ids, newest first."""
    seen: list[str] = []
    for r in records:  # records come newest first
        sid = (r.sweep or {}).get("id")
        if sid and sid not in seen:
            seen.append(sid)
    return seen


# =========================================================================== comparing
def compare_runs(runs: Sequence[RunDir], *, metric: str = "best_eval_loss", x: str = "step") -> Comparison:
    """The comparison of ``runs`` (``RunDir`` objects, e.g. from :func:`select_runs`), ranked by ``metric``:
    a summary number (``best_eval_loss``, ``final_eval_loss``, ``final_train_loss``, ``mean_tokens_per_s``, …)
    or an ``%ft_eval`` metric as ``eval.<name>`` (``eval.rouge``; the tuned score)."""
    if x not in ("step", "tokens"):
        raise CompareError(f"x must be 'step' or 'tokens', got {x!r}")
    if not runs:
        raise CompareError("no runs to compare")
    records = [rd.record for rd in runs]
    metrics: dict[str, dict[str, Any]] = {}
    directions: dict[str, bool] = {}
    histories: dict[str, list[dict[str, Any]]] = {}
    probes: dict[str, list[dict[str, Any]]] = {}
    verdicts: dict[str, dict[str, str | None]] = {}
    for rd in runs:
        rid = rd.record.id
        histories[rid] = rd.metrics()
        probes[rid] = read_jsonl(rd.probes_path)
        metrics[rid] = _run_metrics(rd.record, histories[rid])
        for name, (value, higher) in _eval_metrics(rd).items():
            metrics[rid][name] = value
            directions[name] = higher
        verdicts[rid] = _verdicts(rd.record, probes[rid])
    names = [m for m in BASE_METRICS if any(metrics[r.id].get(m) is not None for r in records)]
    names += sorted({k for m in metrics.values() for k in m if k.startswith("eval.")})
    metric = _resolve_metric(metric, names)
    higher = directions.get(metric, metric in HIGHER_IS_BETTER)

    def key(r: Any) -> tuple[int, float]:
        v = _number(metrics[r.id].get(metric))
        return (1, 0.0) if v is None else (0, -v if higher else v)

    order = sorted(range(len(records)), key=lambda i: (key(records[i]), i))
    ranked = [records[i] for i in order]
    differing = differing_fields(records)
    colors = {r.id: PALETTE[i % len(PALETTE)] for i, r in enumerate(records)}  # colour by input order
    best_id = ranked[0].id if ranked and _number(metrics[ranked[0].id].get(metric)) is not None else None
    curves = [run_curves(r, histories[r.id], probes[r.id], x=x, color=colors[r.id],
                         label=_label(r, differing), best=r.id == best_id) for r in records]
    return Comparison(ranked, metric, higher, differing, metrics, verdicts, curves, x, names)


def differing_fields(records: Sequence[Any]) -> dict[str, dict[str, Any]]:
    """Config fields (dotted) whose values are not the same in every run, in config order."""
    from .config.schema import flatten

    flat = {r.id: flatten(r.config or {}) for r in records}
    keys: list[str] = []
    for f in flat.values():
        keys += [k for k in f if k not in keys]
    out = {}
    for k in keys:
        if k in IGNORED_FIELDS:
            continue
        values = {rid: f.get(k) for rid, f in flat.items()}
        if len({json.dumps(v, sort_keys=True, default=str) for v in values.values()}) > 1:
            out[k] = values
    return out


def _run_metrics(record: Any, history: list[dict[str, Any]]) -> dict[str, Any]:
    """The summary's numbers; a run that ended without one (stopped early, failed) gets them from its log."""
    s = dict(record.summary or {})
    trains = [h for h in history if _number(h.get("loss")) is not None]
    evals = [h for h in history if _number(h.get("eval_loss")) is not None]
    if s.get("final_train_loss") is None and trains:
        s["final_train_loss"] = trains[-1]["loss"]
    if s.get("final_eval_loss") is None and evals:
        s["final_eval_loss"] = evals[-1]["eval_loss"]
    if s.get("best_eval_loss") is None and evals:
        best = min(evals, key=lambda h: h["eval_loss"])
        s["best_eval_loss"], s["best_eval_step"] = best["eval_loss"], best.get("step")
    if s.get("global_step") is None and history:
        s["global_step"] = max(h.get("step", 0) for h in history)
    if s.get("tokens_seen") is None and trains and trains[-1].get("tokens_seen") is not None:
        s["tokens_seen"] = trains[-1]["tokens_seen"]
    return {k: s.get(k) for k in BASE_METRICS}


def _eval_metrics(rd: RunDir) -> dict[str, tuple[Any, bool]]:
    """``eval.<name>``: the tuned score of the last ``%ft_eval`` (eval.json), with its direction."""
    path = rd.path / "eval.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    out = {}
    for name, m in (data.get("metrics") or {}).items():
        if isinstance(m, Mapping):
            out[f"eval.{name}"] = (m.get("tuned"), bool(m.get("higher_is_better", True)))
    return out


def _verdicts(record: Any, probes: list[dict[str, Any]]) -> dict[str, str | None]:
    p = (record.summary or {}).get("probes") or {}
    over, forget = p.get("overfitting"), p.get("forgetting")
    if over is None:
        last = [r["overfitting"] for r in probes if isinstance(r.get("overfitting"), Mapping)]
        over = last[-1].get("status") if last else None
    if forget is None:
        last = [r["forgetting"] for r in probes if isinstance(r.get("forgetting"), Mapping)]
        forget = last[-1].get("verdict") if last else None
    return {"overfitting": over, "forgetting": forget}


def _resolve_metric(metric: str, available: list[str]) -> str:
    name = ALIASES.get(metric, metric)
    if name in available or name in BASE_METRICS:
        return name
    if f"eval.{name}" in available:
        return f"eval.{name}"
    import difflib

    close = difflib.get_close_matches(name, available + list(BASE_METRICS), n=1, cutoff=0.6)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    raise CompareError(f"unknown metric '{metric}'{hint} Available: {', '.join(available or BASE_METRICS)}")


def _label(record: Any, differing: Mapping[str, Mapping[str, Any]]) -> str:
    """``name (learning_rate=3e-4, r=8)`` with the swept or differing values, for legends."""
    from .config.sweep_plan import params_text

    params = (record.sweep or {}).get("params")
    if params:
        text = params_text(params)
    else:
        keys = [k for k in differing if not k.startswith(("data.source", "model.", "output."))][:3]
        text = params_text({k: differing[k].get(record.id) for k in keys})
    return f"{record.name} ({text})" if text else record.name


def run_curves(record: Any, history: list[dict[str, Any]], probes: list[dict[str, Any]], *, x: str = "step",
               color: str = PALETTE[0], label: str | None = None, best: bool = False) -> RunCurves:
    """A run's train/eval loss and forgetting KL against steps or tokens seen (an eval point gets the tokens
    of the last training log at or before its step)."""
    trains = [h for h in history if _number(h.get("loss")) is not None and h.get("step") is not None]
    evals = [h for h in history if _number(h.get("eval_loss")) is not None and h.get("step") is not None]
    kls = [(r["step"], r["forgetting"]["kl"]) for r in probes
           if isinstance(r.get("forgetting"), Mapping) and _number(r["forgetting"].get("kl")) is not None
           and r.get("step") is not None]
    if x == "tokens":
        steps = [(h["step"], h["tokens_seen"]) for h in trains if h.get("tokens_seen") is not None]

        def pos(step: int) -> float | None:
            before = [t for s, t in steps if s <= step]
            return before[-1] if before else (0 if step == 0 else None)
    else:
        def pos(step: int) -> float | None:
            return step

    def series(points: Iterable[tuple[int, float]]) -> tuple[list[float], list[float]]:
        xs, ys = [], []
        for s, v in points:
            p = pos(s)
            if p is not None:
                xs.append(p)
                ys.append(v)
        return xs, ys

    return RunCurves(record.id, label or record.name, color,
                     series((h["step"], h["loss"]) for h in trains),
                     series((h["step"], h["eval_loss"]) for h in evals),
                     series(kls), best)


# =========================================================================== helpers
def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return float(v)


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e-3 or abs(v) >= 1e5 else f"{v:.4f}".rstrip("0").rstrip(".")
    if isinstance(v, (list, dict)):
        return json.dumps(v)
    return str(v)
