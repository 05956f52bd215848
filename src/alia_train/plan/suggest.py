"""What to change when a run does not fit: hints in words from the peak's largest parts, and
concrete layouts (as Hydra overrides) found by searching TP, PP, CP (long sequences), recompute
and micro batch."""

from __future__ import annotations

import itertools
import math
from dataclasses import replace

from alia_train.config.layout_rules import layout_problems, pipeline_split_problems
from alia_train.config.schema import Config
from alia_train.model.params import padded_vocab_size
from alia_train.plan.memory import GIB, StageMemory, layout_memory
from alia_train.plan.parallel_layout import Layout, layout_from_config

# Layouts that fit with less headroom than this are offered after roomier ones: the estimate
# is an estimate.
MIN_HEADROOM = 0.10
MAX_PP = 16
MAX_CP = 16
# CP is offered only while each rank keeps at least this many tokens: below, the K/V all-gather
# and the per-chunk kernels cost more than the activations CP saves.
MIN_TOKENS_PER_CP_RANK = 4096
MAX_SUGGESTIONS = 3


def hints(peak: StageMemory, lay: Layout) -> list[str]:
    out: list[str] = []
    model_state = (peak.weights + peak.grads) / GIB
    out.append(
        f"weights + gradients take {model_state:.1f} GiB per GPU: split the model over more GPUs "
        f"(parallel.tp, up to the GPUs of one node, then parallel.pp; now TP {lay.tp} PP {lay.pp})"
    )
    if not lay.distributed_optimizer:
        saved = (peak.optimizer_replicated - peak.optimizer_distributed) / GIB
        out.append(
            f"parallel.distributed_optimizer=true shards the fp32 master weights and Adam states "
            f"over DP: saves {saved:.1f} GiB"
        )
    if lay.recompute != "full":
        saved = (peak.activations - peak.activations_by_recompute["full"]) / GIB
        out.append(f"train.recompute=full keeps only layer inputs: saves {saved:.1f} GiB of activations")
    if lay.micro_batch_size > 1:
        out.append(
            f"a smaller train.micro_batch_size (now {lay.micro_batch_size}) shrinks activations and "
            "logits proportionally"
        )
    more_cp = 2 * lay.cp
    if more_cp <= MAX_CP and lay.seq_length // more_cp >= MIN_TOKENS_PER_CP_RANK:
        out.append(
            f"parallel.cp={more_cp} splits each {lay.seq_length:,}-token sequence over {more_cp} GPUs "
            "(context parallelism): halves the activations and logits per GPU, plus the K/V "
            "each rank gathers"
        )
    if lay.tp > 1 and not lay.sp:
        out.append("parallel.sp=true splits the norm and residual activations over TP as well")
    if peak.logits > 0.1 * peak.total:
        out.append(
            f"the logits of one micro-batch take {peak.logits / GIB:.1f} GiB (fp32, with gradient): "
            "more TP or a smaller micro batch"
        )
    return out


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def layout_overrides(base: Layout, new: Layout) -> list[str]:
    """The Hydra overrides that turn `base`'s settings into `new`'s."""
    keys = [
        ("parallel.tp", "tp"),
        ("parallel.pp", "pp"),
        ("parallel.vpp", "vpp"),
        ("parallel.cp", "cp"),
        ("parallel.sp", "sp"),
        ("parallel.distributed_optimizer", "distributed_optimizer"),
        ("parallel.grad_reduce_in_bf16", "grad_reduce_in_bf16"),
        ("train.recompute", "recompute"),
        ("train.loss_impl", "loss_impl"),
        ("train.micro_batch_size", "micro_batch_size"),
        ("train.seq_length", "seq_length"),
    ]
    out = []
    for key, attr in keys:
        old, value = getattr(base, attr), getattr(new, attr)
        if old != value:
            if attr == "vpp":
                text = "null" if value == 1 else str(value)
            elif isinstance(value, bool):
                text = str(value).lower()
            else:
                text = str(value)
            out.append(f"{key}={text}")
    return out


def _context_parallel_sizes(base: Layout) -> list[int]:
    """The configured CP, and the powers of two that leave every rank a long enough share."""
    sizes = {base.cp}
    cp = 2
    while cp <= MAX_CP and base.seq_length // cp >= MIN_TOKENS_PER_CP_RANK:
        sizes.add(cp)
        cp *= 2
    return sorted(sizes)


def suggest_layouts(cfg: Config, world_size: int, vocab_size: int, capacity_gib: float) -> list[str]:
    """Up to MAX_SUGGESTIONS override sets that fit, cheapest first: no full recompute, the
    least model parallelism (TP before PP before CP), the largest micro batch, the fewest changes."""
    m = cfg.model
    base = layout_from_config(cfg, world_size)
    gpn = max(1, cfg.cluster.gpus_per_node)
    tp_limit = max(gpn, base.tp)
    tps = [d for d in _divisors(math.gcd(m.num_attention_heads, m.num_query_groups, m.ffn_hidden_size)) if d <= tp_limit]
    pps = [d for d in _divisors(m.num_layers) if d <= max(MAX_PP, base.pp)]
    recomputes = list(dict.fromkeys([base.recompute, "selective", "full"]))
    mbss = sorted({base.micro_batch_size // 2**k for k in range(8) if base.micro_batch_size // 2**k >= 1}, reverse=True)

    found: list[tuple[tuple, list[str], float]] = []
    for tp, pp, cp, rec, mbs in itertools.product(tps, pps, _context_parallel_sizes(base), recomputes, mbss):
        # Keep the configured interleaving where this pipeline depth allows it.
        vpp = base.vpp if base.vpp > 1 and not pipeline_split_problems(m, pp, base.vpp) else 1
        lay = replace(
            base, tp=tp, pp=pp, cp=cp, vpp=vpp, sp=tp > 1, distributed_optimizer=True,
            recompute=rec, micro_batch_size=mbs,
        )
        if layout_problems(m, lay.split):  # the validator's rules, as for the configured layout
            continue
        padded = padded_vocab_size(vocab_size, m.make_vocab_size_divisible_by, tp)
        peak = max(s.total for s in layout_memory(m, padded, lay))
        if peak > capacity_gib * GIB:
            continue
        changes = layout_overrides(base, lay)
        tight = peak > (1 - MIN_HEADROOM) * capacity_gib * GIB
        key = (tight, rec == "full", tp * pp * cp, pp, cp, -mbs, len(changes))
        found.append((key, changes, peak))
    found.sort(key=lambda f: f[0])
    return [f"{' '.join(changes)}  (peak {peak / GIB:.1f} GiB)" for _, changes, peak in found[:MAX_SUGGESTIONS]]
