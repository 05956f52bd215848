"""scripts/slurm/common.sh's arithmetic, which needs no Slurm. What a job does (headers,
arguments, environment, signals, requeueing, time limits) is tested under a real one-node Slurm:
test_real_slurm.py, test_eval_slurm.py, test_tokenize_slurm.py."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from alia_train.parallel.launch_env import slurm_master_port

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts" / "slurm"


def test_master_port_agrees_with_launch_env_and_avoids_ephemeral_ports():
    """common.sh exports MASTER_PORT; alia-train started by srun without it (by hand, in an
    salloc) derives its own: the two must agree, and stay below Linux's default ephemeral ports
    (32768-60999), which any outgoing connection may take. (test_real_slurm.py checks the port a
    real job's tasks get.)"""
    job_ids = [0, 1, 1000, 12345, 19999, 20000, 39999, 4242424]
    # Only the port is wanted here: the node list's expansion (scontrol) is given, not asked.
    script = (f"source {SCRIPTS / 'common.sh'}; scontrol() {{ echo 127.0.0.1; }}; "
              f"for id in {' '.join(map(str, job_ids))}; do "
              "SLURM_JOB_ID=$id; unset MASTER_PORT; alia_rendezvous; echo $MASTER_PORT; done")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "MASTER_"))}
    out = subprocess.run(["bash", "-c", script], env={**env, "SLURM_JOB_NODELIST": "127.0.0.1"},
                         capture_output=True, text=True, check=True, timeout=30).stdout
    assert [int(port) for port in out.split()] == [slurm_master_port(i) for i in job_ids]
    ports = {slurm_master_port(i) for i in range(40000)}
    assert min(ports) >= 1024 and max(ports) < 32768
