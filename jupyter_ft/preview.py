"""``%%finetune --dry-run``: everything a user should see before spending minutes of compute.

Shows the resolved config, what the data loader detected, token-length percentiles and truncation,
a few examples exactly as the trainer sees them (prompt tokens, which are masked out of the loss,
shown apart from the trained completion) and the memory estimate — without loading any weights.
"""

from __future__ import annotations

import html
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any

from .config import FineTuneConfig

__all__ = ["DryRun", "dry_run", "segments"]


def segments(input_ids: list[int], labels: list[int], tokenizer: Any) -> list[tuple[str, bool]]:
    """Consecutive runs of (text, trained) decoded from one tokenized example."""
    out: list[tuple[str, bool]] = []
    start = 0
    for i in range(1, len(input_ids) + 1):
        if i == len(input_ids) or (labels[i] != -100) != (labels[start] != -100):
            out.append((tokenizer.decode(input_ids[start:i]), labels[start] != -100))
            start = i
    return out


@dataclass(repr=False)
class DryRun:
    config: FineTuneConfig
    dataset: dict[str, Any]
    examples: list[list[tuple[str, bool]]]
    memory: Any
    model: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    # compute.launcher other than thread: the command it would run, the world size, the memory of one process
    launch: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return str(self)

    def __str__(self) -> str:
        d, t = self.dataset, self.dataset["tokens"]
        lines = [
            f"model: {self.config.model.name} ({self.model['kind']}: {self.model['path']})",
            f"data: {d['source']} — {d['detected']}",
            f"rows: {d['rows']} (train {d['train_rows']}, eval {d['eval_rows']}); tokens p50 {t['p50']}, p90 "
            f"{t['p90']}, p99 {t['p99']}, max {t['max']}; truncated at {self.config.data.max_length}: "
            f"{d['truncated']}; trained tokens {t['trained_fraction']:.1%}",
            f"memory estimate: {self.memory}",
        ]
        if self.launch is not None:
            lines.append(f"launch: {self.launch['command']}")
            lines.append(f"  {self.launch['summary']}")
        lines += [f"warning: {w}" for w in self.warnings]
        lines.append("examples ([[...]] is trained, the rest is masked prompt):")
        for ex in self.examples:
            lines.append("  " + "".join(f"[[{s}]]" if trained else s for s, trained in ex).replace("\n", "\n  "))
        lines.append("config:\n  " + self.config.to_yaml().rstrip().replace("\n", "\n  "))
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        d, t = self.dataset, self.dataset["tokens"]
        esc = html.escape

        def example_html(ex: list[tuple[str, bool]]) -> str:
            parts = [
                f'<span style="background:#d4f7d4;font-weight:bold" title="trained">{esc(s)}</span>' if trained
                else f'<span style="color:#888" title="prompt (masked)">{esc(s)}</span>'
                for s, trained in ex
            ]
            return f'<pre style="white-space:pre-wrap;border:1px solid #ddd;padding:4px">{"".join(parts)}</pre>'

        warn = "".join(f'<p style="color:#b00">⚠ {esc(w)}</p>' for w in self.warnings)
        rows = [
            ("model", f"{esc(self.config.model.name)} <small>({esc(self.model['kind'])})</small>"),
            ("data", f"{esc(str(d['source']))} — {esc(d['detected'])}"),
            ("rows", f"{d['rows']} (train {d['train_rows']}, eval {d['eval_rows']})"),
            ("token length", f"p50 {t['p50']} · p90 {t['p90']} · p99 {t['p99']} · max {t['max']}"),
            ("truncated", f"{d['truncated']} at max_length {self.config.data.max_length}"),
            ("trained tokens", f"{t['trained_fraction']:.1%} of all tokens"),
            ("memory estimate", esc(str(self.memory))),
        ]
        if self.launch is not None:
            rows.append(("launch", f"<code>{esc(self.launch['command'])}</code><br>{esc(self.launch['summary'])}"))
        table = "".join(f"<tr><th style='text-align:left'>{k}</th><td style='text-align:left'>{v}</td></tr>"
                        for k, v in rows)
        examples = "".join(example_html(ex) for ex in self.examples)
        return (f"<h4>%%finetune --dry-run (nothing launched)</h4>{warn}<table>{table}</table>"
                f"<p><b>Examples</b> — <span style='color:#888'>grey: prompt, masked from the loss</span>; "
                f"<span style='background:#d4f7d4;font-weight:bold'>green: trained completion</span></p>{examples}"
                f"<details><summary>resolved config</summary><pre>{esc(self.config.to_yaml())}</pre></details>")


def dry_run(config: FineTuneConfig, n_examples: int = 3) -> DryRun:
    """Resolve the model, tokenize the data and estimate memory; loads the tokenizer but no weights."""
    from . import models
    from .data import prepare_data

    resolved = models.resolve_model(config.model.name, config.model.revision)
    tokenizer = models.load_tokenizer(resolved, config.model.trust_remote_code)
    prepared = prepare_data(config.data, tokenizer, seed=config.training.seed)
    examples = [segments(row["input_ids"], row["labels"], tokenizer)
                for row in prepared.train.select(range(min(n_examples, len(prepared.train))))]
    summary = prepared.summary()
    memory = models.estimate_memory(config, resolved, longest=summary["tokens"]["max"])
    warnings = []
    if not memory.fits:
        warnings.append("The memory estimate exceeds free memory: lower training.batch_size or data.max_length, "
                        "or set training.gradient_checkpointing: true.")
    if prepared.n_truncated:
        warnings.append(f"{prepared.n_truncated} example(s) are longer than data.max_length="
                        f"{config.data.max_length} and will be truncated.")
    return DryRun(config, summary, examples, memory, resolved.to_dict(), warnings,
                  launch=_launch(config, resolved, summary["tokens"]["max"]))


def _launch(config: FineTuneConfig, resolved: Any, longest: int) -> dict[str, Any] | None:
    """The launch a process launcher would run, with the memory estimate of one of its processes (its share of
    the global batch, a whole copy of the model: an upper bound under FSDP and ZeRO-3, which shard it)."""
    if config.compute.launcher == "thread":
        return None
    from . import models
    from .engine.launch import launch_plan

    plan = launch_plan(config, Path(config.output.root) / "<run id>")
    per_process = models.estimate_memory(config.replace(**{"training.batch_size": plan.per_device_batch}), resolved,
                                         longest=longest)
    top = plan.topology
    shard = " (an upper bound: it shards the model)" if top.shards_parameters else ""
    summary = (f"{top.world_size} process(es) ({top.processes} per node x {top.nodes} node(s)), strategy "
               f"{top.strategy}; {plan.per_device_batch} example(s) per process x {plan.grad_accum_per_rank} "
               f"accumulation = {plan.examples_per_step} per optimizer step; memory per process: {per_process}{shard}")
    return {**plan.to_dict(), "summary": summary, "memory_per_process": per_process.to_dict()}
