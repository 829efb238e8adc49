#!/usr/bin/env python
"""What the overheads of one training step cost, measured by removing them one at a time (#15's profile).

The torch profile of a demo step on our CPU showed two items not related to learning: the LM head and its
log-softmax computed at every position, though about 4% of them carry a label, and LoRA dropout's fresh random
mask for each of the 210 adapted layers' inputs. Each variant below trains the same demo steps (SmolLM2-135M,
NF4, LoRA r16 on all linear layers, batch 8, the same seed) with jupyter-ft's recipe, in a fresh process, back
to back in one run:

- ``head everywhere``: the model's own loss (the Trainer's default), as before;
- ``head at labels``: ``LabelledLossMixin``, the head and loss only where a label is (the same loss, tested);
- ``head at labels, dropout 0``: also no LoRA dropout.

    python benchmarks/bench_overheads.py --steps 20 --out benchmarks/results/overheads-cpu.json

Prints tokens/s (steady state, without the first two steps), the speed-up over the first variant and the final
training loss; writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

VARIANTS = {
    "head everywhere": {"labelled_loss": False, "dropout": 0.05},
    "head at labels": {"labelled_loss": True, "dropout": 0.05},
    "head at labels, dropout 0": {"labelled_loss": True, "dropout": 0.0},
}


def child(settings: dict[str, Any], root: str, steps: int, result: str) -> None:
    import jupyter_ft
    from jupyter_ft.engine import trainer as engine_trainer

    if not settings["labelled_loss"]:  # the model's own loss: skip the mixin's override
        def plain(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # type: ignore[no-untyped-def]
            return super(engine_trainer.LabelledLossMixin, self).compute_loss(
                model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)

        engine_trainer.LabelledLossMixin.compute_loss = plain  # type: ignore[method-assign]
    run = jupyter_ft.finetune({
        "data": {"source": "demo:support_tickets", "max_length": 256, "eval_split": 0.0},
        "lora": {"dropout": settings["dropout"]},
        "training": {"max_steps": steps, "batch_size": 8, "logging_every": 1, "save_every": 10_000, "seed": 42},
        "probes": {"forgetting": False, "overfitting": False},
        "output": {"root": root},
    }, wait=True)
    if run.status != "finished":
        raise SystemExit(f"{run.status}: {run.error}")
    lines = [m for m in run.metrics() if m.get("tokens_per_s")]
    steady = lines[2:] or lines
    Path(result).write_text(json.dumps({
        "tokens_per_s": sum(m["tokens_per_s"] for m in steady) / len(steady),
        "final_train_loss": run.summary.get("final_train_loss"), "losses": [m.get("loss") for m in lines]}))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--out", default=None)
    parser.add_argument("--_child", help=argparse.SUPPRESS)
    parser.add_argument("--_root", help=argparse.SUPPRESS)
    parser.add_argument("--_result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._child:
        child(VARIANTS[args._child], args._root, args.steps, args._result)
        return 0
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in VARIANTS:
            out = Path(tmp) / "result.json"
            subprocess.run([sys.executable, __file__, "--steps", str(args.steps), "--_child", name, "--_root",
                            str(Path(tmp) / "runs"), "--_result", str(out)], check=True)
            results[name] = json.loads(out.read_text())
    base = results["head everywhere"]["tokens_per_s"]
    import torch

    print(f"\nSmolLM2-135M, NF4, demo, batch 8, {args.steps} steps; {platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__}\n")
    print("| variant | tokens/s | speed-up | final train loss |")
    print("|---|---:|---:|---:|")
    for name, r in results.items():
        r["speedup"] = r["tokens_per_s"] / base
        print(f"| {name} | {r['tokens_per_s']:,.0f} | {r['speedup']:.2f}x | {r['final_train_loss']:.4f} |")
    if args.out:
        Path(args.out).write_text(json.dumps({"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                                              "steps": args.steps, "cores": os.cpu_count(),
                                              "torch": torch.__version__, "variants": results}, indent=2) + "\n")
        print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
