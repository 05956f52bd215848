"""A run's plan: its layout, parameter counts, memory per GPU by stage, whether it fits, its
duration, what its checkpoints cost, and (when it does not fit) what would help. `alia-plan`
prints it (plan_text.format_run_plan); alia-train checks it before starting on a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from alia_train.config.schema import Config
from alia_train.config.validate import config_problems
from alia_train.model.params import ParamCounts, count_params, padded_vocab_size
from alia_train.plan.checkpoint_cost import CheckpointCost, checkpoint_cost
from alia_train.plan.duration import Duration, estimate_duration
from alia_train.plan.memory import GIB, StageMemory, layout_memory
from alia_train.plan.parallel_layout import Layout, layout_from_config
from alia_train.plan.suggest import hints, suggest_layouts


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
    checkpoint: CheckpointCost | None = None  # size, host memory, save / load time
    checkpoint_interval: int = 0  # checkpoint.interval (0: at the end and on a signal only)
    filesystem_write_gb_s: float | None = None  # the cluster's figures the checkpoint times use
    filesystem_read_gb_s: float | None = None
    node_network_gb_s: float | None = None

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
    plan.checkpoint = checkpoint_cost(m, padded, lay, cl)
    plan.checkpoint_interval = cfg.checkpoint.interval
    plan.filesystem_write_gb_s, plan.filesystem_read_gb_s = cl.filesystem_write_gb_s, cl.filesystem_read_gb_s
    plan.node_network_gb_s = cl.node_network_gb_s
    peak = plan.peak
    assert peak is not None
    if peak.total > capacity * GIB:
        plan.problems.append(
            f"memory: {peak.total / GIB:.1f} GiB per GPU"
            + ("" if lay.pp == 1 else f" on the {peak.label}")
            + f" is more than the "
            f"{capacity:g} GiB of cluster.gpu_memory_gb"
        )
        plan.hints = hints(peak, lay)
        if suggest:
            plan.suggestions = suggest_layouts(cfg, world_size, vocab, capacity)
    return plan
