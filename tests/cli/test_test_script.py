"""scripts/test.sh (what .ci/run calls): how it runs pytest, and that "no tests collected" fails.
It runs in a copy of the repository root where set-up and the Slurm install are no-ops and
.venv/bin/python records its arguments and exits with the code a test asks for."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import REPO

FAKE_PYTHON = """#!/usr/bin/env bash
echo "$*" >> "$(dirname "$0")/../pytest_args.log"
exit "${FAKE_PYTEST_EXIT:-0}"
"""


@pytest.fixture
def root(tmp_path) -> Path:
    (tmp_path / "scripts" / "ci").mkdir(parents=True)
    shutil.copy(REPO / "scripts" / "test.sh", tmp_path / "scripts" / "test.sh")
    for stub in ("setup.sh", "ci/install_slurm.sh"):
        (tmp_path / "scripts" / stub).write_text("exit 0\n")
    python = tmp_path / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(FAKE_PYTHON)
    python.chmod(0o755)
    return tmp_path


def _run(root: Path, *args: str, **env: str) -> tuple[subprocess.CompletedProcess, str]:
    proc = subprocess.run(["bash", str(root / "scripts" / "test.sh"), *args], capture_output=True, text=True,
                          timeout=60, env={"PATH": "/usr/bin:/bin", **env})
    return proc, (root / ".venv" / "pytest_args.log").read_text().strip()


def test_no_tests_collected_is_a_failure(root):
    proc, _ = _run(root, "-k", "nothing", FAKE_PYTEST_EXIT="5")
    assert proc.returncode == 1
    assert "collected no tests" in proc.stderr


def test_pytest_failures_keep_their_exit_code(root):
    proc, _ = _run(root, FAKE_PYTEST_EXIT="1")
    assert proc.returncode == 1


def test_files_run_on_parallel_workers_capped_at_four(root):
    _, args = _run(root, "tests/cli", ALIA_TEST_WORKERS="2")
    assert args == "-m pytest -n 2 --durations=30 tests/cli"
    (root / ".venv" / "pytest_args.log").unlink()
    _, args = _run(root, ALIA_TEST_WORKERS="16")
    assert args.startswith("-m pytest -n 4")


def test_one_worker_runs_in_process(root):
    _, args = _run(root, ALIA_TEST_WORKERS="1")
    assert args == "-m pytest --durations=30"


def test_too_little_disk_fails_before_pytest_starts(root, tmp_path):
    proc = subprocess.run(["bash", str(root / "scripts" / "test.sh")], capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "TMPDIR": str(tmp_path), "ALIA_TEST_DISK_MB": str(10**9)})
    assert proc.returncode == 1
    assert f"MB free in {tmp_path}; the suite needs about 1000000000 MB" in proc.stderr
    assert not (root / ".venv" / "pytest_args.log").exists()  # pytest never ran
