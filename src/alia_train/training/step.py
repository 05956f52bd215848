"""One optimizer step (and one evaluation pass) through megatron's pipeline schedules.

Loss is a sum over tokens divided by the number of tokens in the whole global batch
(`calculate_per_token_loss`), so every layout computes the same number. Per-language sums ride
along for the per-language curves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import torch
import torch.distributed as dist
from megatron.core import parallel_state
from megatron.core.pipeline_parallel import get_forward_backward_func

from alia_train.model.context_parallel import split_for_cp_rank


@dataclass(frozen=True)
class StepShape:
    """What megatron's schedule is told about one step: how many micro-batches of which size,
    and where they go."""

    num_microbatches: int  # per data-parallel rank
    seq_length: int
    micro_batch_size: int
    device: torch.device


@dataclass
class StepResult:
    loss: float  # token-mean over the global batch
    tokens: int
    lang_loss_sum: list[float]
    lang_tokens: list[int]
    grad_norm: float | None
    skipped: bool
    nonfinite: str | None  # what was not finite, when something was


class LossAccumulator:
    """Collects (sum, tokens) overall and per language over the micro-batches of one step."""

    def __init__(self, num_langs: int, device: torch.device):
        self.num_langs = num_langs
        self.device = device
        self.reset()

    def reset(self) -> None:
        # [loss_sum, tokens, lang sums..., lang tokens...]
        self.values = torch.zeros(2 + 2 * self.num_langs, dtype=torch.float64, device=self.device)

    def loss_func(self, loss_mask: torch.Tensor, lang_id: torch.Tensor, output: torch.Tensor):
        losses = output.float() * loss_mask
        per_sample = losses.sum(dim=1)
        loss_sum = per_sample.sum()
        num_tokens = loss_mask.sum().to(torch.int)
        with torch.no_grad():
            v = self.values
            v[0] += loss_sum.detach().double()
            v[1] += num_tokens.double()
            n = self.num_langs
            v[2 : 2 + n].index_add_(0, lang_id, per_sample.detach().double())
            v[2 + n :].index_add_(0, lang_id, loss_mask.sum(dim=1).double())
        return loss_sum, num_tokens, {"lm loss": torch.stack([loss_sum.detach(), num_tokens.float()])}

    def reduce(self, extra: torch.Tensor | None = None) -> torch.Tensor:
        """Sum over the whole job, counting each data-parallel replica once: only the last
        pipeline stage holds losses, and tensor-parallel ranks hold copies of them. `extra`
        (every rank's own values) is appended and summed in the same all-reduce."""
        v = self.values.clone()
        if not (parallel_state.is_pipeline_last_stage() and parallel_state.get_tensor_model_parallel_rank() == 0):
            v.zero_()
        if extra is not None:
            v = torch.cat([v, extra.to(v)])
        if dist.get_world_size() > 1:
            dist.all_reduce(v)
        return v


# The [b, s] tensors of a batch that context parallelism splits along the sequence (lang_id is
# one value per sample and stays whole).
SEQUENCE_TENSORS = ("tokens", "labels", "loss_mask", "position_ids")


def _on_this_rank(batch: dict, device: torch.device) -> dict[str, torch.Tensor]:
    """The batch on `device`; with context parallelism, this CP rank's two chunks of each
    sequence (the layout CP attention and megatron's RoPE slice expect)."""
    cp_size = parallel_state.get_context_parallel_world_size()
    cp_rank = parallel_state.get_context_parallel_rank()
    local = {name: batch[name].to(device, non_blocking=True) for name in (*SEQUENCE_TENSORS, "lang_id")}
    if cp_size > 1:
        local.update({name: split_for_cp_rank(local[name], 1, cp_size, cp_rank) for name in SEQUENCE_TENSORS})
    return local


def _forward_step(acc: LossAccumulator, device: torch.device, data_iterator, model):
    batch = _on_this_rank(next(data_iterator), device)
    output = model(batch["tokens"], batch["position_ids"], None, labels=batch["labels"])
    return output, partial(acc.loss_func, batch["loss_mask"].float(), batch["lang_id"].long())


def _nonfinite_grads(model) -> torch.Tensor:
    """[True] if a gradient of this rank is NaN or ±inf, else [False], left on the device (the
    caller folds it into the loss all-reduce: one host sync per step). A buffer is finite
    exactly when its min and max are: one read of the gradients, no bool copy of them.
    megatron's optimizer step cannot be asked instead: it applies the update before it returns
    the (then NaN) grad norm."""
    extremes = torch.stack([torch.stack(torch.aminmax(buf.grad_data)).float()
                            for chunk in model for buf in chunk.buffers])
    return (~torch.isfinite(extremes)).any().reshape(1)


def _run_schedule(model, data_iterators: list, acc: LossAccumulator, shape: StepShape, *,
                  forward_only: bool) -> list[float]:
    """Run megatron's pipeline schedule over the micro-batches of one global batch; returns the
    job-wide [loss_sum, tokens, per-language sums..., per-language tokens...] (training: and
    the number of ranks with a non-finite gradient)."""
    acc.reset()
    get_forward_backward_func()(
        forward_step_func=partial(_forward_step, acc, shape.device),
        # One iterator per virtual stage: each chunk's forward step reads its own copy.
        data_iterator=data_iterators[0] if len(model) == 1 else data_iterators,
        model=model if len(model) > 1 else model[0],
        num_microbatches=shape.num_microbatches,
        seq_length=shape.seq_length,
        micro_batch_size=shape.micro_batch_size,
        forward_only=forward_only,
    )
    # Training: one more value, the number of ranks with a non-finite gradient.
    return acc.reduce(None if forward_only else _nonfinite_grads(model)).tolist()


def train_step(model, optimizer, scheduler, data_iterators: list, acc: LossAccumulator,
               shape: StepShape) -> StepResult:
    """One optimizer step. A non-finite loss or gradient skips the update and is reported in
    the result; the caller decides whether to stop (train.on_nonfinite)."""
    for chunk in model:
        chunk.zero_grad_buffer()
    optimizer.zero_grad()
    *totals, ranks_with_bad_grads = _run_schedule(model, data_iterators, acc, shape, forward_only=False)
    loss = totals[0] / max(totals[1], 1.0)
    nonfinite = None
    if not math.isfinite(loss):
        nonfinite = "loss"
    elif ranks_with_bad_grads:
        nonfinite = "gradients"
    grad_norm = None
    skipped = nonfinite is not None
    if not skipped:
        ok, grad_norm, _ = optimizer.step()
        skipped = not ok
        if ok:
            scheduler.step(increment=1)
    n = acc.num_langs
    return StepResult(
        loss=loss,
        tokens=int(totals[1]),
        lang_loss_sum=totals[2 : 2 + n],
        lang_tokens=[int(t) for t in totals[2 + n :]],
        grad_norm=float(grad_norm) if grad_norm is not None else None,
        skipped=skipped,
        nonfinite=nonfinite,
    )


@torch.no_grad()
def eval_step(model, data_iterators: list, acc: LossAccumulator, shape: StepShape) -> tuple[float, float]:
    """Returns (loss_sum, tokens) over shape.num_microbatches micro-batches of every DP rank."""
    for chunk in model:
        chunk.eval()
    totals = _run_schedule(model, data_iterators, acc, shape, forward_only=True)
    for chunk in model:
        chunk.train()
    return totals[0], totals[1]
