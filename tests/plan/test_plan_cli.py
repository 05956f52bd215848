"""`alia-plan`, the installed console script and its exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from alia_train.cli.plan import main
from alia_train.exit_codes import EXIT_CONFIG, EXIT_DOES_NOT_FIT, EXIT_OK as EXIT_FITS

ALIA_PLAN = Path(sys.executable).parent / "alia-plan"
MN5_40B = ["+model=alia_40b", "cluster=marenostrum5", "cluster.nodes=256"]


def test_console_script_40b_published_layout_fits():
    r = subprocess.run([str(ALIA_PLAN), *MN5_40B, "--tokens", "9.37e12"], capture_output=True, text=True)
    assert r.returncode == EXIT_FITS, r.stdout + r.stderr
    out = r.stdout
    assert "1,024 GPUs of 64 GiB" in out
    assert "TP 4 x PP 2 x CP 1 x DP 128" in out
    assert "40,433,885,184" in out and "2,097,152,000" in out
    assert "fits in 64 GiB: yes" in out
    assert "9.37e+12 tokens (--tokens)" in out and "days" in out


def test_40b_tp1_pp1_does_not_fit(capsys):
    rc = main([*MN5_40B, "parallel.tp=1", "parallel.pp=1", "parallel.sp=false"])
    out = capsys.readouterr().out
    assert rc == EXIT_DOES_NOT_FIT
    assert "fits in 64 GiB: NO" in out
    assert "what would help:" in out and "layouts that fit (add these overrides):" in out
    assert "parallel.tp=4" in out


def test_model_card_counts_printed(capsys):
    for model, nodes, total in (("salamandra_2b", 64, "2,253,490,176"), ("salamandra_7b", 128, "7,768,117,248")):
        assert main([f"+model={model}", "cluster=marenostrum5", f"cluster.nodes={nodes}"]) == EXIT_FITS
        assert total in capsys.readouterr().out


def test_config_errors_exit_2(capsys):
    assert main([*MN5_40B, "parallel.tp=3"]) == EXIT_CONFIG
    assert "parallel.tp" in capsys.readouterr().err
    assert main(["+model=nope"]) == EXIT_CONFIG
    assert main([*MN5_40B, "--mfu", "1.5"]) == EXIT_CONFIG


def test_40b_32k_long_context_stage(capsys):
    assert main(["+model=alia_40b_32k", "cluster=marenostrum5", "cluster.nodes=256"]) == EXIT_FITS
    out = capsys.readouterr().out
    assert "TP 4 x PP 2 x CP 8 x DP 16" in out
    assert "128 sequences x 32,768 tokens = 4,194,304 tokens per step" in out
    assert "of which K/V all-gathered over CP 8" in out
    assert "fits in 64 GiB: yes" in out


def test_smallest_machines(capsys):
    """After the plan, the least each kind of machine needs; --machines prints only that, for a
    recipe whose layout needs more GPUs than the default cluster has."""
    assert main(["+model=salamandra_2b", "cluster=marenostrum5", "cluster.nodes=64"]) == EXIT_FITS
    out = capsys.readouterr().out
    assert "smallest machines for salamandra_2b at 8,192 tokens" in out
    assert "one GPU             47.1 GiB: train.recompute=full train.loss_impl=chunked" in out
    assert "GPUs of 64 GiB      1: train.recompute=full" in out
    assert main(["+model=salamandra_7b", "--machines", "cluster.gpu_memory_gb=23.6", "cluster.gpus_per_node=8"]) == EXIT_FITS
    out = capsys.readouterr().out
    assert out.startswith("smallest machines for salamandra_7b") and "alia-plan:" not in out
    assert "one CPU process" in out and "GPUs of 23.6 GiB    8: parallel.tp=8" in out
