"""Probe overhead: the same short demo run with the probes off and on (defaults), wall time of each.

    python benchmarks/bench_probes.py [--model smollm2-135m-instruct] [--steps 60] [--eval-every 20]

Prints one JSON line: seconds without probes, with probes, the overhead in percent and the time the probes
themselves report (``summary.probes.probe_seconds``), plus the final verdicts.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import jupyter_ft


def run_once(model: str, steps: int, eval_every: int, root: str, probes: bool) -> tuple[float, dict]:
    config = {
        "model": {"name": model},
        "data": {"source": "demo:support_tickets", "eval_split": 0.1},
        "training": {"max_steps": steps, "eval_every": eval_every, "save_every": steps, "logging_every": 5},
        "probes": {"overfitting": probes, "forgetting": probes},
        "output": {"root": root},
    }
    t0 = time.perf_counter()
    run = jupyter_ft.finetune(config, wait=True)
    seconds = time.perf_counter() - t0
    if run.status != "finished":
        raise SystemExit(f"run {run.id} {run.status}: {run.error}")
    return seconds, run.summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--eval-every", type=int, default=20)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as root:
        off, _ = run_once(args.model, args.steps, args.eval_every, root, probes=False)
        on, summary = run_once(args.model, args.steps, args.eval_every, root, probes=True)
    probes = summary.get("probes") or {}
    print(json.dumps({"model": args.model, "steps": args.steps, "eval_every": args.eval_every,
                      "seconds_without_probes": round(off, 2), "seconds_with_probes": round(on, 2),
                      "overhead_percent": round(100 * (on - off) / off, 1),
                      "probe_seconds": round(probes.get("probe_seconds") or 0.0, 2),
                      "overfitting": probes.get("overfitting"), "forgetting": probes.get("forgetting"),
                      "kl": probes.get("kl"), "accuracy": probes.get("accuracy"),
                      "base_accuracy": probes.get("base_accuracy")}))


if __name__ == "__main__":
    main()
