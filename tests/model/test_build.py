"""What build_model hands megatron, checked on the built modules in one gloo process: the norms
(ours, in the model's dtype, the block's final norm included), bf16 wrapping, the fused cross
entropy choice, the Transformer Engine spec call, and that recompute really recomputes."""

from __future__ import annotations

import inspect

import pytest
import torch

from alia_train.config import load_config

TINY = ["+model=tiny", "train.seq_length=32", "train.micro_batch_size=2"]


def _build(overrides: list[str], dtype: torch.dtype):
    from alia_train.model.build import build_model

    cfg = load_config([*TINY, *overrides])
    return cfg, build_model(cfg, vocab_size=4096, dtype=dtype, device=torch.device("cpu"))


def _gpt(chunk):
    from megatron.core.transformer.module import Float16Module

    return chunk.module if isinstance(chunk, Float16Module) else chunk


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_every_norm_is_ours_in_the_model_dtype(runtime, dtype):
    from megatron.core.transformer.module import Float16Module

    from alia_train.model.norm import RMSNorm

    _, chunks = _build([], dtype)
    assert isinstance(chunks[0], Float16Module) == (dtype == torch.bfloat16)
    decoder = _gpt(chunks[0]).decoder
    norms = [m for m in decoder.modules() if "norm" in type(m).__name__.lower()]
    # two per layer plus the block's final norm, all ours: nothing picked by what is importable
    assert len(norms) == 2 * len(decoder.layers) + 1
    assert all(type(m) is RMSNorm for m in norms), {type(m).__name__ for m in norms}
    assert type(decoder.final_layernorm) is RMSNorm
    assert {m.weight.dtype for m in norms} == {dtype}
    assert not any(m.weight.sequence_parallel for m in norms)  # SP is off here


def test_rms_norm_matches_the_definition(runtime):
    from megatron.core.transformer import TransformerConfig

    from alia_train.model.norm import RMSNorm

    cfg = TransformerConfig(num_layers=1, hidden_size=8, num_attention_heads=1, normalization="RMSNorm",
                            use_cpu_initialization=True, sequence_parallel=False)
    norm = RMSNorm(config=cfg, hidden_size=8, eps=1e-5)
    with torch.no_grad():
        norm.weight.copy_(torch.linspace(0.5, 1.5, 8))
    x = torch.randn(3, 2, 8)
    expected = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * norm.weight
    torch.testing.assert_close(norm(x), expected)


def test_fused_cross_entropy_only_where_its_bf16_gradient_is_the_model_precision(runtime):
    from alia_train.model.build import transformer_config

    cfg = load_config(TINY)
    assert transformer_config(cfg, torch.bfloat16, cuda=True).cross_entropy_loss_fusion
    assert not transformer_config(cfg, torch.float32, cuda=True).cross_entropy_loss_fusion
    assert not transformer_config(cfg, torch.bfloat16, cuda=False).cross_entropy_loss_fusion


def test_te_spec_call_binds_to_megatrons_signature():
    """The call that crashed every TE run (a `normalization` argument megatron 0.19 does not
    take) is checked against the installed megatron-core's real signature."""
    from megatron.core.models.gpt import gpt_layer_specs

    from alia_train.model import spec

    inspect.signature(gpt_layer_specs.get_gpt_layer_with_transformer_engine_submodules).bind(**spec.TE_SPEC_KWARGS)
    assert "normalization" not in spec.TE_SPEC_KWARGS


def test_te_without_transformer_engine_is_a_clear_error():
    from alia_train.model import spec

    if spec.transformer_engine_available():
        pytest.skip("Transformer Engine is importable here")
    with pytest.raises(RuntimeError, match="Transformer Engine is not importable"):
        spec.te_layer_spec()
    assert spec.resolve_layer_impl("auto", cuda=True) == spec.LOCAL


@pytest.mark.parametrize(
    "overrides, calls_per_layer",
    [
        ([], 1),
        (["train.recompute=selective"], 2),
        (["train.recompute=full", "train.recompute_num_layers=1"], 2),
    ],
)
def test_recompute_really_recomputes(runtime, monkeypatch, overrides, calls_per_layer):
    """Core attention runs once per layer in the forward, and once more in the backward when
    it is recomputed (selective: attention only; full: the whole layer)."""
    from alia_train.model.attention import SDPAttention

    _, chunks = _build(overrides, torch.float32)
    model = chunks[0]
    calls = []
    original = SDPAttention.forward
    monkeypatch.setattr(SDPAttention, "forward", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    tokens = torch.randint(0, 4096, (2, 32))
    positions = torch.arange(32).expand(2, 32)
    loss = model(tokens, positions, None, labels=tokens)
    loss.sum().backward()
    assert len(calls) == calls_per_layer * len(_gpt(model).decoder.layers)
