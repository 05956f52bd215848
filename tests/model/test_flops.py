"""The FLOP count behind TFLOP/s and MFU, checked against a count by hand."""

import pytest

from alia_train.config.schema import ModelConfig
from alia_train.model.flops import mfu, palm_flops_per_token, training_flops_per_token


def test_flops_per_token_hand_count():
    m = ModelConfig(name="custom", num_layers=2, hidden_size=64, ffn_hidden_size=128,
                    num_attention_heads=4, num_query_groups=2)
    # Per layer: q 64*64 + k,v 2*64*(2 groups*16) + out 64*64 + SwiGLU 3*64*128 + 2 norms*64
    per_layer = 4096 + 4096 + 4096 + 24576 + 128
    non_embedding = 2 * per_layer + 64  # + final norm
    dense = 6 * non_embedding
    attention = 6 * 2 * 32 * 64  # 6 * layers * seq * hidden (causal QK^T and AV, fwd+bwd)
    logits = 6 * 64 * 1000
    assert dense + attention + logits == 852_864
    assert training_flops_per_token(m, seq_length=32, vocab_size=1000) == 852_864


def test_salamandra_2b_flops_scale():
    from alia_train.config import load_config

    m = load_config(["+model=salamandra_2b"]).model
    f = training_flops_per_token(m, 4096, 256_000)
    # 6 * 1.2049e9 non-embedding + 6*24*4096*2048 attention + 6*2048*256000 logits
    assert f == pytest.approx(6 * 1_204_914_176 + 6 * 24 * 4096 * 2048 + 6 * 2048 * 256_000)


def test_salamandra_2b_at_seq_4096_in_both_conventions():
    """By hand: N_nonembed 1,204,914,176; L 24, h 2048, V 256,000, s 4096.
    ours (Megatron-LM, causal attention halved):  6N + 6·L·s·h + 6·h·V
        = 7,229,485,056 + 1,207,959,552 + 3,145,728,000 = 11,583,172,608
    PaLM (attention not halved):                  6N + 12·L·s·h + 6·h·V
        = 7,229,485,056 + 2,415,919,104 + 3,145,728,000 = 12,791,132,160"""
    from alia_train.config import load_config

    m = load_config(["+model=salamandra_2b"]).model
    assert training_flops_per_token(m, 4096, 256_000) == 11_583_172_608
    assert palm_flops_per_token(m, 4096, 256_000) == 12_791_132_160
    # the same run at 40,000 tokens/s per H100: 46.8% MFU ours, 51.7% PaLM's
    assert mfu(40_000, 11_583_172_608, 989.0) == pytest.approx(0.4685, abs=1e-4)
    assert mfu(40_000, 12_791_132_160, 989.0) == pytest.approx(0.5173, abs=1e-4)


def test_mfu():
    assert mfu(10_000, 1e10, 989.0) == pytest.approx(1e14 / 989e12)
