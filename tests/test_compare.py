"""Run comparison from the store alone: differing fields, metrics, ranking, verdicts, curves, selection."""

from __future__ import annotations

from pathlib import Path

import pytest

from jupyter_ft.compare import compare_runs, differing_fields, select_runs
from jupyter_ft.config import FineTuneConfig
from jupyter_ft.store import RunStore, append_jsonl, write_json_atomic


def make_run(store: RunStore, name: str, *, lr: float, r: int = 16, losses: list[float], evals: list[float],
             summary: bool = True, kl: list[float] | None = None, verdicts: tuple[str, str] | None = None,
             rouge: float | None = None, sweep: dict | None = None):
    """A run as training leaves it on disk: run.json, metrics.jsonl, probes.jsonl, eval.json."""
    config = FineTuneConfig.from_dict({"training": {"learning_rate": lr, "max_steps": 10}, "lora": {"r": r},
                                       "output": {"root": str(store.root), "name": name}})
    rd = store.create(config.to_dict(), name)
    for i, loss in enumerate(losses, 1):
        rd.log_metrics({"step": i * 2, "loss": loss, "learning_rate": lr, "tokens_seen": i * 100})
        if i - 1 < len(evals):
            rd.log_metrics({"step": i * 2, "eval_loss": evals[i - 1]})
    for i, value in enumerate(kl or [], 1):
        append_jsonl(rd.probes_path, {"step": i * 2, "forgetting": {"kl": value, "verdict": "none"}})
    if rouge is not None:
        write_json_atomic(rd.path / "eval.json", {"metrics": {"rouge": {"base": 0.1, "tuned": rouge,
                                                                         "delta": rouge - 0.1,
                                                                         "higher_is_better": True}}})
    # created_at has one-second resolution; runs made within a second still need their order
    changes: dict = {"status": "finished" if summary else "stopped",
                     "created_at": f"2026-01-01T00:00:{len(store.list()):02d}+00:00"}
    if summary:
        changes["summary"] = {"global_step": len(losses) * 2, "final_train_loss": losses[-1],
                              "final_eval_loss": evals[-1], "best_eval_loss": min(evals),
                              "best_eval_step": 2 * (evals.index(min(evals)) + 1), "tokens_seen": len(losses) * 100,
                              "probes": {"overfitting": verdicts[0], "forgetting": verdicts[1]} if verdicts else None}
    if sweep:
        changes["sweep"] = sweep
    rd.save(**changes)
    return rd


@pytest.fixture()
def store(tmp_path: Path) -> RunStore:
    return RunStore(tmp_path / "runs")


def test_compare_shows_only_differing_fields_ranks_and_marks_best(store: RunStore):
    high = make_run(store, "lr-high", lr=5e-3, losses=[2.0, 1.0, 0.5], evals=[1.5, 1.8, 2.4],
                    verdicts=("overfitting", "mild"), kl=[0.1, 0.6])
    right = make_run(store, "lr-right", lr=2e-4, losses=[2.0, 1.6, 1.3], evals=[1.7, 1.4, 1.2],
                     verdicts=("ok", "none"), kl=[0.01, 0.02])
    fresh = RunStore(store.root)  # as after a kernel restart: only the files
    cmp = compare_runs(select_runs(fresh, [high.record.id, "lr-right"]))

    assert list(cmp.differing) == ["training.learning_rate"]  # lora.r, max_steps... are the same: not shown
    assert cmp.differing["training.learning_rate"] == {high.record.id: 5e-3, right.record.id: 2e-4}
    assert cmp.metric == "best_eval_loss" and not cmp.higher_is_better
    assert cmp.ranking == [right.record.id, high.record.id] and cmp.best == right.record.id
    assert cmp.metrics[high.record.id]["best_eval_loss"] == 1.5
    assert cmp.metrics[high.record.id]["final_eval_loss"] == 2.4
    assert cmp.verdicts[high.record.id] == {"overfitting": "overfitting", "forgetting": "mild"}

    rows = cmp.rows()
    assert [(row["rank"], row["best"], row["name"]) for row in rows] == [(1, "★", "lr-right"), (2, "", "lr-high")]
    assert rows[1]["training.learning_rate"] == 5e-3 and rows[1]["overfitting"] == "overfitting"
    assert "lora.r" not in rows[0]

    text = cmp.text()
    assert "ranked by best_eval_loss (lower is better)" in text
    assert f"best: {right.record.id} (best_eval_loss 1.2)" in text
    html = cmp.to_html()
    assert "★" in html and "training.learning_rate" in html and "overfitting" in html

    fig = cmp.figure()
    assert len(fig.data) == 6  # train, eval and KL per run
    train_high = next(t for t in fig.data if t.name.startswith("lr-high"))
    assert list(train_high.x) == [2, 4, 6] and list(train_high.y) == [2.0, 1.0, 0.5]
    assert any(t.name.startswith("★ lr-right") and t.line.width == 3.0 for t in fig.data)


def test_rank_by_other_metrics_and_tokens_axis(store: RunStore):
    a = make_run(store, "a", lr=1e-4, r=8, losses=[2.0, 1.0], evals=[1.5, 1.4], rouge=0.30)
    b = make_run(store, "b", lr=1e-4, r=32, losses=[2.0, 1.5], evals=[1.3, 1.2], rouge=0.45)
    by_rouge = compare_runs([a, b], metric="rouge")  # an %ft_eval metric, higher is better
    assert by_rouge.metric == "eval.rouge" and by_rouge.higher_is_better and by_rouge.best == b.record.id
    by_train = compare_runs([a, b], metric="final_train_loss")
    assert by_train.best == a.record.id and list(by_train.differing) == ["lora.r"]

    tokens = compare_runs([a, b], x="tokens")
    assert tokens.curves[0].train[0] == [100, 200] and tokens.curves[0].eval[0] == [100, 200]
    assert tokens.figure().layout.xaxis.title.text == "tokens seen"
    with pytest.raises(ValueError, match=r"unknown metric 'best_eval_los'; did you mean 'best_eval_loss'"):
        compare_runs([a, b], metric="best_eval_los")


def test_run_without_summary_gets_metrics_from_its_log_and_ranks_last_without_metric(store: RunStore):
    stopped = make_run(store, "stopped", lr=1e-4, losses=[2.0, 1.9], evals=[1.6], summary=False)
    none = make_run(store, "no-eval", lr=3e-4, losses=[2.0], evals=[], summary=False)
    good = make_run(store, "good", lr=2e-4, losses=[2.0, 1.0], evals=[1.0, 0.9])
    cmp = compare_runs([none, stopped, good])
    assert cmp.metrics[stopped.record.id]["best_eval_loss"] == 1.6
    assert cmp.metrics[stopped.record.id]["final_train_loss"] == 1.9
    assert cmp.ranking == [good.record.id, stopped.record.id, none.record.id]
    assert cmp.rows()[-1]["rank"] == "–"


def test_identical_configs_say_so(store: RunStore):
    a = make_run(store, "same-a", lr=1e-4, losses=[1.0], evals=[1.0])
    b = make_run(store, "same-b", lr=1e-4, losses=[1.1], evals=[1.1])
    assert differing_fields([a.record, b.record]) == {}  # output.name differs but is the run's name
    assert "(the configs do not differ)" in compare_runs([a, b]).text()


def test_select_runs_by_sweep_last_and_errors(store: RunStore):
    runs = [make_run(store, f"s-{i}", lr=1e-4 * (i + 1), losses=[1.0], evals=[1.0],
                     sweep={"id": "sweep-20260101-000000-abcd", "index": i, "total": 3,
                            "params": {"training.learning_rate": 1e-4 * (i + 1)}}) for i in range(3)]
    other = make_run(store, "alone", lr=1e-3, losses=[1.0], evals=[1.0])
    by_sweep = select_runs(store.root, sweep="sweep-20260101")
    assert [rd.record.id for rd in by_sweep] == [rd.record.id for rd in runs]  # in sweep order
    assert [rd.record.id for rd in select_runs(store.root, sweep="last")] == [rd.record.id for rd in runs]
    assert [rd.record.id for rd in select_runs(store.root, last=2)] == [runs[2].record.id, other.record.id]
    label = compare_runs(by_sweep).curves[0].label
    assert label == "s-0 (learning_rate=0.0001)"
    with pytest.raises(KeyError, match="sweep 'nope' not found"):
        select_runs(store.root, sweep="nope")
    with pytest.raises(KeyError, match="no run 'missing'"):
        select_runs(store.root, ["missing"])
    with pytest.raises(ValueError, match="one of them"):
        select_runs(store.root, ["alone"], last=2)
