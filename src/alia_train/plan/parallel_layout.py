"""The parallel layout a plan is made for: how a job of `world_size` processes splits the model,
on GPUs or on CPU processes, and the memory settings of each (recompute, loss, precision).

The configured layout, or one the planner weighs as a suggestion; the quantities that follow
from it (DP size, micro-batches, bf16) come from config/derived.py, as for the run itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from alia_train.config.derived import data_parallel_size, interleave, microbatches_per_step, uses_bf16
from alia_train.config.layout_rules import ParallelSplit
from alia_train.config.schema import Config


@dataclass(frozen=True)
class Layout:
    world_size: int
    tp: int
    pp: int
    cp: int
    vpp: int  # virtual stages per pipeline rank (1 = not interleaved)
    sp: bool
    distributed_optimizer: bool
    grad_reduce_in_bf16: bool
    micro_batch_size: int
    global_batch_size: int
    seq_length: int
    recompute: str  # "none", "selective" or "full"
    recompute_num_layers: int
    bf16: bool
    loss_impl: str = "plain"  # "plain" or "chunked" (train.loss_impl)
    loss_chunk_size: int = 1024
    device: str = "gpu"  # "gpu" or "cpu": what the fixed overhead is, and what bf16 "auto" means

    @property
    def dp(self) -> int:
        return data_parallel_size(self.world_size, self.tp, self.pp, self.cp)

    @property
    def num_microbatches(self) -> int:
        """Micro-batches per step on each data-parallel rank (gradient accumulation)."""
        return microbatches_per_step(self.global_batch_size, self.micro_batch_size, self.dp)

    @property
    def tokens_per_step(self) -> int:
        return self.global_batch_size * self.seq_length

    @property
    def split(self) -> ParallelSplit:
        """This layout as the layout rules (config/layout_rules.py) see it."""
        return ParallelSplit(self.world_size, self.tp, self.pp, self.vpp, self.cp, self.sp,
                             self.global_batch_size, self.micro_batch_size, self.seq_length)

    def describe(self) -> str:
        parts = [f"TP {self.tp}", f"PP {self.pp}"]
        if self.vpp > 1:
            parts.append(f"VPP {self.vpp}")
        parts += [f"CP {self.cp}", f"DP {self.dp}"]
        flags = [
            "sequence parallel" if self.sp else "no sequence parallel",
            "distributed optimizer" if self.distributed_optimizer else "no distributed optimizer",
            f"{self.recompute} recompute",
        ] + ([f"chunked loss ({self.loss_chunk_size} tokens)"] if self.loss_impl == "chunked" else [])
        return " x ".join(parts) + "; " + ", ".join(flags)


def layout_from_config(cfg: Config, world_size: int, device: str = "gpu") -> Layout:
    par, tr = cfg.parallel, cfg.train
    return Layout(
        world_size=world_size,
        tp=par.tp,
        pp=par.pp,
        cp=par.cp,
        vpp=interleave(par.vpp),
        sp=par.sp,
        distributed_optimizer=par.distributed_optimizer,
        grad_reduce_in_bf16=par.grad_reduce_in_bf16,
        micro_batch_size=tr.micro_batch_size,
        global_batch_size=tr.global_batch_size,
        seq_length=tr.seq_length,
        recompute=str(tr.recompute),
        recompute_num_layers=tr.recompute_num_layers,
        # Planned for `device`, whatever train.device: precision "auto" means bf16 on a GPU,
        # fp32 on CPU.
        bf16=uses_bf16(tr.precision, cuda=device == "gpu"),
        loss_impl=str(tr.loss_impl),
        loss_chunk_size=tr.loss_chunk_size,
        device=device,
    )
