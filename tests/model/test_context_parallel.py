"""Context parallelism without Transformer Engine: the load-balanced layout agrees with
megatron-core's own CP slicing (RoPE table and batch), and CP attention over gloo on CP groups
of 2 and 4 gives the output and dQ/dK/dV of full causal SDPA on one process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from conftest import BIN, subprocess_env
from alia_train.model.context_parallel import (
    _reversed_rows_causal_mask,
    cp_attention,
    cp_chunk_ids,
    restore_global_order,
    split_for_cp_rank,
    to_rank_major_order,
)

sys.path.insert(0, str(Path(__file__).parent))
from context_parallel_worker import HEAD_DIM, SEQ, global_inputs  # noqa: E402

WORLD = 4


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    """One 4-process gloo launch for the whole file (process start-up dominates)."""
    out = tmp_path_factory.mktemp("cp")
    worker = Path(__file__).with_name("context_parallel_worker.py")
    cmd = [str(BIN / "torchrun"), "--standalone", f"--nproc_per_node={WORLD}", str(worker)]
    cmd.append(str(out))
    proc = subprocess.run(cmd, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return [torch.load(out / f"rank{r}.pt") for r in range(WORLD)]


def reference(seed: int) -> dict[str, torch.Tensor]:
    """Full causal SDPA of the worker's inputs on one process."""
    full = global_inputs(seed)
    q, k, v = (full[n].clone().requires_grad_() for n in ("q", "k", "v"))
    out = F.scaled_dot_product_attention(
        *(t.permute(1, 2, 0, 3) for t in (q, k, v)),
        is_causal=True,
        scale=HEAD_DIM**-0.5,
        enable_gqa=True,
    )
    out = out.permute(2, 0, 1, 3).reshape(SEQ, q.shape[1], -1)
    (out * full["grad_out"]).sum().backward()
    return {"out": out.detach(), "dq": q.grad, "dk": k.grad, "dv": v.grad}


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual - expected).abs().max() / expected.abs().max()).item()


@pytest.mark.multiproc
@pytest.mark.slow
@pytest.mark.parametrize(
    "layout, rank, seed",
    [("cp2", 0, 0), ("cp2", 2, 1), ("cp4", 0, 100)],
    ids=["cp2_group_a", "cp2_group_b", "cp4"],
)
def test_cp_attention_matches_full_attention(ranks, layout, rank, seed):
    expected = reference(seed)
    for name in ("out", "dq", "dk", "dv"):
        error = relative_error(ranks[rank][layout][name], expected[name])
        assert error < 1e-5, f"{layout} {name}: relative error {error:.2e}"


@pytest.mark.multiproc
@pytest.mark.slow
def test_every_rank_of_a_group_gathers_the_same_result(ranks):
    for name in ("out", "dk"):
        assert torch.equal(ranks[0]["cp4"][name], ranks[3]["cp4"][name])
        assert torch.equal(ranks[2]["cp2"][name], ranks[3]["cp2"][name])


@pytest.mark.multiproc
@pytest.mark.slow
@pytest.mark.parametrize("cp", [2, 4])
def test_split_agrees_with_megatron_rope_and_batch_slicing(ranks, cp):
    positions = torch.arange(SEQ)
    for world_rank, result in enumerate(ranks):
        cp_rank = result["cp2_rank"] if cp == 2 else world_rank
        megatron = result[f"megatron_cp{cp}"]
        expected = split_for_cp_rank(positions, 0, cp, cp_rank)
        assert torch.equal(megatron["rope"][:, 0, 0, 0].long(), expected)
        assert torch.equal(megatron["tokens"][0], expected)
        assert torch.equal(megatron["labels"][1], expected + 1)


@pytest.mark.parametrize("cp", [1, 2, 4, 8])
def test_split_and_restore_round_trip(cp):
    full = torch.arange(2 * 64 * 3).view(2, 64, 3)  # [b, s, ...], split along dim 1
    shares = [split_for_cp_rank(full, 1, cp, r) for r in range(cp)]
    assert all(share.shape == (2, 64 // cp, 3) for share in shares)
    rank_major = torch.cat(shares, dim=1)
    assert torch.equal(to_rank_major_order(full, 1, cp), rank_major)
    assert torch.equal(restore_global_order(rank_major, 1, cp), full)


def test_layout_balances_causal_work():
    # Rank i holds chunks i and 2n-1-i: the keys its queries see sum to the same on every rank.
    cp = 8
    work = [sum(chunk + 1 for chunk in cp_chunk_ids(cp, r)) for r in range(cp)]
    assert cp_chunk_ids(cp, 0) == (0, 15) and cp_chunk_ids(cp, 7) == (7, 8)
    assert set(work) == {2 * cp + 1}


def test_split_refuses_a_sequence_that_does_not_divide():
    with pytest.raises(ValueError, match="not divisible by 4 CP chunks"):
        split_for_cp_rank(torch.zeros(10), 0, 2, 0)


def test_cpu_bottom_right_mask_is_a_view_not_a_dense_matrix():
    lq, lk = 3, 7
    mask = _reversed_rows_causal_mask(lq, lk, torch.float32, "cpu")
    # Row r of the last lq queries sees keys 0 .. r + lk - lq; the mask lists rows reversed.
    dense = torch.ones(lq, lk, dtype=torch.bool).tril(diagonal=lk - lq).flip(0)
    assert torch.equal(mask == 0, dense)
    assert mask.untyped_storage().nbytes() == (lq + lk - 1) * 4


@pytest.fixture
def cp_group_of_one():
    """A one-process gloo group: the CP attention's code path, gather and scatter included."""
    from alia_train.config import load_config
    from alia_train.parallel.launch_env import detect_launch_env
    from alia_train.training.startup import process_groups

    if torch.distributed.is_initialized():
        pytest.skip("a process group is already up in this process")
    with process_groups(load_config(["+model=tiny"]), detect_launch_env({})):
        yield torch.distributed.group.WORLD


def test_cp_builds_no_index_from_a_list_after_the_first_call(cp_group_of_one, monkeypatch):
    """torch.tensor(list, device=GPU) is a host-to-device copy that waits for the GPU: the
    chunk index of each layout is built once, not per layer and micro-batch."""
    from_lists = []
    original = torch.tensor

    def counting_tensor(data, *args, **kwargs):
        if isinstance(data, (list, tuple)):
            from_lists.append(data)
        return original(data, *args, **kwargs)

    def layer_and_batch():
        q, k, v = (torch.randn(8, 1, 2, 4, requires_grad=True) for _ in range(3))
        cp_attention(q, k, v, cp_group_of_one).sum().backward()
        split_for_cp_rank(torch.zeros(1, 8), 1, 1, 0)  # as training/step.py splits each micro-batch

    layer_and_batch()
    monkeypatch.setattr(torch, "tensor", counting_tensor)
    for _ in range(3):
        layer_and_batch()
    assert from_lists == []


def test_cp_attention_compiles_whole(cp_group_of_one, recwarn):
    """train.compile with CP: dynamo traces the attention, collectives included, in one graph
    (the cached chunk index is a graph constant there, not a traced cache)."""
    q, k, v = (torch.randn(8, 1, 2, 4, generator=torch.Generator().manual_seed(i)) for i in range(3))
    compiled = torch.compile(cp_attention, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(q, k, v, cp_group_of_one), cp_attention(q, k, v, cp_group_of_one))
    assert not [str(w.message) for w in recwarn if "lru_cache" in str(w.message)]
