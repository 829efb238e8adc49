"""Overfitting and forgetting probes: the verdict logic on hand-made histories, and live runs on the tiny model."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

import jupyter_ft
from jupyter_ft.config import ConfigError, FineTuneConfig
from jupyter_ft.probes import (ForgettingProbe, OverfittingProbe, general_prompts, is_correct, load_probe_items,
                               subset)
from jupyter_ft.store import RunStore, read_jsonl

from test_training import make_config


# --------------------------------------------------------------------------- data
def test_bundled_probe_set_is_large_and_well_formed():
    items = load_probe_items()
    assert len(items) >= 150
    cats = {i["category"] for i in items}
    assert {"geography", "science", "history", "language", "arithmetic", "common_sense"} <= cats
    assert all(i["prompt"].strip() and str(i["answer"]).strip() for i in items)
    assert len({i["prompt"] for i in items}) == len(items)
    assert len(general_prompts()) >= 30


def test_user_probe_file_is_added(tmp_path: Path):
    f = tmp_path / "mine.jsonl"
    f.write_text(json.dumps({"prompt": "Who makes our widgets?", "answer": "Acme"}) + "\n")
    items = load_probe_items(str(f))
    assert items[-1] == {"category": "user", "prompt": "Who makes our widgets?", "answer": "Acme"}
    picked = subset(items, 12, seed=3)
    assert len(picked) == 12 and picked[0]["category"] == "user"  # the user's items come first
    assert len({i["category"] for i in picked}) == 7
    assert subset(items, 12, seed=3) == picked  # deterministic
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "no answer"}) + "\n")
    with pytest.raises(ValueError, match="line 1"):
        load_probe_items(str(bad))


def test_answer_matching_is_exactish():
    assert is_correct("Paris.", "Paris")
    assert is_correct("The capital of France is Paris.", "Paris")
    assert is_correct(" 12", "12") and not is_correct("120", "12")
    assert is_correct("Carbon dioxide", "carbon dioxide") and not is_correct("Lyon", "Paris")


# --------------------------------------------------------------------------- config
def test_probes_config_defaults_and_validation():
    cfg = FineTuneConfig()
    assert cfg.probes.overfitting and cfg.probes.forgetting and not cfg.probes.early_stop
    assert cfg.probes.forgetting_items == 16 and cfg.probes.kl_prompts == 6 and cfg.probes.forgetting_every == 2
    with pytest.raises(ConfigError) as info:
        FineTuneConfig.from_dict({"probes": {"patience": 0, "kl_mild": 0.5, "kl_severe": 0.1, "gap_ratio": 0.5,
                                             "early_stop": "yes", "forgeting": True}})
    text = [str(p) for p in info.value.problems]
    assert "probes.forgeting: unknown key. Did you mean 'forgetting'?" in text
    assert any(t.startswith("probes.patience: must be >= 1") for t in text)
    assert "probes.kl_severe: must be >= probes.kl_mild (0.5) (got 0.1)" in text
    assert any(t.startswith("probes.gap_ratio: must be > 1") for t in text)
    assert "probes.early_stop: must be true or false (got 'yes')" in text
    back = FineTuneConfig.from_yaml("probes:\n  early_stop: true\n  forgetting_items: 24\n")
    assert back.probes.early_stop and back.probes.forgetting_items == 24


# --------------------------------------------------------------------------- overfitting logic
def hist(points):
    """(step, train_loss, eval_loss) -> a run history, one train log and one eval log per point."""
    out = []
    for step, train, ev in points:
        out.append({"step": step, "loss": train})
        out.append({"step": step, "eval_loss": ev})
    return out


def test_overfitting_verdicts_on_synthetic_histories():
    probe = OverfittingProbe(patience=2, rise_threshold=0.1, gap_ratio=1.5)
    assert probe.verdict([])["status"] == "ok"
    # improving: ok, best is the last
    v = probe.verdict(hist([(10, 2.0, 2.1), (20, 1.8, 1.9), (30, 1.6, 1.7)]))
    assert v["status"] == "ok" and v["best_step"] == 30 and v["best_eval_loss"] == 1.7
    assert v["gap"] == pytest.approx(0.1) and v["gap_ratio"] == pytest.approx(1.7 / 1.6)
    # one small rise: still ok
    v = probe.verdict(hist([(10, 2.0, 2.0), (20, 1.8, 1.8), (30, 1.7, 1.82)]))
    assert v["status"] == "ok" and v["rising_for"] == 1 and v["since_best"] == 1
    # two small rises while train falls: suspected (rise 2.2% < 10%, ratio 1.2 < 1.5)
    v = probe.verdict(hist([(10, 2.0, 2.0), (20, 1.8, 1.8), (30, 1.7, 1.82), (40, 1.5, 1.84)]))
    assert v["status"] == "suspected" and v["rising_for"] == 2 and v["best_step"] == 20
    assert "lower the learning rate" in v["suggestion"]
    # two rises but the train loss rose as well: not suspected
    v = probe.verdict(hist([(10, 2.0, 2.0), (20, 1.8, 1.8), (30, 1.9, 1.82), (40, 2.0, 1.84)]))
    assert v["status"] == "ok"
    # a 20% rise over the best: overfitting
    v = probe.verdict(hist([(10, 2.0, 2.0), (20, 1.5, 1.5), (30, 1.2, 1.8)]))
    assert v["status"] == "overfitting" and v["rise"] == pytest.approx(0.2) and v["best_step"] == 20
    assert "learning_rate" in v["suggestion"] and "dropout" in v["suggestion"]
    # gap ratio past the bound (rise only 5%): overfitting
    v = probe.verdict(hist([(10, 1.0, 1.0), (20, 0.9, 1.0), (30, 0.6, 1.05)]))
    assert v["status"] == "overfitting" and v["gap_ratio"] == pytest.approx(1.75) and "1.75x" in v["message"]
    # a big gap while eval still improves is not flagged
    v = probe.verdict(hist([(10, 1.0, 2.0), (20, 0.5, 1.9)]))
    assert v["status"] == "ok"
    # early stopping: flagged, or `patience` evaluations without a new best
    assert probe.should_stop({"status": "suspected", "since_best": 2})
    assert probe.should_stop({"status": "ok", "since_best": 2})
    assert not probe.should_stop({"status": "ok", "since_best": 1})


def test_train_loss_is_averaged_between_evaluations():
    history = [{"step": 1, "loss": 3.0}, {"step": 2, "loss": 1.0}, {"step": 2, "eval_loss": 2.5},
               {"step": 3, "loss": 1.0}, {"step": 3, "eval_loss": 2.0}]
    pts = OverfittingProbe.points(history)
    assert pts == [{"step": 2, "eval_loss": 2.5, "train_loss": 2.0}, {"step": 3, "eval_loss": 2.0, "train_loss": 1.0}]


# --------------------------------------------------------------------------- forgetting on the tiny model
def tiny_peft(model_dir: Path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    return get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear")), tok


def test_forgetting_probe_starts_at_base_and_sees_a_changed_adapter(tiny_model_dir: Path):
    import torch

    model, tok = tiny_peft(tiny_model_dir)
    model.train()
    probe = ForgettingProbe(tok, n_items=8, n_prompts=4, kl_mild=0.01, kl_severe=1.0)
    start = probe.measure(model)
    assert model.training  # put back in train mode
    assert start["kl"] == pytest.approx(0.0, abs=1e-6)
    assert start["loglik"] == pytest.approx(start["base_loglik"], abs=1e-5)
    assert start["accuracy"] == start["base_accuracy"] and start["verdict"] == "none"
    assert start["items"] == 8 and start["prompts"] == 4
    # the KL is taken over the base model's own replies to the general prompts, not over the prompts
    assert len(probe._kl_seqs) == 4 and any(len(s) > len(p) for s, p in zip(probe._kl_seqs, probe._kl_prompts))
    assert all(lp.shape[0] == max(1, len(s) - len(p)) for lp, s, p in
               zip(probe._base_logprobs, probe._kl_seqs, probe._kl_prompts))
    assert all(p.grad is None for p in model.parameters())
    with torch.no_grad():  # a destructive adapter
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 2.0)
    after = probe.measure(model)
    assert after["kl"] > 0.01, after
    assert after["base_loglik"] == start["base_loglik"]  # the base is cached, not re-measured
    assert after["verdict"] in ("mild", "severe")
    assert "KL from base" in after["message"]


# --------------------------------------------------------------------------- live runs
@pytest.fixture()
def root(tmp_path: Path) -> Path:
    return tmp_path / "runs"


def test_gentle_run_writes_probes_and_flags_nothing(tiny_model_dir: Path, root: Path):
    cfg = make_config(tiny_model_dir, root, learning_rate=2e-4)
    cfg["probes"] = {"forgetting_items": 8, "kl_prompts": 4}
    events = []
    run = jupyter_ft.finetune(cfg)
    run.subscribe(events.append)
    assert run.wait(120) == "finished", run.run_dir.record.traceback
    records = read_jsonl(run.path / "probes.jsonl")
    assert [r["step"] for r in records] == [0, 3, 6]
    assert records[0]["start"] and records[0]["forgetting"]["kl"] == pytest.approx(0.0, abs=1e-6)
    assert records[1]["overfitting"]["status"] == "ok"
    probe_events = [e for e in events if e.kind == "probe"]
    assert probe_events and probe_events[-1].data["step"] == 6
    s = RunStore(root).load(run.id).summary["probes"]
    assert [r["step"] for r in records if r["forgetting"]] == [0, 6]  # every 2nd evaluation and the last
    assert s["overfitting"] == "ok" and s["forgetting"] == "none" and s["stopped_early_at"] is None
    assert s["probe_seconds"] > 0


@pytest.fixture(scope="module")
def sharp_model_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with larger (tied) embeddings: with the conftest init its logits are nearly flat
    whatever the adapter does (the frozen unembedding is tiny), so it cannot memorise anything."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path_factory.mktemp("sharp-llama")
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        model.get_input_embeddings().weight.mul_(5.0)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(out)
    return out


@pytest.fixture()
def bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    """The overfitting scenario in one compute dtype: the dtype is measured per machine (bf16 where it is fast,
    fp32 on a busy or older CPU), and the 8-row curve it draws differs enough between the two to move the
    evaluation at which the eval loss turns. With the dtype fixed and training.seed seeding the adapter's
    initial weights, the curve is the same on every machine."""
    monkeypatch.setenv("JUPYTER_FT_DTYPE", "bfloat16")


def overfit_config(model_dir: Path, root: Path, demo_rows, **probes):
    rows = demo_rows[:8]
    cfg = make_config(model_dir, root, learning_rate=1e-2, max_steps=60, batch_size=4, eval_every=4,
                      save_every=4, logging_every=1, warmup=0, scheduler="constant")
    cfg["data"] = {"source": rows, "eval_source": demo_rows[200:232], "max_length": 128}
    cfg["lora"] = {"r": 16, "alpha": 32, "dropout": 0.0}
    cfg["quantization"] = {"method": "none"}
    cfg["probes"] = {"forgetting": False, **probes}
    return cfg


def test_overfit_run_is_flagged(sharp_model_dir: Path, root: Path, demo_rows, bf16):
    run = jupyter_ft.finetune(overfit_config(sharp_model_dir, root, demo_rows))
    assert run.wait(600) == "finished", run.run_dir.record.traceback
    s = run.summary["probes"]
    assert s["overfitting"] == "overfitting", read_jsonl(run.path / "probes.jsonl")[-1]
    assert run.summary["global_step"] == 60
    assert run.summary["restored_step"] is None  # nothing restored without early_stop: the last eval is final
    evals = [h for h in run.history if "eval_loss" in h]
    # the last evaluation is the final model's (whether the eval loss had turned by then depends on the CPU's bf16
    # kernels: on an AMD EPYC without AMX it is still falling at step 60, and the gap to the train loss says
    # overfitting)
    assert run.summary["final_eval_loss"] == evals[-1]["eval_loss"] >= run.summary["best_eval_loss"]


def test_early_stop_stops_and_restores_the_best_checkpoint(sharp_model_dir: Path, root: Path, demo_rows, bf16):
    from safetensors.torch import load_file

    run = jupyter_ft.finetune(overfit_config(sharp_model_dir, root, demo_rows, early_stop=True))
    assert run.wait(600) == "finished", run.run_dir.record.traceback
    s = run.summary["probes"]
    assert s["stopped_early_at"] is not None and run.summary["global_step"] == s["stopped_early_at"] < 60
    best = s["best_eval_step"]
    assert best < s["stopped_early_at"] and best == run.summary["best_eval_step"]
    # the summary describes the restored model: its eval loss is the best one, not the last evaluation's
    evals = [h for h in run.history if "eval_loss" in h]
    assert evals[-1]["step"] == s["stopped_early_at"] and evals[-1]["eval_loss"] > run.summary["best_eval_loss"]
    assert run.summary["final_eval_loss"] == pytest.approx(run.summary["best_eval_loss"])
    assert run.summary["restored_step"] == best
    saved = load_file(run.path / "adapter" / "adapter_model.safetensors")
    ckpt = load_file(run.path / "checkpoints" / f"checkpoint-{best}" / "adapter_model.safetensors")
    assert saved.keys() == ckpt.keys()
    assert all((saved[k] == ckpt[k]).all() for k in saved)
    last = load_file(run.path / "checkpoints" / f"checkpoint-{s['stopped_early_at']}" / "adapter_model.safetensors")
    assert any((saved[k] != last[k]).any() for k in saved)


def test_destructive_run_increases_forgetting(sharp_model_dir: Path, root: Path):
    rng = random.Random(0)
    words = ["zebra", "quartz", "vortex", "jumbo", "pixel", "kayak", "fjord", "glyph"]
    rows = [{"text": " ".join(rng.choice(words) for _ in range(40))} for _ in range(64)]
    cfg = make_config(sharp_model_dir, root, learning_rate=5e-2, max_steps=12, eval_every=4, save_every=12,
                      warmup=0, scheduler="constant")
    cfg["data"] = {"source": rows, "eval_split": 0.1, "max_length": 64}
    cfg["lora"] = {"r": 16, "alpha": 64}
    cfg["probes"] = {"forgetting_items": 8, "kl_prompts": 4}
    run = jupyter_ft.finetune(cfg)
    assert run.wait(120) == "finished", run.run_dir.record.traceback
    records = [r for r in read_jsonl(run.path / "probes.jsonl") if r["forgetting"]]
    kls = [r["forgetting"]["kl"] for r in records]
    assert kls[0] == pytest.approx(0.0, abs=1e-6) and kls[-1] > 0.5, kls
    assert run.summary["probes"]["forgetting"] == "severe"


def test_dashboard_panels_and_run_table(tiny_model_dir: Path, root: Path):
    from jupyter_ft.views.run_table import RunTable
    from jupyter_ft.widgets.widget_dashboard import WidgetDashboard

    cfg = make_config(tiny_model_dir, root)
    cfg["probes"] = {"forgetting_items": 4, "kl_prompts": 2}
    run = jupyter_ft.finetune(cfg)
    dash = WidgetDashboard(run, auto_flush=False)
    assert run.wait(120) == "finished", run.run_dir.record.traceback
    dash.refresh()
    assert dash.overfitting_panel.layout.display == "flex" and dash.forgetting_panel.layout.display == "flex"
    assert "Overfitting: ok" in dash.overfitting_panel.children[1].value
    assert "Forgetting: none" in dash.forgetting_panel.children[1].value
    assert list(dash._forget_fig.data[0].x) == [0, 6]  # forgetting_every=2: the start and the last evaluation
    past = WidgetDashboard(run.path)  # a past run reads probes.jsonl
    assert "Forgetting: none" in past.forgetting_panel.children[1].value
    table = RunTable([RunStore(root).load(run.id)])
    assert table.rows[0][-2:] == ("ok", "none") and "overfitting" in repr(table)


def test_forgetting_probe_leaves_4bit_weights_trainable(tiny_model_dir: Path) -> None:
    """Measuring in eval mode must not repack bitsandbytes' NF4 weights into the CPU inference layout,
    which silently broke training after the first probe on AVX512-BF16 CPUs."""
    import bitsandbytes as bnb
    import torch

    from jupyter_ft import models
    from jupyter_ft.config import FineTuneConfig
    from jupyter_ft.probes import ForgettingProbe

    cfg = FineTuneConfig.from_dict({"model": {"name": str(tiny_model_dir)}, "lora": {"r": 4}})
    resolved = models.resolve_model(cfg.model.name)
    model = models.apply_lora(models.load_base_model(cfg, resolved, "cpu", torch.float32), cfg)
    model.train()
    probe = ForgettingProbe.from_config(models.load_tokenizer(resolved), cfg.probes, seed=0)
    probe.measure(model)
    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert layers and model.training
    assert not any(getattr(m.weight.quant_state, "packing_format_for_cpu", False) for m in layers)
