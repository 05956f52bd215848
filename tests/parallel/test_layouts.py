"""Parallel layouts compute the same training: TP=2 (with and without sequence parallelism),
PP=2 (plain and interleaved) and DP=2 with the distributed optimizer, each on 2 gloo processes,
match a single process step by step; so do selective and full activation recompute."""

from __future__ import annotations

import pytest

from conftest import scratch
from helpers import relative_diff, run_layouts, train_losses

STEPS = 6  # parity is checked at every step; the steps are most of this file's time
COMMON = [
    "+model=tiny",
    f"train.steps={STEPS}",
    "train.global_batch_size=8",
    "train.micro_batch_size=2",
    "logging.interval=1",
    "optim.warmup_steps=3",
]
LAYOUTS = {
    "tp2": ["parallel.tp=2"],
    "tp2_sp": ["parallel.tp=2", "parallel.sp=true"],
    "pp2": ["parallel.pp=2"],
    "pp2_vpp2": ["parallel.pp=2", "parallel.vpp=2"],
    "dp2_distopt": ["parallel.distributed_optimizer=true"],
    # Both overlaps with the distributed optimizer. The LR schedule is pinned to STEPS so that a
    # run split in two (below) follows the same schedule.
    "dp2_overlap": [
        "parallel.distributed_optimizer=true",
        "parallel.overlap_grad_reduce=true",
        "parallel.overlap_param_gather=true",
        f"optim.decay_steps={STEPS}",
    ],
    # Interleaved pipeline with both overlaps: the schedule starts the (aligned) all-gathers.
    "pp2_vpp2_overlap": [
        "parallel.pp=2",
        "parallel.vpp=2",
        "parallel.distributed_optimizer=true",
        "parallel.overlap_grad_reduce=true",
        "parallel.overlap_param_gather=true",
    ],
}
# The same run in bf16 (separate fp32 main weights, where a stale param shard shows), once
# straight through and once stopped after step 3 (its final save comes right after
# optimizer.step(), before the deferred param all-gather) and restarted in the same run dir.
RESUME_STEP = 3
OVERLAP_BF16 = [*LAYOUTS["dp2_overlap"], "train.precision=bf16"]
SPLIT = {
    "dp2_overlap_bf16": OVERLAP_BF16,
    "dp2_overlap_first": [*OVERLAP_BF16, f"train.steps={RESUME_STEP}", "run.dir=SPLIT"],
    "dp2_overlap_second": [*OVERLAP_BF16, "run.dir=SPLIT"],
}
RECOMPUTE = {
    "recompute_selective": ["train.recompute=selective"],
    "recompute_full": ["train.recompute=full", "train.recompute_num_layers=2"],
}


@pytest.fixture(scope="module")
def runs(request, tmp_path_factory):
    out = scratch(request, tmp_path_factory, "layouts")
    common = [*COMMON, f"data.cache_dir={out}/cache"]
    run_layouts(out, common, {"single": [], **RECOMPUTE}, nproc=1)
    split = {name: [o.replace("SPLIT", f"{out}/dp2_overlap_split") for o in ov] for name, ov in SPLIT.items()}
    run_layouts(out, common, {**LAYOUTS, **split}, nproc=2)
    return out


def test_single_process_learns(runs):
    losses = train_losses(runs / "single")
    assert sorted(losses) == list(range(1, STEPS + 1))
    assert losses[STEPS] < losses[1] - 0.3, losses


def assert_matches_single_process(runs, name: str, tolerance: float) -> None:
    reference = train_losses(runs / "single")
    losses = train_losses(runs / name)
    assert sorted(losses) == sorted(reference)
    worst = max(relative_diff(losses[s], reference[s]) for s in reference)
    assert worst < tolerance, f"{name}: worst relative loss difference {worst:.2e}\n{losses}\n{reference}"


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_layout_matches_single_process(runs, layout):
    assert_matches_single_process(runs, layout, 1e-4)


def test_resume_with_distributed_optimizer_and_overlap_is_exact(runs):
    """A run stopped and restarted continues exactly as the run that never stopped: the save
    forced the deferred param all-gather, and Adam's state (moments and step count) came back
    whole from the distributed optimizer's checkpoint."""
    full = train_losses(runs / "dp2_overlap_bf16")
    split = train_losses(runs / "dp2_overlap_split")
    assert sorted(split) == list(range(1, STEPS + 1)), split
    worst = max(relative_diff(split[s], full[s]) for s in range(RESUME_STEP + 1, STEPS + 1))
    assert worst < 1e-6, f"split run {split}\nuninterrupted {full}"


@pytest.mark.parametrize("mode", list(RECOMPUTE))
def test_recompute_matches_no_recompute(runs, mode):
    assert_matches_single_process(runs, mode, 1e-5)
