"""The rules a parallel layout must follow, written once: the validator reports them for the
configured layout, the memory planner keeps only the layouts it suggests that pass them.

Each problem is one line "key: what is wrong; how to fix it", naming the configured key even
when the planner weighs a layout other than the configured one.
"""

from __future__ import annotations

from dataclasses import dataclass

from alia_train.config.derived import (
    data_parallel_size,
    microbatches_per_step,
    model_parallel_size,
    pipeline_chunks,
)
from alia_train.config.schema import Config, ModelConfig


@dataclass(frozen=True)
class ParallelSplit:
    """How a job of `world_size` processes splits the model and the global batch."""

    world_size: int
    tp: int
    pp: int
    vpp: int | None  # null / 1 = not interleaved
    cp: int
    sp: bool
    global_batch_size: int
    micro_batch_size: int
    seq_length: int

    @classmethod
    def of(cls, cfg: Config, world_size: int) -> ParallelSplit:
        par, tr = cfg.parallel, cfg.train
        return cls(world_size, par.tp, par.pp, par.vpp, par.cp, par.sp,
                   tr.global_batch_size, tr.micro_batch_size, tr.seq_length)


def layout_problems(m: ModelConfig, s: ParallelSplit) -> list[str]:
    """Every rule `s` breaks for model `m` (sizes already known to be positive)."""
    return (
        tensor_split_problems(m, s.tp)
        + pipeline_split_problems(m, s.pp, s.vpp)
        + context_split_problems(s.seq_length, s.cp)
        + batch_split_problems(s)
        + sequence_parallel_problems(s.tp, s.sp, s.seq_length // s.cp)
    )


def tensor_split_problems(m: ModelConfig, tp: int) -> list[str]:
    p = []
    if m.num_attention_heads % tp:
        p.append(f"parallel.tp: {tp} does not divide model.num_attention_heads {m.num_attention_heads}; use a divisor")
    if m.num_query_groups % tp:
        p.append(f"parallel.tp: {tp} does not divide model.num_query_groups {m.num_query_groups}; use a divisor")
    if m.ffn_hidden_size % tp:
        p.append(f"parallel.tp: {tp} does not divide model.ffn_hidden_size {m.ffn_hidden_size}")
    return p


def pipeline_split_problems(m: ModelConfig, pp: int, vpp: int | None) -> list[str]:
    p = []
    chunks = pipeline_chunks(pp, vpp)
    if m.num_layers % chunks:
        p.append(
            f"parallel.pp: model.num_layers {m.num_layers} is not divisible by pp x vpp = {chunks}; "
            "change parallel.pp or parallel.vpp"
        )
    if vpp is not None:
        if vpp < 1:
            p.append(f"parallel.vpp: must be >= 1 or null, got {vpp}")
        elif vpp > 1 and pp < 2:
            p.append("parallel.vpp: interleaved pipeline stages need parallel.pp >= 2; set parallel.vpp=null")
    return p


def context_split_problems(seq_length: int, cp: int) -> list[str]:
    # Context parallelism gives each rank two chunks of the sequence (load balance of causality).
    if cp > 1 and seq_length % (2 * cp):
        return [f"train.seq_length: {seq_length} must be divisible by 2 x parallel.cp = {2 * cp}"]
    return []


def batch_split_problems(s: ParallelSplit) -> list[str]:
    """The world size must hold whole model copies, the global batch whole micro-batches of
    every copy, and the interleaved schedule a multiple of pp micro-batches."""
    mp = model_parallel_size(s.tp, s.pp, s.cp)
    if s.world_size % mp:
        return [
            f"parallel: world size {s.world_size} is not divisible by tp x pp x cp = {mp}; "
            f"launch a multiple of {mp} processes or change parallel.tp/pp/cp"
        ]
    dp = data_parallel_size(s.world_size, s.tp, s.pp, s.cp)
    per_round = s.micro_batch_size * dp
    if s.global_batch_size % per_round:
        return [
            f"train.global_batch_size: {s.global_batch_size} is not divisible by micro_batch_size x DP "
            f"= {s.micro_batch_size} x {dp}; use a multiple of {per_round}"
        ]
    micro = microbatches_per_step(s.global_batch_size, s.micro_batch_size, dp)
    if s.vpp and s.vpp > 1 and micro % s.pp:
        return [
            "train.global_batch_size: the interleaved schedule needs the number of micro-batches "
            f"per step ({micro}) divisible by parallel.pp {s.pp}"
        ]
    return []


def sequence_parallel_problems(tp: int, sp: bool, seq_per_cp_rank: int) -> list[str]:
    if sp and tp == 1:
        return ["parallel.sp: sequence parallelism needs parallel.tp > 1; set parallel.sp=false"]
    if sp and seq_per_cp_rank % tp:
        # megatron scatters each micro-batch's sequence over the TP ranks: a remainder fails
        # in the first forward's scatter, after the model and data are built.
        return [f"train.seq_length: with parallel.sp each TP rank holds seq_length / cp / tp tokens; "
                f"{seq_per_cp_rank} per CP rank is not divisible by parallel.tp {tp}; use a multiple of it"]
    return []
