#!/usr/bin/env python
"""Probe overhead: the demo run (``jupyter_ft.demo``'s config) with the probes off and on, side by side.

    python benchmarks/bench_probes.py                    # one full demo epoch each way
    python benchmarks/bench_probes.py --steps 20         # quicker: cap the optimizer steps
    python benchmarks/bench_probes.py --repeats 2        # off/on pairs, alternating which goes first
    python benchmarks/bench_probes.py --eval 24          # also base vs tuned exact match (probes-on run)

Both runs evaluate on the held-out split at the same steps (evaluation is part of training, not of the
probes); only ``probes.overfitting`` / ``probes.forgetting`` differ, at their default sizes. Two overheads
are reported:

* **paired**: (training time with probes - without) / without, from the Trainer loop's own clock
  (``summary.train_seconds``; model loading excluded). Honest but sensitive to other processes on the
  same cores between the two runs.
* **self-timed**: the seconds the probes measured themselves (``summary.probes.probe_seconds``) over the
  rest of the same run's training time. Both numbers come from one run, so load that changes between
  runs cancels out; it is the figure to trust on a shared machine.

Prints a markdown table and writes JSON (settings, machine, every run) to ``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(REPO) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(REPO))

import jupyter_ft
from jupyter_ft.demo.__main__ import DEMO_CONFIG


def run_once(root: str, probes: bool, steps: int | None, eval_n: int = 0) -> dict[str, Any]:
    overrides: dict[str, Any] = {"output.root": root, "output.name": f"bench-probes-{'on' if probes else 'off'}",
                                 "probes.overfitting": probes, "probes.forgetting": probes}
    if steps:
        overrides["training.max_steps"] = steps
    config = jupyter_ft.FineTuneConfig.from_yaml(DEMO_CONFIG, **overrides)
    t0 = time.perf_counter()
    run = jupyter_ft.finetune(config, wait=True)
    wall = time.perf_counter() - t0
    if run.status != "finished":
        raise SystemExit(f"run {run.id} {run.status}: {run.error}")
    s = run.summary
    p = s.get("probes") or {}
    train = float(s["train_seconds"])
    probe_s = float(p.get("probe_seconds") or 0.0)
    quality: dict[str, Any] = {}
    if probes and eval_n:  # the demo's own yardstick: exact match on held-out tickets, base vs tuned
        from jupyter_ft.eval import compare_base_tuned

        em = compare_base_tuned(run.run_dir, n=eval_n, max_new_tokens=8).metrics["exact_match"]
        quality = {"exact_match_base": em["base"], "exact_match_tuned": em["tuned"], "eval_rows": eval_n}
    return {**quality, "probes": probes, "steps": s["global_step"], "train_seconds": round(train, 2),
            "wall_seconds": round(wall, 2), "probe_seconds": round(probe_s, 2),
            "self_timed_overhead_percent": round(100 * probe_s / (train - probe_s), 1) if probes else None,
            "final_eval_loss": s.get("final_eval_loss"), "overfitting": p.get("overfitting"),
            "forgetting": p.get("forgetting"), "kl": p.get("kl"), "loglik_drop": p.get("loglik_drop"),
            "accuracy": p.get("accuracy"), "base_accuracy": p.get("base_accuracy")}


def machine() -> dict[str, Any]:
    import torch

    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {"platform": platform.platform(), "python": sys.version.split()[0], "cpu_count": os.cpu_count(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "load_average_at_end": load}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=None, help="cap the optimizer steps (default: one demo epoch)")
    ap.add_argument("--repeats", type=int, default=1, help="off/on pairs (alternating order)")
    ap.add_argument("--eval", type=int, default=0, metavar="N",
                    help="after the probes-on run, exact match of base vs tuned on N held-out tickets")
    ap.add_argument("--root", default=None, help="keep the run directories here (default: a temporary dir)")
    ap.add_argument("--out", default=str(HERE / "results" / "probes-cpu.json"), help="JSON output path")
    args = ap.parse_args(argv)
    probes_cfg = jupyter_ft.FineTuneConfig.from_yaml(DEMO_CONFIG).probes
    runs: list[dict[str, Any]] = []
    pairs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = args.root or tmp
        for i in range(args.repeats):
            order = (False, True) if i % 2 == 0 else (True, False)
            pair = {p: run_once(root, p, args.steps, args.eval) for p in order}
            for p in order:
                print(f"  probes {'on ' if p else 'off'}: {pair[p]['train_seconds']:.1f}s training "
                      f"({pair[p]['probe_seconds']:.1f}s in probes)", flush=True)
            runs += [pair[p] for p in order]
            off, on = pair[False]["train_seconds"], pair[True]["train_seconds"]
            pairs.append({"without": off, "with": on, "paired_overhead_percent": round(100 * (on - off) / off, 1),
                          "self_timed_overhead_percent": pair[True]["self_timed_overhead_percent"]})
    paired = statistics.median(p["paired_overhead_percent"] for p in pairs)
    self_timed = statistics.median(p["self_timed_overhead_percent"] for p in pairs)
    report = {
        "benchmark": "probes overhead on the demo run", "timestamp": datetime.now(timezone.utc).isoformat(),
        "settings": {"demo_config": DEMO_CONFIG, "steps": args.steps, "repeats": args.repeats,
                     "forgetting_items": probes_cfg.forgetting_items, "kl_prompts": probes_cfg.kl_prompts,
                     "forgetting_every": probes_cfg.forgetting_every},
        "machine": machine(), "runs": runs, "pairs": pairs,
        "paired_overhead_percent_median": paired, "self_timed_overhead_percent_median": self_timed,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print("\n| run | steps | training s | probe s | overhead (self-timed) | forgetting | overfitting |")
    print("|---|---|---|---|---|---|---|")
    for r in runs:
        st = f"{r['self_timed_overhead_percent']:.1f}%" if r["probes"] else "-"
        print(f"| probes {'on' if r['probes'] else 'off'} | {r['steps']} | {r['train_seconds']:.1f} | "
              f"{r['probe_seconds']:.1f} | {st} | {r['forgetting'] or '-'} | {r['overfitting'] or '-'} |")
    print(f"\nprobe overhead: {paired:+.1f}% paired (with vs without), {self_timed:.1f}% self-timed "
          f"(median of {len(pairs)} pair(s)); load average at the end: {report['machine']['load_average_at_end']}")
    for r in runs:
        if "exact_match_tuned" in r:
            print(f"exact match on {r['eval_rows']} held-out tickets: base {r['exact_match_base']:.3f}, "
                  f"tuned {r['exact_match_tuned']:.3f}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
