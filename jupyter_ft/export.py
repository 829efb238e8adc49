"""Export a run: the LoRA adapter, or the base model with the adapter merged in, plus a model card.

The merged model of a QLoRA run is built from the *dequantized* NF4 (or int8) base weights, the exact
weights the adapter was trained and evaluated on, so it answers like the adapter model; it is saved in the
compute dtype as plain safetensors that ``AutoModelForCausalLM.from_pretrained`` loads without peft or
bitsandbytes. The model card (``README.md``) records the run's config, training summary and the last
``%ft_eval`` table (``eval.json``).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from .config import DEFAULT_ROOT, FineTuneConfig
from .errors import ExportError
from .store import RunDir

__all__ = ["ExportError", "PROVENANCE", "export_run", "merged_model", "model_card"]

# The file every export writes: what marks a directory as one that --force may replace.
PROVENANCE = "jupyter_ft_export.json"


def merged_model(run_dir: RunDir, *, trust_remote_code: bool = False) -> tuple[Any, Any, FineTuneConfig]:
    """The run's base with its adapter merged in, as a plain transformers model (dequantized where the run
    trained on a quantized base), with its tokenizer and config. The model's own code runs only with
    ``trust_remote_code=True`` from the caller, never because the run's record says so."""
    from peft import PeftModel

    from . import models

    config = FineTuneConfig.from_record(run_dir.record.config, trust_remote_code=trust_remote_code)
    resolved = models.resolve_model(config.model.name, config.model.revision)
    device = models.select_device()
    dtype = models.select_compute_dtype(device)
    tokenizer = models.load_tokenizer(resolved, config.model.trust_remote_code)
    base = models.load_base_model(config, resolved, device, dtype)
    if getattr(base, "hf_quantizer", None) is not None or getattr(base, "is_quantized", False):
        from transformers.utils import logging as hf_logging

        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # "dequantized in float32" is what we asked for
        try:
            base = base.dequantize(dtype=dtype)
        finally:
            hf_logging.set_verbosity(verbosity)
    model = PeftModel.from_pretrained(base, str(run_dir.adapter_dir))
    merged = model.merge_and_unload()
    merged.config.use_cache = True
    merged.eval()
    return merged, tokenizer, config


def _eval_table(eval_json: dict[str, Any]) -> str:
    metrics = eval_json.get("metrics") or {}
    if not metrics:
        return ""
    lines = ["| metric | base | tuned | delta |", "| --- | ---: | ---: | ---: |"]
    for name, m in metrics.items():
        arrow = "↑" if m.get("higher_is_better", name != "perplexity") else "↓"
        delta = m.get("delta", m["tuned"] - m["base"])
        lines.append(f"| {name} {arrow} | {m['base']:.4g} | {m['tuned']:.4g} | {delta:+.4g} |")
    return "\n".join(lines)


def model_card(run_dir: RunDir, *, merged: bool, eval_json: dict[str, Any] | None = None) -> str:
    """The README.md of an export: provenance, evaluation table, training summary and the full config."""
    from . import models

    rec = run_dir.record
    config = FineTuneConfig.from_dict(rec.config)
    model_info = rec.model or {}
    kind = model_info.get("kind")
    base_id = None
    if kind == "builtin":
        base_id = models.BUILTIN_HUB_ID
    elif kind == "hub":
        base_id = model_info.get("path") or config.model.name
    if eval_json is None:
        path = Path(run_dir.path) / "eval.json"
        eval_json = json.loads(path.read_text()) if path.is_file() else {}
    front = ["---"]
    if base_id:
        front.append(f"base_model: {base_id}")
    front.append(f"library_name: {'transformers' if merged else 'peft'}")
    front += ["tags:", "  - jupyter-ft", "  - lora"]
    if config.quantization.method != "none":
        front.append("  - qlora")
    if merged:
        front.append("  - merged")
    front.append("---")
    what = ("the base model with the LoRA adapter merged into its weights"
            + (" (the quantized base dequantized first)" if config.quantization.method != "none" else "")
            if merged else "a LoRA adapter (peft format)")
    lines = [
        "\n".join(front), "",
        f"# {rec.name}", "",
        f"Fine-tuned with [jupyter-ft](https://github.com/jupyter-ft/jupyter-ft): {what}.", "",
        f"- base model: `{config.model.name}`" + (f" ({base_id})" if base_id and base_id != config.model.name else ""),
        f"- run: `{rec.id}` ({rec.status}; started {rec.started_at or rec.created_at}, ended {rec.finished_at or '-'})",
        f"- method: LoRA r={config.lora.r}, alpha={config.lora.alpha}, dropout={config.lora.dropout}, "
        f"targets {config.lora.target_modules}; base quantization during training: {config.quantization.method}",
        f"- exported: {_dt.datetime.now(_dt.timezone.utc).isoformat(timespec='seconds')}", "",
        "## Evaluation", "",
    ]
    table = _eval_table(eval_json)
    if table:
        d = eval_json.get("decoding") or {}
        how = ("greedy" if not d.get("temperature")
               else f"sampling (temperature {d['temperature']}, seed {d.get('seed')})")
        lines += [f"Base (adapter switched off) vs tuned on {eval_json.get('n', '?')} examples of the "
                  f"{eval_json.get('source', 'held-out split')}, {how} decoding, up to {d.get('max_new_tokens', '?')} "
                  f"new tokens (evaluated {eval_json.get('created_at', '?')}).", "", table, ""]
        ppl = eval_json.get("perplexity")
        if ppl:
            lines += [f"Perplexity: over {ppl.get('tokens')} answer tokens of {ppl.get('rows')} examples "
                      f"({ppl.get('source')}).", ""]
    else:
        lines += ["Not evaluated yet: run `%ft_eval` on the run, then export again.", ""]
    s = rec.summary or {}
    ds = rec.dataset or {}
    lines += ["## Training", ""]
    for label, value in (("steps", s.get("global_step")), ("epochs", s.get("epoch")),
                         ("final train loss", s.get("final_train_loss")), ("best eval loss", s.get("best_eval_loss")),
                         ("training time (s)", s.get("train_seconds")),
                         ("data", ds.get("source")), ("format", ds.get("format")),
                         ("rows (train / eval)", f"{ds.get('train_rows')} / {ds.get('eval_rows')}" if ds else None),
                         ("data fingerprint", ds.get("fingerprint"))):
        if value is not None:
            lines.append(f"- {label}: {value:.4g}" if isinstance(value, float) else f"- {label}: {value}")
    lines += ["", "## Config", "", "```yaml", config.to_yaml().rstrip(), "```", "", "## Use", ""]
    if merged:
        lines += ["```python", "from transformers import AutoModelForCausalLM, AutoTokenizer", "",
                  "model = AutoModelForCausalLM.from_pretrained('PATH')",
                  "tokenizer = AutoTokenizer.from_pretrained('PATH')", "```"]
    else:
        lines += ["```python", "from peft import PeftModel",
                  "from transformers import AutoModelForCausalLM, AutoTokenizer",
                  "", f"base = AutoModelForCausalLM.from_pretrained('{base_id or config.model.name}')",
                  "model = PeftModel.from_pretrained(base, 'PATH')",
                  "tokenizer = AutoTokenizer.from_pretrained('PATH')", "```", "",
                  "`adapter_config.json` names the base weights this run loaded locally "
                  f"(`{model_info.get('path', config.model.name)}`); point `from_pretrained` at your copy of them."]
    return "\n".join(lines) + "\n"


def export_run(run: Any, out: str | os.PathLike[str], *, merge: bool = False, root: str | os.PathLike[str] = DEFAULT_ROOT,
               overwrite: bool = False, trust_remote_code: bool = False) -> Path:
    """Save a run's adapter (or, with ``merge``, the merged model) and a model card to ``out``.

    ``run``: a run id or name under ``root``, a ``Run`` or a ``RunDir``. ``out`` must not exist or be empty,
    unless ``overwrite``. The export is written next to ``out`` and renamed into place, so a failure never
    leaves a half-written directory. Returns ``out``. With ``merge`` the base model is loaded: its repository's
    own code runs only with ``trust_remote_code=True``, never because the run's record says so.
    """
    from .eval import open_run, release_model

    rd = open_run(run, root)
    target = Path(out).expanduser().resolve()
    run_path = Path(rd.path).resolve()
    if target == run_path or run_path in target.parents or target in run_path.parents:
        raise ExportError(f"--out {target}: export outside the run directory {run_path} (and not into a parent of it)")
    if target.exists():
        if not target.is_dir():
            raise ExportError(f"--out {target}: exists and is not a directory")
        if any(target.iterdir()):
            if not (target / PROVENANCE).is_file():
                # --force replaces a previous export, never a folder of other files (the notebook's own, say)
                raise ExportError(f"--out {target}: the directory is not empty and holds no jupyter-ft export "
                                  f"({PROVENANCE}); choose another directory" +
                                  ("" if overwrite else ", or an earlier export's to replace it with --force"))
            if not overwrite:
                raise ExportError(f"--out {target}: the directory is not empty (an earlier export); choose another "
                                  "or pass --force (overwrite=True) to replace it")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; the export is an ordinary directory
    try:
        if merge:
            release_model()  # the cached %ft_eval model: keep one model in memory
            model, tokenizer, _ = merged_model(rd, trust_remote_code=trust_remote_code)
            dtype = model.dtype
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            del model
        else:
            for item in rd.adapter_dir.iterdir():
                if item.name == "README.md":
                    continue  # peft's generic card; ours replaces it
                if item.is_dir():
                    shutil.copytree(item, tmp / item.name)
                else:
                    shutil.copy2(item, tmp / item.name)
        (tmp / "README.md").write_text(model_card(rd, merged=merge), encoding="utf-8")
        provenance = {"run_id": rd.record.id, "run_path": str(run_path), "merged": merge,
                      "dtype": str(dtype).replace("torch.", "") if merge else None,
                      "model": rd.record.model,
                      "exported_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
        (tmp / PROVENANCE).write_text(json.dumps(provenance, indent=2, default=str), encoding="utf-8")
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
