"""Model resolution, hardware choices, quantization, LoRA wrapping and the memory estimate."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from jupyter_ft import FineTuneConfig
from jupyter_ft import models
from jupyter_ft.models import ModelResolutionError, resolve_model


def test_local_directory_resolves(tiny_model_dir: Path) -> None:
    r = resolve_model(str(tiny_model_dir))
    assert r.kind == "local" and r.path == str(tiny_model_dir)


def test_directory_without_config_is_explained(tmp_path: Path) -> None:
    with pytest.raises(ModelResolutionError, match="directory without config.json"):
        resolve_model(str(tmp_path))


def test_missing_gguf_file(tmp_path: Path) -> None:
    with pytest.raises(ModelResolutionError, match="GGUF file not found"):
        resolve_model(str(tmp_path / "model.gguf"))


def test_missing_local_path(tmp_path: Path) -> None:
    with pytest.raises(ModelResolutionError, match="no such directory or file"):
        resolve_model(str(tmp_path / "nope" / "deeper"))


def test_unreachable_hub_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    t0 = time.perf_counter()
    with pytest.raises(ModelResolutionError, match="not in the local Hugging Face cache and the hub cannot be reached"):
        resolve_model("some-org/some-model-that-is-not-cached")
    assert time.perf_counter() - t0 < 10


def test_offline_mode_fails_without_network_attempt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(models.resolve, "hub_reachable", lambda timeout=3.0: pytest.fail("must not probe the hub offline"))
    with pytest.raises(ModelResolutionError, match="smollm2-135m-instruct"):
        resolve_model("some-org/uncached")


def test_dtype_choice_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.delenv("JUPYTER_FT_DTYPE", raising=False)
    fast = models.cpu_bf16_is_fast()
    assert isinstance(fast, bool)
    assert models.select_compute_dtype("cpu") == (torch.bfloat16 if fast else torch.float32)
    monkeypatch.setenv("JUPYTER_FT_DTYPE", "float32")
    assert models.select_compute_dtype("cpu") == torch.float32


def _config(model_dir: Path, **kw) -> FineTuneConfig:
    return FineTuneConfig.from_dict({"model": {"name": str(model_dir)}}, **kw)


def test_nf4_quantization_and_lora_wrapping(tiny_model_dir: Path) -> None:
    import bitsandbytes as bnb
    import torch

    cfg = _config(tiny_model_dir, **{"lora.r": 4})
    resolved = resolve_model(cfg.model.name)
    base = models.load_base_model(cfg, resolved, "cpu", torch.float32)
    linears = [m for m in base.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(linears) == 2 * 7  # q, k, v, o, gate, up, down in each of 2 layers
    assert linears[0].weight.quant_state.quant_type == "nf4"
    model = models.apply_lora(base, cfg)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    expected = sum(4 * (m.in_features + m.out_features) for m in linears)
    assert trainable == expected


def test_no_quantization_keeps_plain_linears(tiny_model_dir: Path) -> None:
    import bitsandbytes as bnb
    import torch

    cfg = _config(tiny_model_dir, quantization="none")
    base = models.load_base_model(cfg, resolve_model(cfg.model.name), "cpu", torch.float32)
    assert not any(isinstance(m, bnb.nn.Linear4bit) for m in base.modules())


@pytest.fixture(scope="module")
def smollm2_config_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SmolLM2-135M's config alone: the estimate reads shapes on the meta device and needs no weights."""
    from transformers import LlamaConfig

    path = tmp_path_factory.mktemp("smollm2-config")
    LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                num_attention_heads=9, num_key_value_heads=3, tie_word_embeddings=True).save_pretrained(path)
    return path


def test_memory_estimate_parts(tiny_model_dir: Path, smollm2_config_dir: Path) -> None:
    nf4 = models.estimate_memory(_config(tiny_model_dir), device="cpu")
    ckpt = models.estimate_memory(_config(tiny_model_dir, **{"training.gradient_checkpointing": True}), device="cpu")
    big_batch = models.estimate_memory(_config(tiny_model_dir, **{"training.batch_size": 64}), device="cpu")
    # NF4 saves weight memory on a real shape; k-bit training keeps unquantized weights (embeddings, norms) in
    # fp32, so on the tiny model, mostly embedding, it does not
    real_nf4 = models.estimate_memory(_config(smollm2_config_dir), device="cpu")
    real_full = models.estimate_memory(_config(smollm2_config_dir, quantization="none"), device="cpu")
    assert real_nf4.weights < 0.75 * real_full.weights
    embeddings = 49152 * 576
    # the tied embedding counted once (not again as the LM head), upcast to fp32
    assert embeddings * 4 < real_nf4.weights < embeddings * 4 + 0.6 * 106_000_000
    assert real_nf4.lora == real_full.lora > 0 and nf4.optimizer == 3 * nf4.lora
    assert ckpt.activations < nf4.activations < big_batch.activations
    assert nf4.total == nf4.weights + nf4.lora + nf4.optimizer + nf4.activations
    assert nf4.fits and "GiB" in str(nf4)


def test_memory_estimate_counts_the_longest_row_not_max_length(tiny_model_dir: Path) -> None:
    """Batches pad to their longest row: short-row tasks were overestimated about 2x by counting max_length
    (measured on an H100). Packing fills rows to max_length, so it keeps max_length."""
    cfg = _config(tiny_model_dir, **{"data.max_length": 512})
    full = models.estimate_memory(cfg, device="cpu")
    short = models.estimate_memory(cfg, device="cpu", longest=128)
    longer_than_max = models.estimate_memory(cfg, device="cpu", longest=4096)
    packed = models.estimate_memory(_config(tiny_model_dir, **{"data.max_length": 512, "data.packing": True}),
                                    device="cpu", longest=128)
    assert (full.seq_len, short.seq_len, longer_than_max.seq_len, packed.seq_len) == (512, 128, 512, 512)
    assert short.activations < full.activations == longer_than_max.activations == packed.activations
    assert short.weights == full.weights


def test_memory_estimate_flags_what_cannot_fit(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(models.memory_plan, "available_memory", lambda device: 1024)
    est = models.estimate_memory(_config(tiny_model_dir), device="cpu")
    assert not est.fits and est.to_dict()["fits"] is False


def test_evaluation_does_not_change_how_4bit_layers_train(tiny_model_dir: Path) -> None:
    """An evaluation pass (eval mode, no grad: what the Trainer does every eval_every steps) must leave the
    LoRA gradients exactly as they were. On AVX512-BF16 CPUs bitsandbytes used to repack the NF4 weights
    into an inference layout whose kernel has no autograd, and training after the first eval went wrong."""
    import bitsandbytes as bnb
    import torch

    cfg = _config(tiny_model_dir, **{"lora.r": 4, "lora.dropout": 0.0})  # no dropout: same grads twice
    resolved = resolve_model(cfg.model.name)
    model = models.apply_lora(models.load_base_model(cfg, resolved, "cpu", torch.float32), cfg)
    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert layers and not any(getattr(m, "support_avx512bf16_for_cpu", False) for m in layers)
    torch.manual_seed(0)
    for name, p in model.named_parameters():  # LoRA B starts at zero: give it values so grads flow through A
        if "lora_B" in name:
            p.data.normal_(0, 0.1)
    ids = torch.randint(0, 500, (2, 12))

    def lora_grads() -> dict[str, torch.Tensor]:
        model.train()
        model.zero_grad()
        model(input_ids=ids, labels=ids).loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    before = lora_grads()
    model.eval()
    with torch.no_grad():
        model(input_ids=ids)
    after = lora_grads()
    assert not any(getattr(m.weight.quant_state, "packing_format_for_cpu", False) for m in layers)
    for name, grad in before.items():
        torch.testing.assert_close(after[name], grad, msg=lambda m, n=name: f"{n}: {m}")


def test_lora_dropout_auto_is_off_on_a_cpu_and_the_qlora_value_on_cuda(tiny_model_dir: Path) -> None:
    from jupyter_ft.config import FineTuneConfig
    from jupyter_ft.models import resolve_lora_dropout

    auto = FineTuneConfig.from_dict({})
    assert auto.lora.dropout == "auto"
    assert resolve_lora_dropout(auto, "cpu") == 0.0 and resolve_lora_dropout(auto, "cuda") == 0.05
    assert resolve_lora_dropout(FineTuneConfig.from_dict({"lora": {"dropout": 0.1}}), "cpu") == 0.1
    model = models.apply_lora(models.load_base_model(_config(tiny_model_dir), models.resolve_model(
        str(tiny_model_dir)), "cpu", __import__("torch").float32), _config(tiny_model_dir), "cpu")
    layer = next(m for n, m in model.named_modules() if n.endswith("q_proj") and hasattr(m, "lora_dropout"))
    assert type(layer.lora_dropout["default"]).__name__ == "Identity"  # no random masks drawn at all
