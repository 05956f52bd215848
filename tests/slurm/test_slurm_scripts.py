"""scripts/slurm/train_*.sh under stand-in sbatch / srun / scontrol (tests/slurm/bin): local
processes with the SLURM_* variables of 2 "nodes" x 1 task.

A fast test drives the scripts with a fake trainer (signals, requeue, arguments, environment);
the slow one runs the real alia-train on the tiny model on CPU: training starts, SIGUSR1 to the
batch shell leads to a checkpoint and a requeue request, and the requeued job resumes from it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from alia_train.parallel.launch_env import slurm_master_port

REPO = Path(__file__).resolve().parents[2]
BIN = Path(__file__).resolve().parent / "bin"
SCRIPTS = REPO / "scripts" / "slurm"
FAKE_TRAIN = Path(__file__).resolve().parent / "fake_train.py"


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_"))}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    env["PATH"] = os.pathsep.join([str(BIN), str(Path(sys.executable).parent), env.get("PATH", "")])
    env["SLURM_STANDIN_STATE"] = str(tmp_path / "slurm-state")
    env["ALIA_HOME"] = str(REPO)
    env["SBATCH_ACCOUNT"] = "bsc99"  # must reach the job from the environment, never the script
    env["OMP_NUM_THREADS"] = "1"
    env.update(extra)
    return env


def _submit(tmp_path: Path, env: dict[str, str], script: str, args: list[str], cpus: int = 1) -> subprocess.Popen:
    cmd = ["sbatch", "--wait", "--nodes=2", "--ntasks-per-node=1", f"--cpus-per-task={cpus}", str(SCRIPTS / script),
           *args]
    return subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def _wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            text = log.read_text() if log and log.exists() else ""
            pytest.fail(f"job ended (rc {proc.returncode}) before {what}:\n{proc.stdout.read()}\n{text[-6000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.1)


def _batch_pid(state: Path, job_id: int) -> int:
    return int((state / f"job-{job_id}.pid").read_text())


def _kill_job(proc: subprocess.Popen, state: Path) -> None:
    """Leave nothing running if a test fails half-way."""
    for pidfile in state.glob("job-*.pid"):
        try:
            os.killpg(int(pidfile.read_text()), signal.SIGKILL)
        except (ProcessLookupError, PermissionError, ValueError):
            pass
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_job_forwards_usr1_requeues_and_resumes(tmp_path):
    # The fake has its handler before it says it started: no need to hold the signal back.
    env = _env(tmp_path, ALIA_TRAIN_CMD=f"{sys.executable} {FAKE_TRAIN}", ALIA_SIGNAL_SETTLE_S="0")
    state = Path(env["SLURM_STANDIN_STATE"])
    proc = _submit(tmp_path, env, "train_40b.sh", ["train.steps=1000", "data=my_mix"], cpus=3)
    try:
        _wait_for(lambda: all((state / f"fake-started-{r}").exists() for r in (0, 1)), 60, "both tasks to start", proc)
        os.kill(_batch_pid(state, 1000), signal.SIGUSR1)  # what --signal=B:USR1@600 does
        out, _ = proc.communicate(timeout=60)
    finally:
        _kill_job(proc, state)
    log = (tmp_path / "alia-40b-1000.out").read_text()
    assert proc.returncode == 0, out + log
    assert "Submitted batch job 1000" in out

    # The job's shape and account came from the headers, the sbatch flags and the environment.
    job = json.loads((state / "job-1000.json").read_text())
    assert job["options"]["account"] == "bsc99"
    assert job["options"]["gres"] == "gpu:4" and job["options"]["signal"] == "B:USR1@600"
    assert job["options"]["nodes"] == "2"

    # First run: two tasks with rank / world / master, the recipe model, the overrides last.
    first = [json.loads((state / f"fake-{r}-0.json").read_text()) for r in (0, 1)]
    assert [f["env"]["SLURM_PROCID"] for f in first] == ["0", "1"]
    assert first[0]["argv"] == [
        "+model=alia_40b", "cluster=marenostrum5", "cluster.nodes=2", "cluster.gpus_per_node=1",
        "train.steps=1000", "data=my_mix",
    ]
    e = first[1]["env"]
    assert e["MASTER_ADDR"] == "127.0.0.1" and e["MASTER_PORT"] == str(slurm_master_port(1000))
    assert e["SLURM_NTASKS"] == "2" and e["SLURM_LOCALID"] == "0" and e["SLURM_CPU_BIND"] == "none"
    assert e["NCCL_IB_TIMEOUT"] == "70" and e["CUDA_DEVICE_MAX_CONNECTIONS"] == "1"
    assert e["WANDB_MODE"] == "offline" and e["TRANSFORMERS_OFFLINE"] == "1"
    assert e["ALIA_KILL_WAIT_S"] == "30"  # from `scontrol show config`, for the save-time warning
    # Slurm >= 22.05's srun does not inherit the job's --cpus-per-task: the script passes it on.
    steps = [json.loads(line) for line in (state / "steps.log").read_text().splitlines()]
    assert [step["options"].get("cpus-per-task") for step in steps] == ["3", "3"]

    # USR1 -> exit 75 -> `scontrol requeue 1000` -> the same job again, restart 1, resumed.
    assert (state / "requeue.log").read_text().split() == ["1000", "restart", "0"]
    assert (state / "job-1000.runs").read_text().splitlines() == ["restart 0 rc 0", "restart 1 rc 0"]
    assert json.loads((state / "fake-0-1.json").read_text())["env"]["SLURM_RESTART_COUNT"] == "1"
    assert "got SIGUSR1" in log and "requeueing job 1000" in log
    assert "resumed from" in log and "at step 7" in log


def test_a_time_limit_shorter_than_the_usr1_warning_is_not_requeued_forever(tmp_path):
    """`--time=1` with the header's USR1@600: Slurm warns at once, every cycle. The first cycle
    checkpoints as usual; then the job says why and stops (exit 2) instead of requeueing."""
    env = _env(tmp_path, ALIA_TRAIN_CMD=f"{sys.executable} {FAKE_TRAIN}", ALIA_SIGNAL_SETTLE_S="0",
               STANDIN_TIME_LEFT="0:45")
    state = Path(env["SLURM_STANDIN_STATE"])
    proc = _submit(tmp_path, env, "train_2b.sh", [])
    try:
        _wait_for(lambda: all((state / f"fake-started-{r}").exists() for r in (0, 1)), 60, "both tasks to start", proc)
        os.kill(_batch_pid(state, 1000), signal.SIGUSR1)  # Slurm's warning, right at the start
        out, _ = proc.communicate(timeout=60)
    finally:
        _kill_job(proc, state)
    log = (tmp_path / "alia-2b-1000.out").read_text()
    assert proc.returncode == 2, out + log
    assert not (state / "requeue.log").exists() and (state / "fake-checkpoint").exists()
    (said,) = [line for line in log.splitlines() if "not requeueing" in line]
    assert "45s left" in said and "--time" in said and "USR1@600" in said


def test_failed_training_is_not_requeued(tmp_path):
    env = _env(tmp_path, ALIA_TRAIN_CMD="false")
    state = Path(env["SLURM_STANDIN_STATE"])
    proc = _submit(tmp_path, env, "train_2b.sh", [])
    try:
        out, _ = proc.communicate(timeout=60)
    finally:
        _kill_job(proc, state)
    assert proc.returncode == 1, out
    assert not (state / "requeue.log").exists()
    log = (tmp_path / "alia-2b-1000.out").read_text()
    assert "training step ended with exit code 1" in log


@pytest.mark.slow
@pytest.mark.multiproc
def test_alia_train_checkpoints_on_usr1_and_requeued_job_resumes(tmp_path):
    run = tmp_path / "run"
    steps = 16
    env = _env(tmp_path, ALIA_SIGNAL_SETTLE_S="5")  # the handlers are up long before the first record
    state = Path(env["SLURM_STANDIN_STATE"])
    proc = _submit(tmp_path, env, "train_2b.sh", [
        "+model=tiny", "cluster=local", "train.device=cpu", f"run.dir={run}", f"train.steps={steps}",
        "logging.interval=1", "logging.console=plain", "checkpoint.interval=0",
    ])
    log = tmp_path / "alia-2b-1000.out"
    try:
        metrics = run / "metrics.jsonl"
        _wait_for(lambda: metrics.exists() and metrics.read_text().strip(), 180, "the first metrics record", proc, log)
        os.kill(_batch_pid(state, 1000), signal.SIGUSR1)
        out, _ = proc.communicate(timeout=240)
    finally:
        _kill_job(proc, state)
    text = log.read_text()
    assert proc.returncode == 0, out + text[-6000:]
    assert (state / "requeue.log").read_text().split()[0] == "1000", text[-6000:]
    saved = [line for line in text.splitlines() if "stop requested (SIGUSR1" in line]
    assert saved, text[-6000:]
    step = int(saved[0].rsplit("at step ", 1)[1])
    assert 0 < step < steps, "the signal must come mid-training"
    ckpt = run / "checkpoints" / f"step_{step:08d}"
    assert (ckpt / "COMPLETE").is_file()
    assert f"resumed from {ckpt} at step {step}" in text
    assert f"training finished at step {steps}" in text
    assert (state / "job-1000.runs").read_text().splitlines() == ["restart 0 rc 0", "restart 1 rc 0"]


def test_master_port_agrees_with_launch_env_and_avoids_ephemeral_ports(tmp_path):
    """common.sh exports MASTER_PORT; alia-train started by srun without it (by hand, in an
    salloc) derives its own: the two must agree, and stay below Linux's default ephemeral ports
    (32768-60999), which any outgoing connection may take."""
    job_ids = [0, 1, 1000, 12345, 19999, 20000, 39999, 4242424]
    script = (f"source {SCRIPTS / 'common.sh'}; for id in {' '.join(map(str, job_ids))}; do "
              "SLURM_JOB_ID=$id; unset MASTER_PORT; alia_rendezvous; echo $MASTER_PORT; done")
    out = subprocess.run(["bash", "-c", script], env={**_env(tmp_path), "SLURM_JOB_NODELIST": "127.0.0.1"},
                         capture_output=True, text=True, check=True, timeout=30).stdout
    assert [int(port) for port in out.split()] == [slurm_master_port(i) for i in job_ids]
    ports = {slurm_master_port(i) for i in range(40000)}
    assert min(ports) >= 1024 and max(ports) < 32768
