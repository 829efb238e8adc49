"""The configuration: building it every supported way, validation messages, YAML round trips, light import."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from jupyter_ft.config import (
    BUILTIN_MODEL,
    ComputeConfig,
    ConfigError,
    DataConfig,
    FineTuneConfig,
    LoraSettings,
    ModelConfig,
    OutputConfig,
    ProbesConfig,
    Problem,
    QuantizationConfig,
    TrainingConfig,
)

REPO = Path(__file__).resolve().parents[1]
EXPERT = REPO / "examples" / "compute"  # the pass-through files for experts (compute.deepspeed_config, ...)


def problems_of(data=None, **overrides) -> list[str]:
    with pytest.raises(ConfigError) as info:
        FineTuneConfig.from_dict(data, **overrides)
    return [str(p) for p in info.value.problems]


def yaml_problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        FineTuneConfig.from_yaml(text)
    return [str(p) for p in info.value.problems]


# --------------------------------------------------------------------------- defaults and construction
def test_defaults_are_valid_and_documented_values():
    config = FineTuneConfig()
    assert config.problems() == []
    assert config.validate() is config
    assert config.model.name == BUILTIN_MODEL
    assert config.data.source == "demo:support_tickets"
    assert config.data.format == "auto"
    assert config.data.completion_only_loss is True
    assert config.quantization.method == "4bit-nf4"
    assert config.training.learning_rate == 2e-4
    assert config.lora.target_modules == "all-linear"


@pytest.mark.parametrize("text", ["", "   \n", "# only a comment\n", "null\n"])
def test_empty_yaml_gives_defaults(text):
    assert FineTuneConfig.from_yaml(text) == FineTuneConfig()


def test_from_dict_empty_and_none_give_defaults():
    assert FineTuneConfig.from_dict({}) == FineTuneConfig()
    assert FineTuneConfig.from_dict(None) == FineTuneConfig()
    assert FineTuneConfig.from_dict({"training": None}) == FineTuneConfig()


def test_from_yaml_reads_every_section():
    config = FineTuneConfig.from_yaml(
        """
model:
  name: HuggingFaceTB/SmolLM2-360M-Instruct
  revision: main
data:
  source: tickets.jsonl
  format: alpaca
  columns: {output: label}
  eval_split: 0.2
  max_length: 256
lora:
  r: 8
  alpha: 16
  target_modules: [q_proj, v_proj]
quantization:
  method: 8bit
training:
  learning_rate: 2e-4
  max_steps: 30
  scheduler: linear
output:
  root: runs
  name: first
"""
    )
    assert config.model == ModelConfig(name="HuggingFaceTB/SmolLM2-360M-Instruct", revision="main")
    assert config.data == DataConfig(source="tickets.jsonl", format="alpaca", columns={"output": "label"},
                                     eval_split=0.2, max_length=256)
    assert config.lora == LoraSettings(r=8, alpha=16, target_modules=["q_proj", "v_proj"])
    assert config.quantization == QuantizationConfig(method="8bit")
    assert config.training == TrainingConfig(learning_rate=2e-4, max_steps=30, scheduler="linear")
    assert config.output == OutputConfig(root="runs", name="first")


@pytest.mark.parametrize(
    "written, expected",
    [("2e-4", 2e-4), ("2E-4", 2e-4), ("1e-5", 1e-5), ("+3e-4", 3e-4), ("1.5e-4", 1.5e-4), ("5.0e-5", 5e-5),
     ("1e0", 1.0), ("0.001", 0.001)],
)
def test_yaml_exponent_without_dot_is_a_float(written, expected):
    config = FineTuneConfig.from_yaml(f"training:\n  learning_rate: {written}\n")
    assert isinstance(config.training.learning_rate, float)
    assert config.training.learning_rate == pytest.approx(expected)


def test_yaml_exponent_float_in_an_int_field_is_reported_not_coerced():
    assert yaml_problems("training:\n  batch_size: 1e1\n") == [
        "training.batch_size: must be a whole number (got 10.0). Lower it if you run out of memory"
    ]


def test_shorthand_quantization_and_model():
    config = FineTuneConfig.from_yaml("model: some/path\nquantization: none\n")
    assert config.model == ModelConfig(name="some/path")
    assert config.quantization == QuantizationConfig(method="none", double_quant=True)
    assert FineTuneConfig.from_dict({"quantization": "8bit"}).quantization.method == "8bit"


def test_shorthand_sections_accept_dotted_overrides():
    config = FineTuneConfig.from_yaml("model: some/path\nquantization: none\n",
                                      **{"model.revision": "v2", "quantization.double_quant": False})
    assert config.model == ModelConfig(name="some/path", revision="v2")
    assert config.quantization == QuantizationConfig(method="none", double_quant=False)


def test_keyword_overrides_double_underscore_and_dotted():
    a = FineTuneConfig.from_dict(training__learning_rate=1e-4, data__max_length=128)
    b = FineTuneConfig.from_dict(**{"training.learning_rate": 1e-4, "data.max_length": 128})
    assert a == b
    assert a.training.learning_rate == 1e-4
    assert a.data.max_length == 128
    assert a.training.batch_size == TrainingConfig().batch_size  # the rest of the section stays default


def test_overrides_win_over_yaml_and_keep_sibling_keys():
    config = FineTuneConfig.from_yaml("training:\n  learning_rate: 3e-4\n  batch_size: 4\n",
                                      training__learning_rate=1e-5)
    assert config.training.learning_rate == 1e-5
    assert config.training.batch_size == 4


def test_overrides_are_validated_with_their_dotted_path():
    assert problems_of(training__batch_size=0) == [
        "training.batch_size: must be >= 1 (got 0). Lower it if you run out of memory"
    ]
    assert problems_of(**{"trainig.seed": 1}) == ["trainig: unknown key. Did you mean 'training'?"]


def test_from_dict_does_not_mutate_its_input():
    data = {"training": {"learning_rate": 1e-3}, "model": "some/path"}
    FineTuneConfig.from_dict(data, training__learning_rate=1e-4, **{"model.revision": "v1"})
    assert data == {"training": {"learning_rate": 1e-3}, "model": "some/path"}


def test_replace_returns_a_validated_copy():
    base = FineTuneConfig.from_dict(training__seed=1)
    new = base.replace(training__learning_rate=5e-5, **{"lora.r": 8})
    assert new.training.learning_rate == 5e-5 and new.lora.r == 8 and new.training.seed == 1
    assert base.training.learning_rate == 2e-4 and base.lora.r == 16  # the original is untouched
    with pytest.raises(ConfigError) as info:
        base.replace(training__scheduler="cosin")
    assert [str(p) for p in info.value.problems] == [
        "training.scheduler: is not a valid choice (got 'cosin'). Did you mean 'cosine'?"
    ]


def test_replace_keeps_in_memory_sources_by_identity():
    rows = [{"text": "hello"}]
    config = FineTuneConfig.from_dict({"data": {"source": rows, "eval_source": rows}})
    new = config.replace(training__seed=3)
    assert new.data.source is rows
    assert new.data.eval_source is rows


def test_validate_on_a_directly_built_config():
    config = FineTuneConfig(training=TrainingConfig(batch_size=0), lora=LoraSettings(r=0))
    with pytest.raises(ConfigError) as info:
        config.validate()
    assert [p.path for p in info.value.problems] == ["lora.r", "training.batch_size"]


# --------------------------------------------------------------------------- serialisation
def non_default_config() -> FineTuneConfig:
    return FineTuneConfig(
        model=ModelConfig(name="org/model-1b", revision="refs/pr/3", trust_remote_code=True),
        data=DataConfig(source="data/train.jsonl", format="alpaca", columns={"instruction": "q", "output": "a"},
                        eval_split=0.25, max_length=1024, packing=True, completion_only_loss=False,
                        system_prompt="Answer in one word.", eval_source="data/eval.jsonl"),
        lora=LoraSettings(r=8, alpha=24, dropout=0.0, target_modules=["q_proj", "v_proj"], use_dora=True,
                          use_rslora=True),
        quantization=QuantizationConfig(method="none", double_quant=False, quant_storage="bfloat16"),
        training=TrainingConfig(learning_rate=1e-5, epochs=3.0, max_steps=200, batch_size=4, grad_accum=2,
                                warmup=10, scheduler="cosine_with_restarts", weight_decay=0.01,
                                max_grad_norm=0.5, seed=7, eval_every=20, save_every=40, logging_every=1,
                                gradient_checkpointing=True, optimizer="adamw_8bit", on_nonfinite="skip",
                                report_to=["mlflow"]),
        output=OutputConfig(root="/tmp/my-runs", name="exp-1"),
        probes=ProbesConfig(overfitting=False, patience=3, rise_threshold=0.2, gap_ratio=2.0, early_stop=True,
                            forgetting=False, forgetting_items=64, forgetting_every=3, kl_prompts=16, kl_mild=0.05,
                            kl_severe=0.3, loglik_mild=0.1, loglik_severe=0.5, probe_file="probes/mine.jsonl"),
        compute=ComputeConfig(launcher="accelerate", processes=2, devices=[0, 1], strategy="deepspeed", zero_stage=3,
                              offload="cpu", nodes=2, node_rank=1, rdzv_endpoint="10.0.0.1:29500",
                              deepspeed_config=str(EXPERT / "zero3_offload.json"),
                              accelerate_config=str(EXPERT / "accelerate_two_nodes.yaml")),
    )


def test_non_default_config_differs_from_defaults_in_every_field():
    config, default = non_default_config().validate(), FineTuneConfig()
    for section in ("model", "data", "lora", "quantization", "training", "output", "probes", "compute"):
        for key, value in vars(getattr(config, section)).items():
            assert value != getattr(getattr(default, section), key), f"{section}.{key} is still the default"


@pytest.mark.parametrize("config", [FineTuneConfig(), non_default_config()], ids=["defaults", "non-defaults"])
def test_to_yaml_round_trips(config):
    text = config.to_yaml()
    back = FineTuneConfig.from_yaml(text)
    assert back == config
    assert back.to_yaml() == text
    assert yaml.safe_load(text) == config.to_dict()  # plain YAML readers see the same values


def test_to_yaml_keeps_section_order_and_floats():
    text = non_default_config().to_yaml()
    assert [line for line in text.splitlines() if not line.startswith(" ")] == [
        "model:", "data:", "lora:", "quantization:", "training:", "output:", "probes:", "compute:"
    ]
    assert isinstance(yaml.safe_load(text)["training"]["learning_rate"], float)


@pytest.mark.parametrize("value", ["1e5", "2e-4", "3E10", "1.5e3"])
def test_to_yaml_round_trips_strings_that_look_like_exponent_floats(value):
    config = FineTuneConfig.from_dict({"model": {"revision": value}, "output": {"name": value}})
    back = FineTuneConfig.from_yaml(config.to_yaml())
    assert back.model.revision == value and back.output.name == value


def test_to_dict_names_in_memory_sources_and_keeps_paths():
    rows = [{"text": "hi"}]
    out = FineTuneConfig.from_dict({"data": {"source": rows, "eval_source": rows}}).to_dict()
    assert out["data"]["source"] == "<in-memory list>"
    assert out["data"]["eval_source"] == "<in-memory list>"
    config = FineTuneConfig.from_dict({"data": {"source": Path("data/train.jsonl"), "eval_source": Path("ev.csv")}})
    assert config.to_dict()["data"]["source"] == str(Path("data/train.jsonl"))
    assert FineTuneConfig.from_yaml(config.to_yaml()).data.eval_source == "ev.csv"


# --------------------------------------------------------------------------- validation messages
LR_HINT = "LoRA usually trains well between 1e-5 and 1e-3"
BS_HINT = "Lower it if you run out of memory"

BAD = [
    # wrong types
    ({"training": {"learning_rate": "fast"}}, f"training.learning_rate: must be a number (got 'fast'). {LR_HINT}"),
    ({"training": {"learning_rate": True}}, f"training.learning_rate: must be a number (got True). {LR_HINT}"),
    ({"training": {"learning_rate": math.nan}}, f"training.learning_rate: must be a number (got nan). {LR_HINT}"),
    ({"training": {"learning_rate": None}}, f"training.learning_rate: must be a number. {LR_HINT}"),
    ({"training": {"batch_size": 8.5}}, f"training.batch_size: must be a whole number (got 8.5). {BS_HINT}"),
    ({"training": {"batch_size": "8"}}, f"training.batch_size: must be a whole number (got '8'). {BS_HINT}"),
    ({"training": {"grad_accum": True}}, "training.grad_accum: must be a whole number (got True)"),
    ({"training": {"gradient_checkpointing": "yes"}},
     "training.gradient_checkpointing: must be true or false (got 'yes')"),
    ({"data": {"packing": 1}}, "data.packing: must be true or false (got 1)"),
    ({"data": {"completion_only_loss": "no"}}, "data.completion_only_loss: must be true or false (got 'no')"),
    ({"data": {"system_prompt": 3}}, "data.system_prompt: must be a string (got 3)"),
    ({"model": {"name": ""}}, f"model.name: must be a non-empty string (got ''). Use a hub id, a local directory, "
                              f"a .gguf file or '{BUILTIN_MODEL}'"),
    ({"model": {"revision": 5}}, "model.revision: must be a string (got 5)"),
    ({"model": {"trust_remote_code": "true"}}, "model.trust_remote_code: must be true or false (got 'true')"),
    ({"quantization": {"double_quant": None}}, "quantization.double_quant: must be true or false"),
    ({"lora": {"target_modules": []}},
     "lora.target_modules: must be 'all-linear' or a list of module names (got []). e.g. [q_proj, v_proj]"),
    ({"lora": {"target_modules": ["q_proj", 3]}},
     "lora.target_modules: must be 'all-linear' or a list of module names (got ['q_proj', 3]). e.g. [q_proj, v_proj]"),
    ({"output": {"root": "  "}}, "output.root: must be a non-empty string (got '  ')"),
    ({"output": {"name": ""}}, "output.name: must be a non-empty string (got '')"),
    ({"data": {"source": ""}}, "data.source: is required (got ''). Give a file (.jsonl/.json/.csv/.parquet), "
                               "a datasets directory, a DataFrame or 'demo:support_tickets'"),
    ({"data": {"source": None}}, "data.source: is required. Give a file (.jsonl/.json/.csv/.parquet), "
                                 "a datasets directory, a DataFrame or 'demo:support_tickets'"),
    # out of range
    ({"training": {"learning_rate": 0}}, f"training.learning_rate: must be > 0 (got 0). {LR_HINT}"),
    ({"training": {"learning_rate": -1e-3}}, f"training.learning_rate: must be > 0 (got -0.001). {LR_HINT}"),
    ({"training": {"learning_rate": 2}}, f"training.learning_rate: must be <= 1 (got 2). {LR_HINT}"),
    ({"training": {"batch_size": 0}}, f"training.batch_size: must be >= 1 (got 0). {BS_HINT}"),
    ({"training": {"batch_size": 5000}}, f"training.batch_size: must be <= 4096 (got 5000). {BS_HINT}"),
    ({"training": {"epochs": 0}}, "training.epochs: must be > 0 (got 0). Set epochs > 0 or give training.max_steps"),
    ({"training": {"max_steps": 0}}, "training.max_steps: must be >= 1 (got 0). Use null to train for training.epochs"),
    ({"training": {"warmup": -1}}, "training.warmup: must be a ratio in [0, 1) or a whole number of steps (got -1)"),
    ({"training": {"warmup": 1.5}}, "training.warmup: must be a ratio in [0, 1) or a whole number of steps (got 1.5)"),
    ({"training": {"warmup": math.nan}},
     "training.warmup: must be a ratio in [0, 1) or a whole number of steps (got nan)"),
    ({"training": {"warmup": "10%"}},
     "training.warmup: must be a ratio in [0, 1) or a whole number of steps (got '10%')"),
    ({"training": {"weight_decay": 1.5}}, "training.weight_decay: must be <= 1 (got 1.5)"),
    ({"training": {"max_grad_norm": -1}}, "training.max_grad_norm: must be >= 0 (got -1)"),
    ({"training": {"seed": -1}}, "training.seed: must be >= 0 (got -1)"),
    ({"training": {"eval_every": 0}}, "training.eval_every: must be >= 1 (got 0). A number of optimizer steps"),
    ({"training": {"save_every": 0}}, "training.save_every: must be >= 1 (got 0). A number of optimizer steps"),
    ({"training": {"logging_every": -5}}, "training.logging_every: must be >= 1 (got -5). A number of optimizer steps"),
    ({"data": {"eval_split": 0.95}}, "data.eval_split: must be <= 0.9 (got 0.95). Use a fraction such as 0.1, "
                                     "or 0 to skip evaluation"),
    ({"data": {"eval_split": -0.1}}, "data.eval_split: must be >= 0 (got -0.1). Use a fraction such as 0.1, "
                                     "or 0 to skip evaluation"),
    ({"data": {"max_length": 8}}, "data.max_length: must be >= 16 (got 8). Typical values are 256-2048 tokens"),
    ({"lora": {"r": 0}}, "lora.r: must be >= 1 (got 0). Common ranks are 8, 16, 32, 64"),
    ({"lora": {"r": 2048}}, "lora.r: must be <= 1024 (got 2048). Common ranks are 8, 16, 32, 64"),
    ({"lora": {"alpha": 0}}, "lora.alpha: must be > 0 (got 0). Usually 2 x r"),
    ({"lora": {"dropout": 1.0}}, "lora.dropout: must be <= 0.9 (got 1.0). A probability such as 0.05, or auto"),
    # bad choices, with a did-you-mean when one is close
    ({"quantization": "4bit"}, "quantization.method: is not a valid choice (got '4bit'). Did you mean '4bit-nf4'?"),
    ({"quantization": {"method": "8-bit"}},
     "quantization.method: is not a valid choice (got '8-bit'). Did you mean '8bit'?"),
    ({"quantization": {"method": "int4"}},
     "quantization.method: is not a valid choice (got 'int4'). Choose one of: 4bit-nf4, 8bit, none"),
    ({"training": {"scheduler": "cosin"}}, "training.scheduler: is not a valid choice (got 'cosin'). "
                                           "Did you mean 'cosine'?"),
    ({"training": {"scheduler": "lineer"}}, "training.scheduler: is not a valid choice (got 'lineer'). "
                                            "Did you mean 'linear'?"),
    ({"training": {"scheduler": "exponential"}},
     "training.scheduler: is not a valid choice (got 'exponential'). Choose one of: linear, cosine, constant, "
     "constant_with_warmup, cosine_with_restarts, polynomial"),
    ({"data": {"format": "alpacca"}}, "data.format: is not a valid choice (got 'alpacca'). Did you mean 'alpaca'?"),
    ({"data": {"format": "prompt"}},
     "data.format: is not a valid choice (got 'prompt'). Did you mean 'prompt_completion'?"),
    ({"data": {"format": "sharegpt"}}, "data.format: is not a valid choice (got 'sharegpt'). "
                                       "Choose one of: auto, alpaca, chat, prompt_completion, text"),
    # unknown sections and keys
    ({"trainig": {}}, "trainig: unknown key. Did you mean 'training'?"),
    ({"optimizer": {}}, "optimizer: unknown key. Known keys: compute, data, lora, model, output, probes, quantization, training"),
    ({1: 2}, "1: unknown key. Known keys: compute, data, lora, model, output, probes, quantization, training"),
    ({"training": {"learning_rat": 1e-4}}, "training.learning_rat: unknown key. Did you mean 'learning_rate'?"),
    ({"training": {"lr": 1e-4}}, "training.lr: unknown key. Known keys: batch_size, epochs, eval_every, grad_accum, "
                                 "gradient_checkpointing, learning_rate, logging_every, max_grad_norm, max_steps, "
                                 "on_nonfinite, optimizer, report_to, save_every, scheduler, seed, warmup, weight_decay"),
    ({"lora": {"rank": 8}}, "lora.rank: unknown key. Known keys: alpha, dropout, r, target_modules, use_dora, "
                            "use_rslora"),
    ({"model": {"nme": "x"}}, "model.nme: unknown key. Did you mean 'name'?"),
    ({"training": [1, 2]}, "training: must be a mapping of fields (got [1, 2]). Fields: learning_rate, epochs, "
                           "max_steps, batch_size, grad_accum, warmup, scheduler, weight_decay, max_grad_norm, seed, "
                           "eval_every, save_every, logging_every, gradient_checkpointing, optimizer, on_nonfinite, report_to"),
    ({"lora": 16}, "lora: must be a mapping of fields (got 16). Fields: r, alpha, dropout, target_modules, "
                   "use_dora, use_rslora"),
    # the columns mapping
    ({"data": {"columns": {"answer": "a"}}}, "data.columns.answer: unknown key. Known keys: completion, input, "
                                             "instruction, messages, output, prompt, text"),
    ({"data": {"columns": {"outptu": "a"}}}, "data.columns.outptu: unknown key. Did you mean 'output'?"),
    ({"data": {"columns": {"output": 3}}}, "data.columns.output: must be a column name (got 3)"),
    ({"data": {"columns": {"output": ""}}}, "data.columns.output: must be a column name (got '')"),
    ({"data": {"columns": ["q", "a"]}}, "data.columns: must map roles to column names (got ['q', 'a']). Roles: "
                                        "instruction, input, output, messages, prompt, completion, text, "
                                        "e.g. {output: answer}"),
]


@pytest.mark.parametrize("data, expected", BAD, ids=[e.split(":")[0] + f"-{i}" for i, (_, e) in enumerate(BAD)])
def test_bad_value_message(data, expected):
    assert problems_of(data) == [expected]


def test_epochs_are_not_checked_when_max_steps_wins():
    assert FineTuneConfig.from_dict(training__epochs=0, training__max_steps=10).training.max_steps == 10


@pytest.mark.parametrize("warmup", [0, 0.0, 0.5, 10, 10.0])
def test_warmup_ratio_or_whole_steps_are_valid(warmup):
    assert FineTuneConfig.from_dict(training__warmup=warmup).training.warmup == warmup


def test_yaml_errors_quote_the_yaml_spelling_of_the_value():
    assert yaml_problems("quantization: 4bit\ntraining:\n  scheduler: cosin\n") == [
        "quantization.method: is not a valid choice (got '4bit'). Did you mean '4bit-nf4'?",
        "training.scheduler: is not a valid choice (got 'cosin'). Did you mean 'cosine'?",
    ]


def test_every_problem_reported_at_once():
    text = """
trainig:
  seed: 1
model:
  nme: x
data:
  format: alpacca
  columns: {answer: a}
  max_length: 8
lora:
  r: 0
quantization: 4bit
training:
  learning_rate: fast
  batch_size: 0
  scheduler: cosin
"""
    with pytest.raises(ConfigError) as info:
        FineTuneConfig.from_yaml(text)
    err = info.value
    assert isinstance(err, ValueError)
    assert [p.path for p in err.problems] == [
        "trainig", "model.nme", "data.format", "data.columns.answer", "data.max_length", "lora.r",
        "quantization.method", "training.learning_rate", "training.batch_size", "training.scheduler",
    ]
    lines = str(err).splitlines()
    assert lines[0] == "10 problem(s) in the config:"
    assert lines[1:] == [f"  - {p}" for p in err.problems]
    assert lines[1] == "  - trainig: unknown key. Did you mean 'training'?"
    assert "  - training.batch_size: must be >= 1 (got 0). Lower it if you run out of memory" in lines


def test_problems_are_structured():
    with pytest.raises(ConfigError) as info:
        FineTuneConfig.from_dict({"training": {"learning_rate": 5, "lr": 1}, "quantization": "4bit"})
    by_path = {p.path: p for p in info.value.problems}
    assert set(by_path) == {"training.lr", "quantization.method", "training.learning_rate"}
    assert all(isinstance(p, Problem) for p in info.value.problems)
    lr = by_path["training.learning_rate"]
    assert (lr.message, lr.value, lr.hint) == ("must be <= 1", 5, LR_HINT)
    q = by_path["quantization.method"]
    assert (q.message, q.value, q.hint) == ("is not a valid choice", "4bit", "Did you mean '4bit-nf4'?")
    unknown = by_path["training.lr"]
    assert unknown.message == "unknown key" and unknown.value is None
    assert unknown.hint.startswith("Known keys: batch_size, epochs")


def test_problem_str_formats():
    assert str(Problem("a.b", "is wrong")) == "a.b: is wrong"
    assert str(Problem("a.b", "is wrong", 0)) == "a.b: is wrong (got 0)"
    assert str(Problem("a.b", "is wrong", "x", "Fix it")) == "a.b: is wrong (got 'x'). Fix it"
    assert str(ConfigError([Problem("a", "b")], source="form")) == "1 problem(s) in the form:\n  - a: b"


def test_problems_method_lists_without_raising():
    config = FineTuneConfig(lora=LoraSettings(dropout=-0.5), output=OutputConfig(root=""))
    assert [str(p) for p in config.problems()] == [
        "lora.dropout: must be >= 0 (got -0.5). A probability such as 0.05, or auto",
        "output.root: must be a non-empty string (got '')",
    ]


# --------------------------------------------------------------------------- YAML syntax
def test_invalid_yaml_names_line_and_column():
    text = "training:\n  learning_rate: 1e-4\n batch_size: 4\n"
    with pytest.raises(ConfigError) as info:
        FineTuneConfig.from_yaml(text)
    err = info.value
    assert [str(p) for p in err.problems] == [
        "yaml: invalid YAML at line 3, column 2: expected <block end>, but found '<block mapping start>'. "
        "Check indentation and 'key: value' pairs"
    ]
    assert str(err).startswith("1 problem(s) in the YAML:\n")


def test_invalid_yaml_unclosed_flow_mapping():
    problems = yaml_problems("data:\n  columns: {output: a\n")
    assert len(problems) == 1
    assert problems[0].startswith("yaml: invalid YAML at line 3, column 1: ")


def test_invalid_yaml_tab_indentation():
    problems = yaml_problems("training:\n\tlearning_rate: 1e-4\n")
    assert len(problems) == 1
    assert problems[0].startswith("yaml: invalid YAML at line 2, column 1: ")


@pytest.mark.parametrize("text, kind", [("- training\n- lora\n", "list"), ("some words\n", "str"), ("42\n", "int")])
def test_non_mapping_body_is_rejected(text, kind):
    assert yaml_problems(text) == [
        f"yaml: the body must be a mapping of sections (got '{kind}'). "
        "Write e.g. 'training:\\n  learning_rate: 2e-4'"
    ]


def test_yaml_is_loaded_safely():
    problems = yaml_problems("training: !!python/object/apply:os.system ['echo hi']\n")
    assert len(problems) == 1 and problems[0].startswith("yaml: invalid YAML at line 1, column 11: ")


# --------------------------------------------------------------------------- light import
def test_importing_the_package_and_config_does_not_import_torch():
    code = (
        "import sys, jupyter_ft, jupyter_ft.config\n"
        "jupyter_ft.config.FineTuneConfig.from_yaml('training: {learning_rate: 2e-4}').to_yaml()\n"
        "heavy = sorted(m for m in ('torch', 'transformers') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


# --------------------------------------------------------------------------- bad input (issue #14)
def alias_bomb(levels: int, under: str = "training:\n  learning_rate") -> str:
    """Nine aliases of nine aliases, ``levels`` times: 9**levels values held as a few nodes."""
    lines = ["  a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"  a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "anchors:\n" + "\n".join(lines) + f"\n{under}: *a{levels - 1}\n"


def test_alias_bomb_is_refused_with_its_line_in_a_short_message():
    with pytest.raises(ConfigError) as info:
        FineTuneConfig.from_yaml(alias_bomb(7))
    assert [str(p) for p in info.value.problems] == [
        "yaml: aliases expand to more than 100000 values (at *a4) at line 7, column 12. Repeat an anchor (&name) "
        "a few times, not aliases of aliases; write the values out"
    ]
    assert len(str(info.value)) < 300  # was 52 MB: the value's repr, whole


def test_a_problem_shows_a_shortened_value():
    bomb: list = ["x"] * 9
    for _ in range(7):  # the same bomb built in Python: its repr would be 52 MB
        bomb = [bomb] * 9
    shown = str(Problem("training.learning_rate", "must be a number", bomb))
    assert shown == "training.learning_rate: must be a number (got [[[[[[[['x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', " \
                    "'x'], ['x', 'x', 'x', 'x', 'x',…)"
    assert str(Problem("a", "b", "x" * 200)) == f"a: b (got '{'x' * 78}…)"
    assert str(Problem("a", "b", list(range(100)))) == f"a: b (got {repr(list(range(100)))[:79]}…)"
    assert str(Problem("a", "b", 10**5000)) == "a: b (got <int of ~5001 digits>)"  # repr() itself would raise
    shown = problems_of(training={"learning_rate": bomb})[0]
    assert shown.startswith("training.learning_rate: must be a number (got [[[[") and len(shown) < 200


DEEP_HINT = ("A config needs only 'section: field: value'; look for brackets that are never closed or a value "
             "pasted into itself")


@pytest.mark.parametrize("text, where", [
    ('{"a": ' * 500 + "1" + "}" * 500, "line 1, column 301"),
    ("[" * 500 + "]" * 500, "line 1, column 51"),
    ("training:\n  learning_rate: " + "[" * 500 + "]" * 500 + "\n", "line 2, column 66"),
    ("".join("  " * i + "a:\n" for i in range(60)) + "  " * 60 + "1\n", "line 51, column 101"),
])
def test_yaml_nested_too_deep_is_a_config_error_naming_the_line(text, where):
    assert yaml_problems(text) == [f"yaml: lists and mappings nest deeper than 50 levels at {where}. {DEEP_HINT}"]


def test_yaml_nested_too_deep_through_aliases_is_a_config_error():
    text = "x:\n" + "".join(f"  a{i}: &a{i} [{f'*a{i - 1}' if i else 1}]\n" for i in range(60))
    assert yaml_problems(text) == [
        f"yaml: lists and mappings nest deeper than 50 levels through the alias *a47 at line 50, column 14. {DEEP_HINT}"
    ]


def test_yaml_nested_50_deep_is_still_read():
    text = "training:\n  learning_rate: " + "[" * 48 + "]" * 48 + "\n"  # 50 levels with the two mappings
    assert yaml_problems(text) == [
        "training.learning_rate: must be a number (got " + ("[" * 48 + "]" * 48)[:79] + "…). " + LR_HINT
    ]


def test_yaml_alias_inside_its_own_anchor_is_a_config_error():
    assert yaml_problems("training: &t\n  learning_rate: *t\n") == [
        "yaml: the alias *t is inside the &t it repeats (a value that contains itself) at line 2, column 18. "
        "Move *t out of the &t list or mapping"
    ]


@pytest.mark.parametrize("text, problem", [
    ("output:\n  name: 2024-13-45\n",
     "yaml: cannot read '2024-13-45' as a date (month must be in 1..12) at line 2, column 9"),
    ("probes:\n  early_stop: !!bool maybe\n", "yaml: cannot read 'maybe' as true or false at line 2, column 15"),
    ("training:\n  seed: " + "1" * 5000 + "\n",
     f"yaml: cannot read '{'1' * 38}… as a whole number (Exceeds the limit (4300 digits) for integer string "
     "conversion: value has 5000 digits) at line 2, column 9"),
])
def test_yaml_scalar_its_tag_cannot_read_is_a_config_error(text, problem):
    assert yaml_problems(text) == [f"{problem}. Fix the value, or quote it to keep it as text"]


def test_from_dict_nested_too_deep_or_containing_itself_is_a_config_error():
    deep: dict = {"x": 1}
    for _ in range(500):
        deep = {"a": deep}
    hint = "A config is 'section: field: value'; look for a mapping that contains itself"
    assert problems_of({"training": deep}) == [f"training.a: nests deeper than 50 levels of mappings. {hint}"]
    looped: dict = {}
    looped["columns"] = looped
    assert problems_of({"data": looped}) == [f"data.columns: nests deeper than 50 levels of mappings. {hint}"]
    assert problems_of(**{"data.columns": deep}) == [f"data.columns: nests deeper than 50 levels of mappings. {hint}"]


SEED_HINT = "numpy and torch take seeds below 2**32; use a smaller seed such as 42"


def test_seed_must_be_below_2_to_the_32():
    assert problems_of(training={"seed": 2**32}) == [
        f"training.seed: must be <= 4294967295 (got 4294967296). {SEED_HINT}"]
    assert yaml_problems("training:\n  seed: 99999999999999999999\n") == [
        f"training.seed: must be <= 4294967295 (got 99999999999999999999). {SEED_HINT}"]
    assert FineTuneConfig.from_dict(training={"seed": 2**32 - 1}).training.seed == 2**32 - 1


def test_numpy_scalars_become_python_values():
    np = pytest.importorskip("numpy")
    config = FineTuneConfig.from_dict({"training": {"learning_rate": np.float64(3e-4), "batch_size": np.int64(4)},
                                       "data": {"packing": np.bool_(True)}}, **{"lora.r": np.int32(8)})
    t = config.training
    assert (t.learning_rate, t.batch_size, config.data.packing, config.lora.r) == (3e-4, 4, True, 8)
    assert [type(v) for v in (t.learning_rate, t.batch_size, config.data.packing, config.lora.r)] == [
        float, int, bool, int]
    assert FineTuneConfig.from_yaml(config.to_yaml()) == config  # yaml cannot write np.float64
