"""alia_train.parallel.run_lock: one writer per run directory, stale locks taken over."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import pytest

from alia_train.parallel.run_lock import (
    LOCK_NAME,
    RunLock,
    RunLockedError,
    RunLockLostError,
)


def _write_lock(run_dir, *, host, pid, job_id=None, restart=0, age_s=0.0, token="t0"):
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_NAME
    path.write_text(json.dumps({"host": host, "pid": pid, "job_id": job_id, "restart_count": restart,
                                "started": time.time() - age_s, "token": token}))
    past = time.time() - age_s
    os.utime(path, (past, past))
    return path


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_acquire_release_and_holder(tmp_path):
    lock = RunLock(tmp_path / "run", environ={"SLURM_JOB_ID": "77"})
    lock.acquire()
    assert lock.held
    h = lock.holder()
    assert (h.pid, h.job_id, h.token) == (os.getpid(), "77", lock.token)
    lock.release()
    assert not (tmp_path / "run" / LOCK_NAME).exists()
    lock.release()  # idempotent
    with RunLock(tmp_path / "run"):
        assert (tmp_path / "run" / LOCK_NAME).exists()
    assert not (tmp_path / "run" / LOCK_NAME).exists()


def test_live_holder_is_refused_with_a_useful_message(tmp_path):
    first = RunLock(tmp_path, environ={"SLURM_JOB_ID": "4242"})
    first.acquire()
    second = RunLock(tmp_path, environ={"SLURM_JOB_ID": "5555"})
    with pytest.raises(RunLockedError) as e:
        second.acquire()
    msg = str(e.value)
    assert f"pid {os.getpid()}" in msg and first.host in msg and "Slurm job 4242" in msg
    assert "squeue -j 4242" in msg and f"rm {tmp_path / LOCK_NAME}" in msg
    first.release()
    second.acquire()  # free now
    second.release()


def test_dead_pid_on_this_host_is_stale(tmp_path):
    lock = RunLock(tmp_path)
    _write_lock(tmp_path, host=lock.host, pid=_dead_pid())
    lock.acquire()
    assert lock.holder().pid == os.getpid()
    lock.release()


def test_other_host_is_stale_only_without_heartbeat(tmp_path):
    _write_lock(tmp_path, host="gs01r1b01", pid=1234, age_s=60)
    with pytest.raises(RunLockedError, match="gs01r1b01"):
        RunLock(tmp_path, stale_after_s=600).acquire()
    _write_lock(tmp_path, host="gs01r1b01", pid=1234, age_s=3600)
    lock = RunLock(tmp_path, stale_after_s=600)
    assert "no heartbeat" in lock.stale_reason(lock.holder())
    lock.acquire()
    lock.release()


def test_requeued_job_takes_over_its_earlier_run(tmp_path):
    _write_lock(tmp_path, host="gs01r1b01", pid=1234, job_id="900", restart=0)
    with pytest.raises(RunLockedError):  # another job: must wait for staleness
        RunLock(tmp_path, environ={"SLURM_JOB_ID": "901", "SLURM_RESTART_COUNT": "1"}).acquire()
    with pytest.raises(RunLockedError):  # same job, same incarnation: alive
        RunLock(tmp_path, environ={"SLURM_JOB_ID": "900", "SLURM_RESTART_COUNT": "0"}).acquire()
    lock = RunLock(tmp_path, environ={"SLURM_JOB_ID": "900", "SLURM_RESTART_COUNT": "1"})
    lock.acquire()
    assert lock.holder().restart_count == 1
    lock.release()


def test_heartbeat_touches_and_detects_a_lost_lock(tmp_path):
    lock = RunLock(tmp_path)
    lock.acquire()
    path = tmp_path / LOCK_NAME
    os.utime(path, (time.time() - 1000, time.time() - 1000))
    lock.heartbeat()  # rate-limited: too soon after acquire
    assert time.time() - path.stat().st_mtime > 900
    lock.heartbeat(force=True)
    assert time.time() - path.stat().st_mtime < 60
    path.unlink()
    _write_lock(tmp_path, host="elsewhere", pid=1, token="theirs")
    with pytest.raises(RunLockLostError, match="elsewhere"):
        lock.heartbeat(force=True)
    lock.release()  # not ours any more: left alone
    assert path.exists()


def test_wait_for_holder_to_leave(tmp_path):
    holder = RunLock(tmp_path)
    holder.acquire()
    threading.Timer(0.3, holder.release).start()
    waiter = RunLock(tmp_path)
    waiter.acquire(wait_s=5, poll_s=0.05)
    assert waiter.holder().token == waiter.token
    waiter.release()


def test_racing_contenders_one_wins_a_stale_lock(tmp_path):
    _write_lock(tmp_path, host="gone", pid=1, age_s=7200)
    winners, losers = [], []
    barrier = threading.Barrier(8)

    def contend():
        lock = RunLock(tmp_path, stale_after_s=600)
        barrier.wait()
        try:
            lock.acquire()
            winners.append(lock)
        except RunLockedError:
            losers.append(lock)

    threads = [threading.Thread(target=contend) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1 and len(losers) == 7
    assert winners[0].holder().token == winners[0].token
    assert not (tmp_path / (LOCK_NAME + ".break")).exists()


def test_heartbeat_thread_beats_and_reports_a_lost_lock(tmp_path):
    lock = RunLock(tmp_path)
    lock.acquire()
    path = tmp_path / LOCK_NAME
    os.utime(path, (time.time() - 1000, time.time() - 1000))
    lost = []
    lock.start_heartbeat(every_s=0.05, on_lost=lost.append)
    deadline = time.monotonic() + 5
    while time.time() - path.stat().st_mtime > 900 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert time.time() - path.stat().st_mtime < 60
    path.unlink()
    _write_lock(tmp_path, host="elsewhere", pid=1, token="theirs")
    while not lost and time.monotonic() < deadline:
        time.sleep(0.02)
    assert lost and isinstance(lost[0], RunLockLostError)
    lock.release()


def test_a_lock_lost_to_a_holder_still_writing_it_names_that_holder(tmp_path):
    """A takeover creates the lock file, then writes who it is: a heartbeat in between must not
    report the new holder as 'pid -1 on host ?'."""
    lock = RunLock(tmp_path / "run")
    lock.acquire()
    path = tmp_path / "run" / LOCK_NAME
    path.write_text("")  # the new holder's file, not yet written
    writer = threading.Timer(0.03, lambda: _write_lock(tmp_path / "run", host="other-node", pid=4242, token="new"))
    writer.start()
    with pytest.raises(RunLockLostError) as e:
        lock.heartbeat(force=True)
    writer.join()
    assert "pid 4242 on host other-node" in str(e.value)
