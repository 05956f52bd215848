"""The GPU check's dress rehearsal, as CI runs it: from a clean copy of the checkout, the wheels
fetched by scripts/gpu_wheels.sh, and scripts/gpu_check.sh --rehearse in a Python that has torch
and numpy only (what a bare PyTorch GPU image has). Every step of the GPU call runs (the same
scripts, overrides and outputs, on the CPU, shrunk): after this, the GPU call can only fail on
what only a GPU can show."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

pytestmark = pytest.mark.slow


def clean_copy(dest: Path) -> Path:
    """What a clone of this checkout would hold: tracked files and new ones git does not ignore
    (the working tree as the device tool sends it), nothing built or installed."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            check=True, capture_output=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        src = REPO / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


def test_gpu_check_rehearsal_from_a_clean_copy_in_a_bare_torch_python(tmp_path):
    repo = clean_copy(tmp_path / "checkout")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "RANK", "WORLD_SIZE")}
    made = subprocess.run([sys.executable, str(repo / "scripts/ci/bare_torch_python.py"), str(tmp_path / "bare")],
                          env=env, check=True, capture_output=True, text=True)
    bare = made.stdout.strip()
    probe = subprocess.run([bare, "-c", "import torch, numpy\ntry:\n import yaml\nexcept ImportError: print('bare')"],
                           env=env, capture_output=True, text=True)
    assert probe.stdout.strip() == "bare", probe.stderr  # torch and numpy, and nothing else

    wheels = subprocess.run(["bash", "scripts/gpu_wheels.sh"], cwd=repo, env={**env, "ALIA_VENV_PYTHON": sys.executable},
                            capture_output=True, text=True, timeout=600)
    assert wheels.returncode == 0, wheels.stderr[-3000:]
    assert sum(f.stat().st_size for f in (repo / ".whl").glob("*.whl")) < 48 * 2**20  # room left in 64 MiB

    out, scratch = tmp_path / "out", tmp_path / "scratch"
    scratch.mkdir()
    check = subprocess.run(["bash", "scripts/gpu_check.sh", "--rehearse", str(out)], cwd=repo,
                           env={**env, "PYTHON": bare, "LEVERS_BUDGET_S": "900", "TMPDIR": str(scratch)},
                           capture_output=True, text=True, timeout=1500)
    assert check.returncode == 0, check.stdout[-5000:] + check.stderr[-3000:]
    assert not list(scratch.glob("alia-site.*"))  # the installed wheels are removed afterwards

    tests_log = (out / "gpu_tests.log").read_text()
    # NCCL, the fused-kernel test and the local-rank check (two GPUs visible) need a GPU.
    assert "2 passed, 3 skipped" in tests_log, tests_log[-2000:]
    levers = json.loads((out / "levers.json").read_text())
    assert levers["left_out"] == [] and len(levers["runs"]) == 7
    for run in levers["runs"]:
        assert run["results"][0]["tokens_per_sec"] > 0 and run["results"][0]["device"] == "cpu", run["name"]
        assert len(run["results"]) == (2 if run["baseline"] else 1), run["name"]  # transformers beside
    assert (out / "levers.md").read_text().count("\n| 256 |") == 1
    plan = (out / "plan.log").read_text()
    assert "fits in 80 GiB: yes" in plan and "error" not in plan.lower(), plan
