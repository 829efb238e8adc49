"""Quickstart from plain Python: train in the background, watch it, compare base and tuned answers.

Run it with `.venv/bin/python examples/quickstart.py` after `make demo` or `make test` created the
environment. The notebook version arrives with the magics (`%%finetune`).
"""


import jupyter_ft
from jupyter_ft.eval import compare_base_tuned

run = jupyter_ft.finetune(
    """
    data:
      source: demo:support_tickets
      max_length: 256
    training:
      learning_rate: 3e-4
      max_steps: 30
      eval_every: 15
    output:
      name: quickstart
    """
)
while run.wait(timeout=5) not in ("finished", "failed", "stopped"):
    logs = [h for h in run.history if "loss" in h]
    print(run, f"loss={logs[-1]['loss']:.3f}" if logs else "")  # the main thread is free meanwhile
print(run, run.error or "")
if run.status == "finished":
    print(compare_base_tuned(run.run_dir, n=20).table())
