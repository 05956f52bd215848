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
activations by (1 + (pp - 1) / (pp * vpp)).

On CPU (Layout.device "cpu": megatron's local layers, unfused, fp32 unless bf16) a layer keeps
more, as counted with saved-tensor hooks on fp32 and bf16 runs (e = bytes of an activation):
  16 sbh         both RMSNorms: input and normalised tensor, in fp32 whatever the dtype
  2e sbh         the QKV and FC1 matmul inputs
  (2 + 3r) e sbh the QKV output (V is a view of it) and the rotated q and k (copies)
  e sbh          the core attention's output, which is the output projection's input
  5F e sbh       SwiGLU: FC1 output 2F, and F each for the gate's sum, silu and the product
and the final norm keeps 8 + e bytes per position. Selective recompute then saves only the
log-sum-exp: the output is kept as the projection's input.

Context parallelism (CP, model/context_parallel.py) splits s over cp ranks: every term above
uses the local s / cp. The core attention all-gathers K and V over the CP group, so a rank also
holds the *whole* sequence's K and V of its KV heads: 4r · s_full·b·h / t bytes per layer
(4r·cp · sbh / t with the local s; 1 · sbh / t at the 40B's r = 1/8 and CP 8, next to the
36.5 · sbh / t a layer keeps with selective recompute). Without recompute the core attention saves them for its backward in place of
the local k, v. With selective recompute (megatron checkpoints the core attention, gather
included) only the local q, k, v are kept and the gather is redone in the backward pass: the
gathered K/V and their full-sequence gradient (before the reduce-scatter) are then one layer's
working memory (cp_working_bytes), not a per-layer cost. Transformer Engine's CP
(p2p ring by default) holds less than this; the planner counts the all-gather, the upper bound.
"""

from __future__ import annotations

from alia_train.config.schema import ModelConfig
from alia_train.plan.parallel_layout import Layout

# A CPU run's RMSNorm (unfused) keeps its input and the normalised tensor, both in fp32.
CPU_NORM_BYTES = 8
# fp32 logits kept for the cross-entropy's backward, plus their fp32 gradient at the start of
# the backward pass (megatron's vocab-parallel cross entropy upcasts the bf16 logits).
LOGITS_BYTES_PER_ELEMENT = 8


def _elem_bytes(lay: Layout) -> int:
    return 2 if lay.bf16 else 4


def _sbh(m: ModelConfig, lay: Layout) -> float:
    return lay.seq_length / lay.cp * lay.micro_batch_size * m.hidden_size


def layer_bytes(m: ModelConfig, lay: Layout, recompute: str, scores_stored: bool = False) -> float:
    """Bytes one layer keeps for its backward pass, per micro-batch, on one GPU (or CPU
    process), for recompute 'none' or 'selective' (full recompute is a stage-level matter:
    stage_bytes)."""
    t = lay.tp
    sbh = _sbh(m, lay)
    ffn = m.ffn_hidden_size / m.hidden_size
    e = _elem_bytes(lay)
    if lay.device == "cpu":
        sequence_region = (2 * CPU_NORM_BYTES + 2 * e) * sbh / (t if lay.sp else 1)
        mlp = 5 * ffn * e * sbh / t
    else:  # the module docstring's 8 sbh and 8F sbh in bytes of bf16
        sequence_region = 4 * e * sbh / (t if lay.sp else 1)
        mlp = 4 * ffn * e * sbh / t
    out_proj_input = e * sbh / t
    return sequence_region + out_proj_input + mlp + core_attention_bytes(m, lay, recompute, scores_stored)


def core_attention_bytes(m: ModelConfig, lay: Layout, recompute: str, scores_stored: bool = False) -> float:
    """What one layer keeps for the core attention's backward, per micro-batch: q, k, v (with
    recompute the checkpoint's local inputs; without, the K/V gathered over CP), and without
    recompute its output, fp32 log-sum-exp and, if materialised, the scores."""
    t = lay.tp
    sbh = _sbh(m, lay)
    s, b, a = lay.seq_length / lay.cp, lay.micro_batch_size, m.num_attention_heads
    r = m.num_query_groups / m.num_attention_heads
    e = _elem_bytes(lay)
    cpu = lay.device == "cpu"
    kv_positions = lay.cp if recompute == "none" else 1  # sequences' worth of K/V per local one
    total = (1 + 2 * r * kv_positions) * e * sbh / t
    if cpu:  # q and k after RoPE are copies; V stays a view of the QKV output
        total += (1 + r) * e * sbh / t
    if recompute == "none":
        total += 4.0 * a / t * s * b  # fp32 log-sum-exp
        if not cpu:  # on CPU the output is the output projection's input, counted in layer_bytes
            total += e * sbh / t
        if scores_stored:  # local queries x all keys
            total += a / t * s * (s * lay.cp) * b * e
    return total


def gathered_kv_bytes(m: ModelConfig, lay: Layout) -> float:
    """One layer's all-gathered K and V (whole sequence, this rank's KV heads), one
    micro-batch; 0 without CP, where K and V are the layer's own (counted in layer_bytes)."""
    if lay.cp == 1:
        return 0.0
    r = m.num_query_groups / m.num_attention_heads
    return 4 * r * lay.cp * _sbh(m, lay) / lay.tp * _elem_bytes(lay) / 2


def cp_working_bytes(m: ModelConfig, lay: Layout, recompute: str) -> float:
    """The CP gather's transient in one layer's backward: the full-sequence dK/dV before the
    reduce-scatter, plus, when the core attention is recomputed, the re-gathered K/V."""
    copies = 1 if recompute == "none" else 2
    return copies * gathered_kv_bytes(m, lay)


def gathered_kv_held_bytes(m: ModelConfig, lay: Layout, stage: int, recompute: str) -> float:
    """The part of stage_bytes that is CP-gathered K/V (and their gradient) at the peak."""
    kept_layers = {"none": (m.num_layers // lay.pp) * in_flight_microbatches(lay, stage),
                   "full": max(1, min(lay.recompute_num_layers, m.num_layers // lay.pp))}
    return kept_layers.get(recompute, 0) * gathered_kv_bytes(m, lay) + cp_working_bytes(m, lay, recompute)


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
    working = cp_working_bytes(m, lay, recompute)
    if recompute != "full":
        return layers * flight * layer_bytes(m, lay, recompute, scores_stored) + working
    chunk = max(1, min(lay.recompute_num_layers, layers))
    chunks = -(-layers // chunk)
    kept = chunks * flight * layer_input_bytes(m, lay)
    return kept + chunk * layer_bytes(m, lay, "none", scores_stored) + working


def head_input_bytes(m: ModelConfig, lay: Layout) -> float:
    """The last stage's final-norm and output-layer inputs, for one micro-batch (on CPU the
    final norm keeps two fp32 tensors)."""
    if lay.device == "cpu":
        return layer_input_bytes(m, lay) / _elem_bytes(lay) * (CPU_NORM_BYTES + _elem_bytes(lay))
    return 2 * layer_input_bytes(m, lay)


def logits_bytes(m: ModelConfig, lay: Layout, padded_vocab: int) -> float:
    """Logits of one micro-batch on the last stage (vocab split over TP), with their gradient.
    With the chunked loss (model/chunked_loss.py) only one chunk of tokens' logits exists, next
    to the output weight's gradient, which its backward builds whole before handing it on."""
    tokens = lay.seq_length / lay.cp * lay.micro_batch_size
    vocab = padded_vocab / lay.tp
    if lay.loss_impl != "chunked":
        return tokens * vocab * LOGITS_BYTES_PER_ELEMENT
    chunk = min(tokens, lay.loss_chunk_size) * vocab * LOGITS_BYTES_PER_ELEMENT
    return chunk + vocab * m.hidden_size * _elem_bytes(lay)
