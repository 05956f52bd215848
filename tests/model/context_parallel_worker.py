"""Run under torchrun (gloo, 4 processes): CP attention on CP groups of 2 and 4, and megatron's own
CP slicing of RoPE and of batches, saved for tests/model/test_context_parallel.py to check.

Usage: torchrun --nproc_per_node 4 context_parallel_worker.py OUT_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist

SEQ, BATCH, HEADS, GROUPS, HEAD_DIM = 256, 2, 4, 2, 16


def global_inputs(seed: int) -> dict[str, torch.Tensor]:
    """The same full-sequence tensors on every rank (and in the test's reference)."""
    gen = torch.Generator().manual_seed(seed)
    shapes = {
        "q": (SEQ, BATCH, HEADS, HEAD_DIM),
        "k": (SEQ, BATCH, GROUPS, HEAD_DIM),
        "v": (SEQ, BATCH, GROUPS, HEAD_DIM),
        "grad_out": (SEQ, BATCH, HEADS * HEAD_DIM),
    }
    return {name: torch.randn(shape, generator=gen) for name, shape in shapes.items()}


def run_cp_attention(cp_group, seed: int) -> dict[str, torch.Tensor]:
    """Forward + backward on this rank's share; everything gathered back to global order."""
    from alia_train.model.context_parallel import cp_attention, gather_sequence, split_for_cp_rank

    size, rank = cp_group.size(), cp_group.rank()
    full = global_inputs(seed)
    local = {name: split_for_cp_rank(t, 0, size, rank) for name, t in full.items()}
    q, k, v = (local[n].clone().requires_grad_() for n in ("q", "k", "v"))
    out = cp_attention(q, k, v, cp_group, scale=HEAD_DIM**-0.5)
    (out * local["grad_out"]).sum().backward()
    return {
        "out": gather_sequence(out.detach(), 0, cp_group),
        "dq": gather_sequence(q.grad, 0, cp_group),
        "dk": gather_sequence(k.grad, 0, cp_group),
        "dv": gather_sequence(v.grad, 0, cp_group),
    }


def megatron_slices(cp_group) -> dict[str, torch.Tensor]:
    """megatron's own CP split of a RoPE table [s, 1, 1, dim] and of a batch [b, s]."""
    from megatron.core.models.common.embeddings.rope_utils import get_pos_emb_on_this_cp_rank
    from megatron.core.utils import get_batch_on_this_cp_rank

    positions = torch.arange(SEQ, dtype=torch.float32)
    rope_table = positions.view(SEQ, 1, 1, 1) * torch.ones(1, 1, 1, 8)
    # Asks for pinned memory and a CUDA copy: cpu_compat's mode makes both CPU no-ops.
    rope = get_pos_emb_on_this_cp_rank(rope_table, 0, cp_group)
    batch = {
        "tokens": positions.long().view(1, SEQ).repeat(BATCH, 1),
        "labels": positions.long().view(1, SEQ).repeat(BATCH, 1) + 1,
        "cu_seqlens": None,
    }
    batch = get_batch_on_this_cp_rank(batch, is_hybrid_cp=False, cp_group=cp_group)
    return {"rope": rope, "tokens": batch["tokens"], "labels": batch["labels"]}


def main(out_dir: Path) -> None:
    from alia_train.config import load_config
    from alia_train.parallel.launch_env import detect_launch_env
    from alia_train.training.startup import process_groups

    launch = detect_launch_env()
    # The start-up as a run would do it; the CP groups below are the test's own (2 and 4 ranks).
    with process_groups(load_config(["+model=tiny", f"parallel.cp={launch.world_size}"]), launch):
        run_all(out_dir)


def run_all(out_dir: Path) -> None:
    world, rank = dist.get_world_size(), dist.get_rank()
    pairs = [dist.new_group([r, r + 1]) for r in range(0, world, 2)]
    cp2 = pairs[rank // 2]
    cp4 = dist.new_group(list(range(world)))
    results = {
        "cp2": run_cp_attention(cp2, seed=rank // 2),
        "cp4": run_cp_attention(cp4, seed=100),
        "megatron_cp2": megatron_slices(cp2),
        "megatron_cp4": megatron_slices(cp4),
        "cp2_rank": cp2.rank(),
    }
    torch.save(results, out_dir / f"rank{rank}.pt")
    dist.barrier()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
