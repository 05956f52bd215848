"""The text `alia-plan` prints for a run's plan (and alia-train when a run does not fit)."""

from __future__ import annotations

from alia_train.plan.activations import in_flight_microbatches
from alia_train.plan.checkpoint_cost import GB, CheckpointCost, training_share
from alia_train.plan.levers import MAX_GPUS, SmallestMachines
from alia_train.plan.memory import ALLOCATOR_SLACK, FIXED_OVERHEAD_GIB, GIB, StageMemory
from alia_train.plan.run_plan import RunPlan


def _row(label: str, values: list[str], width: int = 44) -> str:
    return f"  {label:<{width}}" + "".join(f"{v:>14}" for v in values)


def _gib(x: float) -> str:
    return f"{x / GIB:.2f}"


def _memory_table(plan: RunPlan) -> list[str]:
    lay = plan.layout
    assert lay is not None
    st: list[StageMemory] = plan.stages
    prec = "bf16" if lay.bf16 else "fp32"
    grad_prec = "bf16" if lay.bf16 and lay.grad_reduce_in_bf16 else "fp32"
    shard = f"/ DP x CP = {lay.dp * lay.cp}" if lay.distributed_optimizer else "replicated"
    lines = [_row("memory per GPU (GiB)", [s.label for s in st])]
    lines.append(_row(f"weights ({prec})", [_gib(s.weights) for s in st]))
    lines.append(_row(f"gradients ({grad_prec})", [_gib(s.grads) for s in st]))
    if lay.bf16:
        lines.append(_row(f"fp32 master weights ({shard})", [_gib(s.master) for s in st]))
    lines.append(_row(f"Adam m + v, fp32 ({shard})", [_gib(s.adam) for s in st]))
    lines.append(_row(f"activations ({lay.recompute} recompute)", [_gib(s.activations) for s in st]))
    lines.append(_row("  micro-batches in flight (1F1B)", [f"{in_flight_microbatches(lay, s.stage):g}" for s in st]))
    if lay.cp > 1:
        lines.append(_row(f"  of which K/V all-gathered over CP {lay.cp}", [_gib(s.gathered_kv) for s in st]))
    lines.append(_row("output-layer inputs", [_gib(s.head) for s in st]))
    lines.append(_row("logits + gradient (fp32, one micro-batch)", [_gib(s.logits) for s in st]))
    if any(s.step_transient > s.activations + s.head + s.logits for s in st):
        lines.append(_row("optimizer-step fp32 gradient copy (peak)", [_gib(s.step_transient) for s in st]))
    lines.append(_row("= peak allocated by torch", [_gib(s.allocated) for s in st]))
    lines.append(_row(f"+ CUDA/NCCL/workspaces {FIXED_OVERHEAD_GIB:g} GiB, allocator {ALLOCATOR_SLACK:.0%}", [_gib(s.overhead) for s in st]))
    lines.append(_row("= total per GPU", [_gib(s.total) for s in st]))
    return lines


def _where(stage: StageMemory) -> str:
    return "" if stage.label == "all layers" else f" on the {stage.label}"


def _span(seconds: float) -> str:
    if seconds >= 86400:
        return f"{seconds / 86400:.1f} days"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} hours"
    return f"{seconds / 60:.1f} minutes"


def format_run_plan(plan: RunPlan) -> str:
    """The whole report: layout and batch, parameters, memory per GPU and the verdict,
    alternatives, time to the token budget, what checkpoints cost, and what would help when it
    does not fit."""
    gpus = plan.nodes * plan.gpus_per_node
    lines = [
        f"alia-plan: {plan.model_name} on {plan.cluster_name}: {plan.nodes} node(s) x "
        f"{plan.gpus_per_node} GPU(s) = {gpus:,} GPUs of {plan.capacity_gib:g} GiB"
    ]
    lay = plan.layout
    if lay is None or plan.counts is None or plan.duration is None:
        lines.append("cannot plan this configuration:")
        lines += [f"  {p}" for p in plan.problems]
        return "\n".join(lines)
    if lay.world_size != gpus:
        lines.append(f"  (planned for a world size of {lay.world_size:,} processes)")
    lines += [
        f"layout      {lay.describe()}",
        f"batch       {lay.global_batch_size:,} sequences x {lay.seq_length:,} tokens = "
        f"{lay.tokens_per_step:,} tokens per step; micro batch {lay.micro_batch_size}, "
        f"{lay.num_microbatches} per step per DP rank",
        "",
    ]
    lines += _parameter_lines(plan) + [""] + _memory_table(plan) + _verdict_lines(plan) + [""]
    lines += _time_lines(plan) + [""] + _checkpoint_lines(plan)
    if not plan.fits:
        lines += [""] + _advice_lines(plan)
    return "\n".join(lines)


def _parameter_lines(plan: RunPlan) -> list[str]:
    lay, counts = plan.layout, plan.counts
    assert lay is not None and counts is not None
    lines = [
        "parameters (model-card counts: unpadded vocabulary "
        f"{plan.vocab_size:,}; padded to {plan.padded_vocab:,} for TP {lay.tp})",
        f"  {'total':<28}{counts.total:>18,}",
        f"  {'embedding':<28}{counts.embedding:>18,}",
        f"  {'output layer (untied)':<28}{counts.output:>18,}",
        f"  {'transformer layers + norm':<28}{counts.transformer:>18,}",
    ]
    return lines + [f"  {'per GPU, ' + s.label:<28}{round(s.params):>18,}" for s in plan.stages]


def _verdict_lines(plan: RunPlan) -> list[str]:
    """Fits or not, and the peak stage's alternatives (recompute, distributed optimizer)."""
    peak = plan.peak
    assert peak is not None
    room = plan.capacity_gib - peak.total / GIB
    verdict = (
        f"  fits in {plan.capacity_gib:g} GiB: yes, {room:.1f} GiB ({room / plan.capacity_gib:.0%}) to spare"
        if plan.fits
        else f"  fits in {plan.capacity_gib:g} GiB: NO, {-room:.1f} GiB short{_where(peak)}"
    )
    acts = peak.activations_by_recompute
    return [
        verdict,
        "",
        f"alternatives ({peak.label}, GiB)",
        "  activations by recompute: "
        + ", ".join(f"{k} {v / GIB:.2f}" for k, v in acts.items())
        + "  (flash attention keeps no s x s scores, so selective saves little memory)",
        f"  master + Adam: distributed optimizer {peak.optimizer_distributed / GIB:.2f}, "
        f"replicated {peak.optimizer_replicated / GIB:.2f}",
    ]


def _time_lines(plan: RunPlan) -> list[str]:
    lay, dur = plan.layout, plan.duration
    assert lay is not None and dur is not None
    return [
        f"time at {dur.mfu:.0%} MFU of {dur.peak_tflops:g} TFLOP/s per GPU (model FLOPs, bf16 dense peak)",
        f"  model FLOPs per token      {dur.flops_per_token:.3e}",
        f"  throughput                 {dur.tokens_per_second:,.0f} tokens/s "
        f"({dur.tokens_per_second / lay.world_size:,.0f} per GPU)",
        f"  step time                  {dur.step_seconds:.2f} s",
        f"  token budget               {dur.tokens:.4g} tokens ({dur.budget_source}) = "
        f"{dur.steps:,} steps, {_span(dur.days * 86400)}",
    ]


def _disk(nbytes: float) -> str:
    """Decimal units, as file systems are quoted."""
    for unit, size in (("TB", 1e12), ("GB", GB)):
        if nbytes >= size:
            return f"{nbytes / size:,.1f} {unit}"
    return f"{nbytes / 1e6:,.1f} MB"


def _seconds(x: float) -> str:
    return f"{x:,.0f} s" if x >= 10 else (f"{x:.1f} s" if x >= 1 else f"{x:.2f} s")


def _mem(nbytes: float) -> str:
    return f"{nbytes / GIB:,.1f} GiB" if nbytes >= GIB else f"{nbytes / 2**20:,.1f} MiB"


def _of_host(ck: CheckpointCost, nbytes: float) -> str:
    if ck.host_memory_gib is None:
        return f"{_mem(nbytes)} (cluster.host_memory_gb unknown)"
    share = nbytes / (ck.host_memory_gib * GIB)
    verdict = f"{share:.0%}" if share <= 1 else "MORE than a node has"
    return f"{_mem(nbytes)} of {ck.host_memory_gib:g} GiB ({verdict})"


def _checkpoint_lines(plan: RunPlan) -> list[str]:
    """Size on disk, host memory per node for a save and a load (the routine per-rank form, and
    the portable fully reshardable one), seconds to save and load, and their share of the run."""
    ck, lay = plan.checkpoint, plan.layout
    assert ck is not None and lay is not None
    optimizer = "fp32 main params, Adam m, v" if ck.optimizer_bytes == 12 else "Adam m, v (fp32)"
    lines = [
        f"checkpoints ({'bf16' if lay.bf16 else 'fp32'} weights {ck.weight_bytes} + {optimizer} "
        f"{ck.optimizer_bytes} = {ck.weight_bytes + ck.optimizer_bytes} bytes per parameter, each written once)",
        f"  size on disk               {_disk(ck.size)} ({ck.params:,} parameters as stored)",
        f"  host memory per node       {_of_host(ck, ck.node_bytes)} to save, the same to load "
        f"({ck.ranks_per_node} rank(s), each at most {_mem(ck.rank_bytes)}: its share of its stage)",
    ]
    if ck.portable_node_bytes is not None:
        lines.append(f"  portable form, on request  {_of_host(ck, ck.portable_node_bytes)} to save or load "
                     "(fully reshardable: each rank gathers its stage's fp32 main params, Adam m, v)")
    return lines + _checkpoint_time_lines(plan, ck)


def _checkpoint_time_lines(plan: RunPlan, ck: CheckpointCost) -> list[str]:
    """Seconds = size / min(file system, nodes x node network); the share of the run at
    checkpoint.interval."""
    dur, nodes, node_net = plan.duration, ck.nodes, plan.node_network_gb_s
    assert dur is not None
    def at(fs: float) -> str:
        if node_net is None:
            return f"the file system's {fs:,g} GB/s (cluster.node_network_gb_s unknown)"
        return f"min(file system {fs:,g}, {nodes:,} node(s) x {node_net:g}) GB/s"

    rows = [("save", ck.save_seconds, plan.filesystem_write_gb_s, "cluster.filesystem_write_gb_s"),
            ("load", ck.load_seconds, plan.filesystem_read_gb_s, "cluster.filesystem_read_gb_s")]
    lines = []
    for label, seconds, fs, key in rows:
        if seconds is None:
            lines.append(f"  {label:<27}unknown: set {key} (the file system's aggregate GB/s)")
        else:
            lines.append(f"  {label:<27}{_seconds(seconds)}: {_disk(ck.size)} at {at(fs)}")
    if ck.save_seconds is None:
        return lines
    interval = plan.checkpoint_interval
    when = f"every {interval:,} steps" if interval > 0 else "at the end and on a signal"
    share = training_share(ck.save_seconds, interval, dur.step_seconds, dur.steps)
    return lines + [
        f"  {f'checkpoint.interval {interval}':<27}{when}: {share:.2%} of the run in blocking saves "
        f"(one save = {ck.save_seconds / dur.step_seconds:.2f} steps)",
        "  (peak speeds of a file system that other jobs share: the seconds are lower bounds)",
    ]


def _advice_lines(plan: RunPlan) -> list[str]:
    lines = ["does not fit:"] + [f"  {p}" for p in plan.problems]
    if plan.hints:
        lines.append("what would help:")
        lines += [f"  - {h}" for h in plan.hints]
    if plan.suggestions:
        lines.append("layouts that fit (add these overrides):")
        lines += [f"  {s}" for s in plan.suggestions]
    return lines


def format_smallest_machines(model: str, seq_length: int, sm: SmallestMachines) -> str:
    """The least each kind of machine needs for this model at this sequence length, with the
    overrides that get it there (the memory levers; on one process no model parallelism)."""
    gpus = f"{sm.gpus}: {sm.gpus_layout}" if sm.gpus is not None else f"more than {MAX_GPUS:,}"
    rows = [("one GPU", f"{sm.one_gpu.total / GIB:.1f} GiB: {sm.one_gpu.text()}"),
            ("one CPU process", f"{sm.cpu.total / GIB:.1f} GiB of memory, a checkpoint save included: {sm.cpu.text()}"),
            (f"GPUs of {sm.gpu_gib:g} GiB", gpus)]
    return "\n".join([f"smallest machines for {model} at {seq_length:,} tokens (with the memory levers that help)"]
                     + [f"  {label:<20}{text}" for label, text in rows])
