"""A save of the distributed optimizer's routine form (each rank its own shard) costs each rank
well under half the checkpoint's size in host memory, measured from outside the processes
(benchmarks/checkpoint_memory.py, DP2 on a small model); the portable form, which gathers each
stage's state over DP, is measured too, so that a measurement blind to memory would fail."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import subprocess_env

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.multiproc
@pytest.mark.slow
def test_a_routine_save_costs_each_rank_its_own_shard_not_the_gathered_state(tmp_path):
    out = tmp_path / "figures.json"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "checkpoint_memory.py"), "--dp", "2",
                           "--hidden", "384", "--layers", "2", "--json", str(out)],
                          capture_output=True, text=True, env=subprocess_env(), timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    rows = {r["form"]: r for r in json.loads(out.read_text())}
    routine, portable = rows["routine"], rows["portable"]
    size = routine["checkpoint_bytes"]
    assert routine["save_spike_max"] < 0.5 * size, proc.stdout
    assert routine["load_spike_max"] < 0.5 * size, proc.stdout
    assert portable["save_spike_max"] > 1.0 * size, proc.stdout  # the gather the routine form avoids
