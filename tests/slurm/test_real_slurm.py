"""scripts/slurm/train_2b.sh under a real one-node Slurm (conftest.py: Debian's slurm-wlm,
slurmctld + slurmd + munged on localhost), submitted from the checkout the way the README types
it, with tiny overrides: `sbatch --gres=none --oversubscribe --nodes=1 --ntasks-per-node=1
--cpus-per-task=1 --output=TMP/%x-%j.out scripts/slurm/train_2b.sh +model=tiny ...`.

Slurm signals every process of a step (the trainer and the helpers megatron-core starts), sends
TERM, CONT, TERM at the time limit, and CONT + TERM on scancel; each test checks the job's state
and restart count from `scontrol show job`, the checkpoints, that every step is logged once in
metrics.jsonl, and that no process of the job is left behind.

Budget: the time-limit job (a real `--time=1`: 60-90 s) is submitted first and runs while the
requeue chain does; the whole module takes ~3-4 minutes on 2 cores.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SBATCH = ["--gres=none", "--oversubscribe", "--nodes=1", "--ntasks-per-node=1", "--cpus-per-task=1"]
# Tasks start their handlers in well under a second; hold an early signal only that long.
JOB_ENV = {"ALIA_SIGNAL_SETTLE_S": "5", "OMP_NUM_THREADS": "1"}


def _overrides(run: Path, cache: Path, steps: int, interval: int) -> list[str]:
    return ["+model=tiny", "cluster=local", "train.device=cpu", f"run.dir={run}", f"data.cache_dir={cache}",
            f"train.steps={steps}", f"checkpoint.interval={interval}", "logging.interval=1",
            "logging.console=plain",
            # Async saves fork a writer per save beside the trainer: what the signals must not kill.
            "checkpoint.async_save=true"]


def _submit(cluster, tmp: Path, overrides: list[str], *extra: str, env: dict | None = None) -> int:
    return cluster.sbatch(*SBATCH, *extra, f"--output={tmp}/%x-%j.out", "scripts/slurm/train_2b.sh", *overrides,
                          env={**JOB_ENV, **(env or {})})


def _log(tmp: Path, job: int) -> str:
    path = tmp / f"alia-2b-{job}.out"
    return path.read_text(errors="replace") if path.exists() else ""


def _wait(predicate, timeout: float, what: str, cluster=None, job: int | None = None, tmp: Path | None = None):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            state = cluster.job(job) if cluster and job else {}
            text = _log(tmp, job)[-5000:] if tmp and job else ""
            pytest.fail(f"timed out ({timeout:.0f} s) waiting for {what}; job {job}: "
                        f"{state.get('JobState')} restarts {state.get('Restarts')}\n{text}")
        time.sleep(0.2)


def _ended(cluster, job: int) -> bool:
    return cluster.job(job).get("JobState") in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "PREEMPTED")


def _latest_checkpoint(run: Path) -> int:
    return max(_checkpoints(run), default=0)


def _checkpoints(run: Path) -> list[int]:
    return sorted(int(p.name.split("_")[1]) for p in (run / "checkpoints").glob("step_*")
                  if not p.name.endswith(".partial") and (p / "COMPLETE").exists())


def _train_steps(run: Path) -> list[int]:
    path = run / "metrics.jsonl"
    if not path.exists():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r["step"] for r in records if r.get("kind", "train") == "train"]


def _assert_no_leftovers(cluster, job: int) -> None:
    deadline = time.monotonic() + 10
    while cluster.job_pids(job) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not cluster.job_pids(job), f"processes of job {job} outlived it: {cluster.job_pids(job)}"


@pytest.fixture(scope="module")
def time_limit_job(slurm_cluster, tmp_path_factory):
    """Submitted before the other tests so that its minute runs alongside them. `--signal`
    replaces the header's USR1@600 (which a 1-minute job would get at once) by SIGURG, whose
    default action is to do nothing: the time limit comes without a prior USR1."""
    tmp = tmp_path_factory.mktemp("timelimit")
    run = tmp / "run"
    job = _submit(slurm_cluster, tmp, _overrides(run, tmp / "cache", 100000, 20), "--time=1", "--signal=B:URG@1")
    return job, tmp, run


def test_usr1_at_start_and_after_periodic_checkpoints_requeues_until_done(slurm_cluster, time_limit_job, tmp_path):
    cluster, run, steps = slurm_cluster, tmp_path / "run", 20
    # The site setup runs before the step starts: a USR1 then reaches the batch shell before any
    # training process exists, and must still end in a checkpoint at the first step.
    site = tmp_path / "site.sh"
    site.write_text("sleep 3\n")
    job = _submit(cluster, tmp_path, _overrides(run, tmp_path / "cache", steps, 2), env={"ALIA_SITE_SETUP": str(site)})
    _wait(lambda: "restart 0:" in _log(tmp_path, job), 60, "the job to start", cluster, job, tmp_path)
    cluster.run("scancel", "--batch", "--signal=USR1", str(job))
    _wait(lambda: cluster.job(job).get("Restarts") == "1", 240, "the first requeue", cluster, job, tmp_path)
    assert _checkpoints(run) == [1]

    # Restarted: two periodic checkpoints (their helper processes are running), then USR1.
    _wait(lambda: _latest_checkpoint(run) >= 4, 240, "two periodic checkpoints", cluster, job, tmp_path)
    cluster.run("scancel", "--batch", "--signal=USR1", str(job))
    _wait(lambda: _ended(cluster, job), 300, "the job to finish", cluster, job, tmp_path)

    state, log = cluster.job(job), _log(tmp_path, job)
    assert (state["JobState"], state["Restarts"], state["ExitCode"]) == ("COMPLETED", "2", "0:0"), log[-5000:]
    stops = re.findall(r"stop requested \(SIGUSR1.*at step (\d+)", log)
    assert len(stops) == 2 and stops[0] == "1", log[-5000:]
    assert 4 <= int(stops[1]) < steps
    assert f"resumed from {run}/checkpoints/step_00000001 at step 1" in log
    assert f"at step {stops[1]} " in log.split("restart 2:")[1]  # resumed where the 2nd stop saved
    assert f"training finished at step {steps}" in log
    assert _train_steps(run) == list(range(1, steps + 1))  # each step logged exactly once
    _assert_no_leftovers(cluster, job)


def test_second_job_refused_hard_kill_resubmit_then_scancel(slurm_cluster, time_limit_job, tmp_path):
    cluster, run, cache = slurm_cluster, tmp_path / "run", tmp_path / "cache"
    overrides = _overrides(run, cache, 100000, 3)
    # Two CPUs, and steps get only the CPUs they ask for (SLURM_EXACT, as srun --exact): the
    # training step must ask for the job's --cpus-per-task, which srun >= 22.05 does not inherit.
    first = _submit(cluster, tmp_path, overrides, "--cpus-per-task=2", env={"SLURM_EXACT": "1"})
    _wait(lambda: _latest_checkpoint(run) >= 6, 240, "two periodic checkpoints", cluster, first, tmp_path)
    step = dict(re.findall(r"(\w+)=(\S*)", cluster.run("scontrol", "show", "step", "-o", f"{first}.0").stdout))
    assert (step.get("Tasks"), step.get("CPUs")) == ("1", "2"), step

    # A second job on the same run directory: refused by the run lock, in one line.
    second = _submit(cluster, tmp_path, overrides)
    _wait(lambda: _ended(cluster, second), 240, "the second job to be refused", cluster, second, tmp_path)
    state, errors = cluster.job(second), re.findall(r"^alia-train: error: .*", _log(tmp_path, second), re.M)
    assert (state["JobState"], state["ExitCode"], state["Restarts"]) == ("FAILED", "2:0", "0")
    assert len(errors) == 1 and "in use by pid" in errors[0] and f"Slurm job {first}" in errors[0]
    assert cluster.job(first)["JobState"] == "RUNNING"

    # A hard kill of the trainer (what the OOM killer does): any helper it has (an async
    # writer mid-save; megatron's Manager is no longer started, see checkpoint/async_write.py) goes
    # with it, the step ends at once instead of waiting, and nothing is requeued.
    # tests/parallel/test_child_processes.py kills the parent of a live Manager directly.
    trainer = _trainer_pid(cluster, first)
    os.kill(trainer, signal.SIGKILL)
    _wait(lambda: _ended(cluster, first), 30, "the killed job to end", cluster, first, tmp_path)
    assert (cluster.job(first)["JobState"], cluster.job(first)["Restarts"]) == ("FAILED", "0")
    _assert_no_leftovers(cluster, first)

    # Resubmitted: resumes from the last checkpoint, the lost steps are logged once.
    third = _submit(cluster, tmp_path, overrides)
    resumed_at = _latest_checkpoint(run)
    _wait(lambda: _latest_checkpoint(run) > resumed_at + 3, 240, "a checkpoint after the resume",
          cluster, third, tmp_path)
    cluster.run("scancel", str(third))
    _wait(lambda: _ended(cluster, third) and not cluster.job_pids(third), 60, "the cancelled job to end",
          cluster, third, tmp_path)
    state, log = cluster.job(third), _log(tmp_path, third)
    assert (state["JobState"], state["Restarts"]) == ("CANCELLED", "0"), log[-5000:]
    assert f"resumed from {run}/checkpoints/step_{resumed_at:08d}" in log
    assert "stop requested (SIGTERM" in log and "exiting with code 143" in log, log[-5000:]
    logged = _train_steps(run)
    assert logged == list(range(1, logged[-1] + 1))  # each step once, across three jobs
    assert _checkpoints(run)[-1] >= logged[-1]  # a checkpoint at or after the last logged step
    assert not (run / "run.lock").exists()


def test_time_limit_checkpoints_and_stops_without_requeue(slurm_cluster, time_limit_job):
    cluster, (job, tmp, run) = slurm_cluster, time_limit_job
    _wait(lambda: _ended(cluster, job) and not cluster.job_pids(job), 150, "the time limit", cluster, job, tmp)
    state, log = cluster.job(job), _log(tmp, job)
    assert (state["JobState"], state["Restarts"]) == ("TIMEOUT", "0"), log[-5000:]
    assert "DUE TO TIME LIMIT" in log
    assert "stop requested (SIGTERM" in log and "exiting with code 143" in log, log[-5000:]
    assert "got SIGUSR1" not in log
    logged = _train_steps(run)
    assert logged == list(range(1, logged[-1] + 1))
    assert _checkpoints(run)[-1] == logged[-1]  # saved at the step boundary after the TERM
    assert not (run / "run.lock").exists()


def _trainer_pid(cluster, job: int) -> int:
    """The alia-train process of the job's step (the one whose parent is slurmstepd)."""
    for pid in cluster.job_pids(job):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
            parent_comm = Path(f"/proc/{parent}/comm").read_text()
        except (OSError, ValueError):
            continue
        if any(part.endswith(b"alia-train") for part in cmdline) and parent_comm.startswith("slurmstepd"):
            return pid
    pytest.fail(f"no alia-train process found for job {job}")
