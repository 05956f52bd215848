"""Helpers for tests that run real training processes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import BIN, subprocess_env
from alia_train.metrics_file import read_records


def train_losses(run_dir: str | Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_records(Path(run_dir) / "metrics.jsonl").train}


def run_layouts(out: Path, common: list[str], runs: dict[str, list[str]], nproc: int, timeout: int = 600) -> None:
    spec = out / f"spec_{'_'.join(runs)}.json"
    spec.write_text(json.dumps({"common": common, "runs": runs, "out": str(out)}))
    runner = str(Path(__file__).parent / "parallel" / "layout_runner.py")
    if nproc == 1:
        cmd = [sys.executable, runner, str(spec)]
    else:
        cmd = [str(BIN / "torchrun"), "--standalone", f"--nproc_per_node={nproc}", runner, str(spec)]
    proc = subprocess.run(cmd, env=subprocess_env(), capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")


def relative_diff(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-12)
