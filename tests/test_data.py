"""From rows in any supported container to tokenized, masked, split examples, and the errors on bad data."""

from __future__ import annotations

import copy
import csv
import json
import os
from pathlib import Path

import pytest

from jupyter_ft.config import DataConfig
from jupyter_ft.data import (
    IGNORE_INDEX,
    DataError,
    PreparedData,
    detect_format,
    load_rows,
    prepare_data,
    prompt_messages,
    render_prompt,
    render_segments,
    to_messages,
    tokenize_messages,
)

END = "<|im_end|>\n"  # what closes every turn in the fixture's ChatML template
SYSTEM = "<|im_start|>system\nYou are helpful.<|im_end|>\n"  # the template's default system turn

ALPACA = [
    {"instruction": "Route this message to a team.", "input": "I was charged twice for order 12.", "output": "billing"},
    {"instruction": "Route this message to a team.", "input": "My parcel never arrived.", "output": "shipping"},
    {"instruction": "Route this message to a team.", "input": "", "output": "technical"},
]


@pytest.fixture(autouse=True)
def _datasets_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Files read through ``datasets`` are cached under a per-session folder, never the user's cache."""
    import datasets

    cache = tmp_path_factory.getbasetemp() / "hf-datasets-cache"
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)


@pytest.fixture()
def tok(tiny_tokenizer):
    return tiny_tokenizer


def qa_rows(n: int, prefix: str = "question") -> list[dict[str, str]]:
    return [{"prompt": f"{prefix} number {i}?", "completion": f"answer {i}"} for i in range(n)]


def prep(source, tok, seed: int = 42, **kw) -> PreparedData:
    kw.setdefault("eval_split", 0.0)
    return prepare_data(DataConfig(source=source, **kw), tok, seed=seed)


def trained_text(example, tok) -> str:
    return tok.decode([i for i, lab in zip(example["input_ids"], example["labels"]) if lab != IGNORE_INDEX])


def masked_text(example, tok) -> str:
    return tok.decode([i for i, lab in zip(example["input_ids"], example["labels"]) if lab == IGNORE_INDEX])


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_csv(path: Path, rows) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def data_error(source, tok=None, **kw) -> str:
    with pytest.raises(DataError) as info:
        if tok is None:
            load_rows(source)
        else:
            prep(source, tok, **kw)
    return str(info.value)


# --------------------------------------------------------------------------- sources
def test_jsonl_file(tmp_path):
    ds, ev = load_rows(str(write_jsonl(tmp_path / "train.jsonl", ALPACA)))
    assert ev is None
    assert ds.column_names == ["instruction", "input", "output"]
    assert ds.to_list() == ALPACA


def test_jsonl_file_as_pathlib_path_with_blank_lines(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text("\n" + json.dumps(ALPACA[0]) + "\n\n" + json.dumps(ALPACA[1]) + "\n", encoding="utf-8")
    ds, _ = load_rows(path)
    assert ds.to_list() == ALPACA[:2]


def test_json_list_file(tmp_path):
    path = tmp_path / "train.json"
    path.write_text("\n" + json.dumps(ALPACA, indent=2), encoding="utf-8")
    ds, _ = load_rows(str(path))
    assert ds.to_list() == ALPACA


def test_csv_file_reads_every_cell_as_text(tmp_path):
    rows = [{"question": "What is 2+2?", "answer": "4"}, {"question": "Zip code?", "answer": "02134"}]
    ds, _ = load_rows(str(write_csv(tmp_path / "train.csv", rows)))
    assert ds.to_list() == rows  # '02134' keeps its zero, '4' stays text


def test_csv_numbers_train_as_text(tmp_path, tok):
    rows = [{"question": "What is 2+2?", "answer": "4"}, {"question": "What is 3+3?", "answer": "6"}]
    prepared = prep(str(write_csv(tmp_path / "train.csv", rows)), tok)
    assert prepared.format == "prompt_completion"
    assert [trained_text(r, tok) for r in prepared.train] == ["4" + END, "6" + END]


def test_csv_empty_optional_column(tmp_path, tok):
    rows = [{"instruction": "Say hi", "input": "", "output": "hi"},
            {"instruction": "Say bye", "input": "", "output": "bye"}]
    prepared = prep(str(write_csv(tmp_path / "train.csv", rows)), tok)
    assert prepared.format == "alpaca"
    assert tok.decode(prepared.train[0]["input_ids"]) == (
        f"{SYSTEM}<|im_start|>user\nSay hi{END}<|im_start|>assistant\nhi{END}"
    )


def test_parquet_file(tmp_path):
    import pandas as pd

    pd.DataFrame(ALPACA).to_parquet(tmp_path / "train.parquet")
    ds, ev = load_rows(str(tmp_path / "train.parquet"))
    assert ev is None and ds.to_list() == ALPACA


def test_dataframe_list_and_dataset_objects():
    import datasets
    import pandas as pd

    for source in (pd.DataFrame(ALPACA), ALPACA, datasets.Dataset.from_list(ALPACA)):
        ds, ev = load_rows(source)
        assert ev is None and ds.to_list() == ALPACA


def test_datasets_directory_single_dataset(tmp_path):
    import datasets

    datasets.Dataset.from_list(ALPACA).save_to_disk(str(tmp_path / "ds"))
    ds, ev = load_rows(str(tmp_path / "ds"))
    assert ev is None and ds.to_list() == ALPACA


@pytest.mark.parametrize("split", ["validation", "eval", "test"])
def test_datasets_directory_with_a_held_out_split_is_used_as_eval(tmp_path, tok, split):
    import datasets

    train, held = qa_rows(6), qa_rows(2, prefix="held-out")
    datasets.DatasetDict({"train": datasets.Dataset.from_list(train),
                          split: datasets.Dataset.from_list(held)}).save_to_disk(str(tmp_path / "dd"))
    prepared = prep(str(tmp_path / "dd"), tok, eval_split=0.5)  # a split in the source wins over eval_split
    assert len(prepared.train) == 6 and len(prepared.eval) == 2
    assert prepared.raw_eval.to_list() == held
    assert [trained_text(r, tok) for r in prepared.eval] == ["answer 0" + END, "answer 1" + END]
    assert prepared.summary()["eval_rows"] == 2


def test_eval_source_is_used_as_eval(tmp_path, tok):
    ev = write_jsonl(tmp_path / "eval.jsonl", qa_rows(3, prefix="eval"))
    prepared = prepare_data(DataConfig(source=qa_rows(5), eval_source=str(ev), eval_split=0.2), tok)
    assert len(prepared.train) == 5 and len(prepared.eval) == 3
    assert prepared.raw_eval["prompt"] == ["eval number 0?", "eval number 1?", "eval number 2?"]


def test_demo_source(tok):
    ds, ev = load_rows("demo:support_tickets")
    assert ev is None and len(ds) == 480
    assert ds.column_names == ["instruction", "input", "output"]
    assert set(ds["output"]) == {"billing", "shipping", "technical", "account", "refund"}


def test_unknown_demo_lists_available():
    assert data_error("demo:x") == "data.source: no bundled dataset 'demo:x'. Available: demo:support_tickets"


# --------------------------------------------------------------------------- formats
@pytest.mark.parametrize(
    "columns, fmt, mapping",
    [
        (["instruction", "input", "output"], "alpaca",
         {"instruction": "instruction", "output": "output", "input": "input"}),
        (["instruction", "output"], "alpaca", {"instruction": "instruction", "output": "output"}),
        (["instruction", "context", "response"], "alpaca",
         {"instruction": "instruction", "output": "response", "input": "context"}),
        (["messages"], "chat", {"messages": "messages"}),
        (["id", "conversations"], "chat", {"messages": "conversations"}),
        (["prompt", "completion"], "prompt_completion", {"prompt": "prompt", "completion": "completion"}),
        (["question", "answer"], "prompt_completion", {"prompt": "question", "completion": "answer"}),
        (["query", "response"], "prompt_completion", {"prompt": "query", "completion": "response"}),
        (["text"], "text", {"text": "text"}),
        (["id", "content"], "text", {"text": "content"}),
        (["messages", "text"], "chat", {"messages": "messages"}),
    ],
)
def test_auto_detection(columns, fmt, mapping):
    got_fmt, got_mapping, message = detect_format(columns, DataConfig())
    assert (got_fmt, got_mapping) == (fmt, mapping)
    assert message == f"detected format '{fmt}' from columns {mapping}"


def test_detection_message_is_reported(tok):
    prepared = prep(ALPACA, tok)
    assert prepared.message == (
        "detected format 'alpaca' from columns {'instruction': 'instruction', 'output': 'output', 'input': 'input'}"
    )
    assert prepared.summary()["detected"] == prepared.message
    assert (prepared.format, prepared.columns) == ("alpaca", {"instruction": "instruction", "output": "output",
                                                              "input": "input"})


def test_undetectable_columns():
    with pytest.raises(DataError) as info:
        detect_format(["foo", "bar"], DataConfig(), "train.jsonl")
    assert str(info.value) == (
        "train.jsonl: could not detect the data format from columns foo, bar. Expected one of: messages (chat); "
        "prompt + completion; instruction (+ input) + output (Alpaca); text. "
        "Set data.format and map your columns with data.columns."
    )


def test_explicit_format_and_columns(tok):
    rows = [{"q": "Is the sky blue?", "a": "yes"}, {"q": "Is fire cold?", "a": "no"}]
    prepared = prep(rows, tok, format="prompt_completion", columns={"prompt": "q", "completion": "a"})
    assert prepared.format == "prompt_completion"
    assert prepared.columns == {"prompt": "q", "completion": "a"}
    assert prepared.message == "format 'prompt_completion' (given) with columns {'prompt': 'q', 'completion': 'a'}"
    assert [trained_text(r, tok) for r in prepared.train] == ["yes" + END, "no" + END]
    assert "<|im_start|>user\nIs the sky blue?<|im_end|>" in tok.decode(prepared.train[0]["input_ids"])


def test_columns_mapping_steers_auto_detection(tok):
    rows = [{"q": "Is the sky blue?", "a": "yes", "text": "unused"}] * 2
    prepared = prep(rows, tok, columns={"prompt": "q", "completion": "a"})
    assert prepared.message == "detected format 'prompt_completion' from columns {'prompt': 'q', 'completion': 'a'}"


def test_explicit_alpaca_mapping_with_partial_aliases(tok):
    rows = [{"task": "Route it", "ticket": "refund me", "label": "refund"}] * 2
    prepared = prep(rows, tok, format="alpaca", columns={"instruction": "task", "input": "ticket", "output": "label"})
    assert prepared.columns == {"instruction": "task", "input": "ticket", "output": "label"}
    assert tok.decode(prepared.train[0]["input_ids"]) == (
        f"{SYSTEM}<|im_start|>user\nRoute it\n\nrefund me{END}<|im_start|>assistant\nrefund{END}"
    )


def test_explicit_format_missing_columns_names_columns_present(tok):
    rows = [{"q": "x", "a": "y"}]
    assert data_error(rows, tok, format="alpaca") == (
        "<in-memory list>: format 'alpaca' needs column(s) instruction, output; the data has q, a. "
        "Map them with data.columns, e.g. columns: {instruction: <your column>}."
    )


def test_columns_mapping_to_absent_column(tok):
    rows = [{"q": "x", "a": "y"}]
    assert data_error(rows, tok, columns={"prompt": "q", "completion": "answer"}) == (
        "<in-memory list>: data.columns names columns that do not exist: completion=answer. Columns present: q, a."
    )


def test_to_messages_for_every_format():
    assert to_messages(ALPACA[0], "alpaca", {"instruction": "instruction", "input": "input", "output": "output"}) == [
        {"role": "user", "content": "Route this message to a team.\n\nI was charged twice for order 12."},
        {"role": "assistant", "content": "billing"},
    ]
    assert to_messages(ALPACA[2], "alpaca", {"instruction": "instruction", "input": "input", "output": "output"},
                       system_prompt="Be brief.") == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Route this message to a team."},
        {"role": "assistant", "content": "technical"},
    ]
    row = {"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "u", "name": "x"},
                        {"role": "assistant", "content": "a"}]}
    assert to_messages(row, "chat", {"messages": "messages"}, system_prompt="ignored") == [
        {"role": "system", "content": "S"}, {"role": "user", "content": "u"}, {"role": "assistant", "content": "a"},
    ]
    assert to_messages({"text": "t"}, "text", {"text": "text"}, system_prompt="x") == [{"role": "text", "content": "t"}]


# --------------------------------------------------------------------------- masking
def test_prompt_is_masked_and_answer_plus_end_of_turn_is_trained(tok):
    prepared = prep([{"prompt": "I was charged twice", "completion": "billing"}] * 2, tok)
    example = prepared.train[0]
    assert trained_text(example, tok) == "billing<|im_end|>\n"
    assert masked_text(example, tok) == f"{SYSTEM}<|im_start|>user\nI was charged twice{END}<|im_start|>assistant\n"
    # the trained labels are the input ids themselves (the Trainer shifts them), at the same positions
    first = next(i for i, lab in enumerate(example["labels"]) if lab != IGNORE_INDEX)
    assert all(lab == IGNORE_INDEX for lab in example["labels"][:first])
    assert example["labels"][first:] == example["input_ids"][first:]
    assert example["length"] == len(example["input_ids"]) == len(example["labels"])


def test_completion_only_loss_false_trains_every_token(tok):
    prepared = prep([{"prompt": "I was charged twice", "completion": "billing"}] * 2, tok, completion_only_loss=False)
    example = prepared.train[0]
    assert example["labels"] == example["input_ids"]
    assert tok.decode(example["input_ids"]) == (
        f"{SYSTEM}<|im_start|>user\nI was charged twice{END}<|im_start|>assistant\nbilling{END}"
    )


def test_multi_turn_chat_trains_every_assistant_turn_only(tok):
    messages = [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": "second question"},
        {"role": "assistant", "content": "second answer"},
    ]
    prepared = prep([{"messages": messages}] * 2, tok)
    example = prepared.train[0]
    assert prepared.format == "chat"
    assert tok.decode(example["input_ids"]) == tok.apply_chat_template(messages, tokenize=False)
    assert trained_text(example, tok) == f"first answer{END}second answer{END}"
    masked = masked_text(example, tok)
    assert masked == (
        f"<|im_start|>system\nBe terse.{END}<|im_start|>user\nfirst question{END}<|im_start|>assistant\n"
        f"<|im_start|>user\nsecond question{END}<|im_start|>assistant\n"
    )


def test_system_prompt_is_added_to_the_training_text(tok):
    prepared = prep(ALPACA, tok, system_prompt="Answer in one word.")
    text = tok.decode(prepared.train[0]["input_ids"])
    assert text.startswith("<|im_start|>system\nAnswer in one word.<|im_end|>\n<|im_start|>user\n")
    assert "You are helpful." not in text


def test_text_format_trains_all_tokens_and_ends_with_eos(tok):
    rows = [{"text": "The quick brown fox."}, {"text": "Jumps over the dog."}]
    prepared = prep(rows, tok)
    assert prepared.format == "text"
    for row, example in zip(rows, prepared.train):
        assert example["labels"] == example["input_ids"]
        assert example["input_ids"][-1] == tok.eos_token_id
        assert tok.decode(example["input_ids"]) == row["text"] + tok.eos_token


def test_render_prompt_plus_answer_is_the_training_text(tok):
    row = {"instruction": "Route this message to a team.", "input": "Where is my parcel?", "output": "shipping"}
    columns = {"instruction": "instruction", "input": "input", "output": "output"}
    prompt_msgs, answer = prompt_messages(row, "alpaca", columns)
    assert answer == "shipping"
    prompt = render_prompt(prompt_msgs, tok)
    assert prompt == f"{SYSTEM}<|im_start|>user\nRoute this message to a team.\n\nWhere is my parcel?{END}" \
                     "<|im_start|>assistant\n"
    full = tok.apply_chat_template(to_messages(row, "alpaca", columns), tokenize=False)
    assert full == prompt + answer + END
    example = prep([row, row], tok).train[0]
    assert masked_text(example, tok) == prompt
    assert tok.decode(example["input_ids"]) == full


def test_render_prompt_matches_segments_without_a_chat_template(tok):
    plain = copy.deepcopy(tok)
    plain.chat_template = None
    messages = [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Hi there"},
                {"role": "assistant", "content": "hello"}]
    segments = render_segments(messages, plain)
    prompt = render_prompt(messages[:-1], plain)
    assert "".join(t for t, trained in segments if not trained) == prompt
    assert prompt == "Be terse.\n\n### Instruction:\nHi there\n\n### Response:\n"
    assert [t for t, trained in segments if trained] == ["hello<|im_end|>\n\n"]
    example = tokenize_messages(messages, plain, 512, completion_only=True)
    assert trained_text(example, plain) == "hello<|im_end|>\n\n"


def test_prompt_messages_uses_the_last_assistant_turn():
    row = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                        {"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}]}
    msgs, answer = prompt_messages(row, "chat", {"messages": "messages"})
    assert answer == "d" and [m["content"] for m in msgs] == ["a", "b", "c"]
    with pytest.raises(DataError):
        prompt_messages({"text": "x"}, "text", {"text": "text"})


# --------------------------------------------------------------------------- truncation
def test_truncation_is_counted_and_fully_truncated_answers_dropped(tok):
    max_length = 48
    prompt_len = lambda p: len(tok(render_prompt([{"role": "user", "content": p}], tok),  # noqa: E731
                                   add_special_tokens=False)["input_ids"])
    short = {"prompt": "hi", "completion": "ok"}
    # an answer that starts inside max_length and ends past it: truncated but kept
    cut = {"prompt": "hi", "completion": " ".join(["refund"] * 40)}
    # a prompt longer than max_length: every answer token is cut, so the row is dropped
    long = {"prompt": " ".join(["please"] * 60), "completion": "ok"}
    assert prompt_len("hi") < max_length < prompt_len(long["prompt"])
    prepared = prep([short, cut, long], tok, max_length=max_length)
    assert prepared.n_truncated == 2
    assert prepared.n_dropped == 1
    assert prepared.n_rows == 3
    assert len(prepared.train) == 2
    assert all(len(ids) <= max_length for ids in prepared.train["input_ids"])
    kept_cut = prepared.train[1]
    assert kept_cut["length"] == max_length
    assert trained_text(kept_cut, tok).startswith("refund refund")
    assert not trained_text(kept_cut, tok).endswith(END)
    assert max(prepared.lengths) > max_length  # lengths report the untruncated sizes
    summary = prepared.summary()
    assert (summary["truncated"], summary["dropped"], summary["train_rows"]) == (2, 1, 2)


def test_all_truncated_raises(tok):
    rows = [{"prompt": " ".join(["please"] * 40), "completion": "ok"}] * 3
    assert data_error(rows, tok, max_length=16) == (
        "<in-memory list>: every example lost all its answer tokens to truncation at data.max_length=16. "
        "Raise data.max_length."
    )


def test_truncation_without_completion_only_keeps_rows(tok):
    rows = [{"prompt": " ".join(["please"] * 40), "completion": "ok"}] * 2
    prepared = prep(rows, tok, max_length=16, completion_only_loss=False)
    assert (prepared.n_truncated, prepared.n_dropped, len(prepared.train)) == (2, 0, 2)
    assert prepared.train["length"] == [16, 16]


# --------------------------------------------------------------------------- split and fingerprint
def test_eval_split_sizes(tok):
    rows = qa_rows(50)
    prepared = prep(rows, tok, eval_split=0.2)
    assert (len(prepared.train), len(prepared.eval), len(prepared.raw_eval)) == (40, 10, 10)
    assert prepared.n_rows == 50
    assert set(prepared.raw_eval.column_names) == {"prompt", "completion"}
    # the held-out rows are not trained on
    trained = {trained_text(r, tok) for r in prepared.train}
    held = {r["completion"] + END for r in prepared.raw_eval}
    assert len(trained) == 40 and not trained & held
    assert trained | held == {r["completion"] + END for r in rows}


def test_eval_split_rounds_and_keeps_a_training_row(tok):
    assert len(prep(qa_rows(7), tok, eval_split=0.1).eval) == 1  # round(0.7) -> at least one
    tiny = prep(qa_rows(3), tok, eval_split=0.9)
    assert (len(tiny.train), len(tiny.eval)) == (1, 2)


def test_eval_split_needs_two_rows(tok):
    assert data_error(qa_rows(1), tok, eval_split=0.1) == (
        "<in-memory list>: only 1 row(s); need at least 2 to hold some out (or set data.eval_split: 0)."
    )
    assert len(prep(qa_rows(1), tok, eval_split=0).train) == 1


def test_split_follows_the_seed(tok):
    rows = qa_rows(40)
    a = prep(rows, tok, seed=1, eval_split=0.25).raw_eval["prompt"]
    b = prep(rows, tok, seed=1, eval_split=0.25).raw_eval["prompt"]
    c = prep(rows, tok, seed=2, eval_split=0.25).raw_eval["prompt"]
    assert a == b
    assert sorted(a) != sorted(c)


def test_no_eval_split(tok):
    prepared = prep(qa_rows(10), tok, eval_split=0)
    assert prepared.eval is None and prepared.raw_eval is None
    assert len(prepared.train) == 10
    assert prepared.summary()["eval_rows"] == 0


def test_fingerprint_is_stable_and_tracks_content(tok):
    rows = qa_rows(8)
    first = prep(rows, tok, eval_split=0.25)
    assert len(first.fingerprint) == 16 and int(first.fingerprint, 16) >= 0
    assert prep(copy.deepcopy(rows), tok, eval_split=0.25).fingerprint == first.fingerprint
    changed = copy.deepcopy(rows)
    changed[5]["completion"] = "a different answer"
    assert prep(changed, tok, eval_split=0.25).fingerprint != first.fingerprint
    assert prep(rows, tok, eval_split=0.25, seed=7).fingerprint != first.fingerprint  # a different split
    assert prep(rows[::-1], tok, eval_split=0.25).fingerprint != first.fingerprint  # order is content too
    assert first.summary()["fingerprint"] == first.fingerprint


def test_fingerprint_covers_a_held_out_split(tmp_path, tok):
    import datasets

    def fingerprint(held):
        dd = datasets.DatasetDict({"train": datasets.Dataset.from_list(qa_rows(4)),
                                   "validation": datasets.Dataset.from_list(held)})
        return prep(dd, tok).fingerprint

    held = qa_rows(2, prefix="held")
    assert fingerprint(held) == fingerprint(copy.deepcopy(held))
    held_changed = copy.deepcopy(held)
    held_changed[1]["completion"] = "changed"
    assert fingerprint(held_changed) != fingerprint(held)


def test_fingerprint_same_for_the_same_rows_in_any_container(tmp_path, tok):
    import pandas as pd

    rows = qa_rows(5)
    from_list = prep(rows, tok).fingerprint
    assert prep(pd.DataFrame(rows), tok).fingerprint == from_list
    assert prep(str(write_jsonl(tmp_path / "rows.jsonl", rows)), tok).fingerprint == from_list


# --------------------------------------------------------------------------- errors
def test_missing_file(tmp_path):
    path = tmp_path / "nope.jsonl"
    assert data_error(str(path)) == (
        f"data.source: file not found: {path}. Check the path (relative to {os.getcwd()})."
    )


@pytest.mark.parametrize("name, content", [("a.jsonl", ""), ("a.json", ""), ("a.csv", ""), ("a.parquet", ""),
                                           ("b.jsonl", "\n \n"), ("b.csv", "\n\n")])
def test_empty_file(tmp_path, name, content):
    path = tmp_path / name
    path.write_text(content)
    assert data_error(str(path)) == f"{path}: the file is empty."


def test_files_with_a_header_or_schema_but_no_rows(tmp_path):
    import pandas as pd

    (tmp_path / "h.csv").write_text("prompt,completion\n")
    assert data_error(str(tmp_path / "h.csv")) == f"{tmp_path / 'h.csv'}: the file has no rows."
    pd.DataFrame({"prompt": [], "completion": []}).to_parquet(tmp_path / "e.parquet")
    assert data_error(str(tmp_path / "e.parquet")) == f"{tmp_path / 'e.parquet'}: the file has no rows."
    (tmp_path / "e.json").write_text("[]")
    assert data_error(str(tmp_path / "e.json")) == f"{tmp_path / 'e.json'}: the JSON list is empty."


def test_empty_in_memory_sources(tmp_path, tok):
    import datasets
    import pandas as pd

    assert data_error([]) == "<in-memory list>: the list is empty; give at least a few examples."
    assert data_error(pd.DataFrame({"text": []})) == "<in-memory DataFrame>: the DataFrame has no rows."
    empty = datasets.Dataset.from_dict({"text": []})
    assert data_error(empty) == "<in-memory Dataset>: the dataset has no rows."
    split = datasets.DatasetDict({"train": empty, "validation": datasets.Dataset.from_list(ALPACA)})
    assert data_error(split) == "<in-memory DatasetDict>: the dataset has no rows."
    # through prepare_data too, rather than an internal error later on
    assert data_error(pd.DataFrame({"text": []}), tok) == "<in-memory DataFrame>: the DataFrame has no rows."


def test_invalid_json_line_is_named(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "a"}\n\n{"text": b}\n{"text": "c"}\n', encoding="utf-8")
    assert data_error(str(path)) == f"{path}, line 3: invalid JSON (Expecting value). Each line must be one object."


def test_jsonl_line_that_is_not_an_object(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "a"}\n["text", "b"]\n', encoding="utf-8")
    assert data_error(str(path)) == f"{path}, line 2: expected a JSON object, got list."


def test_invalid_json_list_names_the_line(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('[\n  {"text": "a"},\n  {"text": "b",}\n]\n', encoding="utf-8")
    assert data_error(str(path)) == f"{path}, line 3: invalid JSON (Expecting property name enclosed in double quotes)."


def test_unsupported_suffix(tmp_path):
    path = tmp_path / "train.txt"
    path.write_text("hello")
    assert data_error(str(path)) == f"{path}: unsupported file type '.txt'. Use .jsonl, .json, .csv or .parquet."


def test_not_a_datasets_directory(tmp_path):
    (tmp_path / "plain").mkdir()
    message = data_error(str(tmp_path / "plain"))
    assert message.startswith(f"{tmp_path / 'plain'}: not a directory written by datasets' save_to_disk (")


def test_dataset_dict_needs_train(tmp_path):
    import datasets

    datasets.DatasetDict({"test": datasets.Dataset.from_list(ALPACA)}).save_to_disk(str(tmp_path / "dd"))
    assert data_error(str(tmp_path / "dd")) == f"{tmp_path / 'dd'}: a DatasetDict needs a 'train' split (has test)."


def test_unsupported_source_type():
    assert data_error(42) == (
        "data.source: cannot load a int; give a file path, a datasets directory, a pandas DataFrame, "
        "a list of dicts or a datasets.Dataset."
    )


def test_list_with_a_non_dict():
    assert data_error([ALPACA[0], "just text", ALPACA[1]]) == (
        "<in-memory list>, row 2: expected a dict of column -> value, got str"
    )


def test_wrong_type_in_a_file_row(tmp_path, tok):
    rows = [dict(ALPACA[0]), dict(ALPACA[1], output=5), dict(ALPACA[2])]
    path = write_jsonl(tmp_path / "train.jsonl", rows)
    assert data_error(str(path), tok) == (
        f"1 problem(s) in the data:\n  - {path}, row 2, column 'output': expected text, got int 5"
    )


def test_wrong_type_in_every_row(tmp_path, tok):
    path = write_jsonl(tmp_path / "train.jsonl", [{"prompt": "p", "completion": i} for i in (1, 2)])
    assert data_error(str(path), tok) == (
        f"2 problem(s) in the data:\n  - {path}, row 1, column 'completion': expected text, got int 1"
        f"\n  - {path}, row 2, column 'completion': expected text, got int 2"
    )


def test_wrong_type_in_a_list_or_dataframe_row(tok):
    import pandas as pd

    rows = [{"prompt": "p1", "completion": "c1"}, {"prompt": "p2", "completion": "c2"},
            {"prompt": "p3", "completion": 3}]
    expected = ("{src}, row 3, column 'completion': got int 3 but row 1 has str; give every row the same type.")
    assert data_error(rows, tok) == expected.format(src="<in-memory list>")
    assert data_error(pd.DataFrame(rows), tok) == expected.format(src="<in-memory DataFrame>")


def test_wrong_type_in_an_optional_column(tok):
    rows = [{"instruction": "i", "input": ["not", "text"], "output": "o"}] * 1
    assert data_error(rows, tok) == (
        "1 problem(s) in the data:\n  - <in-memory list>, row 1, column 'input': expected text, got list "
        "['not', 'text']"
    )


def test_missing_value_in_a_row(tok):
    rows = [{"prompt": "p1", "completion": "c1"}, {"prompt": None, "completion": "c2"}]
    assert data_error(rows, tok) == (
        "1 problem(s) in the data:\n  - <in-memory list>, row 2, column 'prompt': expected text, got NoneType None"
    )


def test_empty_answer(tok):
    rows = [{"prompt": "p1", "completion": "c1"}, {"prompt": "p2", "completion": "  "}]
    assert data_error(rows, tok) == (
        "1 problem(s) in the data:\n  - <in-memory list>, row 2, column 'completion': is empty"
    )


def test_problems_in_the_held_out_split_name_it(tmp_path, tok):
    ev = write_jsonl(tmp_path / "eval.jsonl", [{"prompt": "p", "completion": ""}])
    with pytest.raises(DataError) as info:
        prepare_data(DataConfig(source=qa_rows(3), eval_source=str(ev)), tok)
    assert str(info.value) == f"1 problem(s) in the data:\n  - {ev}, row 1, column 'completion': is empty"


def test_chat_rows_without_assistant_or_malformed(tok):
    no_assistant = [{"messages": [{"role": "user", "content": "hi"}]}]
    assert data_error(no_assistant, tok) == (
        "1 problem(s) in the data:\n  - <in-memory list>, row 1, column 'messages': no 'assistant' message, "
        "so there is nothing to learn"
    )
    empty = [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}]},
             {"messages": []}]
    assert data_error(empty, tok) == (
        "1 problem(s) in the data:\n  - <in-memory list>, row 2, column 'messages': expected a non-empty list "
        "of {role, content} messages"
    )
    no_content = [{"messages": [{"role": "user"}, {"role": "assistant", "content": "ok"}]}]
    assert data_error(no_content, tok) == (
        "1 problem(s) in the data:\n  - <in-memory list>, row 1, column 'messages', message 1: each message needs "
        "string 'role' and 'content'"
    )


def test_many_problems_are_capped(tok):
    rows = [{"prompt": "p", "completion": ""}] * 25
    message = data_error(rows, tok)
    lines = message.splitlines()
    assert lines[0] == "10 problem(s) in the data (stopped after 10):"
    assert lines[1] == "  - <in-memory list>, row 1, column 'completion': is empty"
    assert lines[-1] == "  - <in-memory list>, row 10, column 'completion': is empty"


# --------------------------------------------------------------------------- summary
def test_summary_fields(tok):
    import numpy as np

    prepared = prep(ALPACA * 4, tok, eval_split=0.25)
    summary = prepared.summary()
    assert set(summary) == {"source", "format", "columns", "rows", "train_rows", "eval_rows", "truncated",
                            "dropped", "tokens", "fingerprint", "detected"}
    assert summary["source"] == "<in-memory list>"
    assert summary["format"] == "alpaca"
    assert summary["columns"] == {"instruction": "instruction", "output": "output", "input": "input"}
    assert (summary["rows"], summary["train_rows"], summary["eval_rows"]) == (12, 9, 3)
    assert (summary["truncated"], summary["dropped"]) == (0, 0)
    tokens = summary["tokens"]
    assert set(tokens) == {"p50", "p90", "p99", "max", "train_total", "trained_fraction"}
    lengths = [len(ids) for ids in prepared.train["input_ids"]]
    assert sorted(prepared.lengths) == sorted(lengths)
    assert tokens["max"] == max(lengths)
    assert tokens["p50"] == int(np.percentile(lengths, 50))
    assert tokens["p50"] <= tokens["p90"] <= tokens["p99"] <= tokens["max"]
    assert tokens["train_total"] == sum(lengths)
    trained = sum(1 for labels in prepared.train["labels"] for t in labels if t != IGNORE_INDEX)
    assert tokens["trained_fraction"] == round(trained / sum(lengths), 4)
    assert 0 < tokens["trained_fraction"] < 0.5  # answers are a few tokens of a long prompt
    assert json.loads(json.dumps(summary)) == summary  # it goes into the run record as JSON


def test_demo_dataset_prepares(tok):
    prepared = prepare_data(DataConfig(), tok)
    summary = prepared.summary()
    assert (summary["rows"], summary["train_rows"], summary["eval_rows"]) == (480, 432, 48)
    assert summary["format"] == "alpaca" and summary["source"] == "demo:support_tickets"
    assert {trained_text(r, tok) for r in prepared.train.select(range(50))} <= {
        f"{label}{END}" for label in ("billing", "shipping", "technical", "account", "refund")
    }


# --------------------------------------------------------------------------- collators (engine/trainer.py)
def test_packing_collator_flattens_with_restarting_positions(tok):
    from jupyter_ft.engine.trainer import make_collator

    prepared = prep([{"prompt": "short one", "completion": "ok"},
                     {"prompt": "a somewhat longer prompt here", "completion": "refund"},
                     {"prompt": "third", "completion": "billing"}], tok)
    features = [prepared.train[i] for i in range(3)]
    batch = make_collator(tok, packing=True)(features)
    sizes = [len(f["input_ids"]) for f in features]
    total = sum(sizes)
    assert batch["input_ids"].shape == (1, total)
    assert batch["input_ids"][0].tolist() == [t for f in features for t in f["input_ids"]]
    assert batch["position_ids"][0].tolist() == [p for n in sizes for p in range(n)]
    labels = batch["labels"][0].tolist()
    starts = [sum(sizes[:i]) for i in range(3)]
    for start, f in zip(starts, features):
        assert labels[start] == IGNORE_INDEX  # no loss across the boundary into the next example
        assert labels[start + 1: start + len(f["labels"])] == f["labels"][1:]
    assert labels.count(IGNORE_INDEX) == sum(f["labels"].count(IGNORE_INDEX) for f in features) + sum(
        1 for f in features if f["labels"][0] != IGNORE_INDEX)


def test_padding_collator_pads_labels_with_ignore_index(tok):
    from jupyter_ft.engine.trainer import make_collator

    prepared = prep([{"prompt": "short", "completion": "ok"},
                     {"prompt": "a much longer prompt with many words", "completion": "refund"}], tok)
    features = [prepared.train[0], prepared.train[1]]
    batch = make_collator(tok, packing=False)(features)
    width = max(len(f["input_ids"]) for f in features)
    assert batch["input_ids"].shape == batch["labels"].shape == (2, width)
    assert features[0]["length"] < width  # the first row really is padded
    for row, f in enumerate(features):
        pad = width - len(f["input_ids"])
        if tok.padding_side == "right":
            ids, labels, mask = f["input_ids"] + [tok.pad_token_id] * pad, f["labels"] + [IGNORE_INDEX] * pad, \
                [1] * len(f["input_ids"]) + [0] * pad
        else:
            ids, labels, mask = [tok.pad_token_id] * pad + f["input_ids"], [IGNORE_INDEX] * pad + f["labels"], \
                [0] * pad + [1] * len(f["input_ids"])
        assert batch["input_ids"][row].tolist() == ids
        assert batch["labels"][row].tolist() == labels
        assert batch["attention_mask"][row].tolist() == mask
