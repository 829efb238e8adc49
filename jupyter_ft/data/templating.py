"""Chat turns to model text and token ids, with the prompt masked out of the loss.

Rendering goes through the model's own chat template so training sees exactly the text the model
will see at inference (:func:`render_prompt` is the inference side of :func:`render_segments`).
"""

from __future__ import annotations

from typing import Any

from ..errors import DataError

__all__ = ["IGNORE_INDEX", "render_prompt", "render_segments", "tokenize_messages"]

IGNORE_INDEX = -100


def render_segments(messages: list[dict[str, str]], tokenizer: Any) -> list[tuple[str, bool]]:
    """Split a conversation into (text, trained) segments using the tokenizer's chat template.

    Each assistant turn is trained; everything before it (system, user, the assistant header) is the
    prompt. Tokenizers without a chat template get an Alpaca-style fallback.
    """
    if messages and messages[0]["role"] == "text":
        eos = tokenizer.eos_token or ""
        return [(messages[0]["content"] + eos, True)]
    if getattr(tokenizer, "chat_template", None):
        segments: list[tuple[str, bool]] = []
        done = ""
        for i, m in enumerate(messages):
            if m["role"] != "assistant":
                continue
            prompt = tokenizer.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True)
            full = tokenizer.apply_chat_template(messages[: i + 1], tokenize=False)
            if not prompt.startswith(done) or not full.startswith(prompt):
                raise DataError("the model's chat template is not prefix-stable; use data.format: text instead")
            segments.append((prompt[len(done):], False))
            segments.append((full[len(prompt):], True))
            done = full
        return segments
    segments = []
    for m in messages:
        if m["role"] == "assistant":
            segments.append(("### Response:\n", False))
            segments.append((m["content"] + (tokenizer.eos_token or "") + "\n\n", True))
        else:
            header = {"system": "", "user": "### Instruction:\n"}.get(m["role"], f"### {m['role']}:\n")
            segments.append((f"{header}{m['content']}\n\n", False))
    return segments


def render_prompt(messages: list[dict[str, str]], tokenizer: Any) -> str:
    """The text a model continues from at inference, matching ``render_segments`` exactly."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return "".join(t for t, _ in render_segments(messages + [{"role": "assistant", "content": ""}], tokenizer)[:-1])


def tokenize_messages(messages: list[dict[str, str]], tokenizer: Any, max_length: int, completion_only: bool) -> dict[str, Any]:
    """Token ids and labels (prompt tokens set to ``IGNORE_INDEX`` when ``completion_only``), cut at ``max_length``."""
    ids: list[int] = []
    labels: list[int] = []
    for text, trained in render_segments(messages, tokenizer):
        piece = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids += piece
        labels += piece if (trained or not completion_only) else [IGNORE_INDEX] * len(piece)
    full_length = len(ids)
    ids, labels = ids[:max_length], labels[:max_length]
    return {"input_ids": ids, "labels": labels, "length": len(ids), "full_length": full_length}
