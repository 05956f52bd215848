"""Context parallelism computes the same training: CP2, CP2 x TP2 and CP2 x PP2 match CP1 step
by step (fp32, seq 256), loss and per-language sums included, over gloo without Transformer
Engine (our SDPA attention gathers K/V over the CP group).

One 4-process launch runs all four: the CP1 reference is then data-parallel over 4, which
tests/parallel/test_layouts.py checks against a single process."""

from __future__ import annotations

import pytest

from alia_train.metrics_file import read_records
from conftest import scratch
from helpers import relative_diff, run_layouts

STEPS = 10
COMMON = [
    "+model=tiny",
    f"train.steps={STEPS}",
    "train.global_batch_size=8",
    "train.micro_batch_size=2",
    "train.seq_length=256",
    "logging.interval=1",
    "optim.warmup_steps=3",
]
LAYOUTS = {
    "cp2": ["parallel.cp=2"],  # x DP2
    "cp2_tp2": ["parallel.cp=2", "parallel.tp=2"],
    "cp2_pp2": ["parallel.cp=2", "parallel.pp=2"],
}


@pytest.fixture(scope="module")
def runs(request, tmp_path_factory):
    out = scratch(request, tmp_path_factory, "cp_layouts")
    run_layouts(out, [*COMMON, f"data.cache_dir={out}/cache"], {"cp1": [], **LAYOUTS}, nproc=4, timeout=900)
    return out


def records(runs, name: str) -> dict[int, dict]:
    return {r["step"]: r for r in read_records(runs / name / "metrics.jsonl").train}


@pytest.mark.multiproc
@pytest.mark.slow
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_context_parallel_layout_matches_cp1(runs, layout):
    reference, got = records(runs, "cp1"), records(runs, layout)
    assert sorted(got) == sorted(reference) == list(range(1, STEPS + 1))
    launch = read_records(runs / layout / "metrics.jsonl").launch_records[-1]
    assert launch["layout"]["cp"] == 2
    worst = max(relative_diff(got[s]["loss"], reference[s]["loss"]) for s in reference)
    assert worst < 1e-4, f"{layout}: worst relative loss difference {worst:.2e}"
    # Every CP rank holds part of each sample: tokens and per-language sums are summed over CP
    # once (a CP rank counted twice, or not at all, changes the counts).
    for step, ref in reference.items():
        per_language = {k for k in ref if k.startswith(("loss/", "tokens/"))}
        assert per_language and per_language == {k for k in got[step] if k.startswith(("loss/", "tokens/"))}
        for key in sorted(per_language):
            if key.startswith("tokens/"):
                assert got[step][key] == ref[key], (step, key)
            else:
                assert relative_diff(got[step][key], ref[key]) < 1e-4, (step, key)
        assert got[step]["consumed_tokens"] == ref["consumed_tokens"]
