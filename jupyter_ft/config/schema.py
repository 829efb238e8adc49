"""The fine-tuning configuration: one dataclass tree shared by the YAML cell, the form and the run record.

Validation collects *every* problem before raising, because a user editing a ``%%finetune`` cell fixes
all typos in one go rather than one per launch. This package must stay light: it is imported by the
magics and the form, so it never imports torch or transformers.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field, fields
from typing import Any, Mapping

import yaml

from ..errors import ConfigError, Problem
from .checks import field_names, key_text, nesting_problem, unknown_key
from .choices import BUILTIN_MODEL, DEFAULT_ROOT, NONFINITE_POLICIES, OPTIMIZERS, QUANT_STORAGES
from .compute import ComputeConfig
from .fields import _doc
from .validation import config_problems
from .yaml_io import MAX_DEPTH, Dumper, Loader, YAMLValueError, describe_error, plain_scalar

__all__ = ["ModelConfig", "DataConfig", "LoraSettings", "QuantizationConfig", "TrainingConfig", "OutputConfig",
           "ProbesConfig", "ComputeConfig", "SECTIONS", "FineTuneConfig", "deep_copy", "set_dotted", "flatten"]


@dataclass
class ModelConfig:
    """Which pretrained model to start from."""

    name: str = _doc(
        BUILTIN_MODEL, "The pretrained model: a hub id (``Qwen/Qwen2.5-1.5B-Instruct``), a local directory saved with "
        "``save_pretrained``, a ``.gguf`` file, or the built-in offline ``smollm2-135m-instruct``.")
    revision: str | None = _doc(
        None, "A hub branch, tag or commit to pin the model to; ``null`` takes the default branch.")
    trust_remote_code: bool = _doc(
        False, "Allow the model repository's own Python code to run (some architectures need it). Only for "
        "repositories you trust.")


@dataclass
class DataConfig:
    """Where the examples come from and how they become token sequences."""

    source: Any = _doc(
        "demo:support_tickets", "The training examples: a ``.jsonl``/``.json``/``.csv``/``.parquet`` file, a "
        "``datasets`` directory, "
        "a notebook variable (``$df``: a DataFrame, a list of dicts, a Dataset), or the bundled "
        "``demo:support_tickets``.")
    format: str = _doc(
        "auto", "Row layout: ``alpaca`` (instruction/input/output), ``chat`` (messages), ``prompt_completion``, "
        "``text``; ``auto`` detects it from the columns.")
    columns: dict[str, str] = _doc(
        {}, "Map roles to your column names, e.g. ``{prompt: question, completion: answer}``; roles: instruction, "
        "input, output, messages, prompt, completion, text.")
    eval_split: float = _doc(
        0.1, "Fraction of the rows held out for evaluation (eval loss, probes, ``%ft_eval``); 0 trains on "
        "everything and skips evaluation.")
    max_length: int = _doc(
        512, "Tokens per example after the chat template; longer examples are truncated (the dry run counts them). "
        "The main memory knob with ``training.batch_size``.")
    packing: bool = _doc(
        False, "Concatenate examples into one padding-free row per batch (position ids restart per example, "
        "attention never crosses examples): faster on many short examples.")
    completion_only_loss: bool = _doc(True, "Train only on the answer: prompt tokens are masked out of the loss.")
    system_prompt: str | None = _doc(
        None, "A system message put in front of every example (when the chat template supports one).")
    eval_source: Any = _doc(
        None, "A separate evaluation set (same kinds as ``source``); when set, ``eval_split`` is not used.")


@dataclass
class LoraSettings:
    """LoRA adapter shape; ``target_modules='all-linear'`` follows the QLoRA paper."""

    r: int = _doc(16, "LoRA rank: the adapter's capacity. 8-64 is typical; higher learns more and forgets more.")
    alpha: int = _doc(32, "LoRA scaling numerator (the update is scaled by alpha / r); usually 2 x r.")
    dropout: float | str = _doc(
        "auto", "Dropout on the adapter's input during training. ``auto``: 0.05 on a GPU (the QLoRA paper's value) "
        "and 0 on a CPU, where drawing a fresh random mask for every adapted layer took a fifth of each step "
        "(``benchmarks/bench_overheads.py``).")
    target_modules: Any = _doc(
        "all-linear", "Which layers get an adapter: ``all-linear`` (the QLoRA paper's choice) or a list of module "
        "names "
        "such as ``[q_proj, v_proj]``.")
    use_dora: bool = _doc(
        False, "DoRA (weight-decomposed LoRA): learns each weight's magnitude apart from its direction; closer to "
        "full fine-tuning at low ranks, at some extra time per step (peft's ``use_dora``).")
    use_rslora: bool = _doc(
        False, "rsLoRA (rank-stabilized): scales the update by alpha / sqrt(r) instead of alpha / r, so high ranks "
        "keep learning; with it, alpha = r is a sensible start (peft's ``use_rslora``).")


@dataclass
class QuantizationConfig:
    """How the frozen base weights are stored while the adapter trains."""

    method: str = _doc(
        "4bit-nf4", "How the frozen base weights are stored: ``4bit-nf4`` (QLoRA), ``8bit`` or ``none`` (the compute "
        "dtype). ``quantization: none`` is a shorthand.")
    double_quant: bool = _doc(
        True, "Also quantize the 4-bit quantization constants (QLoRA's double quantization): about 0.4 bits per "
        "weight saved.")
    quant_storage: str = _doc(
        "auto", "What the packed 4-bit weights are stored as (bitsandbytes' ``bnb_4bit_quant_storage``). FSDP and "
        "ZeRO-3 shard parameters by dtype, so there they must be stored as the compute dtype; ``auto`` picks that "
        "under them and ``uint8`` otherwise.", choices=QUANT_STORAGES)


@dataclass
class TrainingConfig:
    """Optimiser and schedule. ``max_steps`` wins over ``epochs`` when set."""

    learning_rate: float = _doc(
        2e-4, "Peak learning rate of the adapter. LoRA trains well between 1e-5 and 1e-3; too high overfits and "
        "forgets quickly.")
    epochs: float = _doc(1.0, "Passes over the training split (fractions allowed); ignored when ``max_steps`` is set.")
    max_steps: int | None = _doc(
        None, "Stop after this many optimizer steps (wins over ``epochs``); ``null`` trains for ``epochs``.")
    batch_size: int = _doc(
        8, "Examples per device per forward pass (also for evaluation). Lower it first when you run out of "
        "memory.")
    grad_accum: int = _doc(
        1, "Forward passes per optimizer step: the effective batch is ``batch_size x grad_accum``. Raise it when "
        "you lower ``batch_size``.")
    warmup: float = _doc(0.05, "Learning-rate warm-up: a ratio of the total steps (< 1) or a whole number of steps.")
    scheduler: str = _doc(
        "cosine", "Learning-rate schedule after warm-up: linear, cosine, constant, constant_with_warmup, "
        "cosine_with_restarts, polynomial.")
    weight_decay: float = _doc(0.0, "AdamW weight decay on the adapter weights.")
    max_grad_norm: float = _doc(1.0, "Gradient clipping threshold (global L2 norm); 0 turns clipping off.")
    seed: int = _doc(42, "Seed for the adapter's initialisation, data order and the train/eval split.")
    eval_every: int = _doc(
        50, "Evaluate (eval loss and probes) every N optimizer steps; the last step is always evaluated.")
    save_every: int = _doc(100, "Save a resumable checkpoint every N optimizer steps (Stop also saves one).")
    logging_every: int = _doc(
        5, "Log loss, learning rate and tokens/s every N optimizer steps (the dashboard's resolution).")
    gradient_checkpointing: bool | str = _doc(
        "auto", "Recompute activations in the backward pass instead of storing them: much less memory, ~30% slower. "
        "``auto``: on for CUDA; on a CPU off (speed matters more there) unless the memory estimate does not fit "
        "in what is free (a 2 GB Binder pod).",
        choices=("auto", True, False))
    optimizer: str = _doc(
        "auto", "The optimizer (a transformers ``optim`` name). ``auto``: ``paged_adamw_8bit`` on CUDA (8-bit state, "
        "paged to CPU memory under pressure: QLoRA's choice), ``adamw_torch`` on a CPU.", choices=OPTIMIZERS)
    on_nonfinite: str = _doc(
        "stop", "What a NaN or infinite training loss does: ``stop`` ends the run ``failed`` at that step (its last "
        "checkpoint is kept, from before the loss went bad); ``skip`` drops that step's update, says so at the step, "
        "and goes on (it still stops after 10 such steps in a row).", choices=NONFINITE_POLICIES)
    # Experiment trackers the Trainer reports to itself (its own integrations): mlflow, tensorboard, trackio.
    report_to: list[str] = _doc(
        [], "Experiment trackers the Trainer reports to with its own integrations: mlflow, tensorboard, trackio "
        "(each needs its package installed); empty: none.")


@dataclass
class OutputConfig:
    """Where the run directory goes; ``name`` is a label, the run id stays unique."""

    root: str = _doc(
        DEFAULT_ROOT, "Directory that holds the run directories (relative to the notebook's working directory).")
    name: str | None = _doc(None, "A label for the run (``%%finetune --name``); the run id stays unique.")


@dataclass
class ProbesConfig:
    """Live overfitting and catastrophic-forgetting probes, run at every evaluation (``training.eval_every``).

    Overfitting: ``suspected`` when the eval loss rose for ``patience`` evaluations in a row while the train
    loss fell; ``overfitting`` when it rose more than ``rise_threshold`` (relative) above its best, or
    eval/train loss passed ``gap_ratio``. ``early_stop`` stops then and restores the best checkpoint (it needs
    ``overfitting: true`` and an eval split; it does nothing otherwise).
    Forgetting: ``forgetting_items`` general-knowledge items and ``kl_prompts`` general prompts, measured
    with the adapter off (base) and on, every ``forgetting_every`` evaluations; the verdict is ``mild`` /
    ``severe`` when the per-token KL from the base or the drop in answer log-likelihood passes a threshold.
    """

    overfitting: bool = _doc(
        True, "Watch eval vs train loss at every evaluation and flag suspected overfitting or overfitting.")
    patience: int = _doc(
        2, "Evaluations in a row with a rising eval loss (while train loss falls) before overfitting is "
        "suspected.")
    rise_threshold: float = _doc(
        0.1, "Relative rise of the eval loss above its best that counts as overfitting (0.1 = 10%).")
    gap_ratio: float = _doc(1.5, "Eval loss / train loss above which the run counts as overfitting.")
    early_stop: bool = _doc(
        False, "Stop when overfitting is detected and restore the best checkpoint (needs an eval split).")
    forgetting: bool = _doc(
        True, "Measure catastrophic forgetting on general-knowledge items and prompts, base (adapter off) vs tuned.")
    forgetting_items: int = _doc(
        16, "General-knowledge items scored per forgetting measurement (a bounded subset keeps the probes under "
        "~10% of training time; raise it for a finer accuracy).")
    forgetting_every: int = _doc(
        2, "Measure forgetting every N evaluations (and always at the start and the last one): with the default "
        "sizes the probes then stay near 10% of training time on the demo.")
    kl_prompts: int = _doc(
        6, "General prompts used for the per-token KL divergence from the base model; 0 skips the KL.")
    kl_mild: float = _doc(0.1, "KL from the base (nats/token) above which forgetting is ``mild``.")
    kl_severe: float = _doc(0.5, "KL from the base (nats/token) above which forgetting is ``severe``.")
    loglik_mild: float = _doc(0.25, "Drop in answer log-likelihood (nats/token) above which forgetting is ``mild``.")
    loglik_severe: float = _doc(1.0, "Drop in answer log-likelihood (nats/token) above which forgetting is ``severe``.")
    probe_file: str | None = _doc(
        None, "Your own forgetting-probe items: a ``.jsonl`` file with one prompt/answer object per line, scored "
        "first, ahead of the bundled set.")


SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "data": DataConfig,
    "lora": LoraSettings,
    "quantization": QuantizationConfig,
    "training": TrainingConfig,
    "output": OutputConfig,
    "probes": ProbesConfig,
    "compute": ComputeConfig,
}


@dataclass
class FineTuneConfig:
    """The whole configuration of one run. Build it with ``from_yaml``, ``from_dict`` or keywords."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    lora: LoraSettings = field(default_factory=LoraSettings)
    quantization: QuantizationConfig = field(default_factory=QuantizationConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    probes: ProbesConfig = field(default_factory=ProbesConfig)
    compute: ComputeConfig = field(default_factory=ComputeConfig)

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_yaml(cls, text: str, **overrides: Any) -> "FineTuneConfig":
        """Parse a YAML body (``yaml.safe_load``); a syntax error names the line and column."""
        try:
            data = yaml.load(text, Loader=Loader) if text and text.strip() else {}
        except yaml.YAMLError as exc:
            where, problem = describe_error(exc, text)
            if isinstance(exc, YAMLValueError):  # parses, but too deep, an alias bomb, an unreadable scalar
                found = Problem("yaml", f"{problem} at {where}", hint=exc.hint)
            else:
                found = Problem("yaml", f"invalid YAML at {where}: {problem}",
                                hint="Check indentation and 'key: value' pairs")
            raise ConfigError([found], source="YAML") from None
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(
                [Problem("yaml", "the body must be a mapping of sections", type(data).__name__,
                         "Write e.g. 'training:\\n  learning_rate: 2e-4'")],
                source="YAML",
            )
        return cls.from_dict(data, **overrides)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None = None, **overrides: Any) -> "FineTuneConfig":
        """Build from nested sections; ``overrides`` use dotted or double-underscore keys
        (``training.learning_rate=1e-4`` via ``**{"training.learning_rate": 1e-4}`` or ``training__learning_rate``)."""
        too_deep = nesting_problem(dict(data or {}), MAX_DEPTH)  # before deep_copy recurses into it
        if too_deep is None:
            merged: dict[str, Any] = deep_copy(dict(data or {}))
            for key, value in overrides.items():
                set_dotted(merged, key.replace("__", "."), value)
            too_deep = nesting_problem(merged, MAX_DEPTH)  # an override may nest too
        if too_deep is not None:
            raise ConfigError([too_deep])
        problems: list[Problem] = []
        sections: dict[str, Any] = {}
        for key in merged:
            if key not in SECTIONS:
                problems.append(unknown_key(key_text(key), key_text(key), SECTIONS))
        for name, section_cls in SECTIONS.items():
            raw = merged.get(name, {})
            if name == "quantization" and isinstance(raw, str):
                raw = {"method": raw}  # shorthand: `quantization: none`
            if name == "model" and isinstance(raw, str):
                raw = {"name": raw}  # shorthand: `model: path/or/hub-id`
            if raw is None:
                raw = {}
            if not isinstance(raw, Mapping):
                problems.append(Problem(name, "must be a mapping of fields", raw, f"Fields: {', '.join(field_names(section_cls))}"))
                raw = {}
            known = {f.name for f in fields(section_cls)}
            kwargs = {}
            for k, v in raw.items():
                if k in known:
                    kwargs[k] = plain_scalar(v)  # np.float64(3e-4) -> 3e-4: validated, written as YAML
                else:
                    problems.append(unknown_key(f"{name}.{key_text(k)}", key_text(k), known))
            sections[name] = section_cls(**kwargs)
        config = cls(**sections)
        problems += config.problems()
        if problems:
            raise ConfigError(problems)
        return config

    @classmethod
    def from_record(cls, data: Mapping[str, Any], *, trust_remote_code: bool = False) -> "FineTuneConfig":
        """The config of a run read back from its ``run.json``, with every code-running option set by the caller,
        never by the file: a run directory may come from someone else, and opening it must not run a model
        repository's code that nobody allowed in this kernel."""
        record = deep_copy(dict(data or {}))
        model = record.get("model")
        if isinstance(model, str):
            model = {"name": model}
        record["model"] = {**(model if isinstance(model, Mapping) else {}), "trust_remote_code": trust_remote_code}
        return cls.from_dict(record)

    # ----------------------------------------------------------------- serialisation
    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for key in ("source", "eval_source"):  # a pathlib.Path is a path, not in-memory data
            if isinstance(out["data"][key], os.PathLike):
                out["data"][key] = os.fspath(out["data"][key])
        if not isinstance(out["data"]["source"], (str, type(None))):
            out["data"]["source"] = f"<in-memory {type(self.data.source).__name__}>"
        if not isinstance(out["data"]["eval_source"], (str, type(None))):
            out["data"]["eval_source"] = f"<in-memory {type(self.data.eval_source).__name__}>"
        return out

    def to_yaml(self) -> str:
        return yaml.dump(self.to_dict(), Dumper=Dumper, sort_keys=False, default_flow_style=False)

    def replace(self, **overrides: Any) -> "FineTuneConfig":
        """A validated copy with dotted overrides applied (``training.learning_rate=1e-4``)."""
        data = dataclasses.asdict(self)
        data["data"]["source"] = self.data.source
        data["data"]["eval_source"] = self.data.eval_source
        return FineTuneConfig.from_dict(data, **overrides)

    # ----------------------------------------------------------------- validation
    def problems(self) -> list[Problem]:
        """Every problem with the current values; empty when the config is valid."""
        return config_problems(self)

    def validate(self) -> "FineTuneConfig":
        problems = self.problems()
        if problems:
            raise ConfigError(problems)
        return self



def deep_copy(d: Any) -> Any:
    if isinstance(d, Mapping):
        return {k: deep_copy(v) for k, v in d.items()}
    return d


def set_dotted(target: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = target
    for part in parts[:-1]:
        child = node.get(part)
        if isinstance(child, str) and part in ("quantization", "model"):
            child = {"method" if part == "quantization" else "name": child}
        if not isinstance(child, dict):
            child = {}
        node[part] = child
        node = child
    node[parts[-1]] = value


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"training": {"learning_rate": 1e-4}}`` -> ``{"training.learning_rate": 1e-4}``."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out
