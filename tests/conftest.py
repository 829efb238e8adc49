"""Shared fixtures: a tiny random Llama with a real BPE tokenizer and chat template, built offline.

Tests run against it because it exercises the same code paths as SmolLM2 (chat template, NF4, LoRA,
Trainer) in seconds; the ``slow`` tests use the real model.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "jupyter_ft" / "demo" / "support_tickets.jsonl"
# Converted GGUF models go to a cache inside the checkout (git-ignored), never the user's ~/.cache.
os.environ["JUPYTER_FT_CACHE"] = os.environ.get("JUPYTER_FT_TEST_CACHE", str(REPO / ".ft-test-cache"))

CHATML = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are helpful.<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def build_tiny_model(path: Path, vocab_size: int = 512) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    rows = [json.loads(line) for line in DEMO.read_text().splitlines()]
    corpus = [f"{r['instruction']} {r['input']} {r['output']}" for r in rows]
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus, trainer)
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                     bos_token="<|im_start|>")
    hf_tok.chat_template = CHATML
    hf_tok.save_pretrained(path)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(hf_tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True,
        bos_token_id=hf_tok.bos_token_id, eos_token_id=hf_tok.eos_token_id, pad_token_id=hf_tok.pad_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture()
def demo_rows() -> list[dict]:
    return [json.loads(line) for line in DEMO.read_text().splitlines()]




@pytest.fixture(autouse=True)
def _no_leftover_runs():
    """A test that leaves a run training would leak it into the next test's queue: stop and wait."""
    yield
    from jupyter_ft.runtime import registry

    for run_id in list(registry.live_run_ids()):
        run = registry.get(run_id)
        if run is not None:
            run.stop()
            run.wait(60)


def pytest_runtest_makereport(item, call):
    """A failed test of the reliability suites counts as a crash in the report line."""
    if call.when == "call" and call.excinfo is not None and item.get_closest_marker("reliability"):
        from reliability import crash

        crash()


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    from reliability import summary

    line = summary()
    if line:
        terminalreporter.write_sep("=", line, bold=True)
