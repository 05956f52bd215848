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

Beyond what torch allocates: a fixed FIXED_OVERHEAD_GIB for the CUDA context, NCCL's buffers for
the TP / PP / DP communicators and cuBLAS / Transformer Engine workspaces, and ALLOCATOR_SLACK of
the allocated peak for the caching allocator's fragmentation. Capacities (cluster.gpu_memory_gb)
are read as GiB, the unit nvidia-smi and torch report (an H100 64 GB shows 65,536 MiB).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from alia_train.config.schema import Config, ModelConfig
from alia_train.model.params import ParamCounts, count_params, layer_params, padded_vocab_size
from alia_train.plan import activations
from alia_train.plan.duration import Duration, estimate_duration
from alia_train.plan.layout import Layout, layout_from_config

GIB = 2**30
FIXED_OVERHEAD_GIB = 3.0
ALLOCATOR_SLACK = 0.05
RECOMPUTE_MODES = ("none", "selective", "full")


@dataclass(frozen=True)
class StageMemory:
    """Peak memory of one GPU of one pipeline stage, in bytes."""

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
    # Alternatives the report shows next to the configured choice.
    activations_by_recompute: dict[str, float] = field(default_factory=dict)
    optimizer_distributed: float = 0.0  # master + Adam with the distributed optimizer
    optimizer_replicated: float = 0.0  # master + Adam without it

    @property
    def static(self) -> float:
        return self.weights + self.grads + self.master + self.adam

    @property
    def allocated(self) -> float:
        """Peak of what torch allocates: backward start, or the optimizer step if larger."""
        return self.static + max(self.activations + self.head + self.logits, self.step_transient)

    @property
    def overhead(self) -> float:
        return FIXED_OVERHEAD_GIB * GIB + ALLOCATOR_SLACK * self.allocated

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
        head=activations.head_input_bytes(m, lay) if last else 0.0,
        logits=activations.logits_bytes(lay, padded_vocab) if last else 0.0,
        activations_by_recompute=acts,
        optimizer_distributed=n * (master_b + 8) / shards,
        optimizer_replicated=n * (master_b + 8),
    )


def layout_memory(m: ModelConfig, padded_vocab: int, lay: Layout) -> list[StageMemory]:
    """The stages that bound the peak: the first (most micro-batches in flight, embedding) and
    the last (output layer, logits); middle stages hold less than the first."""
    stages = sorted({0, lay.pp - 1})
    return [stage_memory(m, padded_vocab, lay, s) for s in stages]


@dataclass
class RunPlan:
    model_name: str
    cluster_name: str
    nodes: int
    gpus_per_node: int
    capacity_gib: float
    layout: Layout | None
    counts: ParamCounts | None
    vocab_size: int | None
    padded_vocab: int | None
    stages: list[StageMemory]
    duration: Duration | None
    problems: list[str]  # config problems, or why it does not fit
    suggestions: list[str] = field(default_factory=list)  # Hydra overrides that would fit
    hints: list[str] = field(default_factory=list)  # what to change, in words

    @property
    def peak(self) -> StageMemory | None:
        return max(self.stages, key=lambda s: s.total) if self.stages else None

    @property
    def fits(self) -> bool:
        return not self.problems and self.peak is not None and self.peak.total <= self.capacity_gib * GIB

    def summary(self) -> str:
        """One line for a training log."""
        peak = self.peak
        if peak is None:
            return "memory plan: " + "; ".join(self.problems)
        where = "" if peak.label == "all layers" else f" ({peak.label})"
        verdict = "fits" if self.fits else "does NOT fit"
        return (
            f"memory plan: {peak.total / GIB:.1f} GiB per GPU{where} of {self.capacity_gib:g} GiB, "
            f"{verdict} (peak allocated {peak.allocated / GIB:.1f} GiB)"
        )

    def format(self) -> str:
        from alia_train.plan.report import format_plan

        return format_plan(self)


def fits_in(m: ModelConfig, padded_vocab: int, lay: Layout, capacity_gib: float) -> tuple[bool, float]:
    peak = max(s.total for s in layout_memory(m, padded_vocab, lay))
    return peak <= capacity_gib * GIB, peak


def plan_run(
    cfg: Config,
    world_size: int,
    vocab_size: int | None = None,
    *,
    gpu_memory_gib: float | None = None,
    tokens: float | None = None,
    mfu: float | None = None,
    suggest: bool = True,
) -> RunPlan:
    """Plan `cfg` on `world_size` GPUs of `gpu_memory_gib` (default cluster.gpu_memory_gb).

    `vocab_size` is the tokenizer's (default model.vocab_size). The token budget is `tokens`,
    or train.steps x global batch x sequence length; the MFU defaults to cluster.assumed_mfu.
    """
    from alia_train.config.validate import config_problems

    cl = cfg.cluster
    capacity = float(gpu_memory_gib if gpu_memory_gib is not None else cl.gpu_memory_gb)
    vocab = vocab_size if vocab_size is not None else cfg.model.vocab_size
    plan = RunPlan(
        model_name=cfg.model.name,
        cluster_name=cl.name,
        nodes=cl.nodes,
        gpus_per_node=cl.gpus_per_node,
        capacity_gib=capacity,
        layout=None,
        counts=None,
        vocab_size=vocab,
        padded_vocab=None,
        stages=[],
        duration=None,
        # Planned for the cluster's GPUs, with Transformer Engine there.
        problems=config_problems(cfg, world_size, cuda=True, te_available=True),
    )
    if vocab is None:
        plan.problems.append(
            "model.vocab_size: unknown (null = from the tokenizer); set model.vocab_size or pass the tokenizer's size"
        )
    if plan.problems:
        return plan

    m = cfg.model
    lay = layout_from_config(cfg, world_size)
    padded = padded_vocab_size(vocab, m.make_vocab_size_divisible_by, lay.tp)
    plan.layout = lay
    plan.counts = count_params(m, vocab)
    plan.padded_vocab = padded
    plan.stages = layout_memory(m, padded, lay)
    plan.duration = estimate_duration(
        m, lay, vocab, cl.peak_tflops, cl.assumed_mfu if mfu is None else mfu, cfg.train.steps, tokens
    )
    peak = plan.peak
    assert peak is not None
    if peak.total > capacity * GIB:
        plan.problems.append(
            f"memory: {peak.total / GIB:.1f} GiB per GPU"
            + ("" if lay.pp == 1 else f" on the {peak.label}")
            + f" is more than the "
            f"{capacity:g} GiB of cluster.gpu_memory_gb"
        )
        from alia_train.plan.suggest import hints, suggest_layouts

        plan.hints = hints(peak, lay)
        if suggest:
            plan.suggestions = suggest_layouts(cfg, world_size, vocab, capacity)
    return plan
