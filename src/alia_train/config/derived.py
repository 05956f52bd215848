"""Quantities that follow from a config and the job it runs in, each computed here only.

    d = derive(cfg, world_size, cuda)
    d.dp, d.num_microbatches, d.vpp, d.virtual_pipeline_size, d.bf16, d.tokens_per_step

The formulas are also plain functions of numbers, for callers that weigh layouts other than
the configured one (the memory planner's suggestions). No torch here: the planner and the
validator run without it; `parallel/runtime.py` turns `bf16` into a torch dtype.
"""

from __future__ import annotations

from dataclasses import dataclass

from alia_train.config.schema import Config, Device, Precision


def model_parallel_size(tp: int, pp: int, cp: int) -> int:
    """Processes that hold one copy of the model."""
    return tp * pp * cp


def data_parallel_size(world_size: int, tp: int, pp: int, cp: int) -> int:
    """Copies of the model; 0 when the job is smaller than one copy (the validator says so)."""
    return world_size // model_parallel_size(tp, pp, cp)


def microbatches_per_step(global_batch_size: int, micro_batch_size: int, dp: int) -> int:
    """Micro-batches each data-parallel rank runs per step (gradient accumulation); 0 when
    the layout cannot split the batch (the validator says so)."""
    per_round = micro_batch_size * dp
    return global_batch_size // per_round if per_round > 0 else 0


def interleave(vpp: int | None) -> int:
    """Virtual stages per pipeline rank: `parallel.vpp`, with null meaning 1 (not interleaved)."""
    return vpp or 1


def lr_schedule_steps(cfg: Config) -> tuple[int, int]:
    """(warmup, decay) steps of the LR schedule: it spans optim.decay_steps, or train.steps when
    that is null, and the warmup is shortened to leave at least one step of decay (a run
    shorter than its warmup; validation refuses an explicit decay_steps that cannot hold it)."""
    decay = cfg.optim.decay_steps or cfg.train.steps
    return (min(cfg.optim.warmup_steps, decay - 1) if decay > 1 else 0), decay


def virtual_pipeline_size(vpp: int | None) -> int | None:
    """What megatron-core takes as virtual_pipeline_model_parallel_size: None unless interleaved."""
    return vpp if vpp and vpp > 1 else None


def pipeline_chunks(pp: int, vpp: int | None) -> int:
    """Pieces the layers are cut into: pp x vpp (each holds num_layers / that many layers)."""
    return pp * interleave(vpp)


def uses_cuda(device: str, cuda_available: bool) -> bool:
    """train.device=auto means the GPU when there is one."""
    return device == Device.cuda or (device == Device.auto and cuda_available)


def uses_bf16(precision: str, cuda: bool) -> bool:
    """train.precision=auto means bf16 on a GPU and fp32 on the CPU (fp32 is faster there)."""
    return precision == Precision.bf16 or (precision == Precision.auto and cuda)


@dataclass(frozen=True)
class Derived:
    world_size: int
    model_parallel: int  # tp x pp x cp
    dp: int  # data-parallel size
    num_microbatches: int  # per step per DP rank
    vpp: int  # virtual stages per pipeline rank, 1 = not interleaved
    virtual_pipeline_size: int | None  # megatron's argument: vpp if > 1, else None
    cuda: bool  # runs on the GPU (train.device resolved)
    bf16: bool  # bf16 weights and activations (train.precision resolved)
    tokens_per_step: int  # global batch x sequence length


def derive(cfg: Config, world_size: int, cuda_available: bool) -> Derived:
    """Everything the run derives from `cfg` for a job of `world_size` processes on a machine
    with (`cuda_available`) or without a GPU. Meaningful for a config the validator accepted."""
    par, tr = cfg.parallel, cfg.train
    dp = data_parallel_size(world_size, par.tp, par.pp, par.cp)
    cuda = uses_cuda(tr.device, cuda_available)
    return Derived(
        world_size=world_size,
        model_parallel=model_parallel_size(par.tp, par.pp, par.cp),
        dp=dp,
        num_microbatches=microbatches_per_step(tr.global_batch_size, tr.micro_batch_size, dp),
        vpp=interleave(par.vpp),
        virtual_pipeline_size=virtual_pipeline_size(par.vpp),
        cuda=cuda,
        bf16=uses_bf16(tr.precision, cuda),
        tokens_per_step=tr.global_batch_size * tr.seq_length,
    )
