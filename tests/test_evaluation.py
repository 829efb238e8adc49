"""%ft_eval and the evaluation API on the tiny model: metrics against hand-computed values, the base answers
really come from the base (adapter off), past runs reload, the side-by-side view, the chat, bad inputs."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

import jupyter_ft
from jupyter_ft import eval as ev
from jupyter_ft.eval import EvalError, EvalResult, RunNotFound, evaluate_run, generation
from jupyter_ft.magics import FineTuneMagics
from jupyter_ft.runtime.memory import model_slot
from jupyter_ft.store import RunStore
from jupyter_ft.views.diff import word_diff
from jupyter_ft.widgets.eval_widget import EvalWidget


# --------------------------------------------------------------------------- fixtures
def random_model(tiny_model_dir: Path, dest: Path, std: float = 0.3) -> Path:
    """The tiny Llama with larger random weights: its greedy answers vary from prompt to prompt (the default
    init answers every prompt with the same newline), so base and tuned answers can be told apart."""
    import torch
    from transformers import LlamaForCausalLM

    if (dest / "config.json").is_file():
        return dest
    shutil.copytree(tiny_model_dir, dest, dirs_exist_ok=True)
    model = LlamaForCausalLM.from_pretrained(tiny_model_dir)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=gen) * std)
    model.save_pretrained(dest)
    return dest


def train_tiny_run(model_dir: Path, root: Path) -> "jupyter_ft.Run":
    cfg = {
        "model": {"name": str(model_dir)},
        "data": {"source": "demo:support_tickets", "max_length": 128, "eval_split": 0.05},
        "lora": {"r": 4, "alpha": 8},
        "training": {"max_steps": 12, "batch_size": 4, "learning_rate": 1e-2, "logging_every": 4,
                     "eval_every": 12, "save_every": 12},
        "output": {"root": str(root), "name": "eval-tiny"},
    }
    run = jupyter_ft.finetune(cfg, wait=True)
    assert run.status == "finished", run.run_dir.record.traceback
    return run


@pytest.fixture(scope="module")
def model_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return random_model(tiny_model_dir, tmp_path_factory.mktemp("tiny-random") / "model")


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("eval-runs")


@pytest.fixture(scope="module")
def run(model_dir: Path, root: Path):
    r = train_tiny_run(model_dir, root)
    yield r
    ev.release_model()


@pytest.fixture(scope="module")
def shell() -> InteractiveShell:
    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "jupyter_ft")
    return ip


@pytest.fixture(scope="module")
def result(run) -> EvalResult:
    return evaluate_run(run, n=8, max_new_tokens=6, metrics="exact_match,accuracy,rouge,bleu,perplexity")


def fresh_base_answers(rd, prompts: list[str], **decode) -> list[str]:
    """Answers of the base model loaded from scratch, quantized like the run, without peft."""
    from jupyter_ft import models

    config = jupyter_ft.FineTuneConfig.from_dict(rd.record.config)
    resolved = models.resolve_model(config.model.name)
    device = models.select_device()
    dtype = models.select_compute_dtype(device)
    tokenizer = models.load_tokenizer(resolved)
    base = models.load_base_model(config, resolved, device, dtype)
    try:
        return ev.generate(base, tokenizer, prompts, **decode)
    finally:
        del base


# --------------------------------------------------------------------------- metrics, hand-computed
def test_metrics_match_hand_computed_values() -> None:
    metrics, want_ppl = ev.resolve_metrics("exact_match,accuracy,rouge,bleu,perplexity")
    assert want_ppl and [m.name for m in metrics] == ["exact_match", "accuracy", "rouge", "bleu"]
    em, acc, rouge, bleu = metrics

    # exact match: normalized (case, punctuation, spaces): 2 of 3
    assert em.compute(["Billing.", " shipping ", "tech"], ["billing", "Shipping", "technical"]) == {
        "exact_match": pytest.approx(2 / 3)}
    assert em.per_row(["Billing.", "tech"], ["billing", "technical"]) == {"exact_match": [1.0, 0.0]}

    # accuracy: answers mapped to the reference labels; "goes to shipping" names one label, "no idea" none
    preds, refs = ["Billing", "It goes to shipping.", "no idea", "billing or shipping"], \
        ["billing", "shipping", "technical", "shipping"]
    assert ev.label_ids(preds, refs) == ([0, 1, -1, -1], [0, 1, 2, 1], ["billing", "shipping", "technical"])
    assert acc.compute(preds, refs) == {"accuracy": pytest.approx(2 / 4)}

    # ROUGE: "the cat sat" vs "the cat sat down": P=1, R=3/4 -> F1=6/7; bigrams 2/2 vs 2/3 -> 0.8; LCS = 3 words
    r = rouge.compute(["the cat sat", "a b c"], ["the cat sat down", "x y z"])
    assert r["rouge1"] == pytest.approx((6 / 7 + 0) / 2)
    assert r["rouge2"] == pytest.approx((0.8 + 0) / 2)
    assert r["rougeL"] == pytest.approx((6 / 7 + 0) / 2)
    assert rouge.per_row(["the cat sat"], ["the cat sat down"])["rouge1"] == [pytest.approx(6 / 7)]

    # BLEU: n-gram precisions 5/6, 3/5, 2/4, 1/3, equal lengths -> (1/12) ** (1/4)
    b = bleu.compute(["the cat sat on the mat"], ["the cat sat on a mat"])
    assert b["bleu"] == pytest.approx((5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25)
    # brevity penalty: 3 words against 6 -> exp(1 - 6/3); all n-grams match
    assert bleu.compute(["the cat sat"], ["the cat sat on a mat"])["bleu"] == pytest.approx(math.exp(1 - 2))
    # one-word answers still score (effective order): unigram precision 1/2
    assert bleu.compute(["billing", "shipping"], ["billing", "technical"])["bleu"] == pytest.approx(0.5)


def test_metrics_are_local_evaluate_modules_inside_the_package() -> None:
    import evaluate

    from jupyter_ft.metrics import LOCAL_METRICS, METRICS_DIR

    package = Path(jupyter_ft.__file__).resolve().parent
    for name in LOCAL_METRICS:
        script = METRICS_DIR / name / f"{name}.py"
        assert script.is_file() and package in script.parents  # ships in the wheel with the package
        module = ev.load_metric(name)
        assert isinstance(module, evaluate.EvaluationModule)
    # loaded from the path, the same way a user would
    em = evaluate.load(str(METRICS_DIR / "exact_match"))
    assert em.compute(predictions=["a", "b"], references=["a", "c"]) == {"exact_match": 0.5}
    rouge = evaluate.load(str(METRICS_DIR / "rouge"))
    assert rouge.compute(predictions=["the cat sat"], references=["the cat sat down"],
                         rouge_types=["rouge1"]) == {"rouge1": pytest.approx(6 / 7)}


def test_perplexity_is_exp_of_mean_nll_over_completion_tokens() -> None:
    import torch

    class Uniformish(torch.nn.Module):
        """Logits favour token 0 everywhere: p = (1/2, 1/4, 1/4)."""

        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, input_ids, attention_mask=None):
            logits = torch.zeros(*input_ids.shape, 3)
            logits[..., 0] = math.log(2)
            return type("Out", (), {"logits": logits})()

    class Tok:
        pad_token_id = 0

    rows = [{"input_ids": [1, 0, 2], "labels": [-100, 0, 2]},  # scored: token 0 (p 1/2), token 2 (p 1/4)
            {"input_ids": [2, 1], "labels": [-100, 1]}]           # scored: token 1 (p 1/4); padded in the batch
    out = ev.perplexity(Uniformish(), Tok(), rows, batch_size=2)
    nll = (math.log(2) + math.log(4) + math.log(4)) / 3
    assert out["tokens"] == 3 and out["rows"] == 2
    assert out["nll"] == pytest.approx(nll) and out["perplexity"] == pytest.approx(2 ** (5 / 3))


def test_user_metrics_callable_dict_and_clear_errors_for_unknown_names() -> None:
    def length_ratio(predictions, references):
        return sum(len(p) for p in predictions) / sum(len(r) for r in references)

    def starts(p, r):
        return {"starts": sum(a[:1] == b[:1] for a, b in zip(p, r)) / len(r)}

    metrics, want_ppl = ev.resolve_metrics(["exact_match", length_ratio, starts])
    assert not want_ppl
    assert metrics[1].compute(["ab", "c"], ["abc", "d"]) == {"length_ratio": 0.75}
    assert metrics[1].per_row(["ab", "c"], ["abc", "d"]) == {"length_ratio": [2 / 3, 1.0]}
    assert metrics[2].compute(["ab", "c"], ["ax", "d"]) == {"starts": 0.5}
    # a name from the notebook namespace
    (m,), _ = ev.resolve_metrics("my_metric", namespace={"my_metric": length_ratio})
    assert m.name == "my_metric"

    with pytest.raises(EvalError, match=r"unknown metric 'rouge_l'.*Did you mean 'rouge'\?.*offline"):
        ev.resolve_metrics("exact_match,rouge_l")  # HF_HUB_OFFLINE=1 in the tests
    with pytest.raises(EvalError, match=r"unknown metric 'no such!'"):
        ev.resolve_metrics("no such!")
    with pytest.raises(EvalError, match="must return a number"):
        ev.resolve_metrics([lambda p, r: "good"])[0][0].compute(["a"], ["a"])


# --------------------------------------------------------------------------- a real run
def test_base_answers_come_from_the_base_model_with_the_adapter_off(run, result: EvalResult) -> None:
    rows = result.rows
    assert len(rows) == 8 and all(r["reference"] for r in rows)
    prompts = [r["prompt"] for r in rows]
    assert prompts[0].endswith("<|im_start|>assistant\n")  # the chat template, as in training
    # A freshly loaded base model (no peft at all) answers exactly like the adapter-off side...
    assert [r["base"] for r in rows] == fresh_base_answers(run.run_dir, prompts, max_new_tokens=6)
    # ...and the adapter really is on for the tuned side.
    assert any(r["base"] != r["tuned"] for r in rows)
    # Same for perplexity: the tuned model fits the held-out answers differently from the base.
    ppl = result.metrics["perplexity"]
    assert ppl["base"] != ppl["tuned"] and ppl["tuned"] < ppl["base"]
    assert result.info["perplexity"]["tokens"] > 0 and result.info["lower_is_better"] == ["perplexity"]


def test_results_are_written_to_the_run_directory(run, result: EvalResult) -> None:
    samples = [json.loads(line) for line in (run.path / "samples.jsonl").read_text().splitlines()]
    saved = json.loads((run.path / "eval.json").read_text())
    # `result` was the last evaluation of this run in this module when this test runs first
    assert len(samples) == saved["n"]
    assert {"prompt", "reference", "base", "tuned", "scores", "base_correct", "tuned_correct"} <= set(samples[0])
    assert set(saved["metrics"]) >= {"exact_match"}
    m = saved["metrics"]["exact_match"]
    assert m["delta"] == pytest.approx(m["tuned"] - m["base"]) and m["higher_is_better"] is True
    assert saved["decoding"]["max_new_tokens"] in (4, 6) and saved["run_id"] == run.id


def test_aggregate_matches_per_row_scores_and_table(result: EvalResult) -> None:
    assert list(result.metrics) == ["exact_match", "accuracy", "rouge1", "rouge2", "rougeL", "bleu", "perplexity"]
    for key in ("exact_match", "accuracy", "rouge1", "rougeL"):
        for side in ("base", "tuned"):
            per_row = [r["scores"][side][key] for r in result.rows]
            assert result.metrics[key][side] == pytest.approx(sum(per_row) / len(per_row))
    em = [r["tuned"] for r in result.rows]
    refs = [r["reference"] for r in result.rows]
    assert result.metrics["exact_match"]["tuned"] == pytest.approx(ev.exact_match(em, refs))
    lines = result.table().splitlines()
    assert lines[0] == f"{'metric':<14}{'base':>8}{'tuned':>8}{'delta':>8}"
    assert lines[1].startswith("exact_match") and lines[-1].startswith("perplexity")


def test_compare_base_tuned_keeps_its_behaviour(run) -> None:
    res = ev.compare_base_tuned(run.run_dir, n=4, max_new_tokens=4)
    assert list(res.metrics) == ["exact_match"]
    assert len(res.rows) == 4 and {"prompt", "reference", "base", "tuned", "base_correct"} <= set(res.rows[0])
    assert res.table().splitlines()[0] == "metric            base   tuned   delta"


def test_seeded_sampling_is_identical_for_both_sides_and_reproducible(run) -> None:
    a = evaluate_run(run, n=4, max_new_tokens=5, temperature=1.5, seed=7, metrics="exact_match", write=False)
    b = evaluate_run(run, n=4, max_new_tokens=5, temperature=1.5, seed=7, metrics="exact_match", write=False)
    assert [r["tuned"] for r in a.rows] == [r["tuned"] for r in b.rows]
    assert [r["base"] for r in a.rows] == [r["base"] for r in b.rows]
    fresh = fresh_base_answers(run.run_dir, [r["prompt"] for r in a.rows], max_new_tokens=5, temperature=1.5, seed=7)
    assert [r["base"] for r in a.rows] == fresh
    assert a.info["decoding"]["temperature"] == 1.5


def test_past_run_reloads_after_a_restart(run, root: Path, result: EvalResult) -> None:
    ev.release_model()  # nothing of the run left in memory: like a new kernel
    again = evaluate_run(run.id, root=root, n=8, max_new_tokens=6, metrics="exact_match,accuracy,rouge,bleu,perplexity")
    assert [r["tuned"] for r in again.rows] == [r["tuned"] for r in result.rows]
    assert [r["base"] for r in again.rows] == [r["base"] for r in result.rows]
    assert again.metrics == result.metrics
    by_name = evaluate_run("eval-tiny", root=root, n=2, max_new_tokens=2, metrics="exact_match", write=False)
    assert by_name.info["run_id"] == run.id


def test_data_and_prompts_from_the_notebook(run) -> None:
    rows = [{"question": "My card was charged twice", "answer": "billing"},
            {"question": "The app crashes on start", "answer": "technical"},
            {"question": "Where is my parcel?", "answer": "shipping"}]
    res = evaluate_run(run, data=rows, max_new_tokens=4, metrics="exact_match,perplexity", write=False)
    assert res.info["source"] == "<in-memory list>"
    assert [r["reference"] for r in res.rows] == ["billing", "technical", "shipping"]
    assert res.rows[0]["user"] == "My card was charged twice"
    assert res.info["perplexity"]["rows"] == 3 and res.info["perplexity"]["source"] == "<in-memory list>"

    res = evaluate_run(run, prompts=["hello there", [{"role": "user", "content": "hi"}]], max_new_tokens=3, write=False)
    assert [r["reference"] for r in res.rows] == [None, None]
    assert "exact_match" not in res.metrics and "perplexity" in res.metrics  # on the run's eval split
    assert "reference" not in res.rows_html()


def test_bad_inputs_give_clear_errors(run, root: Path, tmp_path: Path) -> None:
    with pytest.raises(RunNotFound, match=r"no run 'nope' under"):
        evaluate_run("nope", root=root)
    with pytest.raises(KeyError):  # RunNotFound is a KeyError too, as the store's error was
        ev.compare_base_tuned("nope", root=str(root))
    with pytest.raises(EvalError, match="unknown metric 'blue'"):
        evaluate_run(run, metrics="blue")
    with pytest.raises(EvalError, match=r"no reference column: the rows have columns prompt"):
        evaluate_run(run, data=[{"prompt": "a question"}, {"prompt": "another"}])
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "route", "output": 5}\n')
    with pytest.raises(EvalError, match=r"row 1, column 'output': the reference must be text, got int 5"):
        evaluate_run(run, data=str(bad))
    with pytest.raises(EvalError, match="no such file"):
        evaluate_run(run, data=str(tmp_path / "missing.jsonl"))
    with pytest.raises(EvalError, match="prompts have no references"):
        evaluate_run(run, prompts=["hi"], metrics="rouge")
    with pytest.raises(EvalError, match="n must be >= 1"):
        evaluate_run(run, n=0)
    stopped = RunStore(root).create({"model": {"name": "x"}}, name="no-adapter")
    stopped.save(status="failed")
    with pytest.raises(EvalError, match="has no saved adapter"):
        evaluate_run(stopped.record.id, root=root)


# --------------------------------------------------------------------------- the views
def synthetic() -> EvalResult:
    rows = [
        {"index": 0, "prompt": "p0", "user": "q0", "reference": "billing", "base": "billing", "tuned": "shipping",
         "scores": {"base": {"exact_match": 1.0}, "tuned": {"exact_match": 0.0}}},
        {"index": 1, "prompt": "p1", "user": "q1 <b>", "reference": "technical", "base": "It is technical support",
         "tuned": "technical", "scores": {"base": {"exact_match": 0.0}, "tuned": {"exact_match": 1.0}}},
        {"index": 2, "prompt": "p2", "user": "q2", "reference": "x", "base": "y", "tuned": "y",
         "scores": {"base": {"exact_match": 0.0}, "tuned": {"exact_match": 0.0}}},
    ]
    return EvalResult(rows, {"exact_match": {"base": 1 / 3, "tuned": 1 / 3}, "perplexity": {"base": 9.0, "tuned": 4.5}},
                      {"primary": "exact_match", "lower_is_better": ["perplexity"], "source": "rows"})


def test_word_diff_marks_changed_words() -> None:
    a, b = word_diff("It is technical support", "technical <x>")
    assert a == "<span class='jft-del'>It is </span>technical <span class='jft-del'>support</span>"
    assert b == "technical <span class='jft-ins'>&lt;x&gt;</span>"
    assert word_diff("same words", "same words") == ("same words", "same words")


def test_side_by_side_html_sorts_and_filters_rows_where_tuned_is_worse() -> None:
    res = synthetic()
    assert [r["index"] for r in res.worse_rows()] == [0]
    page = res.to_html()
    assert "only rows where tuned is worse (1)" in page and ":checked ~ table tbody tr:not(.worse)" in page
    assert "<tr class='worse'" in page and "<tr class='better'" in page and "<tr class='same'" in page
    assert "q1 &lt;b&gt;" in page and "q1 <b>" not in page  # escaped
    assert "jft-agg" in page and "perplexity" in page and "-4.500" in page  # lower is better: shown as a gain
    worse_only = res.rows_html(only_worse=True)
    assert worse_only.count("<tr class=") == 1 and "data-i='0'" in worse_only
    order = res.rows_html(sort="delta")  # worst first
    assert order.index("data-i='0'") < order.index("data-i='2'") < order.index("data-i='1'")
    assert res.rows_html(contains="TECHNICAL").count("<tr class=") == 1
    text = repr(res)
    assert "exact_match" in text and "reference: 'billing'" in text


def test_eval_widget_controls_rerender_the_rows() -> None:
    view = EvalWidget(synthetic())
    assert view.table.value.count("<tr class=") == 3
    view.only_worse.value = True
    assert view.table.value.count("<tr class=") == 1
    view.only_worse.value = False
    view.sort.value = "-delta"
    assert view.table.value.index("data-i='1'") < view.table.value.index("data-i='0'")
    assert "1 row(s) where tuned is worse" in view.count.value


# --------------------------------------------------------------------------- magics and chat
def test_ft_eval_magic_prints_the_table_and_binds_the_result(shell: InteractiveShell, run, capsys) -> None:
    magics = FineTuneMagics(shell)
    magics.last_run = run
    magics.runs[run.id] = run
    magics.ft_eval("--n 3 --max-new-tokens 3 --metrics exact_match,rouge --out ev_res")
    out = capsys.readouterr().out
    assert "metric            base   tuned   delta" in out and "rouge1" in out and "exact_match" in out
    assert "samples.jsonl and eval.json written to" in out
    res = shell.user_ns["ev_res"]
    assert isinstance(res, EvalResult) and len(res.rows) == 3 and shell.user_ns["_"] is res
    assert json.loads((run.path / "eval.json").read_text())["n"] == 3


def test_ft_eval_magic_after_restart_and_its_errors(shell: InteractiveShell, run, root: Path, capsys,
                                                     monkeypatch) -> None:
    fresh = FineTuneMagics(shell)  # a new kernel: no runs launched
    ev.release_model()
    fresh.ft_eval(f"{run.id} --root {root} --n 2 --max-new-tokens 2 --metrics exact_match")
    assert "exact_match" in capsys.readouterr().out
    with pytest.raises(UsageError, match="no run 'nope'"):
        fresh.ft_eval(f"nope --root {root}")
    with pytest.raises(UsageError, match="no run launched in this kernel"):
        fresh.ft_eval("")
    with pytest.raises(UsageError, match="unknown metric 'bleurt'"):
        fresh.ft_eval(f"{run.id} --root {root} --metrics bleurt")
    shell.user_ns["qs_only"] = [{"prompt": "hello"}]
    with pytest.raises(UsageError, match="no reference column"):
        fresh.ft_eval(f"{run.id} --root {root} --data qs_only")
    with pytest.raises(UsageError, match="--prompts missing_var: no variable"):
        fresh.ft_eval(f"{run.id} --root {root} --prompts missing_var")
    answers = iter(["Where is my parcel?", ""])
    monkeypatch.setattr("builtins.input", lambda _prompt="": next(answers))
    fresh.ft_eval(f"{run.id} --root {root} --n 1 --max-new-tokens 2 --metrics exact_match --interactive")
    out = capsys.readouterr().out
    assert "exact_match" in out and "type a prompt" in out and "base:" in out and "tuned:" in out
    shell.user_ns["my_len"] = lambda p, r: sum(map(len, p)) / max(1, sum(map(len, r)))
    fresh.ft_eval(f"{run.id} --root {root} --n 2 --max-new-tokens 2 --metrics my_len")
    assert "my_len" in capsys.readouterr().out


def test_magics_are_registered_with_help(shell: InteractiveShell) -> None:
    from jupyter_ft.magics.help import help_text

    assert {"ft_eval", "ft_chat", "ft_export"} <= set(shell.magics_manager.magics["line"])
    text = help_text()
    assert "%ft_eval [RUN]" in text and "%ft_chat" in text and "%ft_export RUN --out DIR" in text


def test_chat_answers_base_and_tuned_side_by_side(run, shell: InteractiveShell, capsys) -> None:
    from jupyter_ft.widgets.chat import ChatPanel, ChatSession, chat_loop

    model, tokenizer, _ = ev.run_model(run.run_dir)
    session = ChatSession(model, tokenizer, max_new_tokens=5, title="t")
    ex = session.ask("My card was charged twice")
    prompt = ev.render_chat_prompt("My card was charged twice", tokenizer)
    assert prompt.endswith("<|im_start|>assistant\n")
    assert ex.base == fresh_base_answers(run.run_dir, [prompt], max_new_tokens=5)[0]
    with model.disable_adapter():
        assert ex.base == ev.generate(model, tokenizer, [prompt], max_new_tokens=5)[0]
    assert ex.tuned == ev.generate(model, tokenizer, [prompt], max_new_tokens=5)[0]

    panel = ChatPanel(ChatSession(model, tokenizer, max_new_tokens=5))
    panel.prompt.value = "My card was charged twice"
    panel.send_button.click()
    assert panel.prompt.value == "" and len(panel.session.exchanges) == 1
    assert "base (adapter off)" in panel.transcript.value
    panel.multi_turn.value = True
    panel.send("and again")
    assert len(panel.session.exchanges) == 2
    assert panel.session._messages("base", "x")[1]["content"] == ex.base  # each side keeps its own history
    panel.send("   ")
    assert "type a prompt first" in panel.status.value
    panel.clear_button.click()
    assert panel.session.exchanges == []

    lines = iter(["Where is my parcel?", ""])
    printed: list[str] = []
    exchanges = chat_loop(ChatSession(model, tokenizer, max_new_tokens=3), lambda _p: next(lines), printed.append)
    assert len(exchanges) == 1 and "base:" in printed[-1] and "tuned:" in printed[-1]

    magics = FineTuneMagics(shell)
    magics.last_run = run
    magics.ft_chat('--prompt "My card was charged twice" --max-new-tokens 5')
    out = capsys.readouterr().out
    assert f"base:  {ex.base}" in out and f"tuned: {ex.tuned}" in out


# --------------------------------------------------------------------------- the real model
@pytest.mark.slow
def test_ft_eval_on_smollm2(tmp_path: Path, shell: InteractiveShell, capsys) -> None:
    """A short QLoRA run on the real SmolLM2, then %ft_eval: the base side equals a fresh base model."""
    smol = jupyter_ft.finetune(
        {"data": {"max_length": 96, "eval_split": 0.01},
         "training": {"max_steps": 2, "batch_size": 2, "eval_every": 100, "save_every": 100, "logging_every": 1},
         "output": {"root": str(tmp_path)}},
        wait=True,
    )
    assert smol.status == "finished", smol.run_dir.record.traceback
    magics = FineTuneMagics(shell)
    try:
        magics.ft_eval(f"{smol.id} --root {tmp_path} --n 3 --max-new-tokens 4 --metrics exact_match,perplexity "
                       "--out smol_eval")
        out = capsys.readouterr().out
        assert "exact_match" in out and "perplexity" in out
        res = shell.user_ns["smol_eval"]
        assert [r["base"] for r in res.rows] == fresh_base_answers(smol.run_dir, [r["prompt"] for r in res.rows],
                                                                  max_new_tokens=4)
        assert res.metrics["perplexity"]["base"] != res.metrics["perplexity"]["tuned"]
    finally:
        ev.release_model()


def test_a_new_run_frees_the_model_kept_for_eval(run, model_dir: Path, root: Path) -> None:
    """Only one model in memory: %ft_eval's cached model must not survive into the next training run."""
    ev.run_model(run.run_dir)
    assert model_slot.held, "run_model should keep the model for the next %ft_eval"
    cfg = {"model": {"name": str(model_dir)},
           "data": {"source": "demo:support_tickets", "max_length": 128, "eval_split": 0.05},
           "lora": {"r": 2, "alpha": 4},
           "training": {"max_steps": 1, "batch_size": 2, "eval_every": 1, "save_every": 1},
           "probes": {"forgetting": False},
           "output": {"root": str(root), "name": "frees-eval-model"}}
    second = jupyter_ft.finetune(cfg, wait=True)
    assert second.status == "finished", second.run_dir.record.traceback
    assert not model_slot.held


def test_out_of_memory_in_eval_and_chat_says_what_to_lower_and_keeps_the_model(
        shell: InteractiveShell, run, root: Path, capsys, monkeypatch) -> None:
    """On a T4 the generation batch of %ft_eval, or a training run of the same kernel, exhausts the card: the
    magic must answer with what to lower (no traceback wall), keep the cached model for the retry, and go on."""
    import torch

    from jupyter_ft.runtime import registry

    magics = FineTuneMagics(shell)
    ev.run_model(run.run_dir)  # loaded and cached, as a first %ft_eval leaves it
    cached = ev.run_model(run.run_dir)
    real_generate = ev.generate

    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 14.75 GiB total)")

    monkeypatch.setattr(generation, "generate", oom)
    with pytest.raises(UsageError) as err:
        magics.ft_eval(f"{run.id} --root {root} --n 4 --batch-size 16 --max-new-tokens 24 --metrics exact_match")
    message = str(err.value)
    assert message.startswith("Out of memory while generating answers to 4 prompts.")
    assert "--batch-size, now 16" in message and "--max-new-tokens, now 24" in message and "--n" in message
    assert "CUDA out of memory. Tried to allocate 2.00 GiB" in message and "training in this kernel" not in message
    assert ev.run_model(run.run_dir) is cached  # the retry does not reload the model

    monkeypatch.setattr(registry, "live_run_ids", lambda: ["20261124-0101-big-run"])
    with pytest.raises(UsageError, match=r"Run 20261124-0101-big-run is training in this kernel .*%ft_stop"):
        magics.ft_eval(f"{run.id} --root {root} --n 2 --metrics exact_match")
    with pytest.raises(UsageError, match=r"Out of memory while answering the prompt\. Lower max_new_tokens "
                                         r"\(%ft_chat --max-new-tokens, now 64\)"):
        magics.ft_chat(f"{run.id} --root {root} --prompt hello --max-new-tokens 64")

    def not_memory(*args, **kwargs):
        raise RuntimeError("CUDA error: device-side assert triggered")

    monkeypatch.setattr(generation, "generate", not_memory)  # other errors are not dressed up as memory advice
    with pytest.raises(RuntimeError, match="device-side assert"):
        evaluate_run(run.id, root=str(root), n=1, metrics=["exact_match"])

    monkeypatch.setattr(generation, "generate", real_generate)
    magics.ft_eval(f"{run.id} --root {root} --n 2 --max-new-tokens 2 --metrics exact_match")  # the retry works
    assert "exact_match" in capsys.readouterr().out
