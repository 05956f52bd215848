"""Does a run fit the machine it is launched on? alia-train's memory check (training/
launch_checks.py), made before any process group or model exists: the planner's estimate per
process against the tightest bound here, on a GPU that GPU's memory, on CPU the host's
(host_memory.py), which all ranks of the job on this node share.

When it does not fit: one line with what it needs and what there is, and what would make it fit
on this machine (levers.py), or that nothing does and what it needs instead.
"""

from __future__ import annotations

from dataclasses import dataclass

from alia_train.config.schema import Config
from alia_train.plan.host_memory import Capacity
from alia_train.plan.levers import (
    cheapest_fit,
    fewest_gpus,
    least_memory,
    peak_memory,
    single_process,
    smaller_shipped_model,
)
from alia_train.plan.memory import GIB, StageMemory
from alia_train.plan.parallel_layout import Layout, layout_from_config


def state_label(lay: Layout) -> str:
    """What the parameters' state is made of, in words."""
    if lay.bf16:
        return "bf16 weights, gradients, fp32 master weights and Adam state"
    return "fp32 weights, gradients and Adam state"


@dataclass(frozen=True)
class MachineFit:
    cfg: Config
    vocab: int
    layout: Layout
    ranks_on_node: int  # processes sharing `capacity` (on GPUs 1: each rank has its own)
    capacity: Capacity  # the tightest bound
    peak: StageMemory  # per process (GPU or CPU process), as configured

    @property
    def gpu(self) -> bool:
        return self.layout.device == "gpu"

    @property
    def budget(self) -> float:
        """Bytes each process may hold."""
        return self.capacity.per_rank(self.ranks_on_node)

    @property
    def fits(self) -> bool:
        return self.peak.total <= self.budget

    def _amount(self, per_process: float) -> str:
        """Memory of the job's processes on this node, in the unit the capacity bounds."""
        n = self.ranks_on_node
        if self.capacity.per_process or n == 1:
            return f"{per_process / GIB:.1f} GiB per {'GPU' if self.gpu else 'process'}"
        return f"{n} processes x {per_process / GIB:.1f} = {n * per_process / GIB:.1f} GiB"

    def summary(self) -> str:
        """One line for the log of a run that fits."""
        p = self.peak
        where = "" if p.label == "all layers" else f" ({p.label})"
        return (f"memory plan: {self._amount(p.total)}{where} of {self.budget / GIB:.1f} GiB, fits "
                f"(peak allocated {p.allocated / GIB:.1f} GiB)")

    def _needs(self) -> str:
        p = self.peak
        parts = [f"{state_label(self.layout)} {p.static / GIB:.1f}", _largest_transient(p),
                 f"{'CUDA context and NCCL' if self.gpu else 'the process'} {p.fixed_overhead / GIB:.1f}",
                 f"allocator {(p.overhead - p.fixed_overhead) / GIB:.1f}"]
        return f"{self._amount(p.total)} ({', '.join(parts)})"

    def refusal(self) -> str:
        """One line: what the run needs, what there is, and what to do."""
        where = "in this GPU's memory" if self.gpu else "in this machine's memory"
        return (f"memory: {self.cfg.model.name} does not fit {where}: it needs {self._needs()}, and there is "
                f"{self.capacity.bytes / GIB:.1f} GiB ({self.capacity.what}); {self.advice()}; "
                "train.check_memory=false starts anyway")

    def advice(self) -> str:
        """The cheapest levers that make it fit here; else the least it needs, a smaller
        shipped model that fits, and the machines it needs."""
        m, lay = self.cfg.model, self.layout
        fit = cheapest_fit(m, self.vocab, lay, self.budget)
        if fit is not None:
            return f"it fits with {fit.text()} ({self._amount(fit.total)})"
        floor = least_memory(m, self.vocab, lay)
        parts = [f"no setting makes it fit here: the least it needs ({floor.text()}) is "
                 f"{self._amount(floor.total)}: {state_label(floor.layout)} {floor.peak.static / GIB:.1f}, "
                 f"{_largest_transient(floor.peak)}"]
        smaller = smaller_shipped_model(self.cfg, self.vocab, lay, self.budget)
        if smaller is not None:
            parts.append(f"a smaller shipped model fits: {smaller.text()}")
        if self.gpu:
            gib = self.budget / GIB
            gpus = fewest_gpus(self.cfg, self.vocab, gib)
            if gpus is not None and gpus[0] > lay.world_size:
                parts.append(f"{gpus[0]} GPUs of {gib:.1f} GiB hold it, with {gpus[1]}")
        else:
            one_gpu = least_memory(m, self.vocab, single_process(self.cfg, "gpu"), shorter_sequences=False)
            parts.append(f"on one GPU it needs {one_gpu.total / GIB:.1f} GiB or more ({one_gpu.text()})")
        parts.append(f"`alia-plan +model={m.name} --machines` names the smallest machines for it")
        return "; ".join(parts)


def _largest_transient(p: StageMemory) -> str:
    """The part on top of the parameters' state at the peak, in words."""
    work = p.activations + p.head + p.logits
    if p.checkpoint_copy >= max(work, p.step_transient):
        return f"a checkpoint save's copies {p.checkpoint_copy / GIB:.1f}"
    if p.step_transient > work:
        return f"fp32 gradient copy at the optimizer step {p.step_transient / GIB:.1f}"
    return f"activations {(p.activations + p.head) / GIB:.1f}, logits {p.logits / GIB:.1f}"


def check_machine(cfg: Config, vocab: int, world_size: int, device: str, capacities: list[Capacity],
                  ranks_on_node: int) -> MachineFit | None:
    """The run against the tightest of `capacities` (None when nothing is known to bound it)."""
    if not capacities:
        return None
    lay = layout_from_config(cfg, world_size, device)
    tightest = min(capacities, key=lambda c: c.per_rank(ranks_on_node))
    return MachineFit(cfg, vocab, lay, ranks_on_node, tightest, peak_memory(cfg.model, vocab, lay))
