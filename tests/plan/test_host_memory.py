"""What a CPU run may hold here (alia_train.plan.host_memory), read from fake /proc and
/sys/fs/cgroup trees: available memory, cgroup v2 and v1 limits (nested), ulimit -v, and the
ranks per node of each launcher."""

from __future__ import annotations

from pathlib import Path

import pytest

from alia_train.parallel.launch_env import ranks_on_this_node
from alia_train.plan.host_memory import (
    GIB,
    LATER_MAPPINGS_GIB,
    cgroup_limits,
    host_capacities,
)

MIB = 2**20


def fake_proc(root: Path, cgroup: str, available_kb: int = 20 * 2**20, rss_kb: int = 800 * 1024,
              size_kb: int = 3400 * 1024) -> Path:
    proc = root / "proc"
    (proc / "self").mkdir(parents=True)
    (proc / "meminfo").write_text(f"MemTotal:       24683792 kB\nMemFree:        17213300 kB\n"
                                  f"MemAvailable:   {available_kb} kB\n")
    (proc / "self" / "status").write_text(f"Name:\tpython\nVmPeak:\t{size_kb} kB\nVmSize:\t{size_kb} kB\n"
                                          f"VmHWM:\t{rss_kb} kB\nVmRSS:\t{rss_kb} kB\nThreads:\t4\n")
    (proc / "self" / "cgroup").write_text(cgroup)
    return proc


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cgroup_v2_nested_limits_count_the_working_set(tmp_path):
    proc = fake_proc(tmp_path, "0::/user.slice/job_42/step_0\n")
    cg = tmp_path / "cgroup"
    write(cg / "user.slice" / "memory.max", "max\n")  # no limit here
    job = cg / "user.slice" / "job_42"
    write(job / "memory.max", f"{16 * GIB}\n")
    write(job / "memory.current", f"{6 * GIB}\n")
    write(job / "memory.stat", f"anon {3 * GIB}\nfile {3 * GIB}\ninactive_file {2 * GIB}\n")
    step = job / "step_0"
    write(step / "memory.max", f"{12 * GIB}\n")
    write(step / "memory.current", f"{GIB}\n")
    write(step / "memory.stat", "inactive_file 0\n")
    limits = cgroup_limits(proc, cg)
    assert [(c.path.parent.name, c.limit, c.in_use) for c in limits] == [
        ("step_0", 12 * GIB, GIB), ("job_42", 16 * GIB, 4 * GIB)]  # usage less inactive page cache
    caps = host_capacities(2, proc, cg, address_space_limit=None)
    # Two ranks on this node, each holding 800 MiB now: what they may hold in all. The step's
    # cgroup has charged 1 GiB of their 1.6 GiB (the rest, shared pages, is charged elsewhere).
    held = 2 * 800 * MIB
    assert [c.bytes for c in caps if c.what.startswith("cgroup")] == [12 * GIB, 12 * GIB + held]
    available = next(c for c in caps if c.what.startswith("memory available"))
    assert available.bytes == 20 * GIB + held and not available.per_process
    assert available.per_rank(2) == available.bytes / 2
    assert "held by these processes" in available.what


def test_cgroup_v1_memory_controller_and_unlimited(tmp_path):
    proc = fake_proc(tmp_path, "5:devices:/\n4:memory:/process_api/abc\n0::/\n")
    cg = tmp_path / "cgroup"
    write(cg / "memory" / "memory.limit_in_bytes", "9223372036854771712\n")  # v1's "no limit"
    group = cg / "memory" / "process_api" / "abc"
    write(group / "memory.limit_in_bytes", f"{8 * GIB}\n")
    write(group / "memory.usage_in_bytes", f"{3 * GIB}\n")
    write(group / "memory.stat", f"cache {2 * GIB}\ntotal_inactive_file {GIB}\n")
    (limit,) = cgroup_limits(proc, cg)
    assert (limit.limit, limit.in_use) == (8 * GIB, 2 * GIB)
    assert limit.path == group / "memory.limit_in_bytes"


def test_namespace_root_and_no_cgroup_limit(tmp_path):
    # A cgroup namespace shows a path the mount does not have: the mount's own files apply.
    proc = fake_proc(tmp_path, "0::/docker/0123\n")
    cg = tmp_path / "cgroup"
    write(cg / "memory.max", f"{4 * GIB}\n")
    write(cg / "memory.current", f"{GIB}\n")
    assert [c.limit for c in cgroup_limits(proc, cg)] == [4 * GIB]
    # The root cgroup of a host has no memory.max: nothing but MemAvailable bounds the run.
    (cg / "memory.max").unlink()
    caps = host_capacities(1, proc, cg, address_space_limit=None)
    assert [c.what.split(" ")[0] for c in caps] == ["memory"]


def test_ulimit_v_bounds_each_process_less_what_is_mapped_but_not_resident(tmp_path):
    proc = fake_proc(tmp_path, "0::/\n", rss_kb=800 * 1024, size_kb=3400 * 1024)
    caps = host_capacities(4, proc, tmp_path / "none", address_space_limit=20 * GIB)
    ulimit = next(c for c in caps if c.what.startswith("ulimit -v"))
    assert ulimit.per_process and ulimit.per_rank(4) == ulimit.bytes
    assert ulimit.bytes == pytest.approx(20 * GIB - 2600 * MIB - LATER_MAPPINGS_GIB * GIB)


@pytest.mark.parametrize("env, world, expected", [
    ({}, 1, 1),
    ({"LOCAL_WORLD_SIZE": "4"}, 8, 4),  # torchrun
    ({"SLURM_PROCID": "3", "SLURM_NTASKS_PER_NODE": "4"}, 8, 4),
    ({"SLURM_PROCID": "3", "SLURM_STEP_TASKS_PER_NODE": "2(x3),4"}, 10, 4),
    ({"SLURM_TASKS_PER_NODE": "4"}, 2, 2),  # not a Slurm task: all on this machine
    ({}, 4, 4),  # a launcher that says nothing: all on this machine
])
def test_ranks_on_this_node(env, world, expected):
    assert ranks_on_this_node(world, env) == expected


def test_this_machine_is_readable():
    """The real /proc and /sys/fs/cgroup parse (whatever they say)."""
    caps = host_capacities(1)
    assert caps and all(c.bytes > 0 for c in caps)
