"""A refusal under torchrun is one line, not one per rank: config errors and launch refusals are
the same on every rank, so rank 0 alone prints them (every rank still exits with the code)."""

from __future__ import annotations

import subprocess

from conftest import BIN, cli, subprocess_env


def _error_lines(nproc: int, *overrides: str) -> tuple[int, list[str]]:
    cmd = [str(BIN / "torchrun"), "--standalone", f"--nproc_per_node={nproc}", "--no-python", cli("alia-train"),
           *overrides]
    proc = subprocess.run(cmd, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    return proc.returncode, [line for line in proc.stderr.splitlines() if "alia-train: error:" in line]


def test_a_config_error_at_8_processes_is_one_line():
    code, lines = _error_lines(8, "+model=tiny", "train.steps=-1")
    assert code != 0 and len(lines) == 1 and "train.steps" in lines[0], lines


def test_a_launch_refusal_is_one_line(tmp_path):
    """Refused by the launch checks, after torch and megatron are imported on every rank."""
    code, lines = _error_lines(2, "+model=tiny", "model.vocab_size=1000", f"run.dir={tmp_path}/run")
    assert code != 0 and len(lines) == 1 and "model.vocab_size: 1000" in lines[0], lines
