"""Crash safety and exact resume, with real alia-train processes on CPU.

An uninterrupted reference run is compared with runs that are killed (SIGKILL at random steps,
SIGKILL while a checkpoint is being published, SIGUSR1) and restarted with the same command:
the per-step losses must be identical, bit for bit.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import BIN, subprocess_env
from helpers import train_losses

STEPS = 12
SEED = int(os.environ.get("ALIA_TEST_SEED", random.SystemRandom().randrange(1 << 30)))
RNG = random.Random(SEED)
print(f"test_resume: kill points drawn with seed {SEED} (set ALIA_TEST_SEED to replay)")


def command(run_dir: Path, cache: Path, *extra: str, nproc: int = 1) -> list[str]:
    args = [
        "+model=tiny", f"train.steps={STEPS}", "logging.interval=1", "checkpoint.interval=2",
        "checkpoint.keep=2", f"run.dir={run_dir}", f"data.cache_dir={cache}", *extra,
    ]
    if nproc == 1:
        return [str(BIN / "alia-train"), *args]
    return [str(BIN / "torchrun"), "--standalone", f"--nproc_per_node={nproc}", "--no-python", str(BIN / "alia-train"), *args]


def start(cmd: list[str], log: Path, **env: str) -> subprocess.Popen:
    return subprocess.Popen(cmd, stdout=open(log, "ab"), stderr=subprocess.STDOUT,
                            env=subprocess_env(**env), start_new_session=True)


def finish(cmd: list[str], log: Path, expect: int = 0, **env: str) -> str:
    proc = start(cmd, log, **env)
    code = proc.wait(timeout=600)
    text = log.read_text(errors="replace")
    assert code == expect, f"exit {code}, expected {expect}:\n{text[-4000:]}"
    return text


def wait_for_step(run_dir: Path, step: int, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    metrics = run_dir / "metrics.jsonl"
    while time.time() < deadline:
        if metrics.exists() and any(s >= step for s in train_losses(run_dir)):
            return
        assert proc.poll() is None, f"run ended (exit {proc.returncode}) before step {step}"
        time.sleep(0.05)
    raise TimeoutError(f"step {step} not reached")


def kill_group(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    os.killpg(proc.pid, sig)
    proc.wait(timeout=60)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data_cache")


@pytest.fixture(scope="module")
def reference(tmp_path_factory, cache) -> dict[int, float]:
    run_dir = tmp_path_factory.mktemp("reference")
    finish(command(run_dir, cache), run_dir / "log.txt")
    losses = train_losses(run_dir)
    assert sorted(losses) == list(range(1, STEPS + 1))
    return losses


@pytest.fixture(scope="module")
def reference_2proc(tmp_path_factory, cache) -> dict[int, float]:
    run_dir = tmp_path_factory.mktemp("reference_2proc")
    finish(command(run_dir, cache, "parallel.tp=2", nproc=2), run_dir / "log.txt")
    return train_losses(run_dir)


def _kill_restart(tmp_path: Path, cache: Path, kill_step: int, nproc: int = 1, extra=()) -> tuple[dict, str]:
    run_dir = tmp_path / "run"
    cmd = command(run_dir, cache, *extra, nproc=nproc)
    log = tmp_path / "log.txt"
    proc = start(cmd, log)
    wait_for_step(run_dir, kill_step, proc)
    kill_group(proc)
    published = (run_dir / "checkpoints" / "latest").exists()
    text = finish(cmd, log).split("starting at step 0")[-1]
    # A kill before the first checkpoint was published must start over; after, it must resume.
    assert ("resumed from" in text) == published, text[-3000:]
    return train_losses(run_dir), text


@pytest.mark.parametrize("kill_step", sorted(RNG.sample(range(2, STEPS - 1), 2)))
def test_sigkill_then_restart_is_exact(tmp_path, cache, reference, kill_step):
    losses, _ = _kill_restart(tmp_path, cache, kill_step)
    assert losses == reference  # bit for bit, every step


def test_sigkill_two_processes_is_exact(tmp_path, cache, reference_2proc):
    kill_step = RNG.randrange(3, STEPS - 2)
    losses, _ = _kill_restart(tmp_path, cache, kill_step, nproc=2, extra=["parallel.tp=2"])
    assert losses == reference_2proc


def test_sigkill_during_save_falls_back_to_previous(tmp_path, cache, reference):
    run_dir = tmp_path / "run"
    cmd = command(run_dir, cache)
    log = tmp_path / "log.txt"
    # Hold every save after its files are written, before it is published; kill in that window.
    proc = start(cmd, log, ALIA_TRAIN_FAULT_PAUSE_BEFORE_PUBLISH="30")
    ckpts = run_dir / "checkpoints"
    deadline = time.time() + 300
    while not list(ckpts.glob("step_00000002.partial/*.distcp")) or "pausing" not in log.read_text():
        assert time.time() < deadline and proc.poll() is None, log.read_text()[-3000:]
        time.sleep(0.05)
    kill_group(proc)
    assert not (ckpts / "step_00000002").exists()
    assert not (ckpts / "latest").exists()
    # The first save never completed: the restart must start over, not load the partial one.
    text = finish(cmd, log)
    assert "starting at step 0" in text.split("fault injection")[-1]
    assert train_losses(run_dir) == reference
    assert not list(ckpts.glob("*.partial"))


def test_damaged_latest_checkpoint_falls_back(tmp_path, cache, reference):
    run_dir = tmp_path / "run"
    cmd = command(run_dir, cache)
    finish(cmd, tmp_path / "log1.txt")
    latest = run_dir / "checkpoints" / f"step_{STEPS:08d}"
    shard = next(latest.glob("*.distcp"))
    with open(shard, "r+b") as f:  # a disk error truncated the newest checkpoint
        f.truncate(shard.stat().st_size // 2)
    text = finish(cmd, tmp_path / "log2.txt")
    assert "skipping checkpoint" in text and latest.name in text
    assert f"step_{STEPS - 2:08d} at step {STEPS - 2}" in text
    assert f"step {STEPS - 1}/{STEPS}" in text  # the lost steps were trained again
    assert train_losses(run_dir) == reference


def test_sigusr1_saves_and_exits_resume_me(tmp_path, cache, reference):
    from alia_train.training.signals import EXIT_RESUME

    run_dir = tmp_path / "run"
    cmd = command(run_dir, cache, "checkpoint.interval=0")  # only the signal makes a checkpoint
    log = tmp_path / "log.txt"
    proc = start(cmd, log)
    signal_step = RNG.randrange(2, STEPS - 2)
    wait_for_step(run_dir, signal_step, proc)
    os.killpg(proc.pid, signal.SIGUSR1)
    assert proc.wait(timeout=300) == EXIT_RESUME, log.read_text()[-3000:]
    published = sorted((run_dir / "checkpoints").glob("step_*"))
    assert len(published) == 1
    saved_step = int(published[0].name.split("_")[1])
    assert signal_step <= saved_step < STEPS
    assert (run_dir / "checkpoints" / "latest").read_text().strip() == published[0].name
    text = finish(cmd, log)
    assert f"at step {saved_step}" in text
    assert train_losses(run_dir) == reference


def test_layout_change_reshards(tmp_path, cache):
    """Saved with TP=2; resumed with TP=2, TP=1 and DP=2 from copies of the same run dir."""
    from helpers import relative_diff, run_layouts

    common = ["+model=tiny", "logging.interval=1", f"data.cache_dir={cache}"]
    run_layouts(tmp_path, [*common, "train.steps=6"], {"saved_tp2": ["parallel.tp=2"]}, nproc=2)
    for name in ("tp2", "tp1", "dp2"):
        shutil.copytree(tmp_path / "saved_tp2", tmp_path / name)
    common = [*common, f"train.steps={STEPS}"]
    run_layouts(tmp_path, common, {"tp2": ["parallel.tp=2"], "dp2": []}, nproc=2)
    run_layouts(tmp_path, common, {"tp1": []}, nproc=1)
    same = train_losses(tmp_path / "tp2")
    for name in ("tp1", "dp2"):
        losses = train_losses(tmp_path / name)
        assert sorted(losses) == list(range(1, STEPS + 1))
        worst = max(relative_diff(losses[s], same[s]) for s in range(7, STEPS + 1))
        assert worst < 1e-4, f"{name}: {worst:.2e}"
    layout = json.loads((tmp_path / "tp1" / "checkpoints" / f"step_{STEPS:08d}" / "COMPLETE").read_text())["layout"]
    assert layout["tp"] == 1 and layout["world_size"] == 1
