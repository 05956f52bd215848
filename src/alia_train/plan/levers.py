"""What a run can change to fit the machine at hand, keeping its processes: the memory levers
alia-train has, the least memory a model needs with all of them, a smaller shipped model, and
the smallest machines for a model (`alia-plan` prints them).

The levers, cheapest first: a smaller micro batch (the same batch in more micro-batches), fp32
gradients (parallel.grad_reduce_in_bf16=false: no fp32 copy at the optimizer step, and with one
data-parallel rank nothing to reduce), the chunked loss (one more output-layer matmul),
selective then full recompute (part of, then a whole second forward), and last a shorter
sequence, which changes what is trained.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass, replace
from typing import Iterator

from alia_train.config.layout_rules import layout_problems
from alia_train.config.schema import Config, ModelConfig
from alia_train.model.params import count_params, padded_vocab_size
from alia_train.plan.memory import GIB, StageMemory, layout_memory
from alia_train.plan.parallel_layout import Layout, layout_from_config
from alia_train.plan.suggest import layout_overrides, suggest_layouts

MIN_SEQ_LENGTH = 512  # the shortest sequence offered
MAX_GPUS = 2**14  # the most GPUs smallest_machines looks for


@dataclass(frozen=True)
class Fit:
    """A layout, the peak of its bounding stage, and the overrides that lead to it."""

    layout: Layout
    peak: StageMemory
    changes: tuple[str, ...]

    @property
    def total(self) -> float:
        return self.peak.total

    def text(self) -> str:
        return " ".join(self.changes) or "as configured"


def peak_memory(m: ModelConfig, vocab: int, lay: Layout) -> StageMemory:
    """The stage of `lay` that needs the most memory per process (GPU or CPU process)."""
    padded = padded_vocab_size(vocab, m.make_vocab_size_divisible_by, lay.tp)
    return max(layout_memory(m, padded, lay), key=lambda s: s.total)


def _halvings(n: int, floor: int) -> list[int]:
    out = [n]
    while out[-1] // 2 >= floor:
        out.append(out[-1] // 2)
    return out


def lever_layouts(m: ModelConfig, base: Layout, shorter_sequences: bool = True) -> Iterator[Layout]:
    """`base` with every combination of the levers that the layout rules accept."""
    recomputes = ("none", "selective", "full")
    recomputes = recomputes[recomputes.index(base.recompute):]
    losses = dict.fromkeys([base.loss_impl, "chunked"])
    grads = dict.fromkeys([base.grad_reduce_in_bf16, False]) if base.bf16 else [base.grad_reduce_in_bf16]
    seqs = _halvings(base.seq_length, MIN_SEQ_LENGTH) if shorter_sequences else [base.seq_length]
    for seq, rec, loss, grad, mbs in itertools.product(
        seqs, recomputes, losses, grads, _halvings(base.micro_batch_size, 1)
    ):
        lay = replace(base, seq_length=seq, recompute=rec, loss_impl=loss, grad_reduce_in_bf16=grad,
                      micro_batch_size=mbs)
        if not layout_problems(m, lay.split):
            yield lay


def _cost(base: Layout, lay: Layout) -> tuple:
    """What `lay` costs against `base`, most expensive lever first (the module's docstring)."""
    more_recompute = lay.recompute != base.recompute
    return (
        -lay.seq_length,
        more_recompute and lay.recompute == "full",
        more_recompute and lay.recompute == "selective",
        lay.loss_impl != base.loss_impl,
        lay.grad_reduce_in_bf16 != base.grad_reduce_in_bf16 and lay.dp > 1,
        -lay.micro_batch_size,
    )


def _fit(m: ModelConfig, vocab: int, reference: Layout, lay: Layout, prefix: tuple[str, ...] = ()) -> Fit:
    return Fit(lay, peak_memory(m, vocab, lay), prefix + tuple(layout_overrides(reference, lay)))


def cheapest_fit(m: ModelConfig, vocab: int, base: Layout, budget: float, reference: Layout | None = None,
                 prefix: tuple[str, ...] = ()) -> Fit | None:
    """The cheapest lever setting of `base` whose peak is at most `budget` bytes, or None.
    Its overrides are against `reference` (default `base`), after `prefix`."""
    fits = [f for f in (_fit(m, vocab, reference or base, lay, prefix) for lay in lever_layouts(m, base))
            if f.total <= budget]
    return min(fits, key=lambda f: (_cost(base, f.layout), len(f.changes)), default=None)


def least_memory(m: ModelConfig, vocab: int, base: Layout, shorter_sequences: bool = True,
                 reference: Layout | None = None) -> Fit:
    """The lever setting of `base` that needs the least memory (the cheapest among equals)."""
    fits = [_fit(m, vocab, reference or base, lay) for lay in lever_layouts(m, base, shorter_sequences)]
    return min(fits, key=lambda f: (round(f.total / 2**20), _cost(base, f.layout), len(f.changes)))


def single_process(cfg: Config, device: str) -> Layout:
    """The configured settings on one GPU or one CPU process: no model parallelism."""
    return replace(layout_from_config(cfg, 1, device), tp=1, pp=1, cp=1, vpp=1, sp=False)


def smaller_shipped_model(cfg: Config, vocab: int, base: Layout, budget: float) -> Fit | None:
    """The largest shipped model smaller than cfg's that fits `budget` on `base`'s processes
    (its recipe with base's model parallelism, device and precision, and the cheapest levers),
    or None.
    Its overrides start with +model=NAME (and model.vocab_size=null where the recipe names
    another vocabulary than this run's)."""
    from alia_train.config.load import available_models

    own = count_params(cfg.model, vocab).total
    found = []
    for name in available_models():
        recipe = _shipped(name)
        if recipe is None:
            continue
        size = count_params(recipe.model, vocab).total
        if size >= own:
            continue
        shipped = layout_from_config(recipe, base.world_size, base.device)
        here = replace(shipped, tp=base.tp, pp=base.pp, cp=base.cp, vpp=base.vpp, sp=base.sp, bf16=base.bf16)
        prefix = (f"+model={name}",)
        if recipe.model.vocab_size not in (None, vocab):
            prefix += ("model.vocab_size=null",)
        fit = cheapest_fit(recipe.model, vocab, here, budget, reference=shipped, prefix=prefix)
        if fit is not None:
            found.append((size, fit))
    return max(found, key=lambda f: f[0])[1] if found else None


@functools.cache
def _shipped(name: str) -> Config | None:
    """A model's recipe as shipped (composed once per process: Hydra takes ~0.5 s), or None
    where it does not compose on its own. Read only."""
    from alia_train.config.load import ConfigError, load_config

    try:
        return load_config([f"+model={name}"])
    except ConfigError:
        return None


@dataclass(frozen=True)
class SmallestMachines:
    """The least a model needs, at its configured sequence length: one GPU, one CPU process,
    or GPUs of one size."""

    one_gpu: Fit
    cpu: Fit
    gpu_gib: float
    gpus: int | None  # the fewest GPUs of gpu_gib that hold it; None: more than MAX_GPUS
    gpus_layout: str  # the overrides for them, or "as configured"


def fewest_gpus(cfg: Config, vocab: int, gpu_gib: float) -> tuple[int, str] | None:
    """The fewest GPUs of `gpu_gib` (powers of two) with a layout that fits: the configured one,
    else the planner's first suggestion; None beyond MAX_GPUS."""
    n = 1
    while n <= MAX_GPUS:
        lay = layout_from_config(cfg, n)
        if not layout_problems(cfg.model, lay.split) and peak_memory(cfg.model, vocab, lay).total <= gpu_gib * GIB:
            return n, "as configured"
        found = suggest_layouts(cfg, n, vocab, gpu_gib)
        if found:
            return n, found[0]
        n *= 2
    return None


def smallest_machines(cfg: Config, vocab: int, gpu_gib: float) -> SmallestMachines:
    configured = layout_from_config(cfg, 1)
    gpus = fewest_gpus(cfg, vocab, gpu_gib)
    return SmallestMachines(
        one_gpu=least_memory(cfg.model, vocab, single_process(cfg, "gpu"), False, reference=configured),
        cpu=least_memory(cfg.model, vocab, single_process(cfg, "cpu"), False,
                         reference=layout_from_config(cfg, 1, "cpu")),
        gpu_gib=gpu_gib,
        gpus=gpus[0] if gpus else None,
        gpus_layout=gpus[1] if gpus else "",
    )
