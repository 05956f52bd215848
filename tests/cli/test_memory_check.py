"""alia-train refuses a run that will not fit the memory of the machine it starts on, before it
builds anything, as a user meets it: `alia-train +model=salamandra_2b model.vocab_size=null`
on a CPU machine (fp32 state, activations and a checkpoint save: ~60 GiB). One line naming what
it needs and what there is, exit 2, within seconds, nothing written; the same under `ulimit -v`
and from every rank of a torchrun job, said once."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest

from conftest import cli, subprocess_env

TWO_B = ["+model=salamandra_2b", "model.vocab_size=null"]
# Far below the 2B's need, well above what importing torch and megatron-core maps (~3.5 GiB).
ULIMIT_V_GIB = 16


def _run(args: list[str], tmp_path: Path,
         ulimit_v_gib: float | None = None) -> tuple[subprocess.CompletedProcess, float]:
    cmd = [*args, f"run.dir={tmp_path}/run", f"data.cache_dir={tmp_path}/cache"]
    if ulimit_v_gib is not None:
        cmd = ["bash", "-c", f'ulimit -v {int(ulimit_v_gib * 2**20)} && exec "$@"', "bash", *cmd]
    start = time.monotonic()
    proc = subprocess.run(cmd, env=subprocess_env(CUDA_VISIBLE_DEVICES=""), capture_output=True, text=True,
                          timeout=300)
    return proc, time.monotonic() - start


def _refusal(proc: subprocess.CompletedProcess, seconds: float, tmp_path: Path) -> str:
    """The one error line of a launch refused before anything was built or written."""
    out = proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("alia-train: error:")]
    assert len(lines) == 1, out[-3000:]
    # No traceback from alia-train (torchrun prints its own when a worker fails).
    assert not re.search(r'File ".*(alia_train|megatron)', out), out[-3000:]
    assert "[alia-train] run dir" not in out, out[-3000:]
    # Seconds, not the minutes that building 1.2 B parameters in fp32 takes on CPU; nothing written.
    assert seconds < 60, seconds
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()
    line = lines[0]
    assert line.startswith("alia-train: error: memory: salamandra_2b does not fit in this machine's memory: ")
    assert _needed_gib(line) > 40 and "train.check_memory=false" in line
    return line


def _needed_gib(line: str) -> float:
    """'it needs 55.8 GiB per process' or, for ranks sharing the node, 'it needs 2 processes x
    55.8 = 111.7 GiB'."""
    return float(re.search(r"it needs (?:\d+ processes x [\d.]+ = )?([\d.]+) GiB", line).group(1))


def test_the_2b_is_refused_on_this_machine(tmp_path):
    total_gib = int(Path("/proc/meminfo").read_text().split()[1]) / 2**20
    if total_gib > 56:
        pytest.skip(f"this machine has {total_gib:.0f} GiB: it may hold the 2B on CPU (~60 GiB)")
    proc, seconds = _run([cli("alia-train"), *TWO_B], tmp_path)
    assert proc.returncode == 2, proc.stderr[-3000:]
    line = _refusal(proc, seconds, tmp_path)
    have = float(re.search(r"and there is ([\d.]+) GiB \(", line).group(1))
    assert have < _needed_gib(line)
    assert "memory available" in line or "cgroup memory limit" in line


def test_the_2b_is_refused_under_ulimit_v(tmp_path):
    proc, seconds = _run([cli("alia-train"), *TWO_B], tmp_path, ULIMIT_V_GIB)
    assert proc.returncode == 2, proc.stderr[-3000:]
    line = _refusal(proc, seconds, tmp_path)
    assert f"(ulimit -v {ULIMIT_V_GIB:.1f} GiB per process, less " in line
    assert _needed_gib(line) > ULIMIT_V_GIB


def test_every_rank_refuses_and_rank_0_says_why(tmp_path):
    cmd = [cli("torchrun"), "--standalone", "--nproc_per_node=2", "--no-python", cli("alia-train"), *TWO_B]
    proc, seconds = _run(cmd, tmp_path, ULIMIT_V_GIB)
    assert proc.returncode != 0
    line = _refusal(proc, seconds, tmp_path)  # one error line for the two ranks
    assert "ulimit -v" in line or "it needs 2 processes x " in line
    # torchrun's report: a rank exited 2, and the other too, or it was ending when torchrun,
    # seeing the first one fail, sent it SIGTERM. None hung.
    codes = set(re.findall(r"^\s*exitcode\s+:\s*(-?\d+)", proc.stderr, re.M))
    assert "2" in codes and codes <= {"2", "-15"}, proc.stderr[-3000:]
