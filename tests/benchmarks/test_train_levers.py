"""benchmarks/train_levers.py, the lever runs of the one-call GPU check: each lever is turned
off in exactly one variant, every variant's overrides load, and a dry run on the CPU goes
through the whole path (this script, train_throughput.py, both MFU conventions, the files)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import subprocess_env

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "train_levers.py"


@pytest.fixture(scope="module")
def levers():
    spec = importlib.util.spec_from_file_location("train_levers", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_each_lever_is_off_in_exactly_one_variant(levers):
    runs = levers.variants((4096, 8192))
    assert [r["name"] for r in runs[:2]] == ["all levers on, seq 4096", "all levers on, seq 8192"]
    assert all(r["baseline"] for r in runs[:2]) and not any(r["baseline"] for r in runs[2:])
    on = levers.overrides_of(runs[0], levers.SHAPE, dry_run=False)
    assert set(levers.LEVERS_ON) <= set(on) and "train.seq_length=4096" in on
    for run, (_, off) in zip(runs[2:], levers.LEVERS_OFF, strict=True):
        overrides = levers.overrides_of(run, levers.SHAPE, dry_run=False)
        key = off.split("=")[0]
        assert [o for o in overrides if o.startswith(key + "=")] == [off], overrides
        assert len(overrides) == len(on)


def test_every_variant_loads(levers):
    from alia_train.config import load_config

    levers.check_overrides(levers.variants((4096, 8192)), levers.SHAPE, dry_run=False)
    cfg = load_config(levers.overrides_of(levers.variants((4096, 8192))[0], levers.SHAPE, dry_run=False))
    assert cfg.train.compile and cfg.train.fused_swiglu and cfg.train.recompute == "none"


@pytest.mark.slow
def test_dry_run_goes_through_the_whole_path(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--out", str(tmp_path)],
                          env=subprocess_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:] + (tmp_path / "levers.log").read_text()[-3000:]
    assert "PaLM MFU" in proc.stdout and "alia-train / transformers tokens/s" in proc.stdout
    (run,) = json.loads((tmp_path / "levers.json").read_text())["runs"]
    alia, hf = run["results"]
    # PaLM's convention counts attention twice ours (no causal halving): a larger MFU.
    assert alia["mfu_palm"] > alia["mfu"] > 0 and hf["mfu_palm"] > hf["mfu"] > 0
    assert alia["palm_flops_per_token"] - alia["flops_per_token"] == 6 * 2 * 32 * 128
    assert (tmp_path / "levers.md").read_text().count("\n| 32 |") == 1
