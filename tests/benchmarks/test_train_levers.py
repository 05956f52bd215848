"""benchmarks/train_levers.py, the lever runs of the one-call GPU check: each lever is turned
off in exactly one variant, the runs come most informative first, and every variant, on the GPU
and in the rehearsal, passes alia-train's own validation. The whole path (this script,
train_throughput.py, both MFU conventions, the files) runs in tests/gpu/test_rehearsal.py."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

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
    assert runs[0]["name"] == "all levers on, seq 4096" and runs[-1]["name"] == "all levers on, seq 8192"
    assert runs[0]["baseline"] and runs[-1]["baseline"] and not any(r["baseline"] for r in runs[1:-1])
    on = levers.overrides_of(runs[0], levers.SHAPE)
    assert set(levers.LEVERS_ON) <= set(on) and "train.seq_length=4096" in on
    for run, (_, off) in zip(runs[1:-1], levers.LEVERS_OFF, strict=True):
        overrides = levers.overrides_of(run, levers.SHAPE)
        key = off.split("=")[0]
        assert [o for o in overrides if o.startswith(key + "=")] == [off], overrides
        assert len(overrides) == len(on)


@pytest.mark.parametrize("shape", ["SHAPE", "REHEARSAL_SHAPE"])
def test_every_variant_passes_validation_on_the_real_recipe(levers, shape):
    """The recipe's own model and parallel settings, as alia-train validates them: a refused
    combination (e.g. overlap_param_gather without the distributed optimizer) stops the call."""
    from alia_train.config import load_config

    overrides = getattr(levers, shape)
    assert overrides[0] == "+model=salamandra_2b"
    levers.check_overrides(levers.variants((4096, 8192)), overrides)
    cfg = load_config(levers.overrides_of(levers.variants((4096, 8192))[0], overrides))
    assert cfg.train.compile and cfg.train.fused_swiglu and cfg.train.recompute == "none"


def test_a_refused_variant_stops_before_any_run(levers, capsys):
    with pytest.raises(SystemExit, match="would be refused: parallel.overlap_param_gather"):
        levers.check_overrides(levers.variants((4096, 8192)), ["+model=salamandra_2b", "parallel.distributed_optimizer=false"])


def test_the_budget_expects_the_runs_after_the_first(levers):
    """The first run pays the cold compile: the next ones are estimated from the others."""
    assert levers.expected_seconds([], 200) == 200
    assert levers.expected_seconds([100], 200) == pytest.approx(50)
    assert levers.expected_seconds([100, 10, 20], 200) == pytest.approx(24)


def test_levers_json_is_rewritten_after_each_run(levers, tmp_path):
    levers.write_json(tmp_path, [{"name": "a"}], ["b (budget)"])
    assert json.loads((tmp_path / "levers.json").read_text()) == {"runs": [{"name": "a"}], "left_out": ["b (budget)"]}
