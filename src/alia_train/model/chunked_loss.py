"""Output layer + cross entropy in chunks of tokens (train.loss_impl=chunked).

The plain path materialises the logits of every token of a micro-batch, [tokens, vocab] (at
vocab 256,000 and 4,096 tokens: 4.2 GB in fp32), and keeps them (as the softmax) until the
backward pass. Here only `chunk_tokens` rows of logits exist at any time: the forward keeps one
log-sum-exp per token, and the backward recomputes each chunk's logits to form its gradient,
accumulating the gradients of the hidden states and of the output weight. Cost: one more
matmul of the output layer (2·h·V FLOPs per token).

Semantics are megatron's `vocab_parallel_cross_entropy`: the output weight may be split over
tensor-parallel ranks by vocabulary rows; the max, the sum of exponentials and the target's
logit are all-reduced over that group, and each rank forms the gradient of its own rows.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from megatron.core.models.gpt import GPTModel
from megatron.core.tensor_parallel.mappings import (
    copy_to_tensor_model_parallel_region,
    gather_from_sequence_parallel_region,
)


def _group_size(group) -> int:
    return 1 if group is None else dist.get_world_size(group)


def _all_reduce(t: torch.Tensor, op, group) -> None:
    if _group_size(group) > 1:
        dist.all_reduce(t, op=op, group=group)


def _chunk_logits(hidden: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """fp32 logits of one chunk: the matmul in the weight's dtype, the rest in fp32."""
    return (hidden @ weight.t()).float()


class _ChunkedLinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, labels, chunk_tokens: int, group):
        """hidden [n, h], weight [V_local, h], labels [n] (global ids) -> loss [n] (fp32)."""
        n, v_local = hidden.shape[0], weight.shape[0]
        rank = dist.get_rank(group) if _group_size(group) > 1 else 0
        start = rank * v_local
        local_labels = labels - start
        on_rank = (local_labels >= 0) & (local_labels < v_local)
        local_labels = torch.where(on_rank, local_labels, torch.zeros_like(local_labels))
        lse = torch.empty(n, dtype=torch.float32, device=hidden.device)
        target = torch.empty_like(lse)
        for lo in range(0, n, chunk_tokens):
            hi = min(lo + chunk_tokens, n)
            logits = _chunk_logits(hidden[lo:hi], weight)
            target[lo:hi] = logits.gather(1, local_labels[lo:hi, None]).squeeze(1)
            top = logits.max(dim=1).values
            # In place: one chunk of logits is the only [chunk, vocab] tensor alive.
            lse[lo:hi] = logits.sub_(top[:, None]).exp_().sum(dim=1).log_().add_(top)
            del logits
        target.masked_fill_(~on_rank, 0.0)
        if _group_size(group) > 1:
            # log-sum-exp over the ranks' vocabulary shards: max, then Σ exp relative to it.
            top = lse.clone()
            _all_reduce(top, dist.ReduceOp.MAX, group)
            lse = lse.sub_(top).exp_()
            _all_reduce(lse, dist.ReduceOp.SUM, group)
            lse = lse.log_().add_(top)
            _all_reduce(target, dist.ReduceOp.SUM, group)
        ctx.save_for_backward(hidden, weight, local_labels, on_rank, lse)
        ctx.chunk_tokens = chunk_tokens
        return lse - target

    @staticmethod
    def backward(ctx, grad_loss):
        hidden, weight, local_labels, on_rank, lse = ctx.saved_tensors
        n = hidden.shape[0]
        grad_hidden = torch.empty_like(hidden)
        # Accumulated in the weight's dtype, one rounding per chunk (as Liger's fused linear
        # cross entropy does): an fp32 accumulator would cost 4·V·h bytes, as much as the
        # fp32 logits of h tokens.
        grad_weight = torch.zeros_like(weight)
        rows = torch.arange(ctx.chunk_tokens, device=hidden.device)
        for lo in range(0, n, ctx.chunk_tokens):
            hi = min(lo + ctx.chunk_tokens, n)
            grad = _chunk_logits(hidden[lo:hi], weight).sub_(lse[lo:hi, None]).exp_()  # softmax
            hit = on_rank[lo:hi].to(grad.dtype)
            grad[rows[: hi - lo], local_labels[lo:hi]] -= hit
            grad.mul_(grad_loss[lo:hi, None].float())
            grad = grad.to(weight.dtype)
            torch.matmul(grad, weight, out=grad_hidden[lo:hi])
            grad_weight.addmm_(grad.t(), hidden[lo:hi])
            del grad  # before the next chunk's logits exist
        return grad_hidden, grad_weight, None, None, None


def chunked_linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor,
                                 chunk_tokens: int, group=None) -> torch.Tensor:
    """Per-token loss of `hidden @ weight.T` against `labels`, never holding more than
    `chunk_tokens` rows of logits. hidden [..., h], labels [...] -> loss [...] (fp32).
    `group`: the tensor-parallel group `weight`'s vocabulary rows are split over (None: whole)."""
    shape = labels.shape
    loss = _ChunkedLinearCrossEntropy.apply(
        hidden.reshape(-1, hidden.shape[-1]), weight, labels.reshape(-1), chunk_tokens, group
    )
    return loss.view(shape)


def chunked_loss_processor(chunk_tokens: int):
    """An `output_processor` for megatron's GPTModel.forward: the loss [b, s] from the final
    hidden states [s, b, h] (the local sequence chunk under sequence parallelism) and the
    column-parallel output layer, without the full logits."""

    def process(*, hidden_states, output_layer, output_weight, labels, **_):
        weight = output_layer.weight if output_weight is None else output_weight
        group = output_layer.tp_group
        if output_layer.sequence_parallel:
            hidden_states = gather_from_sequence_parallel_region(hidden_states, group=group)
        elif _group_size(group) > 1:
            hidden_states = copy_to_tensor_model_parallel_region(hidden_states, group=group)
        # [s, b, h] -> [b, s, h] to match labels [b, s]
        return chunked_linear_cross_entropy(hidden_states.transpose(0, 1), weight, labels,
                                            chunk_tokens, group)

    return process


class ChunkedLossGPTModel(GPTModel):
    """megatron's GPTModel whose training loss (a forward with labels) comes from
    `chunked_loss_processor`; without labels it returns the logits as GPTModel does."""

    def __init__(self, *args, loss_chunk_size: int, **kwargs):
        super().__init__(*args, **kwargs)
        self._loss_processor = chunked_loss_processor(loss_chunk_size)

    def forward(self, *args, labels=None, **kwargs):
        if labels is not None and kwargs.get("output_processor") is None:
            kwargs["output_processor"] = self._loss_processor
        return super().forward(*args, labels=labels, **kwargs)
