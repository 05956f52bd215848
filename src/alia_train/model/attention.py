"""Core attention for megatron's local (non-TE) layer spec through PyTorch SDPA.

megatron-core's own local `DotProductAttention` materialises the s x s score matrix (2 GB per
layer per micro-batch at seq 8192 in bf16). `scaled_dot_product_attention` dispatches to
flash / memory-efficient kernels on GPU and never builds it there.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from megatron.core.transformer.dot_product_attention import DotProductAttention


class SDPAttention(DotProductAttention):
    """Causal attention over [s, b, heads, head_dim] tensors, GQA without repeating K/V."""

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
        sq, b = query.shape[0], query.shape[1]
        # [s, b, n, d] -> [b, n, s, d], the layout SDPA's fused kernels want.
        q, k, v = (t.permute(1, 2, 0, 3) for t in (query, key, value))
        dropout = self.attention_dropout.p if self.training else 0.0
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
