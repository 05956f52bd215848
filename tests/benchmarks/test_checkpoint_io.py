"""benchmarks/checkpoint_io.py runs end to end on a small model (it starts a run as alia-train
does, so a config change that breaks it shows here and not first in a benchmark session)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from conftest import subprocess_env

REPO = Path(__file__).resolve().parents[2]


def test_every_figure_is_printed(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "checkpoint_io.py"), "--dir", str(tmp_path / "bench"),
         "--hidden", "64", "--layers", "2", "--saves", "2"],
        capture_output=True, text=True, env=subprocess_env(), timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    out = proc.stdout
    for figure in (r"sync save, first of the process: [\d.]+ s", r"sync save, steady \(median of 1\): [\d.]+ s",
                   r"async save: loop blocked [\d.]+ s", r"load \(verification included\): [\d.]+ s"):
        assert re.search(figure, out), (figure, out)
    assert not (tmp_path / "bench").exists()  # cleaned up
