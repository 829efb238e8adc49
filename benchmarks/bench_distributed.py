#!/usr/bin/env python
"""Throughput and scaling efficiency of a run under torchrun: 1 process against N, side by side in one run.

Each case trains the same config (the same global batch, so the same examples per optimizer step) with
``compute.launcher: torchrun`` and ``processes`` 1, then N, through ``python -m jupyter_ft.launch``, the path a
notebook takes. On a CPU each rank gets one torch thread (``OMP_NUM_THREADS=1``), so 1 process against 2 is one
core against two, and the ratio says what the gloo all-reduce and the sharded data cost. On a GPU machine the
ranks are GPUs (``--processes`` defaults to every visible one there).

    python benchmarks/bench_distributed.py                      # CPU: SmolLM2-135M (offline), 1 vs 2 ranks
    python benchmarks/bench_distributed.py --model tiny --steps 30
    python benchmarks/bench_distributed.py --out benchmarks/results/distributed-cpu.json

Reports tokens/s (the Trainer's count of non-padding input tokens over all ranks, per second of training) and
scaling efficiency = tokens/s(N) / (N x tokens/s(1)). Prints a markdown table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def tiny_model(path: Path) -> str:
    sys.path.insert(0, str(REPO / "tests"))
    from conftest import build_tiny_model  # the test suite's tiny random Llama

    return str(build_tiny_model(path))


def run_case(model: str, root: Path, processes: int, steps: int, batch: int, max_length: int,
             gpu: bool) -> dict[str, Any]:
    from jupyter_ft.config import FineTuneConfig
    from jupyter_ft.store import RunStore, read_jsonl

    cfg = FineTuneConfig.from_dict({
        "model": {"name": model},
        "data": {"source": "demo:support_tickets", "max_length": max_length, "eval_split": 0.05},
        "training": {"max_steps": steps, "batch_size": batch, "logging_every": 1, "eval_every": 10_000,
                     "save_every": 10_000, "seed": 42},
        "probes": {"forgetting": False, "overfitting": False},
        "compute": {"launcher": "torchrun", "processes": processes},
    })
    rd = RunStore(root).create(cfg.to_dict(), f"bench-{processes}")
    env = dict(os.environ)
    if not gpu:
        env["OMP_NUM_THREADS"] = "1"  # one core per rank: 1 rank = 1 core, N ranks = N cores
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "jupyter_ft.launch", str(rd.path)], env=env, capture_output=True,
                          text=True)
    wall = time.perf_counter() - t0
    record = RunStore(root).load(rd.id)
    if record.status != "finished":
        raise SystemExit(f"{processes} process(es): {record.status}: {record.error}\n{proc.stdout[-2000:]}")
    lines = [m for m in read_jsonl(rd.path / "metrics.jsonl") if m.get("tokens_per_s")]
    steady = lines[2:] or lines  # the first steps pay for warm-up (allocator, gloo's first buckets)
    tokens_per_s = sum(m["tokens_per_s"] for m in steady) / len(steady)
    return {"processes": processes, "tokens_per_s": tokens_per_s, "wall_seconds": wall,
            "train_seconds": record.summary.get("train_seconds"), "final_train_loss":
            record.summary.get("final_train_loss"), "examples_per_step": record.summary.get("examples_per_step"),
            "launch": record.launch.get("command")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct",
                        help="a model (default: the offline SmolLM2-135M), or 'tiny' for the test model")
    parser.add_argument("--processes", type=int, default=None, help="N (default: 2 on a CPU, every GPU on CUDA)")
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=8, help="the global batch")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)

    import torch

    gpu = torch.cuda.is_available()
    n = args.processes or (torch.cuda.device_count() if gpu else 2)
    with tempfile.TemporaryDirectory() as tmp:
        model = tiny_model(Path(tmp) / "tiny") if args.model == "tiny" else args.model
        cases = [run_case(model, Path(tmp) / "runs", p, args.steps, args.batch_size, args.max_length, gpu)
                 for p in (1, n)]
    base = cases[0]["tokens_per_s"]
    for case in cases:
        case["speedup"] = case["tokens_per_s"] / base
        case["scaling_efficiency"] = case["speedup"] / case["processes"]
    machine = (torch.cuda.get_device_name(0) if gpu else f"{platform.processor() or platform.machine()} CPU, "
               f"{os.cpu_count()} cores, 1 torch thread per rank")
    print(f"\n{args.model}, {args.steps} steps, global batch {args.batch_size}, max_length {args.max_length}; "
          f"{machine}\n")
    print("| processes | tokens/s | speedup | scaling efficiency | wall (s) |")
    print("|---:|---:|---:|---:|---:|")
    for c in cases:
        print(f"| {c['processes']} | {c['tokens_per_s']:,.0f} | {c['speedup']:.2f}x | {c['scaling_efficiency']:.0%} "
              f"| {c['wall_seconds']:.0f} |")
    if args.out:
        Path(args.out).write_text(json.dumps({
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine,
            "model": args.model, "steps": args.steps, "batch_size": args.batch_size, "max_length": args.max_length,
            "torch": torch.__version__, "cases": cases}, indent=2) + "\n")
        print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
