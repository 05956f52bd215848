"""Peak memory of the attention step (forward + backward) per context-parallel rank, on CPU over
gloo, next to what `alia-plan` predicts for the same shapes.

    python benchmarks/cp_attention_memory.py [--seqs 2048,4096,8192] [--cps 1,2,4]
                                             [--heads 8 --groups 1 --head-dim 64]

Each CP size runs in CP fresh processes (a gloo group; CP 1 is plain causal SDPA in one
process, what the model runs without CP). Every rank takes its load-balanced share of the same
random q, k, v (fp32, micro batch 1; 8 query heads per KV head, as the 40B's 64:8), runs
model/context_parallel.cp_attention forward and backward once to warm up, then once under
torch.profiler. Measured: the peak of the running sum of the profiler's [memory] events
(allocations +, frees -) inside that step, the worst rank: exact bytes torch allocates, which
RSS blurs with the allocator's caching. The inputs q, k, v exist before the step and are not
counted; their gradients, allocated in it, are.

Planner: alia_train.plan.activations for the same shapes (fp32, TP 1, recompute none): what the
core attention keeps for its backward (local q, K/V of the whole sequence gathered over CP, the
output and log-sum-exp), plus the gathered K/V's gradient before the reduce-scatter; the terms
`alia-plan` adds up per layer. The local-size q, k, v it counts stand in for their gradients.
"""

from __future__ import annotations

import argparse
import json
import socket
import tempfile
from pathlib import Path

MIB = 2**20


def _peak_bytes(prof) -> int:
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    live = peak = 0
    for e in sorted(events, key=lambda e: e.start_ns()):
        live += e.nbytes()
        peak = max(peak, live)
    return peak


def _attention(q, k, v, group):
    import torch.nn.functional as F

    from alia_train.model.context_parallel import cp_attention

    if group is not None:
        return cp_attention(q, k, v, group)
    out = F.scaled_dot_product_attention(*(t.permute(1, 2, 0, 3) for t in (q, k, v)), is_causal=True,
                                         enable_gqa=True)
    return out.permute(2, 0, 1, 3).reshape(q.shape[0], q.shape[1], -1)


def _measure(seq: int, cp: int, rank: int, group, args) -> int:
    """Peak bytes torch allocates over one forward + backward on this rank."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from alia_train.model.context_parallel import split_for_cp_rank

    g = torch.Generator().manual_seed(0)
    full = [torch.randn(seq, 1, n, args.head_dim, generator=g) for n in (args.heads, args.groups, args.groups)]
    q, k, v = (split_for_cp_rank(t, 0, cp, rank).clone().requires_grad_() for t in full)
    del full
    _attention(q, k, v, group).sum().backward()  # warm-up: one-time allocations out of the way
    for t in (q, k, v):
        t.grad = None
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        _attention(q, k, v, group).sum().backward()
    return _peak_bytes(prof)


def _worker(rank: int, cp: int, port: int, args, out_dir: str) -> None:
    import torch.distributed as dist

    from alia_train.config import load_config
    from alia_train.parallel.launch_env import detect_launch_env
    from alia_train.training.startup import process_groups

    env = {"RANK": str(rank), "WORLD_SIZE": str(cp), "LOCAL_RANK": str(rank), "MASTER_PORT": str(port)}
    with process_groups(load_config(["+model=tiny", f"parallel.cp={cp}"]), detect_launch_env(env)):
        peaks = {seq: _measure(seq, cp, rank, dist.group.WORLD, args) for seq in args.seqs}
    Path(out_dir, f"cp{cp}_rank{rank}.json").write_text(json.dumps(peaks))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measured_peaks(cp: int, args) -> dict[int, int]:
    """{seq: worst rank's peak bytes} for one CP size."""
    if cp == 1:
        return {seq: _measure(seq, 1, 0, None, args) for seq in args.seqs}
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as out:
        mp.spawn(_worker, args=(cp, _free_port(), args, out), nprocs=cp, join=True)
        ranks = [json.loads(Path(out, f"cp{cp}_rank{r}.json").read_text()) for r in range(cp)]
    return {seq: max(r[str(seq)] for r in ranks) for seq in args.seqs}


def planned_bytes(seq: int, cp: int, args) -> float:
    """The planner's attention terms for these shapes (fp32, TP 1, no recompute)."""
    from alia_train.config.schema import ModelConfig
    from alia_train.plan import activations
    from alia_train.plan.parallel_layout import Layout

    m = ModelConfig(name="bench", num_layers=1, hidden_size=args.heads * args.head_dim, ffn_hidden_size=0,
                    num_attention_heads=args.heads, num_query_groups=args.groups)
    lay = Layout(world_size=cp, tp=1, pp=1, cp=cp, vpp=1, sp=False, distributed_optimizer=False,
                 grad_reduce_in_bf16=False, micro_batch_size=1, global_batch_size=1, seq_length=seq,
                 recompute="none", recompute_num_layers=1, bf16=False)
    return activations.core_attention_bytes(m, lay, "none") + activations.cp_working_bytes(m, lay, "none")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seqs", default="2048,4096,8192", help="full sequence lengths, comma-separated")
    ap.add_argument("--cps", default="1,2,4", help="CP sizes, comma-separated")
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--groups", type=int, default=1, help="KV heads (query groups)")
    ap.add_argument("--head-dim", type=int, default=64)
    args = ap.parse_args(argv)
    args.seqs = [int(s) for s in args.seqs.split(",")]
    cps = [int(c) for c in args.cps.split(",")]
    measured = {cp: measured_peaks(cp, args) for cp in cps}
    print(f"attention forward+backward, peak MiB per CP rank (worst rank), fp32, b 1, "
          f"{args.heads} heads / {args.groups} KV heads x {args.head_dim}")
    print(f"{'seq':>7} {'CP':>3} {'measured':>10} {'planned':>10} {'measured/CP1':>13} {'planned/CP1':>12}")
    for seq in args.seqs:
        for cp in cps:
            got, plan = measured[cp][seq], planned_bytes(seq, cp, args)
            ratio = f"{got / measured[cps[0]][seq]:13.2f} {plan / planned_bytes(seq, cps[0], args):12.2f}"
            print(f"{seq:>7} {cp:>3} {got / MIB:>10.1f} {plan / MIB:>10.1f} {ratio}")


if __name__ == "__main__":
    main()
