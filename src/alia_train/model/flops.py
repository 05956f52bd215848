"""Training FLOPs per token, for TFLOP/s and MFU.

Counted as model FLOPs (recompute not included, as in the PaLM / Megatron MFU definitions):
  6 * N_nonembed      dense matmuls of the layers: 2 forward + 4 backward per weight
  + 6 * L * s * h     attention scores (QK^T) and values (AV): 2 matmuls x 2 FLOPs x s x h per
                      token per layer forward, x3 for forward + backward, halved by causality
  + 6 * h * V         the output (logits) layer
The input embedding is a lookup and costs no matmul FLOPs. Norm weights are counted in
N_nonembed (negligible).

This is Megatron-LM's convention (causal attention halved). PaLM's (appendix B of the PaLM
paper; torchtitan and Nanotron report it) counts the full s x s attention:
  6 * (N_nonembed + h * V) + 12 * L * s * h
so the same run has a higher PaLM MFU; both are reported (mfu, mfu_palm) to compare with
either kind of anchor.
"""

from __future__ import annotations

from alia_train.config.schema import ModelConfig
from alia_train.model.params import count_params


def attention_flops_per_token(m: ModelConfig, seq_length: int) -> float:
    # QK^T and AV: 2 matmuls x 2 FLOPs x s x h per token forward; x3 for fwd+bwd; /2 causal.
    return 3 * 2 * 2 * m.num_layers * seq_length * m.hidden_size / 2


def training_flops_per_token(m: ModelConfig, seq_length: int, vocab_size: int) -> float:
    counts = count_params(m, vocab_size)
    dense = 6 * counts.non_embedding
    logits = 6 * m.hidden_size * vocab_size
    return dense + attention_flops_per_token(m, seq_length) + logits


def mfu(tokens_per_sec_per_gpu: float, flops_per_token: float, peak_tflops: float) -> float:
    return tokens_per_sec_per_gpu * flops_per_token / (peak_tflops * 1e12)


def palm_flops_per_token(m: ModelConfig, seq_length: int, vocab_size: int) -> float:
    """PaLM's count: attention not halved by causality (12·L·s·h instead of 6·L·s·h)."""
    return training_flops_per_token(m, seq_length, vocab_size) + attention_flops_per_token(m, seq_length)
