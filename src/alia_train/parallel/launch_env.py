"""Who am I in the job: rank, world size, local rank and the rendezvous address.

Three sources, in this order: torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR),
Slurm's (one task per GPU under srun: SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID, master = first
host of SLURM_JOB_NODELIST), or a single process on this machine.
"""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass
from typing import Mapping


@dataclass(frozen=True)
class LaunchEnv:
    rank: int
    world_size: int
    local_rank: int
    master_addr: str
    master_port: int
    source: str  # "torchrun", "slurm" or "single"


# MASTER_PORT of a Slurm job: 10000-29999, below Linux's ephemeral ports (32768-60999 by
# default), which the kernel hands to any outgoing connection: one could hold the port when
# rank 0 binds it. scripts/slurm/common.sh (alia_rendezvous) computes the same: keep them equal.
SLURM_PORT_BASE = 10000
SLURM_PORT_SPAN = 20000


def slurm_master_port(job_id: int) -> int:
    """The rendezvous port of a Slurm job: derived from the job id, so that two jobs sharing a
    node do not collide and a requeued job keeps its port."""
    return SLURM_PORT_BASE + job_id % SLURM_PORT_SPAN


def cuda_device_index(local_rank: int, visible_device_count: int) -> int:
    """The CUDA device of this task. One GPU per task (`--gpus-per-task=1`,
    `--gpu-bind=single:1`, a CUDA_VISIBLE_DEVICES per task) shows each task one device, 0;
    otherwise every task sees the node's GPUs and takes the one of its local rank."""
    if visible_device_count == 1:
        return 0
    if 0 <= local_rank < visible_device_count:
        return local_rank
    raise ValueError(
        f"local rank {local_rank} but only {visible_device_count} GPU(s) visible to this task: "
        "check --gpus-per-task / --gres=gpu:N against --ntasks-per-node, and CUDA_VISIBLE_DEVICES"
    )


def ranks_on_this_node(world_size: int, environ: Mapping[str, str] | None = None) -> int:
    """Processes of this job on this machine: torchrun's LOCAL_WORLD_SIZE, Slurm's tasks per
    node (the most of any node, "4(x2),3" -> 4), else the whole job (a single process, or a
    launcher that says nothing: all on one machine, the cautious guess)."""
    env = os.environ if environ is None else environ
    if env.get("LOCAL_WORLD_SIZE"):
        return int(env["LOCAL_WORLD_SIZE"])
    for key in ("SLURM_STEP_TASKS_PER_NODE", "SLURM_NTASKS_PER_NODE", "SLURM_TASKS_PER_NODE"):
        if env.get(key) and "SLURM_PROCID" in env:
            return max(int(part.split("(")[0]) for part in env[key].split(","))
    return world_size


def expand_nodelist(nodelist: str) -> list[str]:
    """Expand Slurm's compressed host list, e.g. 'gs[01-03,07],login1' -> gs01 gs02 gs03 gs07 login1."""
    hosts: list[str] = []
    for match in re.finditer(r"([^,\[]+)(?:\[([^\]]+)\])?", nodelist):
        prefix, ranges = match.group(1), match.group(2)
        if not ranges:
            hosts.append(prefix)
            continue
        for part in ranges.split(","):
            if "-" in part:
                lo, hi = part.split("-")
                hosts.extend(f"{prefix}{i:0{len(lo)}d}" for i in range(int(lo), int(hi) + 1))
            else:
                hosts.append(prefix + part)
    return hosts


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def detect_launch_env(environ: Mapping[str, str] | None = None) -> LaunchEnv:
    env = os.environ if environ is None else environ
    if "RANK" in env and "WORLD_SIZE" in env:
        return LaunchEnv(
            rank=int(env["RANK"]),
            world_size=int(env["WORLD_SIZE"]),
            local_rank=int(env.get("LOCAL_RANK", "0")),
            master_addr=env.get("MASTER_ADDR", "127.0.0.1"),
            master_port=int(env.get("MASTER_PORT", "29500")),
            source="torchrun",
        )
    if "SLURM_PROCID" in env and int(env.get("SLURM_NTASKS", "1")) > 1:
        nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or "127.0.0.1"
        job_id = int(env.get("SLURM_JOB_ID", "0"))
        return LaunchEnv(
            rank=int(env["SLURM_PROCID"]),
            world_size=int(env["SLURM_NTASKS"]),
            local_rank=int(env.get("SLURM_LOCALID", "0")),
            master_addr=env.get("MASTER_ADDR") or expand_nodelist(nodelist)[0],
            master_port=int(env.get("MASTER_PORT") or slurm_master_port(job_id)),
            source="slurm",
        )
    return LaunchEnv(0, 1, 0, "127.0.0.1", int(env.get("MASTER_PORT") or _free_port()), "single")
