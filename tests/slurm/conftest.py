"""A real one-node Slurm for tests/slurm/test_real_slurm.py: Debian's slurm-wlm and munge
(scripts/ci/install_slurm.sh installs them), a slurm.conf under a temporary directory
(SLURM_CONF) with its own ports and munge socket, munged / slurmctld / slurmd started here and
stopped by PID at the end. Where Slurm is missing or will not start, the tests skip and say why.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TOOLS = ("munged", "slurmctld", "slurmd", "sbatch", "scontrol", "scancel", "sinfo")
KILL_WAIT = 15  # seconds between SIGTERM and SIGKILL: room for the tiny model's save under load
CRED_EXPIRE = 5  # a requeued job is eligible again after this (Slurm's default: 120 s)

SLURM_CONF = """\
ClusterName=aliatest
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/munge/munge.sock,cred_expire={cred_expire}
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1,bf_interval=1
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
SlurmdParameters=config_overrides
KillWait={kill_wait}
MinJobAge=3600
InactiveLimit=0
Waittime=0
NodeName=localhost NodeAddr=127.0.0.1 CPUs=8 RealMemory=2000 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
"""


def _tool(name: str) -> str | None:
    return shutil.which(name) or next((p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.access(p, os.X_OK)), None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _why_not() -> str | None:
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "a one-node Slurm needs root (slurmd starts jobs as their user)"
    missing = [t for t in TOOLS if _tool(t) is None]
    if missing:
        return (f"Slurm is not installed ({', '.join(missing)} missing): scripts/ci/install_slurm.sh "
                "installs Debian's slurm-wlm and munge")
    return None


@dataclass
class SlurmCluster:
    root: Path
    env: dict[str, str]
    daemons: dict[str, int] = field(default_factory=dict)  # name -> pid
    kill_wait: int = KILL_WAIT  # the slurm.conf's KillWait, seconds

    def run(self, *cmd: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
        tool = _tool(cmd[0]) or cmd[0]
        return subprocess.run([tool, *cmd[1:]], env=self.env, capture_output=True, text=True, check=check,
                              timeout=60, **kw)

    def sbatch(self, *args: str, env: dict[str, str] | None = None, cwd: Path = REPO) -> int:
        out = subprocess.run([_tool("sbatch"), *args], env={**self.env, **(env or {})}, cwd=cwd,
                             capture_output=True, text=True, timeout=60)
        match = re.search(r"Submitted batch job (\d+)", out.stdout)
        assert match, out.stdout + out.stderr
        return int(match.group(1))

    def job(self, job_id: int) -> dict[str, str]:
        """`scontrol show job` as {field: value} (JobState, Restarts, ExitCode, ...)."""
        text = self.run("scontrol", "show", "job", "-o", str(job_id)).stdout
        return dict(re.findall(r"(\w+)=(\S*)", text))

    def job_pids(self, job_id: int) -> list[int]:
        """Every process on this machine that belongs to the job (by its SLURM_JOB_ID), helpers
        that lost their parent included; slurmstepd itself is not counted."""
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                environ = (entry / "environ").read_bytes().split(b"\0")
                comm = (entry / "comm").read_text().strip()
            except OSError:
                continue
            if f"SLURM_JOB_ID={job_id}".encode() in environ and not comm.startswith("slurmstepd"):
                pids.append(int(entry.name))
        return pids

    def stop(self) -> None:
        self.run("scancel", "--user=root", check=False)
        deadline = time.monotonic() + KILL_WAIT + 10
        while self.run("squeue", "-h", check=False).stdout.strip() and time.monotonic() < deadline:
            time.sleep(0.5)
        for name in ("slurmd", "slurmctld", "munged"):
            _terminate(self.daemons.get(name))
        # Anything our slurmd started and left (it inherited our SLURM_CONF): by pid, nothing else.
        marker = f"SLURM_CONF={self.env['SLURM_CONF']}".encode()
        for entry in Path("/proc").iterdir():
            try:
                if entry.name.isdigit() and marker in (entry / "environ").read_bytes().split(b"\0"):
                    os.kill(int(entry.name), signal.SIGKILL)
            except (OSError, ProcessLookupError):
                pass


def _alive(pid: int) -> bool:
    try:  # a daemon's zombie, if nothing reaps it here, counts as gone
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _terminate(pid: int | None) -> None:
    if not pid or not _alive(pid):
        return
    try:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _read_pid(path: Path, timeout: float = 15) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return int(path.read_text().strip())
        except (OSError, ValueError):
            time.sleep(0.1)
    raise RuntimeError(f"{path} did not appear")


def _start(root: Path, env: dict[str, str], cluster: SlurmCluster) -> None:
    munge = root / "munge"
    subprocess.run([_tool("munged"), "--force", f"--socket={munge}/munge.sock", f"--key-file={munge}/munge.key",
                    f"--pid-file={munge}/munged.pid", f"--log-file={munge}/munged.log",
                    f"--seed-file={munge}/munged.seed"], env=env, check=True, capture_output=True, timeout=30)
    cluster.daemons["munged"] = _read_pid(munge / "munged.pid")
    subprocess.run([_tool("slurmctld"), "-i"], env=env, check=True, capture_output=True, timeout=30)
    cluster.daemons["slurmctld"] = _read_pid(root / "slurmctld.pid")
    subprocess.run([_tool("slurmd"), "-N", "localhost"], env=env, check=True, capture_output=True, timeout=30)
    cluster.daemons["slurmd"] = _read_pid(root / "slurmd.pid")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        state = cluster.run("sinfo", "-h", "-o", "%t", check=False).stdout.strip()
        if state == "idle":
            return
        time.sleep(0.3)
    raise RuntimeError(f"the node did not become idle (sinfo: {state!r})")


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory) -> SlurmCluster:
    why = _why_not()
    if why:
        pytest.skip(why)
    root = tmp_path_factory.mktemp("slurm")
    for sub in ("munge", "state", "spool", "log"):
        (root / sub).mkdir(mode=0o700)
    key = root / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    conf = root / "slurm.conf"
    conf.write_text(SLURM_CONF.format(root=root, ctld_port=_free_port(), slurmd_port=_free_port(),
                                      kill_wait=KILL_WAIT, cred_expire=CRED_EXPIRE))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_", "SRUN_"))}
    env["SLURM_CONF"] = str(conf)
    cluster = SlurmCluster(root, env)
    try:
        _start(root, env, cluster)
    except (RuntimeError, subprocess.SubprocessError, OSError) as e:
        logs = "".join(p.read_text()[-1500:] for p in sorted((root / "log").glob("*.log")))
        cluster.stop()
        pytest.skip(f"could not start a one-node Slurm: {e}\n{logs}")
    yield cluster
    cluster.stop()
