"""Hyperparameter sweeps from one ``%%finetune`` cell: a ``sweep:`` key expands one config into many runs.

Syntax (the keys are dotted config paths, ``section.field``)::

    sweep:                                # grid (the default): every combination, in the order written
      training.learning_rate: [1e-4, 3e-4]
      lora.r: [8, 16]                     # -> 4 runs

    sweep:                                # random: n draws, reproducible from the seed
      method: random
      n: 6
      seed: 0                             # default 0
      params:
        training.learning_rate: {log_uniform: [1e-5, 1e-3]}
        lora.r: [8, 16, 32]               # a list: pick one value uniformly
        lora.dropout: {uniform: [0.0, 0.1]}
        training.batch_size: {int_uniform: [4, 16]}   # inclusive

A grid may also list its parameters under ``params:``, and a nested mapping (``training: {learning_rate:
[...]}``) reads as the dotted key. Random floats are rounded to 3 significant digits, so run tables stay
readable. ``output.*`` cannot be swept: the runs of a sweep share one run root and are named by the sweep.

This module only parses and expands (no torch, nothing trains); ``jupyter_ft.sweep`` runs the plan.
"""

from __future__ import annotations

import difflib
import itertools
import json
import math
import random
from dataclasses import dataclass, field, fields
from typing import Any, Mapping

from ..errors import ConfigError, Problem, short_repr
from .checks import finite, key_text
from .schema import SECTIONS, FineTuneConfig

__all__ = ["METHODS", "DISTRIBUTIONS", "RESERVED", "SWEEPABLE", "MAX_RUNS", "SweepSpec", "SweepPoint", "SweepPlan",
           "parse_sweep", "expand", "plan_sweep", "format_value", "params_text"]

METHODS = ("grid", "random")
DISTRIBUTIONS = ("uniform", "log_uniform", "int_uniform")
RESERVED = ("method", "n", "seed", "params")
MAX_RUNS = 256
SWEEPABLE = tuple(f"{s}.{f.name}" for s, cls in SECTIONS.items() if s != "output" for f in fields(cls))


@dataclass(frozen=True)
class SweepSpec:
    """A parsed ``sweep:`` block: ``params`` maps a dotted key to a list of values or (random) a distribution."""

    method: str
    params: dict[str, Any]
    n: int | None = None
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "params": self.params, "n": self.n, "seed": self.seed}


@dataclass
class SweepPoint:
    """One expanded run: its 0-based ``index``, the swept values and the validated config."""

    index: int
    params: dict[str, Any]
    config: FineTuneConfig


@dataclass
class SweepPlan:
    """The expanded sweep, before anything trains (what ``--dry-run`` shows and :class:`Sweep` launches)."""

    spec: SweepSpec
    points: list[SweepPoint]
    name: str
    memory: list[Any] = field(default_factory=list)  # MemoryEstimate per point, filled by ``jupyter_ft.sweep.estimate_sweep``

    @property
    def keys(self) -> list[str]:
        """The swept keys whose values actually differ between the runs."""
        return [k for k in self.spec.params if len({_key(p.params.get(k)) for p in self.points}) > 1]

    def rows(self) -> list[dict[str, Any]]:
        out = []
        for i, p in enumerate(self.points):
            row: dict[str, Any] = {"run": f"{self.name}-{p.index + 1}"}
            row.update({k: p.params.get(k) for k in self.keys})
            if self.memory:
                mem = self.memory[i]
                row["memory"] = f"{mem.total / 2**30:.2f} GiB" + ("" if mem.fits else " (exceeds free memory)")
            out.append(row)
        return out

    def __str__(self) -> str:
        spec = self.spec
        how = f"random, n={spec.n}, seed={spec.seed}" if spec.method == "random" else "grid"
        lines = [f"sweep '{self.name}': {len(self.points)} run(s) ({how}); nothing launched (--dry-run)"]
        lines.append(_text_table(self.rows()))
        if self.memory:
            lines.append(f"memory estimate of the largest run: {max(self.memory, key=lambda m: m.total)}")
            if not all(m.fits for m in self.memory):
                lines.append("warning: some runs may not fit in memory; lower training.batch_size or "
                             "data.max_length, or set training.gradient_checkpointing: true")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return str(self)

    def _repr_html_(self) -> str:
        import html

        spec = self.spec
        how = f"random, n={spec.n}, seed={spec.seed}" if spec.method == "random" else "grid"
        head = (f"<h4>sweep {html.escape(self.name)}: {len(self.points)} run(s) ({html.escape(how)}) — "
                f"nothing launched (--dry-run)</h4>")
        warn = ""
        if self.memory and not all(m.fits for m in self.memory):
            warn = "<p style='color:#b00'>⚠ some runs may not fit in memory</p>"
        return head + warn + _html_table(self.rows())


# =========================================================================== parsing and expansion
def parse_sweep(raw: Any) -> SweepSpec:
    """The ``sweep:`` block as a :class:`SweepSpec`; every problem (unknown keys with a did-you-mean, empty
    lists, bad distributions, a missing ``n``) is raised at once as a :class:`ConfigError`."""
    problems: list[Problem] = []
    if not isinstance(raw, Mapping) or not raw:
        raise ConfigError([Problem("sweep", "must be a mapping of config keys to lists of values", raw,
                                   "e.g. sweep: {training.learning_rate: [1e-4, 3e-4], lora.r: [8, 16]}")],
                          source="sweep")
    method = raw.get("method", "grid")
    if method not in METHODS:
        problems.append(Problem("sweep.method", "is not a valid choice", method, "Choose grid or random"))
    if "params" in raw:
        params_raw = raw["params"]
        extra = [k for k in raw if k not in RESERVED]
        for k in extra:
            problems.append(Problem(f"sweep.{key_text(k)}", "belongs under sweep.params when params is given"))
        if not isinstance(params_raw, Mapping):
            problems.append(Problem("sweep.params", "must map config keys to values", params_raw))
            params_raw = {}
    else:
        params_raw = {k: v for k, v in raw.items() if k not in RESERVED}
    params = _flatten_params(params_raw)
    if not params and not problems:
        problems.append(Problem("sweep", "names no parameter to sweep",
                                hint="e.g. training.learning_rate: [1e-4, 3e-4]"))
    for key, values in params.items():
        path = f"sweep.{key_text(key)}"
        if key not in SWEEPABLE:
            problems.append(_unknown_key(path, key))
        elif _is_distribution(values):
            if method == "grid":
                problems.append(Problem(path, "a range needs method: random", values,
                                        "List the values to try, e.g. [1e-4, 3e-4], or set method: random"))
            else:
                problems += _distribution_problems(path, values)
        elif not isinstance(values, list) or not values:
            problems.append(Problem(path, "must be a non-empty list of values to try", values,
                                    f"e.g. {key_text(key)}: [{short_repr(values)}, ...]"
                                    if not isinstance(values, list) else ""))
    n, seed = raw.get("n"), raw.get("seed", 0)
    if method == "random":
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_RUNS:
            problems.append(Problem("sweep.n", f"must be a whole number of runs between 1 and {MAX_RUNS}", n,
                                    "A random sweep draws n configurations"))
    elif n is not None:
        problems.append(Problem("sweep.n", "only applies to method: random", n,
                                "A grid runs every combination; remove n or set method: random"))
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        problems.append(Problem("sweep.seed", "must be a whole number >= 0", seed))
    if method == "grid" and not problems:
        total = math.prod(len(v) for v in params.values())
        if total > MAX_RUNS:
            problems.append(Problem("sweep", f"expands to {total} runs (the limit is {MAX_RUNS})",
                                    hint="Sweep fewer values, or use method: random with n"))
    if problems:
        raise ConfigError(problems, source="sweep")
    return SweepSpec(method=method, params=params, n=n if method == "random" else None, seed=seed)


def expand(base: Mapping[str, Any], spec: SweepSpec) -> list[SweepPoint]:
    """Every run of the sweep as a validated config. Problems of all runs are raised at once; a problem that
    only some runs have says which (``in sweep runs 3, 4``)."""
    combos = _combinations(spec)
    seen: dict[str, tuple[Problem, list[int]]] = {}
    points = []
    for i, params in enumerate(combos):
        try:
            config = FineTuneConfig.from_dict(base, **params)
        except ConfigError as exc:
            for p in exc.problems:
                seen.setdefault(str(p), (p, []))[1].append(i + 1)
            continue
        points.append(SweepPoint(i, params, config))
    if seen:
        problems = []
        for p, runs in seen.values():
            if len(runs) < len(combos):
                label = "run" if len(runs) == 1 else "runs"
                p = Problem(p.path, f"{p.message} in sweep {label} {', '.join(map(str, runs))}", p.value, p.hint)
            problems.append(p)
        raise ConfigError(problems, source="sweep")
    return points


def plan_sweep(data: Mapping[str, Any], sweep_block: Any = None, name: str | None = None) -> SweepPlan:
    """``data`` is a config mapping; the sweep comes from ``sweep_block`` or ``data['sweep']``."""
    base = dict(data)
    block = base.pop("sweep", None) if sweep_block is None else sweep_block
    base.pop("sweep", None)
    spec = parse_sweep(block)
    points = expand(base, spec)
    label = name or _name_of(base) or "sweep"
    return SweepPlan(spec, points, label)


def _combinations(spec: SweepSpec) -> list[dict[str, Any]]:
    keys = list(spec.params)
    if spec.method == "grid":
        return [dict(zip(keys, values)) for values in itertools.product(*(spec.params[k] for k in keys))]
    rng = random.Random(spec.seed)
    return [{k: _draw(rng, spec.params[k]) for k in keys} for _ in range(spec.n or 0)]


def _draw(rng: random.Random, values: Any) -> Any:
    if isinstance(values, list):
        return values[rng.randrange(len(values))]
    (kind, (lo, hi)), = values.items()
    if kind == "int_uniform":
        return rng.randint(int(lo), int(hi))
    if kind == "log_uniform":
        return float(f"{math.exp(rng.uniform(math.log(lo), math.log(hi))):.3g}")
    return float(f"{rng.uniform(lo, hi):.3g}")


def _flatten_params(raw: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in raw.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value and not _is_distribution(value):
            out.update(_flatten_params(value, f"{name}."))
        else:
            out[name] = value
    return out


def _is_distribution(value: Any) -> bool:
    return isinstance(value, Mapping) and len(value) == 1 and next(iter(value)) in DISTRIBUTIONS


def _distribution_problems(path: str, dist: Mapping[str, Any]) -> list[Problem]:
    (kind, bounds), = dist.items()
    ok = (isinstance(bounds, list) and len(bounds) == 2
          and all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in bounds) and bounds[0] <= bounds[1])
    if not ok:
        return [Problem(path, f"{kind} needs [low, high] with low <= high", bounds, f"e.g. {{{kind}: [1e-5, 1e-3]}}")]
    if not all(finite(b) for b in bounds):  # drawing between them would overflow (10**400) or give inf/nan
        return [Problem(path, f"{kind} needs finite bounds", bounds, f"e.g. {{{kind}: [1e-5, 1e-3]}}")]
    if kind == "log_uniform" and bounds[0] <= 0:
        return [Problem(path, "log_uniform needs low > 0", bounds)]
    if kind == "int_uniform" and not all(isinstance(b, int) for b in bounds):
        return [Problem(path, "int_uniform needs whole-number bounds", bounds)]
    return []


def _unknown_key(path: str, key: str) -> Problem:
    if key.split(".", 1)[0] == "output":
        return Problem(path, "cannot be swept", hint="The runs of a sweep share output.root and are named by the "
                       "sweep; give output.name for the sweep's name instead")
    section, _, name = key.partition(".")
    sections = [s for s in SECTIONS if s != "output"]
    if section not in SECTIONS:
        close = difflib.get_close_matches(section, sections, n=1, cutoff=0.6)
        section = close[0] if close else section
    if section in SECTIONS:
        known = [f.name for f in fields(SECTIONS[section])]
        close = [name] if name in known else difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        if not close:  # short field names: 'rank' for 'r'
            close = [k for k in known if name and (name.startswith(k) or k.startswith(name))][:1]
        hint = f"Did you mean '{section}.{close[0]}'?" if close else f"Fields of {section}: {', '.join(known)}"
    else:
        hint = f"Use a dotted config key such as training.learning_rate; sections: {', '.join(sections)}"
    return Problem(path, "unknown config key", hint=hint)


def _name_of(data: Mapping[str, Any]) -> str | None:
    out = data.get("output")
    return out.get("name") if isinstance(out, Mapping) and isinstance(out.get("name"), str) else None


def _key(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def params_text(params: Mapping[str, Any], keys: list[str] | None = None) -> str:
    """``learning_rate=0.0003, r=8``: the last part of each dotted key, for labels and legends."""
    keys = list(params) if keys is None else keys
    return ", ".join(f"{k.rsplit('.', 1)[-1]}={format_value(params.get(k))}" for k in keys)


def _text_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "(no runs)"
    cols = list(rows[0])
    cells = [[format_value(r.get(c, "")) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*cols)] + [fmt.format(*row) for row in cells])


def _html_table(rows: list[dict[str, Any]]) -> str:
    import html

    if not rows:
        return "<p>no runs</p>"
    cols = list(rows[0])
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(format_value(r.get(c, '')))}</td>" for c in cols) + "</tr>"
                   for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
