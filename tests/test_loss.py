"""The training loss computed at the labelled positions only (``LabelledLossMixin``) is the model's own loss:
the same value and the same gradients, with and without the Trainer's token count, padded and packed."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from jupyter_ft.engine.trainer import make_collator, trainer_class


def build(tiny_model_dir: Path, tmp_path: Path, tiny_tokenizer, packing: bool):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                           LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear"))
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[], per_device_train_batch_size=3)
    ours = trainer_class()(model=model, args=args, processing_class=tiny_tokenizer)
    plain = Trainer(model=model, args=args, processing_class=tiny_tokenizer)
    rows = []
    for n, answer_len in ((9, 2), (14, 5), (6, 1)):  # prompts masked, answers of different lengths
        ids = torch.randint(5, 200, (n,)).tolist()
        rows.append({"input_ids": ids, "labels": [-100] * (n - answer_len) + ids[n - answer_len:]})
    batch = make_collator(tiny_tokenizer, packing=packing)(rows)
    return model, ours, plain, batch


def grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("packing", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize("num_items", [None, 11], ids=["batch-mean", "token-count"])
def test_loss_at_labelled_positions_equals_the_models_own(tiny_model_dir: Path, tiny_tokenizer, tmp_path: Path,
                                                           packing: bool, num_items) -> None:
    model, ours, plain, batch = build(tiny_model_dir, tmp_path, tiny_tokenizer, packing)
    model.train()
    count = None if num_items is None else torch.tensor(num_items)

    model.zero_grad()
    reference = plain.compute_loss(model, dict(batch), num_items_in_batch=count)
    reference.backward()
    expected = grads(model)

    model.zero_grad()
    calls = []
    hook = model.get_base_model().lm_head.register_forward_hook(lambda m, i, o: calls.append(o.shape))
    loss = ours.compute_loss(model, dict(batch), num_items_in_batch=count)
    loss.backward()
    hook.remove()
    assert torch.allclose(loss, reference, rtol=1e-5, atol=1e-6), (loss, reference)
    got = grads(model)
    assert got.keys() == expected.keys() and got
    for name in expected:
        assert torch.allclose(got[name], expected[name], rtol=1e-4, atol=1e-6), name
    # the head ran on fewer positions than the sequence has
    assert calls and calls[0][1] < batch["input_ids"].shape[1]


def test_evaluation_keeps_the_models_own_loss_and_logits(tiny_model_dir: Path, tiny_tokenizer,
                                                         tmp_path: Path) -> None:
    model, ours, plain, batch = build(tiny_model_dir, tmp_path, tiny_tokenizer, packing=False)
    model.eval()
    with torch.no_grad():
        loss, outputs = ours.compute_loss(model, dict(batch), return_outputs=True)
        reference = plain.compute_loss(model, dict(batch))
    assert torch.allclose(loss, reference) and outputs.logits.shape[1] == batch["input_ids"].shape[1]
