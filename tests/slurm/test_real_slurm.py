"""scripts/slurm/train_*.sh under a real one-node Slurm (conftest.py: Debian's slurm-wlm,
slurmctld + slurmd + munged on localhost), submitted from the checkout the way the README types
it, with tiny overrides: `sbatch --gres=none --oversubscribe --nodes=1 --ntasks-per-node=1
--cpus-per-task=1 --output=TMP/%x-%j.out scripts/slurm/train_2b.sh +model=tiny ...`.

Slurm signals every process of a step (the trainer and the helpers megatron-core starts), sends
TERM, CONT, TERM at the time limit, CONT + TERM on scancel, and the header's `--signal=B:USR1@600`
warning from a check that slurmctld runs every 30 s; each test checks the job's state, restart
count and exit code from `scontrol show job`, the checkpoints, that every step is logged once in
metrics.jsonl, and that no process of the job is left behind.

Budget: module fixtures submit the jobs that only need waiting for (the real `--time=1` job,
60-90 s; the too-short-`--time` job, ~30-40 s; a recipe job with a stand-in trainer, seconds)
so that they run alongside the tests that drive jobs by hand; ~4 minutes on 2 cores.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import time
from pathlib import Path

import pytest

from alia_train.parallel.launch_env import slurm_master_port

pytestmark = pytest.mark.slow

SBATCH = ["--gres=none", "--oversubscribe", "--nodes=1", "--ntasks-per-node=1", "--cpus-per-task=1"]
# Tasks start their handlers in well under a second; hold an early signal only that long.
JOB_ENV = {"ALIA_SIGNAL_SETTLE_S": "5", "OMP_NUM_THREADS": "1"}
FAKE_TRAIN = Path(__file__).resolve().parent / "fake_train.py"


def _overrides(run: Path, cache: Path, steps: int, interval: int, async_save: bool = True) -> list[str]:
    return ["+model=tiny", "cluster=local", "train.device=cpu", f"run.dir={run}", f"data.cache_dir={cache}",
            f"train.steps={steps}", f"checkpoint.interval={interval}", "logging.interval=1",
            "logging.console=plain",
            # Async saves fork a writer per save beside the trainer: what the signals must not kill.
            f"checkpoint.async_save={str(async_save).lower()}"]


def _submit(cluster, tmp: Path, overrides: list[str], *extra: str, env: dict | None = None,
            script: str = "train_2b.sh") -> int:
    return cluster.sbatch(*SBATCH, *extra, f"--output={tmp}/%x-%j.out", f"scripts/slurm/{script}", *overrides,
                          env={**JOB_ENV, **(env or {})})


def _log(tmp: Path, job: int, name: str = "alia-2b") -> str:
    path = tmp / f"{name}-{job}.out"
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


def _usr1_stops(log: str) -> list[int]:
    return [int(step) for step in re.findall(r"stop requested \(SIGUSR1.*at step (\d+)", log)]


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
    # No periodic checkpoints (interval 0): the warning may come 30 s in, and the one checkpoint
    # must be the one it asked for.
    job = _submit(slurm_cluster, tmp, _overrides(run, tmp / "cache", 100000, 0), "--time=1", "--signal=B:URG@1")
    return job, tmp, run


@pytest.fixture(scope="module")
def recipe_job(slurm_cluster, tmp_path_factory):
    """train_40b.sh as a user submits it (no model or cluster override, the account from
    SBATCH_ACCOUNT), shrunk to 2 tasks on the one node, with fake_train.py as the training
    command: the recipe's own model cannot run here, what it is started with can be checked."""
    tmp = tmp_path_factory.mktemp("recipe")
    env = {"ALIA_TRAIN_CMD": f"{sys.executable} {FAKE_TRAIN}", "ALIA_FAKE_TRAIN_DIR": str(tmp),
           "SBATCH_ACCOUNT": "bsc99"}
    job = _submit(slurm_cluster, tmp, ["train.steps=1000", "data=my_mix"], "--ntasks-per-node=2",
                  "--cpus-per-task=3", env=env, script="train_40b.sh")
    return job, tmp


@pytest.fixture(scope="module")
def too_short_job(slurm_cluster, tmp_path_factory):
    """`--time=1` under the header's own `--signal=B:USR1@600`: Slurm's warning is due at once and
    comes at its next time-limit check (every 30 s), at any moment of the start-up or the
    training. Two tasks: the batch shell's USR1 reaches both through the real srun."""
    tmp = tmp_path_factory.mktemp("tooshort")
    run = tmp / "run"
    # No periodic checkpoints (interval 0): the warning may come 30 s in, and the one checkpoint
    # must be the one it asked for.
    job = _submit(slurm_cluster, tmp, _overrides(run, tmp / "cache", 100000, 0), "--time=1",
                  "--ntasks-per-node=2")
    return job, tmp, run


def test_usr1_requeues_until_alia_max_requeues_then_the_resubmitted_job_finishes(slurm_cluster, time_limit_job,
                                                                                 recipe_job, tmp_path):
    cluster, run, steps = slurm_cluster, tmp_path / "run", 20
    overrides = _overrides(run, tmp_path / "cache", steps, 2)
    # The site setup runs before the step starts: a USR1 then reaches the batch shell before any
    # training process exists, and must still end in a checkpoint at the first step.
    site = tmp_path / "site.sh"
    site.write_text("sleep 3\n")
    env = {"ALIA_SITE_SETUP": str(site), "ALIA_MAX_REQUEUES": "1"}
    job = _submit(cluster, tmp_path, overrides, env=env)
    _wait(lambda: "restart 0:" in _log(tmp_path, job), 60, "the job to start", cluster, job, tmp_path)
    cluster.run("scancel", "--batch", "--signal=USR1", str(job))
    _wait(lambda: cluster.job(job).get("Restarts") == "1", 240, "the first requeue", cluster, job, tmp_path)
    assert _checkpoints(run) == [1]

    # Restarted: two periodic checkpoints (their helper processes are running), then USR1 again:
    # the checkpoint is saved, but with ALIA_MAX_REQUEUES=1 reached the job is not requeued.
    _wait(lambda: _latest_checkpoint(run) >= 4, 240, "two periodic checkpoints", cluster, job, tmp_path)
    cluster.run("scancel", "--batch", "--signal=USR1", str(job))
    _wait(lambda: _ended(cluster, job), 300, "the job to stop", cluster, job, tmp_path)
    state, log = cluster.job(job), _log(tmp_path, job)
    assert (state["JobState"], state["Restarts"], state["ExitCode"]) == ("FAILED", "1", "75:0"), log[-5000:]
    stops = _usr1_stops(log)
    assert len(stops) == 2 and stops[0] == 1 and 4 <= stops[1] < steps, log[-5000:]
    assert _latest_checkpoint(run) == stops[1]
    assert f"resumed from {run}/checkpoints/step_00000001 at step 1" in log
    assert f"requeueing job {job} (restart 1)" in log
    (said,) = [line for line in log.splitlines() if "not requeueing" in line]
    assert "already restarted 1 times (ALIA_MAX_REQUEUES=1)" in said and "resubmit the same command" in said
    _assert_no_leftovers(cluster, job)

    # Resubmitted, as the line says: resumes where the second stop saved and runs to the end.
    again = _submit(cluster, tmp_path, overrides, env=env)
    _wait(lambda: _ended(cluster, again), 300, "the resubmitted job to finish", cluster, again, tmp_path)
    state, log = cluster.job(again), _log(tmp_path, again)
    assert (state["JobState"], state["Restarts"], state["ExitCode"]) == ("COMPLETED", "0", "0:0"), log[-5000:]
    assert f"resumed from {run}/checkpoints/step_{stops[1]:08d} at step {stops[1]}" in log
    assert f"training finished at step {steps}" in log
    assert _train_steps(run) == list(range(1, steps + 1))  # each step logged exactly once
    _assert_no_leftovers(cluster, again)


def test_second_job_refused_hard_kill_resubmit_slow_save_then_scancel(slurm_cluster, too_short_job, tmp_path):
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
    # with it, the step ends at once instead of waiting, and nothing is requeued: the step's
    # status is the job's exit code. tests/parallel/test_child_processes.py kills the parent of a
    # live Manager directly.
    os.kill(_trainer_pid(cluster, first), signal.SIGKILL)
    _wait(lambda: _ended(cluster, first), 30, "the killed job to end", cluster, first, tmp_path)
    state, log = cluster.job(first), _log(tmp_path, first)
    assert (state["JobState"], state["Restarts"], state["ExitCode"]) == ("FAILED", "0", "137:0"), log[-5000:]
    assert "training step ended with exit code 137" in log
    _assert_no_leftovers(cluster, first)

    # Resubmitted (blocking saves): resumes from the last checkpoint, the lost steps are logged once.
    third = _submit(cluster, tmp_path, _overrides(run, cache, 100000, 3, async_save=False))
    resumed_at = _latest_checkpoint(run)
    _wait(lambda: _latest_checkpoint(run) > resumed_at + 3, 240, "a checkpoint after the resume",
          cluster, third, tmp_path)
    # A save that takes longer than KillWait (a slow filesystem: here the trainer held inside a
    # periodic save), then scancel, whose SIGCONT + SIGTERM continue it: the SIGTERM save warns.
    trainer = _trainer_pid(cluster, third)
    try:
        _hold_inside_a_save(run, trainer, cluster.kill_wait + 3)
        cluster.run("scancel", str(third))
        _wait(lambda: _ended(cluster, third) and not cluster.job_pids(third), 60, "the cancelled job to end",
              cluster, third, tmp_path)
    finally:
        _continue(trainer)
    state, log = cluster.job(third), _log(tmp_path, third)
    assert (state["JobState"], state["Restarts"]) == ("CANCELLED", "0"), log[-5000:]
    assert f"resumed from {run}/checkpoints/step_{resumed_at:08d}" in log
    (warning,) = re.findall(r"WARNING: the last save took (\d+) s but Slurm kills the job (\d+) s \(KillWait\) "
                            r"after SIGTERM", log)
    assert int(warning[0]) > cluster.kill_wait and int(warning[1]) == cluster.kill_wait, warning
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
    assert "(KillWait)" not in log  # its saves take well under KillWait: no warning
    logged = _train_steps(run)
    assert logged == list(range(1, logged[-1] + 1))
    assert _checkpoints(run)[-1] == logged[-1]  # saved at the step boundary after the TERM
    assert not (run / "run.lock").exists()


def test_a_time_limit_shorter_than_the_usr1_warning_checkpoints_once_and_is_not_requeued(slurm_cluster,
                                                                                        too_short_job):
    cluster, (job, tmp, run) = slurm_cluster, too_short_job
    _wait(lambda: _ended(cluster, job) and not cluster.job_pids(job), 150, "the job to stop", cluster, job, tmp)
    state, log = cluster.job(job), _log(tmp, job)
    # Not TIMEOUT: it stopped on the warning, well before the limit; not requeued; exit 2.
    assert (state["JobState"], state["Restarts"], state["ExitCode"]) == ("FAILED", "0", "2:0"), log[-5000:]
    assert "2 process(es)" in log and "got SIGUSR1" in log
    stops = _usr1_stops(log)
    assert len(stops) == 1 and _checkpoints(run) == stops, log[-5000:]
    (said,) = [line for line in log.splitlines() if "not requeueing" in line]
    timing = re.search(r"SIGUSR1 came (\d+)s after the job started, with (\d+)s left", said)
    came, left = int(timing[1]), int(timing[2])
    assert came <= 45 and left <= 60, said  # slurmctld's check: within 30 s of the start
    assert "--signal=B:USR1@600" in said and "--time well above the warning" in said, said
    assert "resumes from the checkpoint" in said
    assert not (run / "run.lock").exists()


def test_a_recipe_job_starts_its_model_on_its_layout_with_the_cluster_environment(slurm_cluster, recipe_job):
    cluster, (job, tmp) = slurm_cluster, recipe_job
    _wait(lambda: _ended(cluster, job), 120, "the recipe job to end", cluster, job, tmp)
    state = cluster.job(job)
    log = _log(tmp, job, "alia-40b")
    assert (state["JobState"], state["ExitCode"], state["Restarts"]) == ("COMPLETED", "0:0", "0"), log
    # The headers and the environment, through the real sbatch.
    assert (state["JobName"], state["Account"], state["TimeLimit"], state["Requeue"]) == (
        "alia-40b", "bsc99", "3-00:00:00", "1")
    tasks = [json.loads((tmp / f"task-{rank}.json").read_text()) for rank in (0, 1)]
    # The recipe's model and the cluster group, the job's shape, then the user's overrides.
    assert tasks[0]["argv"] == ["+model=alia_40b", "cluster=marenostrum5", "cluster.nodes=1",
                                "cluster.gpus_per_node=2", "train.steps=1000", "data=my_mix"]
    assert [(t["env"]["SLURM_PROCID"], t["env"]["SLURM_LOCALID"]) for t in tasks] == [("0", "0"), ("1", "1")]
    env = tasks[1]["env"]
    assert env["SLURM_NTASKS"] == "2" and env["SLURM_CPUS_PER_TASK"] == "3"
    assert env["SLURM_CPU_BIND"].split(",")[-1] == "none"  # srun's own form: quiet,none
    assert env["MASTER_ADDR"] == "localhost" and env["MASTER_PORT"] == str(slurm_master_port(job))
    assert env["NCCL_IB_TIMEOUT"] == "70" and env["CUDA_DEVICE_MAX_CONNECTIONS"] == "1"
    assert env["WANDB_MODE"] == "offline" and env["HF_HUB_OFFLINE"] == "1" and env["TRANSFORMERS_OFFLINE"] == "1"
    assert env["ALIA_KILL_WAIT_S"] == str(cluster.kill_wait)  # `scontrol show config`, for the save warning
    assert "ALIA_STOP_SIGNAL" not in env


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


def _hold_inside_a_save(run: Path, pid: int, seconds: float, timeout: float = 120) -> None:
    """Stops the trainer (SIGSTOP) again and again, each time for as long as it takes to look,
    until it is caught writing a checkpoint (a step_*.partial directory: a save in progress);
    then keeps it stopped `seconds` and returns with it still stopped. Its save's clock runs on."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        os.kill(pid, signal.SIGSTOP)
        _wait(lambda: _process_state(pid) in ("T", "t", ""), 10, "the trainer to stop")
        if list((run / "checkpoints").glob("*.partial")):
            time.sleep(seconds)
            return
        os.kill(pid, signal.SIGCONT)
        time.sleep(0.03)
    pytest.fail(f"the trainer was never caught inside a save in {timeout:.0f} s")


def _process_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""


def _continue(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGCONT)
    except ProcessLookupError:
        pass
