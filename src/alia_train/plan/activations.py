"""Activation memory of one pipeline stage, after Korthikanti et al. 2022 ("Reducing Activation
Recomputation in Large Transformer Models"), redone for the layer alia-train builds.

The paper's GPT layer keeps sbh(34 + 5as/h) bytes per micro-batch (bf16, dropout on, GeLU MLP
of 4h, unfused attention). Counting the same way for our layer (s sequence, b micro batch,
h hidden, a heads, r = query groups / heads, F = ffn / h), in bytes of bf16:

  replicated over TP unless sequence parallel (then / t):
    8 sbh      the inputs of both RMSNorms and of the QKV and FC1 matmuls
  split over TP (/ t):
    (2 + 4r) sbh   q, k, v as the core attention saves them
    2 sbh          the core attention's output (flash keeps it, with an fp32 log-sum-exp)
    2 sbh          the input of the output projection
    8F sbh         SwiGLU without fusion (build.py sets bias_activation_fusion=False):
                   FC1 output (gate + up) 4F, silu(gate) 2F, FC2 input 2F
  only if the core attention materialises the scores (megatron's unfused attention):
    2 as^2 b       softmax output (the paper's 5 as^2 b includes dropout's mask and output;
                   our dropout is 0)

alia-train's core attention is flash-style (Transformer Engine, or PyTorch SDPA in the local
spec), so the s^2 term is absent by default. Selective recompute drops the core attention's
internals (its output, the log-sum-exp and, if stored, the scores). Full recompute keeps only
the input of each checkpointed chunk of `recompute_num_layers` layers, plus one chunk's full
activations while it is recomputed in the backward pass.

Pipeline parallelism (1F1B): stage i holds min(pp - i, micro-batches) micro-batches in flight,
so the first stage holds pp of them; the interleaved schedule multiplies the first stage's
activations by (1 + (pp - 1) / (pp * vpp)). Context parallelism splits s over cp ranks.
"""

from __future__ import annotations

from alia_train.config.schema import ModelConfig
from alia_train.plan.parallel_layout import Layout

# fp32 logits kept for the cross-entropy's backward, plus their fp32 gradient at the start of
# the backward pass (megatron's vocab-parallel cross entropy upcasts the bf16 logits).
LOGITS_BYTES_PER_ELEMENT = 8


def _elem_bytes(lay: Layout) -> int:
    return 2 if lay.bf16 else 4


def _sbh(m: ModelConfig, lay: Layout) -> float:
    return lay.seq_length / lay.cp * lay.micro_batch_size * m.hidden_size


def layer_bytes(m: ModelConfig, lay: Layout, recompute: str, scores_stored: bool = False) -> float:
    """Bytes one layer keeps for its backward pass, per micro-batch, on one GPU, for
    recompute 'none' or 'selective' (full recompute is a stage-level matter: stage_bytes)."""
    t = lay.tp
    sbh = _sbh(m, lay)
    s, b, a = lay.seq_length / lay.cp, lay.micro_batch_size, m.num_attention_heads
    r = m.num_query_groups / m.num_attention_heads
    ffn = m.ffn_hidden_size / m.hidden_size
    unit = _elem_bytes(lay) / 2  # the coefficients below are in bytes of bf16

    sequence_region = 8 * sbh / (t if lay.sp else 1)
    qkv = (2 + 4 * r) * sbh / t
    out_proj_input = 2 * sbh / t
    mlp = 8 * ffn * sbh / t
    total = (sequence_region + qkv + out_proj_input + mlp) * unit
    if recompute == "none":
        core = 2 * sbh / t * unit + 4.0 * a / t * s * b  # output + fp32 log-sum-exp
        if scores_stored:
            core += 2 * a / t * s * s * b * unit
        total += core
    return total


def layer_input_bytes(m: ModelConfig, lay: Layout) -> float:
    """A layer's input (what full recompute keeps per checkpointed chunk)."""
    return _sbh(m, lay) / (lay.tp if lay.sp else 1) * _elem_bytes(lay)


def in_flight_microbatches(lay: Layout, stage: int) -> float:
    """Micro-batches whose activations stage `stage` holds at its peak (1F1B / interleaved)."""
    held = min(lay.pp - stage, lay.num_microbatches)
    if lay.vpp > 1 and stage == 0:
        return lay.pp * (1 + (lay.pp - 1) / (lay.pp * lay.vpp))
    return float(held)


def stage_bytes(m: ModelConfig, lay: Layout, stage: int, recompute: str, scores_stored: bool = False) -> float:
    """Activation bytes held by pipeline stage `stage` at its peak, excluding the logits."""
    layers = m.num_layers // lay.pp
    flight = in_flight_microbatches(lay, stage)
    if recompute != "full":
        return layers * flight * layer_bytes(m, lay, recompute, scores_stored)
    chunk = max(1, min(lay.recompute_num_layers, layers))
    chunks = -(-layers // chunk)
    kept = chunks * flight * layer_input_bytes(m, lay)
    working = chunk * layer_bytes(m, lay, "none", scores_stored)
    return kept + working


def head_input_bytes(m: ModelConfig, lay: Layout) -> float:
    """The last stage's final-norm and output-layer inputs, for one micro-batch."""
    return 2 * layer_input_bytes(m, lay)


def logits_bytes(lay: Layout, padded_vocab: int) -> float:
    """Logits of one micro-batch on the last stage (vocab split over TP), with their gradient."""
    tokens = lay.seq_length / lay.cp * lay.micro_batch_size
    return tokens * padded_vocab / lay.tp * LOGITS_BYTES_PER_ELEMENT
