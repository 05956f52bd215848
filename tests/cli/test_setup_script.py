"""scripts/setup.sh's install decisions, in a copy of the repository root whose .venv/bin/python
is a stand-in that records the pip commands instead of installing (the real script runs; only
the network-heavy install is replaced, as the Slurm tests replace sbatch)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from conftest import REPO

FAKE_PYTHON = """#!/usr/bin/env bash
if [ "$1" = "--version" ]; then echo "Python 3.12.0"; exit 0; fi
echo "$*" >> "$(dirname "$0")/../pip.log"
"""


@pytest.fixture
def root(tmp_path) -> Path:
    (tmp_path / "scripts").mkdir()
    shutil.copy(REPO / "scripts" / "setup.sh", tmp_path / "scripts" / "setup.sh")
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    python = tmp_path / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(FAKE_PYTHON)
    python.chmod(0o755)
    return tmp_path


def _setup(root: Path, *extras: str) -> list[str]:
    """Run setup.sh; returns the `pip install -e` targets it ran this time."""
    log = root / ".venv" / "pip.log"
    before = log.read_text().splitlines() if log.exists() else []
    proc = subprocess.run(["bash", str(root / "scripts" / "setup.sh"), *extras], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    new = (log.read_text().splitlines() if log.exists() else [])[len(before):]
    return [line.split()[-1] for line in new if " -e " in f" {line} "]


def test_demo_then_tests_then_demo(root):
    assert _setup(root) == ["."]                # the demo: runtime only
    assert _setup(root) == []                   # nothing new asked
    assert _setup(root, "dev") == [".[dev]"]    # the tests add their extra
    assert _setup(root) == []                   # the demo again: [dev] covers it, no reinstall
    assert (root / ".venv" / ".alia-train-installed").read_text().split()[1] == "dev"


def test_tests_then_demo_and_a_changed_pyproject(root):
    assert _setup(root, "dev") == [".[dev]"]
    assert _setup(root) == []
    assert _setup(root, "tb,dev") == [".[dev,tb]"]   # extras accumulate, never taken away
    with open(root / "pyproject.toml", "a") as f:
        f.write("\n# changed\n")
    assert _setup(root) == [".[dev,tb]"]             # reinstalled with what was there


def test_a_stamp_from_the_earlier_setup_means_dev(root):
    # The earlier script wrote only the hash, and always installed [dev].
    sha = subprocess.run(["sha256sum", str(root / "pyproject.toml")], capture_output=True, text=True).stdout.split()[0]
    (root / ".venv" / ".alia-train-installed").write_text(sha + "\n")
    assert _setup(root, "dev") == []
    assert _setup(root) == []


def test_bytecode_is_compiled_after_the_install_on_every_core(root):
    _setup(root)
    lines = (root / ".venv" / "pip.log").read_text().splitlines()
    install = next(i for i, line in enumerate(lines) if " -e " in f" {line} ")
    assert "--no-compile" in lines[install].split()
    assert any(line.startswith("-m compileall -q -j 0") for line in lines[install + 1:]), lines


def test_a_torch_index_installs_torch_from_it_first(root):
    """ALIA_TORCH_INDEX_URL (a torch build for the site's driver) is used for torch, in the range
    pyproject.toml allows, before the project; changing it reinstalls."""
    log = root / ".venv" / "pip.log"
    env = {**os.environ, "ALIA_TORCH_INDEX_URL": "file:///site/torch-cu126"}
    proc = subprocess.run(["bash", str(root / "scripts" / "setup.sh")], env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = log.read_text().splitlines()
    torch_line = next(i for i, line in enumerate(lines) if "--index-url file:///site/torch-cu126" in line)
    deps = tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"]
    assert lines[torch_line].endswith(next(d for d in deps if d.startswith("torch")))
    assert torch_line < next(i for i, line in enumerate(lines) if " -e " in f" {line} ")
    assert _setup(root) == ["."]  # without the index now: reinstalled
