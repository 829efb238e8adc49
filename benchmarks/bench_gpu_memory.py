#!/usr/bin/env python
"""GPU memory and speed of jupyter-ft's QLoRA runs: the pre-flight estimate against the measured peak.

For each case (a model shape and the config a notebook would use) it trains ``--steps`` optimizer steps on
``demo:support_tickets`` with jupyter-ft's CUDA defaults (NF4 + double quantization, paged 8-bit AdamW,
gradient checkpointing, bf16 or fp16) in a fresh process, optionally under a per-process memory cap that
plays a smaller card (``t4``: 15 GiB and fp16, as on Colab's free tier). It reports the memory estimate that
decides whether a run may start, the peak that torch's allocator handed out (and reserved), their ratio,
tokens/s, and whether the run fitted. Models come from ``benchmarks/shaped_model.py`` (real shapes and
tokenizer, random weights), so it runs on a machine that cannot reach the hub.

    python benchmarks/bench_gpu_memory.py --tokenizer DIR --out benchmarks/results/gpu-h100.json
    python benchmarks/bench_gpu_memory.py --recompute benchmarks/results/gpu-h100.json   # CPU: new formula

Needs a CUDA GPU. Prints a markdown table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
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

GiB = 2**30
# name, shape, card, training overrides: the quickstart's model on the demo, and examples/03_colab_gpu's
# SmolLM2-1.7B config on a T4-sized budget (the notebook says it is sized for a 15 GiB T4)
CASES: list[dict[str, Any]] = [
    {"name": "135m-demo", "shape": "smollm2-135m", "card": None,
     "training": {"batch_size": 8, "grad_accum": 1}, "max_length": 256},
    {"name": "135m-demo-t4", "shape": "smollm2-135m", "card": "t4",
     "training": {"batch_size": 8, "grad_accum": 1}, "max_length": 256},
    {"name": "1.7b-notebook03-t4", "shape": "smollm2-1.7b", "card": "t4",
     "training": {"batch_size": 8, "grad_accum": 2}, "max_length": 256},
    {"name": "1.7b-batch32-len512", "shape": "smollm2-1.7b", "card": None,
     "training": {"batch_size": 32, "grad_accum": 1}, "max_length": 512},
]
CARDS = {"t4": {"memory": 15 * GiB, "dtype": "float16"}}


def child(case: dict[str, Any], model_dir: str, steps: int, workdir: str) -> dict[str, Any]:
    import torch

    card = CARDS.get(case["card"] or "")
    if card:
        os.environ["JUPYTER_FT_DTYPE"] = card["dtype"]
        free, total = torch.cuda.mem_get_info()
        torch.cuda.set_per_process_memory_fraction(min(1.0, card["memory"] / total))
    import jupyter_ft

    config = {
        "model": {"name": model_dir},
        "data": {"source": "demo:support_tickets", "max_length": case["max_length"], "eval_split": 0.1},
        "training": {"max_steps": steps, "learning_rate": 2e-4, "logging_every": 1, "eval_every": steps,
                     "save_every": 10_000, **case["training"]},
        "probes": {"forgetting": True},
        "output": {"root": workdir},
    }
    t0 = time.perf_counter()
    run = jupyter_ft.finetune(config, wait=True)
    rec = run.run_dir.record
    trains = [h for h in run.history if h.get("tokens_per_s")]
    steady = [h["tokens_per_s"] for h in trains[1:]] or [h["tokens_per_s"] for h in trains]
    return {
        "status": rec.status, "error": rec.error, "wall_s": time.perf_counter() - t0,
        "estimate": rec.memory_estimate, "summary": rec.summary,
        "tokens_per_s_median": sorted(steady)[len(steady) // 2] if steady else None,
        "gpu": torch.cuda.get_device_name(0), "cap_bytes": card["memory"] if card else None,
    }


def run_case(case: dict[str, Any], model_dir: Path, steps: int, workdir: Path) -> dict[str, Any]:
    result = workdir / f"{case['name']}.json"
    cmd = [sys.executable, __file__, "--_case", json.dumps(case), "--_model", str(model_dir), "--_result",
           str(result), "--steps", str(steps), "--_workdir", str(workdir / case["name"])]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or not result.exists():
        return {"status": "crashed", "error": proc.stderr[-2000:]}
    return json.loads(result.read_text())


def recompute(path: Path) -> int:
    """Re-estimate every case of a results file with the current ``estimate_memory`` (no GPU needed: the
    card's capability, dtype and free memory are taken from the file) and store it as ``estimate_now``, so a
    formula change is judged against the peaks that were measured."""
    from unittest import mock

    import torch

    from jupyter_ft import models
    from jupyter_ft.config import FineTuneConfig
    from shaped_model import COMMON, SHAPES

    report = json.loads(path.read_text())
    workdir = Path(tempfile.mkdtemp(prefix="jft-recompute-"))
    print("| case | measured peak GiB | estimate then | ratio then | estimate now | ratio now |\n|---|---|---|---|---|---|")
    for r in report["results"]:
        case, then = r["case"], r["estimate"]
        shape_dir = workdir / case["shape"]
        if not shape_dir.exists():  # the config alone: the estimate reads shapes on the meta device
            from transformers import LlamaConfig

            LlamaConfig(**COMMON, **SHAPES[case["shape"]]).save_pretrained(shape_dir)
        config = FineTuneConfig.from_dict({"model": {"name": str(shape_dir)},
                                           "data": {"max_length": case["max_length"]},
                                           "training": dict(case["training"])})
        dtype = then["plan"]["compute_dtype"]
        with mock.patch.dict(os.environ, {"JUPYTER_FT_DTYPE": dtype}), \
                mock.patch.object(torch.cuda, "mem_get_info", lambda device=None: (then["available"],
                                                                                   then["device_total"])):
            now = models.estimate_memory(config, models.ResolvedModel(str(shape_dir), str(shape_dir), "local"),
                                         "cuda", longest=then.get("seq_len"))
        peak = r["summary"]["peak_gpu_memory"]
        r["estimate_now"] = now.to_dict()
        print(f"| {case['name']} | {peak / GiB:.2f} | {then['total'] / GiB:.2f} | {then['total'] / peak:.2f} | "
              f"{now.total / GiB:.2f} | {now.total / peak:.2f} |")
    path.write_text(json.dumps(report, indent=1, default=str))
    return 0


def row(case: dict[str, Any], r: dict[str, Any]) -> str:
    est = (r.get("estimate") or {}).get("total")
    peak = (r.get("summary") or {}).get("peak_gpu_memory")
    reserved = (r.get("summary") or {}).get("peak_gpu_reserved")
    gib = lambda b: f"{b / GiB:.2f}" if b else "-"  # noqa: E731
    ratio = f"{est / peak:.2f}" if est and peak else "-"
    tps = r.get("tokens_per_s_median")
    t = case["training"]
    return (f"| {case['name']} | {case['card'] or 'whole card'} | {t['batch_size']}x{case['max_length']} | "
            f"{gib(est)} | {gib(peak)} | {gib(reserved)} | {ratio} | {f'{tps:,.0f}' if tps else '-'} | "
            f"{r['status']} |")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--tokenizer", type=Path, default=None, help="SmolLM2 tokenizer files (default: built-in model's)")
    p.add_argument("--cases", default=",".join(c["name"] for c in CASES))
    p.add_argument("--out", type=Path, default=HERE / "results" / "gpu-latest.json")
    p.add_argument("--recompute", type=Path, default=None,
                   help="re-estimate the cases of a results file with the current formula (no GPU needed)")
    p.add_argument("--_case")
    p.add_argument("--_model")
    p.add_argument("--_result")
    p.add_argument("--_workdir")
    ns = p.parse_args(argv)
    if ns.recompute:
        return recompute(ns.recompute)
    if ns._case:
        Path(ns._result).write_text(json.dumps(child(json.loads(ns._case), ns._model, ns.steps, ns._workdir),
                                               default=str))
        return 0

    import torch

    if not torch.cuda.is_available():
        print("needs a CUDA GPU", file=sys.stderr)
        return 2
    from shaped_model import build

    wanted = set(ns.cases.split(","))
    workdir = Path(tempfile.mkdtemp(prefix="jft-gpu-bench-"))
    models: dict[str, Path] = {}
    results = []
    for case in [c for c in CASES if c["name"] in wanted]:
        if case["shape"] not in models:
            models[case["shape"]] = build(case["shape"], workdir / case["shape"], ns.tokenizer)
        r = run_case(case, models[case["shape"]], ns.steps, workdir)
        results.append({"case": case, **r})
        print(row(case, r), flush=True)
    from jupyter_ft.runtime.environment import environment

    report = {"timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"), "steps": ns.steps,
              "gpu": torch.cuda.get_device_name(0), "environment": environment(), "results": results,
              "definitions": {"estimate": "jupyter_ft.models.estimate_memory total (weights + LoRA + optimizer + "
                              "activations), the number that refuses a run that cannot fit",
                              "peak": "torch.cuda.max_memory_allocated over the run (loading, training, eval, "
                              "probes)", "reserved": "torch.cuda.max_memory_reserved (what the card lends torch)",
                              "t4": "a per-process cap of 15 GiB and fp16 compute, as on Colab's free T4",
                              "tokens_per_s": "median over steps after the first of non-padding tokens/s"}}
    header = ("| case | card | batch x length | estimate GiB | peak GiB | reserved GiB | estimate/peak | tok/s | "
              "status |\n|---|---|---|---|---|---|---|---|---|")
    print("\n" + header)
    for r in results:
        print(row(r["case"], r))
    ns.out.parent.mkdir(parents=True, exist_ok=True)
    ns.out.write_text(json.dumps(report, indent=1, default=str))
    print(f"\nwrote {ns.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
