"""The planner's checkpoint size (plan/checkpoint_cost.py) against real checkpoints on disk:
tiny runs on CPU, one step, a checkpoint at it, their step directory's bytes compared with the
plan for the same config.

The shape is the tiny model widened to 256 (5 M parameters, 60-75 MB checkpoints) so that the
parameters dominate: what the plan leaves out (RNG states, scheduler, config, the .metadata
file, per-tensor headers) is about 0.3 MB whatever the width, 0.4 % here. So the planned size
must be at most the measured one and within 1 % of it. A wrong count of bytes per parameter (12
for 14: -14 %), an unpadded vocabulary (-4 % in the second run) or a tensor written by both
data-parallel ranks (+ up to 100 %) falls far outside.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from conftest import BIN, subprocess_env
from alia_train.config.load import load_config
from alia_train.model.params import padded_vocab_size
from alia_train.plan.checkpoint_cost import checkpoint_cost
from alia_train.plan.parallel_layout import layout_from_config

SAMPLE_VOCAB = 4096  # the sample tokenizer's
SHAPE = ["+model=tiny", "model.hidden_size=256", "model.ffn_hidden_size=704", "train.steps=1",
         "train.micro_batch_size=1", "train.seq_length=32", "checkpoint.interval=1"]
TOLERANCE = 0.01


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data_cache")


def _train(run_dir: Path, cache: Path, overrides: list[str], nproc: int) -> Path:
    args = [*SHAPE, *overrides, f"run.dir={run_dir}", f"data.cache_dir={cache}"]
    cmd = [str(BIN / "alia-train"), *args]
    if nproc > 1:
        cmd = [str(BIN / "torchrun"), "--standalone", f"--nproc_per_node={nproc}", "--no-python", *cmd]
    r = subprocess.run(cmd, env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    (step_dir,) = (run_dir / "checkpoints").glob("step_*")
    return step_dir


def _planned(overrides: list[str], nproc: int):
    cfg = load_config([*SHAPE, *overrides])
    lay = layout_from_config(cfg, nproc, device="cpu")
    padded = padded_vocab_size(SAMPLE_VOCAB, cfg.model.make_vocab_size_divisible_by, lay.tp)
    return checkpoint_cost(cfg.model, padded, lay, cfg.cluster)


def _files(step_dir: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in step_dir.iterdir() if p.is_file()}


def _check_size(planned: float, files: dict[str, int]) -> None:
    measured = sum(files.values())
    excess = (measured - planned) / measured
    assert 0 <= excess < TOLERANCE, f"planned {planned:,.0f} bytes, measured {measured:,} ({excess:+.2%}): {files}"


def test_fp32_one_process_no_distributed_optimizer(tmp_path, cache):
    """fp32 weights 4 + Adam m, v 8 = 12 bytes per parameter (no main-param copy)."""
    overrides = ["train.precision=fp32", "parallel.distributed_optimizer=false", "train.global_batch_size=1"]
    ck = _planned(overrides, 1)
    assert (ck.weight_bytes, ck.optimizer_bytes) == (4, 8)
    _check_size(ck.size, _files(_train(tmp_path / "run", cache, overrides, 1)))


@pytest.mark.multiproc
def test_bf16_two_ranks_distributed_optimizer_padded_vocab(tmp_path, cache):
    """bf16 weights 2 + fp32 main params, Adam m, v 12 over DP 2, the vocabulary padded to
    4,480 rows (make_vocab_size_divisible_by 640): each byte once, each rank writing about half,
    no more than the plan's per-rank bound (its share + the largest tensor)."""
    overrides = ["train.precision=bf16", "parallel.distributed_optimizer=true", "train.global_batch_size=2",
                 "model.make_vocab_size_divisible_by=640"]
    ck = _planned(overrides, 2)
    assert (ck.weight_bytes, ck.optimizer_bytes) == (2, 12)
    assert ck.params == 2 * 4480 * 256 + 4 * 737_792 + 256  # embedding + output, 4 layers, final norm
    files = _files(_train(tmp_path / "run", cache, overrides, 2))
    _check_size(ck.size, files)
    per_rank = [sum(n for name, n in files.items() if name.startswith(f"__{r}_")) for r in (0, 1)]
    assert all(ck.size / 2 * 0.9 < n <= ck.rank_bytes for n in per_rank), (per_rank, ck.rank_bytes)
