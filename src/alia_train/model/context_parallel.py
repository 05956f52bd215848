"""Context parallelism (CP) for our SDPA core attention, without Transformer Engine.

Layout: megatron's load-balanced one. The sequence is cut into 2·CP equal chunks and CP rank i
holds chunks i and 2·CP−1−i, so every rank does the same causal work. It is the layout of
megatron's `get_batch_on_this_cp_rank` and of the RoPE slice `get_pos_emb_on_this_cp_rank`
(megatron/core/utils.py, models/common/embeddings/rope_utils.py); the tests check both.

Algorithm: all-gather K and V over the CP group (Llama 3 paper), each local query chunk j then
attends the gathered keys [0, (j+1)·c) with the causal diagonal aligned bottom-right; the
backward reduce-scatters dK/dV. Chosen over ring attention because
* with GQA the gathered K/V are small: 40B has 8 KV heads for 64 query heads, so the full K+V of
  one layer is 2·8/64 = 1/4 of the layer's hidden-size activation of the *whole* sequence, i.e.
  2·CP/8 local hidden-size tensors at CP 8, next to the ~17 such tensors a layer saves anyway;
* it is one collective each way, on tensors 1/4 of the query's size, which the next layer's
  compute can hide; ring needs 2·(CP−1) point-to-point steps per layer and direction;
* ring needs the softmax log-sum-exp of each block to merge partial results, which SDPA's public
  API does not return: we would have to call private aten kernels (and write the backward),
  per device type. All-gather keeps SDPA's fused kernels and its autograd as they are.
Ring would win only when the gathered K/V no longer fit, which GQA-8 makes far off.

Memory per rank is linear in the local sequence plus the gathered K/V, as on GPU: no step
materialises a score matrix or a dense mask (see `_reversed_rows_causal_mask`). The measured
figures (benchmarks/cp_attention_memory.py, against the planner's) are in docs/long-context.md,
and only there.
"""

from __future__ import annotations

import functools

import torch
import torch.distributed as dist
import torch.nn.functional as F

# torch 2.14 renamed the tensor collectives; the GPU machines may run an older torch.
_all_gather_tensor = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
_reduce_scatter_tensor = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor


def cp_chunk_ids(cp_size: int, cp_rank: int) -> tuple[int, int]:
    """The two global chunk indices (of 2·cp_size) that CP rank `cp_rank` holds, in order."""
    if not 0 <= cp_rank < cp_size:
        raise ValueError(f"cp_rank {cp_rank} is outside a CP group of {cp_size}")
    return cp_rank, 2 * cp_size - 1 - cp_rank


@functools.lru_cache(maxsize=64)
def _cached_chunk_index(chunks: tuple[int, ...], device: torch.device) -> torch.Tensor:
    return torch.tensor(chunks, dtype=torch.long, device=device)


def _chunk_index(chunks: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """The chunk ids as an index tensor on `device`, built once: a list copied to a GPU is a
    host sync, and the attention gathers K/V (and scatters dK/dV) in every layer."""
    if torch.compiler.is_compiling():
        # A constant of the graph; dynamo would trace through the cache anyway, with a warning.
        return torch.tensor(chunks, dtype=torch.long, device=device)
    return _cached_chunk_index(chunks, device)


def _select_chunks(tensor: torch.Tensor, seq_dim: int, n_chunks: int, chunks) -> torch.Tensor:
    """Cut `seq_dim` into `n_chunks` equal chunks and keep `chunks`, in that order."""
    seq_dim = seq_dim % tensor.dim()
    seq_len = tensor.shape[seq_dim]
    if seq_len % n_chunks:
        raise ValueError(f"sequence length {seq_len} is not divisible by {n_chunks} CP chunks")
    shape = tensor.shape
    blocks = tensor.reshape(*shape[:seq_dim], n_chunks, seq_len // n_chunks, *shape[seq_dim + 1 :])
    kept = blocks.index_select(seq_dim, _chunk_index(tuple(chunks), tensor.device))
    return kept.view(*shape[:seq_dim], -1, *shape[seq_dim + 1 :])


def _rank_major_chunks(cp_size: int) -> list[int]:
    """Global chunk ids in the order the ranks' local tensors concatenate: 0, 2n-1, 1, 2n-2, ..."""
    return [chunk for rank in range(cp_size) for chunk in cp_chunk_ids(cp_size, rank)]


def split_for_cp_rank(
    tensor: torch.Tensor, seq_dim: int, cp_size: int, cp_rank: int
) -> torch.Tensor:
    """This CP rank's share of a full-sequence tensor (tokens, labels, masks, activations)."""
    return _select_chunks(tensor, seq_dim, 2 * cp_size, cp_chunk_ids(cp_size, cp_rank))


def restore_global_order(rank_major: torch.Tensor, seq_dim: int, cp_size: int) -> torch.Tensor:
    """The inverse of splitting: the ranks' local tensors, concatenated by rank along
    `seq_dim`, back in the global sequence order."""
    position = {chunk: i for i, chunk in enumerate(_rank_major_chunks(cp_size))}
    in_global_order = [position[chunk] for chunk in range(2 * cp_size)]
    return _select_chunks(rank_major, seq_dim, 2 * cp_size, in_global_order)


def to_rank_major_order(full: torch.Tensor, seq_dim: int, cp_size: int) -> torch.Tensor:
    """A full-sequence tensor as the ranks' local tensors concatenated by rank."""
    return _select_chunks(full, seq_dim, 2 * cp_size, _rank_major_chunks(cp_size))


def gather_sequence(local: torch.Tensor, seq_dim: int, cp_group) -> torch.Tensor:
    """All ranks' shares of a tensor, in global sequence order (no autograd; for checks)."""
    parts = [torch.empty_like(local) for _ in range(cp_group.size())]
    dist.all_gather(parts, local.contiguous(), group=cp_group)
    return restore_global_order(torch.cat(parts, dim=seq_dim), seq_dim, cp_group.size())


class _AllGatherSequence(torch.autograd.Function):
    """[s_local, ...] -> [s_local · CP, ...] in global order; backward reduce-scatters."""

    @staticmethod
    def forward(ctx, local: torch.Tensor, cp_group) -> torch.Tensor:
        ctx.cp_group = cp_group
        cp_size = cp_group.size()
        gathered = local.new_empty((cp_size * local.shape[0], *local.shape[1:]))
        _all_gather_tensor(gathered, local.contiguous(), group=cp_group)
        return restore_global_order(gathered, 0, cp_size)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        cp_size = ctx.cp_group.size()
        # Every rank's attention read every rank's K/V: sum the gradients, keep our chunks.
        rank_major = to_rank_major_order(grad, 0, cp_size).contiguous()
        local_grad = grad.new_empty((grad.shape[0] // cp_size, *grad.shape[1:]))
        _reduce_scatter_tensor(local_grad, rank_major, group=ctx.cp_group)
        return local_grad, None


def all_gather_sequence(local: torch.Tensor, cp_group) -> torch.Tensor:
    """Differentiable all-gather of a [s_local, ...] tensor into [s, ...] global order."""
    return _AllGatherSequence.apply(local, cp_group)


def _reversed_rows_causal_mask(lq: int, lk: int, dtype, device) -> torch.Tensor:
    """Additive bottom-right causal mask for *reversed* query rows, in O(lq + lk) memory.

    Query row r (of the last lq positions) sees key t iff t <= r + lk - lq. With the rows
    reversed (r' = lq - 1 - r) that is t + r' <= lk - 1: a function of t + r', i.e. a view
    with strides (1, 1) of one vector, where a materialised mask is lq x lk floats.
    """
    base = torch.zeros(lq + lk - 1, dtype=dtype, device=device)
    base[lk:] = float("-inf")
    return base.as_strided((lq, lk), (1, 1))


def _bottom_right_causal_sdpa(q, k, v, scale, dropout_p) -> torch.Tensor:
    """SDPA of [b, n, lq, d] queries that are the *last* lq positions of the lk keys."""
    lq, lk = q.shape[2], k.shape[2]
    options = dict(dropout_p=dropout_p, scale=scale, enable_gqa=k.shape[1] != q.shape[1])
    if lq == lk:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, **options)
    if q.is_cuda:
        # Keeps the flash / memory-efficient kernels; a dense mask would force the math path.
        # (Imported here: the module loads TorchDynamo, ~0.7 s of every process's start.)
        from torch.nn.attention.bias import causal_lower_right

        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=causal_lower_right(lq, lk), **options
        )
    # CPU kernels only align the diagonal top-left, and causal_lower_right would warn on every
    # call and build a dense lq x lk mask (saved for backward, quadratic in the sequence).
    mask = _reversed_rows_causal_mask(lq, lk, q.dtype, q.device)
    return F.scaled_dot_product_attention(q.flip(2), k, v, attn_mask=mask, **options).flip(2)


def cp_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    cp_group,
    scale: float | None = None,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """Causal attention of this CP rank's queries over the whole sequence's keys.

    query [s_local, b, heads, d], key/value [s_local, b, groups, d] in the load-balanced layout
    (RoPE already applied with this rank's positions). Returns [s_local, b, heads * d], the
    layout of SDPAttention's output.
    """
    s_local, batch = query.shape[0], query.shape[1]
    if s_local % 2:
        raise ValueError(f"local sequence length {s_local} must hold two equal CP chunks")
    chunk = s_local // 2
    # One collective for K and V together.
    kv = all_gather_sequence(torch.cat([key, value], dim=-1), cp_group)
    k_full, v_full = kv.split([key.shape[-1], value.shape[-1]], dim=-1)
    # [s, b, n, d] -> [b, n, s, d], the layout SDPA's fused kernels want.
    q, k, v = (t.permute(1, 2, 0, 3) for t in (query, k_full, v_full))
    outputs = []
    for half, chunk_id in enumerate(cp_chunk_ids(cp_group.size(), cp_group.rank())):
        visible = (chunk_id + 1) * chunk
        q_chunk = q[:, :, half * chunk : (half + 1) * chunk]
        outputs.append(
            _bottom_right_causal_sdpa(
                q_chunk, k[:, :, :visible], v[:, :, :visible], scale, dropout_p
            )
        )
    context = torch.cat(outputs, dim=2)
    # [b, n, s, d] -> [s, b, n * d]
    return context.permute(2, 0, 1, 3).reshape(s_local, batch, -1)
