"""The ipywidgets config form: generated from the dataclasses, validates inline, round-trips through YAML."""

from __future__ import annotations

import dataclasses
import html
import typing
from pathlib import Path

import ipywidgets as W
import pytest

from jupyter_ft.config import (
    DATA_FORMATS,
    QUANT_METHODS,
    SCHEDULERS,
    ConfigError,
    FineTuneConfig,
)
from jupyter_ft.widgets.clipboard import ClipboardButton
from jupyter_ft.widgets.form import ConfigForm

EXPERT = Path(__file__).resolve().parents[1] / "examples" / "compute"

# Every field differs from its default (checked below), so the round trip covers every widget kind.
NON_DEFAULT = {
    "model": {"name": "HuggingFaceTB/SmolLM2-360M-Instruct", "revision": "main", "trust_remote_code": True},
    "data": {
        "source": "data/tickets.jsonl",
        "format": "prompt_completion",
        "columns": {"prompt": "question", "completion": "answer"},
        "eval_split": 0.2,
        "max_length": 256,
        "packing": True,
        "completion_only_loss": False,
        "system_prompt": "You route support tickets.\nAnswer with one word.",
        "eval_source": "data/eval.jsonl",
    },
    "lora": {"r": 8, "alpha": 16, "dropout": 0.1, "target_modules": ["q_proj", "v_proj"], "use_dora": True,
             "use_rslora": True},
    "quantization": {"method": "none", "double_quant": False, "quant_storage": "bfloat16"},
    "training": {
        "learning_rate": 3e-5,
        "epochs": 2.5,
        "max_steps": 40,
        "batch_size": 4,
        "grad_accum": 2,
        "warmup": 10,
        "scheduler": "linear",
        "weight_decay": 0.01,
        "max_grad_norm": 0.5,
        "seed": 7,
        "eval_every": 20,
        "save_every": 40,
        "logging_every": 1,
        "gradient_checkpointing": True,
        "optimizer": "paged_adamw_8bit",
        "on_nonfinite": "skip",
        "report_to": ["mlflow"],
    },
    "output": {"root": "runs", "name": "tickets-v2"},
    "probes": {
        "overfitting": False,
        "patience": 3,
        "rise_threshold": 0.2,
        "gap_ratio": 2.0,
        "early_stop": True,
        "forgetting": False,
        "forgetting_items": 64,
        "forgetting_every": 3,
        "kl_prompts": 16,
        "kl_mild": 0.05,
        "kl_severe": 0.3,
        "loglik_mild": 0.1,
        "loglik_severe": 0.5,
        "probe_file": "probes/mine.jsonl",
    },
    "compute": {
        "launcher": "accelerate", "processes": 2, "devices": [0, 1], "strategy": "deepspeed", "zero_stage": 3,
        "offload": "cpu", "nodes": 2, "node_rank": 1, "rdzv_endpoint": "10.0.0.1:29500",
        "deepspeed_config": str(EXPERT / "zero3_offload.json"),
        "accelerate_config": str(EXPERT / "accelerate_two_nodes.yaml"),
    },
}


def all_paths() -> list[str]:
    hints = typing.get_type_hints(FineTuneConfig)
    return [
        f"{s.name}.{f.name}" for s in dataclasses.fields(FineTuneConfig) for f in dataclasses.fields(hints[s.name])
    ]


def shown(form: ConfigForm, path: str) -> str:
    return html.unescape(form.errors_html[path].value)


def problem_text(**overrides) -> list[str]:
    with pytest.raises(ConfigError) as info:
        FineTuneConfig.from_dict({}, **overrides)
    return [str(p) for p in info.value.problems]


def test_every_field_of_every_section_has_a_widget():
    form = ConfigForm()
    assert sorted(form.fields) == sorted(all_paths())
    assert form.sections.titles == ("Model", "Data", "LoRA", "Quantization", "Training", "Output", "Probes", "Compute")
    assert len(form.sections.children) == len(dataclasses.fields(FineTuneConfig))
    assert all(isinstance(form.errors_html[path], W.HTML) for path in form.fields)
    f = form.fields
    assert isinstance(f["model.trust_remote_code"], W.Checkbox)
    assert isinstance(f["data.format"], W.Dropdown) and tuple(f["data.format"].options) == DATA_FORMATS
    assert tuple(f["quantization.method"].options) == QUANT_METHODS
    assert tuple(f["training.scheduler"].options) == SCHEDULERS
    assert isinstance(f["training.batch_size"], W.IntText)
    assert f["training.learning_rate"].value == "2e-4"  # readable, not 0.0002
    assert f["training.max_steps"].value == "" and f["model.revision"].value == ""
    assert f["lora.target_modules"].value == "all-linear"
    assert f["data.source"].value == "demo:support_tickets"
    assert form.valid and not form.launch_button.disabled and not form.copy_button.disabled
    # every field widget is actually inside the displayed tree
    def walk(w):
        yield w
        for c in getattr(w, "children", ()):
            yield from walk(c)
    inside = {id(w) for w in walk(form.widget)}
    assert all(id(w) in inside for w in form.fields.values())


@pytest.mark.parametrize("source", ["defaults", "non-default"])
def test_round_trip_form_yaml_form(source):
    config = FineTuneConfig() if source == "defaults" else FineTuneConfig.from_dict(NON_DEFAULT)
    if source == "non-default":
        default = FineTuneConfig()
        for path in all_paths():
            section, name = path.split(".")
            assert getattr(getattr(config, section), name) != getattr(getattr(default, section), name), path
    form = ConfigForm(config)
    assert form.config == config
    text = form.to_cell_text()
    assert text.startswith("%%finetune\n")
    again = ConfigForm.from_yaml(text.split("\n", 1)[1])
    assert again.config == config
    assert again.values() == form.values()
    assert FineTuneConfig.from_yaml(text.split("\n", 1)[1]) == config


@pytest.mark.parametrize("modules", ["all-linear", ["q_proj"], ["q_proj", "k_proj", "v_proj"], "q_proj|v_proj"])
def test_target_modules_round_trip(modules):
    config = FineTuneConfig.from_dict({"lora": {"target_modules": modules}})
    assert ConfigForm(config).config.lora.target_modules == modules


def test_number_text_keeps_value_and_type():
    form = ConfigForm()
    for text, expected in [("1e-4", 1e-4), ("0.00025", 0.00025), ("5e-06", 5e-6), (" 0.001 ", 0.001)]:
        form.fields["training.learning_rate"].value = text
        assert form.config.training.learning_rate == expected
    form.fields["training.warmup"].value = "10"  # whole steps stay an int
    assert form.config.training.warmup == 10 and isinstance(form.config.training.warmup, int)
    form.set_config(FineTuneConfig.from_dict({"training": {"learning_rate": 1.5e-5, "epochs": 3}}))
    assert form.fields["training.learning_rate"].value == "1.5e-5"
    assert form.fields["training.epochs"].value == "3"


def test_editing_a_widget_updates_config():
    form = ConfigForm()
    f = form.fields
    f["training.batch_size"].value = 4
    f["training.learning_rate"].value = "1e-4"
    f["training.max_steps"].value = "25"
    f["training.scheduler"].value = "linear"
    f["data.columns"].value = "prompt=question, completion=answer"
    f["data.packing"].value = True
    f["model.revision"].value = "v1"
    f["lora.target_modules"].value = "q_proj, v_proj"
    c = form.config
    assert (c.training.batch_size, c.training.learning_rate, c.training.max_steps) == (4, 1e-4, 25)
    assert c.training.scheduler == "linear" and c.data.packing is True and c.model.revision == "v1"
    assert c.data.columns == {"prompt": "question", "completion": "answer"}
    assert c.lora.target_modules == ["q_proj", "v_proj"]
    f["training.max_steps"].value = ""
    f["model.revision"].value = ""
    f["data.columns"].value = '{"prompt": "the question"}'  # JSON for names with spaces
    c = form.config
    assert c.training.max_steps is None and c.model.revision is None
    assert c.data.columns == {"prompt": "the question"}
    assert form.values()["training"]["batch_size"] == 4
    assert ConfigForm(c).config == c


@pytest.mark.parametrize(
    "path, value, widget_value, fixed",
    [
        ("training.batch_size", 0, 0, 8),
        ("training.learning_rate", -1, "-1", "2e-4"),
        ("data.eval_split", 2.0, "2.0", "0.1"),
        ("lora.r", 0, 0, 16),
    ],
)
def test_invalid_value_shows_exact_message_inline_and_disables_launch(path, value, widget_value, fixed):
    calls = []
    form = ConfigForm(on_launch=calls.append)
    expected = problem_text(**{path: value})
    assert len(expected) == 1
    form.fields[path].value = widget_value
    assert form.errors(path) == expected
    assert expected[0] in shown(form, path)
    assert form.errors_html[path].layout.display != "none"
    assert all(not form.errors(p) and not form.errors_html[p].value for p in form.fields if p != path)
    assert "1 problem" in form.summary.value and path in form.summary.value
    assert form.launch_button.disabled and form.copy_button.disabled and not form.valid
    with pytest.raises(ConfigError):
        form.config
    with pytest.raises(ConfigError):
        form.launch()
    form.launch_button.click()  # disabled in the browser; even if called, nothing launches
    assert calls == []

    form.fields[path].value = fixed
    assert form.errors(path) == [] and form.errors_html[path].value == ""
    assert form.valid and not form.launch_button.disabled and not form.copy_button.disabled
    assert form.config == FineTuneConfig()


def test_text_that_is_not_a_number_is_reported_with_its_path():
    form = ConfigForm()
    form.fields["training.learning_rate"].value = "abc"
    assert form.errors("training.learning_rate") == problem_text(**{"training.learning_rate": "abc"})
    assert ">training.learning_rate: must be a number (got 'abc')" in shown(form, "training.learning_rate")
    form.fields["training.max_steps"].value = "ten"
    assert "training.max_steps: must be a whole number (got 'ten')" in shown(form, "training.max_steps")
    form.fields["data.columns"].value = "question"
    assert ">data.columns: must map roles to column names" in shown(form, "data.columns")
    form.fields["data.columns"].value = "question=prompt"
    assert ">data.columns.question: unknown key" in shown(form, "data.columns")  # nested path, same field
    assert form.launch_button.disabled and "3 problems" in form.summary.value
    assert "Training  (2 problems)" in form.sections.titles


def test_launch_calls_on_launch_with_the_config():
    calls = []
    form = ConfigForm(FineTuneConfig.from_dict(NON_DEFAULT), on_launch=lambda c: calls.append(c) or "run-1")
    form.fields["training.seed"].value = 123
    form.launch_button.click()
    assert len(calls) == 1 and isinstance(calls[0], FineTuneConfig)
    assert calls[0] == form.config and calls[0].training.seed == 123
    assert form.last_result == "run-1" and "run-1" in form.status.value


def test_launch_failure_is_shown_not_raised():
    def boom(_config):
        raise RuntimeError("no GPU <here>")

    form = ConfigForm(on_launch=boom)
    form.launch_button.click()
    assert "Launch failed: RuntimeError: no GPU &lt;here&gt;" in form.status.value


def test_copy_as_finetune_cell():
    config = FineTuneConfig.from_dict(NON_DEFAULT)
    form = ConfigForm(config)
    assert isinstance(form.copy_button, ClipboardButton)
    assert form.copy_button.text == form.to_cell_text()  # kept current, so a browser click copies at once
    assert form.cell_text.layout.display == "none"
    form.copy_button.click()
    text = form.cell_text.value
    assert text.startswith("%%finetune\n") and form.cell_text.disabled
    assert form.cell_text.layout.display != "none"
    assert FineTuneConfig.from_yaml(text.split("\n", 1)[1]) == config
    # the browser's click arrives as a custom message
    form.cell_text.value = ""
    form.copy_button._handle_frontend_msg(form.copy_button, {"event": "click"}, [])
    assert form.cell_text.value == text
    before = form.copy_button.request
    assert form.copy() == text and form.copy_button.request == before + 1
    form.copy_button.status = "not copied: NotAllowedError"
    assert "select the text below" in form.status.value
    form.fields["training.seed"].value = 1
    assert "seed: 1\n" in form.copy_button.text and form.cell_text.layout.display == "none"
    assert 'navigator.clipboard.writeText(model.get("text"))' in form.copy_button._esm


def test_in_memory_source_survives_the_form():
    rows = [{"prompt": "2+2?", "completion": "4"}, {"prompt": "3+3?", "completion": "6"}]
    config = FineTuneConfig.from_dict({"data": {"source": rows}, "training": {"batch_size": 2}})
    form = ConfigForm(config)
    widget = form.fields["data.source"]
    assert widget.value == "<in-memory list>" and widget.disabled
    assert form.values()["data"]["source"] is rows
    form.fields["training.seed"].value = 5
    assert form.config.data.source is rows and form.config.training.batch_size == 2
    again = ConfigForm(form.config)
    assert again.config.data.source is rows
    assert "in memory" in form.summary.value
    assert "<in-memory list>" in form.to_cell_text()
    # "use a path" drops the object and lets the user type a path
    form._fields["data.source"].release.click()
    assert not widget.disabled and form.errors("data.source")[0].startswith("data.source: is required")
    widget.value = "data.jsonl"
    assert form.config.data.source == "data.jsonl"


def test_path_source_is_kept_until_edited():
    config = FineTuneConfig.from_dict({"data": {"source": Path("data/train.jsonl")}})
    form = ConfigForm(config)
    assert form.fields["data.source"].value == "data/train.jsonl" and not form.fields["data.source"].disabled
    assert form.config.data.source == Path("data/train.jsonl")
    form.fields["data.source"].value = "data/other.jsonl"
    assert form.config.data.source == "data/other.jsonl"


def test_set_config_refills_and_revalidates():
    form = ConfigForm()
    form.fields["training.batch_size"].value = 0
    assert not form.valid
    config = FineTuneConfig.from_dict(NON_DEFAULT)
    form.set_config(config)
    assert form.valid and form.config == config and form.errors_html["training.batch_size"].value == ""
    # a config built directly (unvalidated) shows its problems instead of failing
    bad = FineTuneConfig()
    bad.training.scheduler = "cosin"
    form.set_config(bad)
    assert form.errors("training.scheduler") == problem_text(**{"training.scheduler": "cosin"})


def test_from_yaml_and_display():
    form = ConfigForm.from_yaml("training:\n  learning_rate: 5e-5\nquantization: none\n")
    assert form.config.training.learning_rate == 5e-5 and form.config.quantization.method == "none"
    with pytest.raises(ConfigError):
        ConfigForm.from_yaml("trainig:\n  epochs: 1\n")
    bundle = form._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert isinstance(form.widget, W.VBox) and repr(form) == "<ConfigForm valid>"
