"""benchmarks/plan_memory_vs_rss.py: every run's overrides load and are planned as the launch
check plans them (the measurement itself, minutes of CPU, is the benchmark's)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "plan_memory_vs_rss.py"


def test_every_run_is_planned_as_a_cpu_run():
    spec = importlib.util.spec_from_file_location("plan_memory_vs_rss", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench  # its dataclass looks its module up
    spec.loader.exec_module(bench)
    estimates = {name: bench.estimate_bytes(overrides) for name, overrides in
                 {"tiny": bench.OVERHEAD_RUN, **bench.RUNS}.items()}
    assert set(estimates) == {"tiny", "salamandra_2b", "salamandra_7b", "alia_40b"}
    for name, (whole, training) in estimates.items():
        # A CPU process: 1.2 GiB of its own; the shrunk recipes 5-7 GiB, a checkpoint save included.
        assert 1.2 * 2**30 < training <= whole < (2 if name == "tiny" else 8) * 2**30, name
    assert all(estimates[n][0] > 5 * 2**30 for n in bench.RUNS)
    row = bench.Row("x", 6.0, 4.5, 4.0, 5.0, 1.0)
    assert (row.ratio_training, row.ratio_run) == (1.125, 1.2)
