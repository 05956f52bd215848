"""How much memory a CPU run launched here may hold: the machine's available memory, the
memory limit of the cgroup it runs in (Slurm, containers, systemd), and the address-space
limit of each process (`ulimit -v`). Read from /proc and /sys/fs/cgroup, no torch; the roots
are parameters so that tests can hand in a fake tree.

Each figure counts what the job's processes on this node hold already (they have imported
torch and megatron-core when the launch check runs) plus what they may still take, so it
compares with the planner's whole-process estimate. The ranks of a job on one node start
together and are at the same point, so each is taken to hold what this one holds.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass
from pathlib import Path

GIB = 2**30
# Address space a CPU run maps beyond its resident memory after start-up (thread stacks,
# malloc arenas, gloo's buffers): measured on `alia-train +model=tiny`, VmPeak grew 1.3 GB
# more than VmHWM past the launch check.
LATER_MAPPINGS_GIB = 1.5
# cgroup v1 writes "no limit" as the largest page-aligned 64-bit value.
_V1_UNLIMITED = 2**62


@dataclass(frozen=True)
class Capacity:
    """One bound on the run's memory."""

    what: str  # for the user: which limit, and its figures
    bytes: float  # what the job's processes (per_process: this process) may hold in all
    per_process: bool  # ulimit -v bounds each process; the others all ranks on this node together

    def per_rank(self, ranks_on_node: int) -> float:
        return self.bytes if self.per_process else self.bytes / max(1, ranks_on_node)


@dataclass(frozen=True)
class ProcessMemory:
    resident: int  # VmRSS, bytes
    mapped: int  # VmSize, bytes


def process_memory(proc: Path = Path("/proc")) -> ProcessMemory:
    fields = _fields(proc / "self" / "status")
    return ProcessMemory(resident=fields.get("VmRSS", 0), mapped=fields.get("VmSize", 0))


def _fields(path: Path) -> dict[str, int]:
    """'Name:  123 kB' lines as bytes (memory.stat's 'name 123' lines as they are); {} where
    the file cannot be read (no /proc: nothing is known)."""
    try:
        text = path.read_text()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        parts = line.replace(":", " ").split()
        if len(parts) >= 2 and parts[1].isdigit():
            out[parts[0]] = int(parts[1]) * (1024 if parts[2:3] == ["kB"] else 1)
    return out


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # cgroup v2 writes "max" for no limit


@dataclass(frozen=True)
class CgroupLimit:
    path: Path  # the limit file
    limit: int
    in_use: int  # the cgroup's working set: usage less the page cache it could drop


def cgroup_limits(proc: Path = Path("/proc"), root: Path = Path("/sys/fs/cgroup")) -> list[CgroupLimit]:
    """The memory limits of this process's cgroup and of its ancestors (a parent's limit
    bounds its children too), cgroup v2 or v1. A cgroup namespace shows its own cgroup as
    "/", mounted at `root`: paths that are not under the mount fall back to it."""
    try:
        lines = (proc / "self" / "cgroup").read_text().splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # v2: memory.max, memory.current, memory.stat inactive_file
            found += _limits_along(root, path, "memory.max", "memory.current", "inactive_file")
        elif "memory" in controllers.split(","):  # v1
            found += _limits_along(root / "memory", path, "memory.limit_in_bytes", "memory.usage_in_bytes",
                                   "total_inactive_file")
    return found


def _limits_along(mount: Path, path: str, limit_file: str, usage_file: str, inactive_key: str) -> list[CgroupLimit]:
    here = mount / path.strip("/")
    dirs = [here, *here.parents] if here.is_dir() else [mount]
    out = []
    for d in dirs:
        if not d.is_relative_to(mount):
            break
        limit = _read_int(d / limit_file)
        if limit is None or limit >= _V1_UNLIMITED:
            continue
        usage = _read_int(d / usage_file) or 0
        inactive = _fields(d / "memory.stat").get(inactive_key, 0)
        out.append(CgroupLimit(d / limit_file, limit, max(0, usage - inactive)))
    return out


def host_capacities(
    ranks_on_node: int,
    proc: Path = Path("/proc"),
    cgroup_root: Path = Path("/sys/fs/cgroup"),
    address_space_limit: int | None = None,
) -> list[Capacity]:
    """Every bound on a CPU run here (the launch check takes the tightest). The address-space
    limit defaults to this process's RLIMIT_AS (`ulimit -v`)."""
    me = process_memory(proc)
    held = ranks_on_node * me.resident
    holders = "these processes" if ranks_on_node > 1 else "this process"
    caps = []
    available = _fields(proc / "meminfo").get("MemAvailable")
    if available is not None:
        caps.append(Capacity(f"memory available {available / GIB:.1f} GiB + {held / GIB:.1f} GiB held by {holders}",
                             available + held, per_process=False))
    for c in cgroup_limits(proc, cgroup_root):
        # Of what the job holds, the cgroup counts only what was charged to it (shared
        # libraries' pages may be charged elsewhere): at most its whole use.
        mine = min(held, c.in_use)
        caps.append(Capacity(f"cgroup memory limit {c.limit / GIB:.1f} GiB ({c.path}), {c.in_use / GIB:.1f} GiB in "
                             f"use, {mine / GIB:.1f} of it by {holders}", c.limit - c.in_use + mine, per_process=False))
    if address_space_limit is None:
        soft = resource.getrlimit(resource.RLIMIT_AS)[0]
        address_space_limit = None if soft == resource.RLIM_INFINITY else soft
    if address_space_limit is not None and me.mapped:
        # Libraries and reservations already mapped but not resident, and what the run maps
        # later, count against the limit but not in the planner's resident estimate.
        not_resident = me.mapped - me.resident + LATER_MAPPINGS_GIB * GIB
        caps.append(Capacity(f"ulimit -v {address_space_limit / GIB:.1f} GiB per process, less "
                                 f"{not_resident / GIB:.1f} GiB of address space mapped but not resident",
                                 address_space_limit - not_resident, per_process=True))
    return caps
