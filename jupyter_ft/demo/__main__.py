"""`make demo`: the whole slice on a 2-core CPU in a few minutes.

Default: executes `examples/01_quickstart.ipynb` headless (a real kernel, the magics, the dashboard),
writes the executed notebook and an HTML export to `build/demo/`, and prints the base vs tuned table.
`--script`: the same slice from plain Python: fine-tunes the offline SmolLM2-135M-Instruct with QLoRA
on the bundled ticket-routing task in the background thread, prints progress from the main thread
(which stays free), then compares base and tuned answers on the held-out tickets.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from jupyter_ft.config import DEFAULT_ROOT

NOTEBOOK = Path(__file__).resolve().parents[2] / "examples" / "01_quickstart.ipynb"

DEMO_CONFIG = """
model:
  name: smollm2-135m-instruct
data:
  source: demo:support_tickets
  eval_split: 0.1
  max_length: 256
lora:
  r: 16
  alpha: 32
quantization: 4bit-nf4
training:
  learning_rate: 3e-4
  epochs: 1
  batch_size: 8
  eval_every: 20
  save_every: 20
  logging_every: 5
output:
  name: demo-support-tickets
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=DEFAULT_ROOT, help="run directory root (default: ./ft_runs)")
    parser.add_argument("--max-steps", type=int, default=None, help="cap the optimizer steps (quick check)")
    parser.add_argument("--n-eval", type=int, default=None, help="held-out rows to generate for (default: all)")
    parser.add_argument("--script", action="store_true", help="run the plain-Python demo instead of the notebook")
    parser.add_argument("--out", default="build/demo", help="where the executed notebook and HTML go")
    args = parser.parse_args(argv)
    if not args.script and NOTEBOOK.is_file():
        return run_notebook(NOTEBOOK, Path(args.out), args.max_steps)

    import jupyter_ft
    from jupyter_ft.eval import compare_base_tuned

    overrides = {"output.root": args.root}
    if args.max_steps:
        overrides["training.max_steps"] = args.max_steps
    config = jupyter_ft.FineTuneConfig.from_yaml(DEMO_CONFIG, **overrides)
    print("jupyter-ft demo: QLoRA on SmolLM2-135M-Instruct, task = route support tickets to a team\n")
    t0 = time.time()
    run = jupyter_ft.finetune(config)
    print(f"run {run.id} started in a background thread; the main thread keeps printing:")
    last = None
    while run.wait(timeout=2.0) not in ("finished", "failed", "stopped"):
        p = run.progress
        logs = [h for h in run.history if "loss" in h]
        line = (f"  [{run.status}] step {p.get('step', 0)}/{p.get('max_steps', '?')}"
                + (f"  loss {logs[-1]['loss']:.3f}" if logs else "")
                + (f"  {logs[-1].get('tokens_per_s', 0):.0f} tok/s" if logs else "")
                + (f"  eta {p['eta']:.0f}s" if p.get("eta") is not None else ""))
        if line != last:
            print(line, flush=True)
            last = line
    if run.status != "finished":
        print(f"\nrun ended {run.status}: {run.error}\n{run.run_dir.record.traceback or ''}", file=sys.stderr)
        return 1
    s = run.summary
    print(f"\ntrained {s['global_step']} steps in {s['train_seconds']:.0f}s; eval loss "
          f"{s['best_eval_loss']:.3f} (best, step {s['best_eval_step']}); ~{s['mean_tokens_per_s']:.0f} tok/s")
    print("\nbase vs tuned on the held-out tickets (adapter switched off for the base answers):")
    result = compare_base_tuned(run.run_dir, n=args.n_eval)
    print(result.table())
    print("\nexamples:")
    for row in result.rows[:5]:
        ticket = row["prompt"].split("\n\n")[-1].split("<|im_end|>")[0][:70]
        print(f"  {ticket!r}\n     reference={row['reference']!r} base={row['base'][:40]!r} tuned={row['tuned']!r}")
    print(f"\nrun directory: {run.path}  (total {time.time() - t0:.0f}s)")
    em = result.metrics["exact_match"]
    return 0 if em["tuned"] > em["base"] else 1


def run_notebook(path: Path, out_dir: Path, max_steps: int | None = None, timeout: int = 900) -> int:
    """Execute the notebook in a fresh kernel (cwd = out_dir), save it and an HTML export, echo results."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError
    from nbconvert import HTMLExporter

    out_dir.mkdir(parents=True, exist_ok=True)
    if max_steps:
        os.environ["JUPYTER_FT_MAX_STEPS"] = str(max_steps)
    nb = nbformat.read(path, as_version=4)
    print(f"executing {path.name} headless (a real kernel; training runs in its background thread)...", flush=True)
    t0 = time.time()
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(out_dir)}})
    failed = None
    try:
        client.execute()
    except CellExecutionError as exc:
        failed = exc
    executed = out_dir / path.name
    nbformat.write(nb, executed)
    html, _ = HTMLExporter().from_notebook_node(nb)
    (out_dir / path.with_suffix(".html").name).write_text(html, encoding="utf-8")
    for cell in nb.cells:
        if cell.cell_type == "code" and "ft_eval" in cell.source:
            for output in cell.get("outputs", []):
                if output.get("output_type") == "stream":
                    print(output["text"], end="")
    print(f"\nexecuted notebook: {executed}\nHTML export: {executed.with_suffix('.html')}  "
          f"({time.time() - t0:.0f}s)")
    if failed is not None:
        print(f"\na cell failed:\n{failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
