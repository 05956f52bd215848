"""Crash safety and exact resume, with real alia-train processes on CPU.

An uninterrupted reference run is compared with runs that are killed (SIGKILL at random steps,
SIGKILL while a checkpoint is being published, async saves whose writer lags behind training,
a damaged newest checkpoint) and restarted with the same command: the per-step losses must be
identical, bit for bit. Restarts that change something (a signal stop, another layout, other
settings, a full disk) are in test_restart_changes.py.
"""

from __future__ import annotations

import re
import shutil
import signal
import sys
import time
from pathlib import Path

import pytest

from helpers import RNG, STEPS, command, finish, kill_group, start, train_losses, wait_for_step


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


# One random kill point per run (the seed is printed; every CI run draws another one).
@pytest.mark.parametrize("kill_step", [RNG.randrange(2, STEPS - 1)])
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
    # Hold every save after its files are written, before it is published (the test-only entry
    # installs manager.before_publish_hook); kill in that window.
    entry = [sys.executable, str(Path(__file__).with_name("fault_entry.py")), "30"]
    proc = start([*entry, *cmd[1:]], log)
    ckpts = run_dir / "checkpoints"
    deadline = time.time() + 300
    while not list(ckpts.glob("step_00000002.partial/*.distcp")) or "[fault] pausing" not in log.read_text():
        assert time.time() < deadline and proc.poll() is None, log.read_text()[-3000:]
        time.sleep(0.05)
    kill_group(proc)
    assert not (ckpts / "step_00000002").exists()
    assert not (ckpts / "latest").exists()
    # The first save never completed: the restart must start over, not load the partial one.
    text = finish(cmd, log)
    assert "starting at step 0" in text.split("[fault] pausing")[-1]
    assert train_losses(run_dir) == reference
    assert not list(ckpts.glob("*.partial"))


def test_async_saves_hold_the_state_of_their_step(tmp_path, cache, reference):
    """An async save writes in a forked child while training goes on. Here every writer waits
    1.5 s before writing, so the parent has changed the weights by then (tiny steps take
    well under a second): each checkpoint must still hold its own step's state, and async
    saving must not change the training. A run started from the async step-6 checkpoint
    reproduces the reference's steps 7..12 bit for bit."""
    run_dir = tmp_path / "async"
    cmd = command(run_dir, cache, "checkpoint.async_save=true", "checkpoint.keep=10")
    entry = [sys.executable, str(Path(__file__).with_name("fault_entry.py")), "0", "--delay-writes=1.5"]
    finish([*entry, *cmd[1:]], tmp_path / "async.txt")
    assert train_losses(run_dir) == reference
    step6 = run_dir / "checkpoints" / "step_00000006"
    assert (step6 / "COMPLETE").exists()
    continued = tmp_path / "continued"
    finish(command(continued, cache, f"checkpoint.load={step6}"), tmp_path / "continued.txt")
    assert train_losses(continued) == {s: loss for s, loss in reference.items() if s > 6}


@pytest.mark.parametrize("damage", ["truncated", "overwritten"])
def test_damaged_latest_checkpoint_falls_back(tmp_path, cache, reference, reference_dir, damage):
    """A truncated file, or 4 KiB overwritten inside it at the same size (caught by the CRC-32
    in COMPLETE): one warning line, the damaged checkpoint set aside, resume from the one before."""
    run_dir = tmp_path / "run"
    shutil.copytree(reference_dir, run_dir)
    cmd = command(run_dir, cache)
    latest = run_dir / "checkpoints" / f"step_{STEPS:08d}"
    shard = next(latest.glob("*.distcp"))
    size = shard.stat().st_size
    with open(shard, "r+b") as f:
        if damage == "truncated":  # a disk error cut the newest checkpoint short
            f.truncate(size // 2)
        else:  # a bad block: same size, other bytes
            f.seek(size // 2)
            flipped = bytes(b ^ 0xFF for b in f.read(4096))
            f.seek(size // 2)
            f.write(flipped)
    text = finish(cmd, tmp_path / "log2.txt")
    warnings = [line for line in text.splitlines() if "WARNING" in line]
    assert len(warnings) == 1 and "skipping checkpoint" in warnings[0] and latest.name in warnings[0], warnings
    assert ("corrupted" if damage == "overwritten" else "bytes, expected") in warnings[0]
    assert f"step_{STEPS - 2:08d} at step {STEPS - 2}" in text
    assert f"step {STEPS - 1}/{STEPS}" in text  # the lost steps were trained again
    assert train_losses(run_dir) == reference
    assert (run_dir / "checkpoints" / f"step_{STEPS:08d}.damaged").is_dir()  # set aside, not deleted
    # The re-saved step is intact and, with keep=2, it and the one before are what is kept.
    from alia_train.checkpoint import directory

    kept = directory.complete_checkpoints(run_dir)
    assert [p.name for p in kept] == [f"step_{STEPS:08d}", f"step_{STEPS - 2:08d}"]
    assert all(directory.verify(p, deep=(0, 1)) is None for p in kept)


def test_an_async_saves_background_write_counts_for_the_killwait_warning(tmp_path, cache):
    """The KillWait warning (docs/cluster.md) compares the last save's duration with Slurm's
    KillWait. An async save blocks the training only while it copies the tensors; its write
    (here held 2 s in the background) is what the blocking SIGTERM save will take about as long
    as, and is what the warning must count."""
    run_dir = tmp_path / "run"
    # One save (step 30) published before the SIGTERM, and no other one begun: each later save
    # would also wait for the one before it, which the blocked time then counts.
    cmd = command(run_dir, cache, "checkpoint.async_save=true", "checkpoint.interval=30", steps=400)
    entry = [sys.executable, str(Path(__file__).with_name("fault_entry.py")), "0", "--delay-writes=2"]
    log = tmp_path / "log.txt"
    proc = start([*entry, *cmd[1:]], log, ALIA_KILL_WAIT_S="1")
    try:
        wait_for_step(run_dir, 30, proc)
        deadline = time.monotonic() + 120
        while not (run_dir / "checkpoints" / "step_00000030" / "COMPLETE").exists():  # published
            assert time.monotonic() < deadline and proc.poll() is None, log.read_text()[-3000:]
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 143, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            kill_group(proc)
    text = log.read_text()
    assert "step_00000060" not in text
    took = re.findall(r"WARNING: the last save took (\d+) s but Slurm kills the job 1 s \(KillWait\)", text)
    assert took and int(took[0]) >= 2, text[-3000:]
