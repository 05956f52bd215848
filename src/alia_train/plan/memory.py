"""Per-GPU memory of a run, by part, and whether it fits: the planner's core.

Bytes per parameter on one GPU (mixed precision, megatron DDP + optimizer):
  weights          2 (bf16)
  gradients        2 with parallel.grad_reduce_in_bf16, else 4 (megatron's fp32 main_grad);
                   never sharded (the distributed optimizer is ZeRO-1)
  master weights   4 (fp32)    } divided by DP x CP with the distributed optimizer
  Adam m and v     8 (fp32)    }
  step transient   4 with bf16 gradients: the optimizer's fp32 copy of its gradient shard
                   (/ DP x CP when distributed); only alive during the step, when the
                   activations are gone
fp32 training (train.precision=fp32): weights 4, gradients 4, no master copy.

Parameters on one GPU: the layers of its pipeline stage split over TP (norm weights are
replicated), plus the input embedding on the first stage and the output layer and final norm on
the last, both split over TP with the vocabulary padded to a multiple of
make_vocab_size_divisible_by x TP. Activations: see activations.py.

Context parallelism splits the activations (the sequence) over CP and adds the K/V each
rank all-gathers (activations.py); the optimizer state shards over DP x CP.

Beyond what torch allocates: a fixed FIXED_OVERHEAD_GIB for the CUDA context, NCCL's buffers for
the TP / PP / DP communicators and cuBLAS / Transformer Engine workspaces, and ALLOCATOR_SLACK of
the allocated peak for the caching allocator's fragmentation. Capacities (cluster.gpu_memory_gb)
are read as GiB, the unit nvidia-smi and torch report (an H100 64 GB shows 65,536 MiB).

A CPU process (Layout.device "cpu") holds the same parts in host memory, in fp32 unless
train.precision=bf16 (config/derived.py; fp32 keeps no master copy), with the CPU layers'
activations (activations.py), and instead of the CUDA figure a fixed CPU_PROCESS_OVERHEAD_GIB:
Python, torch, megatron-core, gloo and the data pipeline. It also holds what a checkpoint save
copies, which on a GPU goes to host memory: megatron-core's dist_checkpointing holds about
CHECKPOINT_COPIES copies of 16 bytes per parameter (the model's weights and the optimizer's
master weights, Adam m and v, all counted in fp32) while the activations are gone, in fp32 and
in bf16 alike.
benchmarks/plan_memory_vs_rss.py compares the CPU figure with the peak resident memory of runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import alia_train.plan.activations as activations
from alia_train.config.schema import ModelConfig
from alia_train.model.params import layer_params
from alia_train.plan.parallel_layout import Layout

GIB = 2**30
FIXED_OVERHEAD_GIB = 3.0
# Measured: the peak RSS of `alia-train +model=tiny` (a model of a few MB) on CPU, torch 2.14
# (CUDA build, whose libraries alone are 0.7 GB resident) and megatron-core 0.19: 1.17 GiB.
CPU_PROCESS_OVERHEAD_GIB = 1.2
# Measured on the shrunk recipes (benchmarks/plan_memory_vs_rss.py): a save holds 26 to 32 bytes
# per parameter beyond the training state, in fp32 and in bf16: two copies of its 16.
CHECKPOINT_COPIES = 2.0
ALLOCATOR_SLACK = 0.05
RECOMPUTE_MODES = ("none", "selective", "full")


@dataclass(frozen=True)
class StageMemory:
    """Peak memory of one GPU (or CPU process) of one pipeline stage, in bytes."""

    stage: int
    label: str  # "all layers" (PP 1), "first stage", "last stage"
    params: float
    weights: float
    grads: float
    master: float
    adam: float
    step_transient: float
    activations: float  # with the configured recompute, all micro-batches in flight
    head: float  # last stage: final-norm / output-layer inputs
    logits: float  # last stage: logits and their gradient (one micro-batch)
    gathered_kv: float = 0.0  # of `activations`: K/V all-gathered over CP (0 without CP)
    fixed_overhead: float = FIXED_OVERHEAD_GIB * GIB  # CUDA context etc., or a CPU process's
    checkpoint_copy: float = 0.0  # CPU: what a save holds while it writes (on GPU: host memory)
    # Alternatives the report shows next to the configured choice.
    activations_by_recompute: dict[str, float] = field(default_factory=dict)
    optimizer_distributed: float = 0.0  # master + Adam with the distributed optimizer
    optimizer_replicated: float = 0.0  # master + Adam without it

    @property
    def static(self) -> float:
        return self.weights + self.grads + self.master + self.adam

    @property
    def allocated(self) -> float:
        """Peak of what torch allocates: backward start, or the optimizer step or (CPU) a
        checkpoint save if larger."""
        return self.static + max(self.activations + self.head + self.logits, self.step_transient,
                                 self.checkpoint_copy)

    @property
    def overhead(self) -> float:
        return self.fixed_overhead + ALLOCATOR_SLACK * self.allocated

    @property
    def total(self) -> float:
        return self.allocated + self.overhead


def stage_params(m: ModelConfig, padded_vocab: int, lay: Layout, stage: int) -> float:
    h = m.hidden_size
    norms = 2 * h
    per_layer = (layer_params(m) - norms) / lay.tp + norms
    n = (m.num_layers // lay.pp) * per_layer
    if stage == 0:
        n += padded_vocab * h / lay.tp
    if stage == lay.pp - 1:
        n += padded_vocab * h / lay.tp + h
    return n


def stage_memory(m: ModelConfig, padded_vocab: int, lay: Layout, stage: int) -> StageMemory:
    n = stage_params(m, padded_vocab, lay, stage)
    shards = lay.dp * lay.cp
    if lay.bf16:
        weight_b, grad_b, master_b = 2, (2 if lay.grad_reduce_in_bf16 else 4), 4
        transient_b = 4 if lay.grad_reduce_in_bf16 else 0
    else:
        weight_b, grad_b, master_b, transient_b = 4, 4, 0, 0
    opt_shards = shards if lay.distributed_optimizer else 1
    cpu = lay.device == "cpu"
    fp32_state = n * (4 + (4 + 8) / opt_shards)  # model weights, master weights, Adam m and v
    acts = {
        mode: activations.stage_bytes(m, lay, stage, mode) for mode in RECOMPUTE_MODES
    }
    last = stage == lay.pp - 1
    return StageMemory(
        stage=stage,
        label="all layers" if lay.pp == 1 else ("first stage" if stage == 0 else "last stage"),
        params=n,
        weights=n * weight_b,
        grads=n * grad_b,
        master=n * master_b / opt_shards,
        adam=n * 8 / opt_shards,
        step_transient=n * transient_b / opt_shards,
        activations=acts[lay.recompute],
        gathered_kv=activations.gathered_kv_held_bytes(m, lay, stage, lay.recompute),
        head=activations.head_input_bytes(m, lay) if last else 0.0,
        logits=activations.logits_bytes(m, lay, padded_vocab) if last else 0.0,
        fixed_overhead=(CPU_PROCESS_OVERHEAD_GIB if cpu else FIXED_OVERHEAD_GIB) * GIB,
        checkpoint_copy=CHECKPOINT_COPIES * fp32_state if cpu else 0.0,
        activations_by_recompute=acts,
        optimizer_distributed=n * (master_b + 8) / shards,
        optimizer_replicated=n * (master_b + 8),
    )


def layout_memory(m: ModelConfig, padded_vocab: int, lay: Layout) -> list[StageMemory]:
    """The stages that bound the peak: the first (most micro-batches in flight, embedding) and
    the last (output layer, logits); middle stages hold less than the first."""
    stages = sorted({0, lay.pp - 1})
    return [stage_memory(m, padded_vocab, lay, s) for s in stages]

