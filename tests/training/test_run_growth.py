"""Runs that grow (issue #26), with real alia-train processes on CPU (run_growth_entry.py traces
the training samples each launch reads and stops a run by SIGUSR1 at a given step):

* a warmup-stable-decay run stopped in its stable phase and relaunched with more train.steps
  trains exactly as a run planned that long from the start: the same samples (the order does not
  depend on train.steps) and the same LR (constant until the new decay, min_lr at the new end,
  without optim.override_schedule), so the same loss at every step;
* a new train.global_batch_size on resume reads on from the consumed samples: every sample of
  the order once, none skipped;
* the anneal stage (optim=anneal) loads another run's checkpoint and decays from there.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import subprocess_env
from alia_train.metrics_file import read_records

ENTRY = Path(__file__).with_name("run_growth_entry.py")
LR, MIN_LR = 3e-3, 3e-4  # configs/model/tiny.yaml
# A training part of 10% of the sample corpus: its small languages start their second epoch
# within the ~100 samples these runs read (an order sized by the run would move there).
COMMON = ["+model=tiny", "model.num_layers=2", "train.seq_length=64", "data.split='10,90,0'",
          "optim.warmup_steps=2", "logging.interval=1", "logging.console=plain", "checkpoint.interval=0"]
WSD = ["optim.decay_style=wsd", "optim.wsd_decay_steps=3"]  # 10 steps: stable 2..7, decay to 10
STOP_AT, PLANNED, GBS = 4, 12, 8


def _launch(run_dir: Path, cache: Path, *args: str, stop_at: int = 0, expect: int = 0) -> str:
    cmd = [sys.executable, str(ENTRY), str(run_dir / "trace.txt"), str(stop_at), *COMMON,
           f"run.dir={run_dir}", f"data.cache_dir={cache}", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=subprocess_env(), timeout=600)
    assert proc.returncode == expect, f"exit {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def _train(run_dir: Path) -> dict[int, dict]:
    return {r["step"]: r for r in read_records(run_dir / "metrics.jsonl").train}


def _trace(run_dir: Path) -> list[tuple[int, str]]:
    lines = (run_dir / "trace.txt").read_text().splitlines()
    return [(int(i), digest) for i, digest in map(str.split, lines)]


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data_cache")


@pytest.fixture(scope="module")
def stopped(tmp_path_factory, cache) -> Path:
    """A 10-step wsd run stopped by SIGUSR1 at step 4 (stable phase), saved there (exit 75)."""
    from alia_train.exit_codes import EXIT_RESUME

    run_dir = tmp_path_factory.mktemp("stopped")
    _launch(run_dir, cache, *WSD, "train.steps=10", stop_at=STOP_AT, expect=EXIT_RESUME)
    assert [p.name for p in (run_dir / "checkpoints").glob("step_*")] == [f"step_{STOP_AT:08d}"]
    return run_dir


@pytest.fixture(scope="module")
def planned(tmp_path_factory, cache) -> Path:
    """The same run planned for 12 steps from the start, uninterrupted."""
    run_dir = tmp_path_factory.mktemp("planned")
    _launch(run_dir, cache, *WSD, f"train.steps={PLANNED}")
    return run_dir


def _copy(run_dir: Path, to: Path) -> Path:
    shutil.copytree(run_dir, to)
    return to


def test_a_run_extended_in_its_stable_phase_trains_as_if_planned_that_long(stopped, planned, cache, tmp_path):
    run_dir = _copy(stopped, tmp_path / "extended")
    text = _launch(run_dir, cache, *WSD, f"train.steps={PLANNED}")
    assert (f"at step {STOP_AT} (consumed samples {GBS * STOP_AT}); wsd decay moved, the LR still constant at this "
            "step (optim.decay_steps (train.steps when unset) 10 -> 12); train.steps 10 -> 12: the same sample "
            "order, read on from the consumed samples") in text
    assert "WARNING" not in text
    extended, uninterrupted = _train(run_dir), _train(planned)
    assert sorted(extended) == sorted(uninterrupted) == list(range(1, PLANNED + 1))
    assert {s: r["loss"] for s, r in extended.items()} == {s: r["loss"] for s, r in uninterrupted.items()}
    trace = _trace(run_dir)
    assert trace == _trace(planned)  # the same samples, each read once
    assert len({digest for _, digest in trace}) < len(trace)  # some source is in its second epoch
    lr = {s: r["lr"] for s, r in extended.items()}
    assert all(lr[s] == LR for s in range(2, 10))  # constant to the new decay start, 12 - 3
    assert all(lr[s] > lr[s + 1] for s in range(9, 12)) and lr[12] == pytest.approx(MIN_LR)


def test_a_new_global_batch_size_reads_on_without_skipping_or_repeating(stopped, planned, cache, tmp_path):
    run_dir = _copy(stopped, tmp_path / "gbs16")
    text = _launch(run_dir, cache, *WSD, "train.steps=6", "train.global_batch_size=16")
    assert "train.global_batch_size 8 -> 16: the same sample order, read on from the consumed samples" in text
    total = GBS * STOP_AT + 16 * (6 - STOP_AT)
    trace = _trace(run_dir)
    assert [i for i, _ in trace] == list(range(total))  # every index once, in order
    assert trace == _trace(planned)[:total]  # and they are the samples of the one order
    consumed = {s: r["consumed_samples"] for s, r in _train(run_dir).items()}
    assert [consumed[s] for s in range(STOP_AT, 7)] == [32, 48, 64]


def test_the_anneal_stage_loads_a_checkpoint_and_decays(stopped, planned, cache, tmp_path):
    """optim=anneal from step 4 of the stopped run, to step 8: weights, optimizer and data
    position loaded (the first loss is the planned run's, whose weights and samples it shares),
    then the LR falls from optim.lr to min_lr at train.steps."""
    run_dir = tmp_path / "anneal"
    checkpoint = stopped / "checkpoints" / f"step_{STOP_AT:08d}"
    text = _launch(run_dir, cache, "optim=anneal", f"checkpoint.load={checkpoint}", "train.steps=8",
                   "optim.wsd_decay_steps=4")
    assert f"resumed from {checkpoint} at step {STOP_AT} (consumed samples {GBS * STOP_AT})" in text
    assert "another run's checkpoint (checkpoint.load)" in text
    annealed = _train(run_dir)
    assert sorted(annealed) == list(range(STOP_AT + 1, 9))
    assert annealed[STOP_AT + 1]["loss"] == _train(planned)[STOP_AT + 1]["loss"]
    lr = [annealed[s]["lr"] for s in range(STOP_AT + 1, 9)]
    assert LR > lr[0] and all(a > b for a, b in zip(lr, lr[1:])) and lr[-1] == pytest.approx(MIN_LR)
