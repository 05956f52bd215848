"""Parallel layouts compute the same training: TP=2, PP=2 (plain and interleaved) and DP=2 with
the distributed optimizer, each on 2 gloo processes, match a single process step by step."""

from __future__ import annotations

import pytest

from helpers import relative_diff, run_layouts, train_losses

STEPS = 10
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
    "pp2": ["parallel.pp=2"],
    "pp2_vpp2": ["parallel.pp=2", "parallel.vpp=2"],
    "dp2_distopt": ["parallel.distributed_optimizer=true"],
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("layouts")
    common = [*COMMON, f"data.cache_dir={out}/cache"]
    run_layouts(out, common, {"single": []}, nproc=1)
    run_layouts(out, common, LAYOUTS, nproc=2)
    return out


def test_single_process_learns(runs):
    losses = train_losses(runs / "single")
    assert sorted(losses) == list(range(1, STEPS + 1))
    assert losses[STEPS] < losses[1] - 0.5, losses


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_layout_matches_single_process(runs, layout):
    reference = train_losses(runs / "single")
    losses = train_losses(runs / layout)
    assert sorted(losses) == sorted(reference)
    worst = max(relative_diff(losses[s], reference[s]) for s in reference)
    assert worst < 1e-4, f"{layout}: worst relative loss difference {worst:.2e}\n{losses}\n{reference}"
