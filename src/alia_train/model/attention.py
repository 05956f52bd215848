"""Core attention for megatron's local (non-TE) layer spec through PyTorch SDPA.

megatron-core's own local `DotProductAttention` materialises the s x s score matrix (2 GB per
layer per micro-batch at seq 8192 in bf16). `scaled_dot_product_attention` dispatches to
flash / memory-efficient kernels on GPU and never builds it there.

With context parallelism (parallel.cp > 1) each rank holds its two chunks of the sequence
and attends over the K/V gathered from its CP group (model/context_parallel.py).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from megatron.core import parallel_state
from megatron.core.transformer.dot_product_attention import DotProductAttention

from alia_train.model.context_parallel import cp_attention


class SDPAttention(DotProductAttention):
    """Causal attention over [s, b, heads, head_dim] tensors, GQA without repeating K/V."""

    def __init__(self, config, *args, **kwargs):
        cp = config.context_parallel_size
        # megatron's local attention refuses CP > 1 (it leaves CP to Transformer Engine); the
        # rest of its set-up does not depend on CP, so it is given a copy that says CP 1.
        without_cp = config
        if cp > 1:
            without_cp = copy.copy(config)
            without_cp.context_parallel_size = 1
        super().__init__(without_cp, *args, **kwargs)
        self.config = config
        self.cp_group = self._context_parallel_group() if cp > 1 else None

    def _context_parallel_group(self):
        group = getattr(self.pg_collection, "cp", None)
        return group if group is not None else parallel_state.get_context_parallel_group()

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask: torch.Tensor | None,
        attn_mask_type=None,
        attention_bias=None,
        packed_seq_params=None,
    ) -> torch.Tensor:
        if packed_seq_params is not None or attention_bias is not None:
            raise NotImplementedError("SDPAttention supports plain causal attention only")
        dropout = self.attention_dropout.p if self.training else 0.0
        if self.cp_group is not None and self.cp_group.size() > 1:
            return cp_attention(query, key, value, self.cp_group, self.softmax_scale, dropout)
        sq, b = query.shape[0], query.shape[1]
        # [s, b, n, d] -> [b, n, s, d], the layout SDPA's fused kernels want.
        q, k, v = (t.permute(1, 2, 0, 3) for t in (query, key, value))
        context = F.scaled_dot_product_attention(
            q,
            k,
            v,
            dropout_p=dropout,
            is_causal=True,
            scale=self.softmax_scale,
            enable_gqa=k.shape[1] != q.shape[1],
        )
        # [b, n, s, d] -> [s, b, n * d]
        return context.permute(2, 0, 1, 3).reshape(sq, b, self.hidden_size_per_partition)
