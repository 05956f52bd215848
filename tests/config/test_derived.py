"""What follows from a config and its job, computed once (config/derived.py)."""

import pytest

from alia_train.config import load_config
from alia_train.config.derived import derive


def test_the_40b_recipe_on_256_nodes():
    cfg = load_config(["+model=alia_40b", "parallel.vpp=3"])
    d = derive(cfg, world_size=1024, cuda_available=True)
    assert (d.model_parallel, d.dp, d.num_microbatches) == (8, 128, 8)
    assert (d.vpp, d.virtual_pipeline_size) == (3, 3)
    assert d.cuda and d.bf16
    assert d.tokens_per_step == 1024 * 4096


@pytest.mark.parametrize("precision, device, cuda_available, cuda, bf16", [
    ("auto", "auto", True, True, True),
    ("auto", "auto", False, False, False),  # fp32 on CPU: faster there
    ("bf16", "auto", False, False, True),  # the GPU code path, on CPU
    ("fp32", "auto", True, True, False),
    ("auto", "cpu", True, False, False),
])
def test_precision_and_device_resolve_against_the_machine(precision, device, cuda_available, cuda, bf16):
    cfg = load_config(["+model=tiny", f"train.precision={precision}", f"train.device={device}"])
    d = derive(cfg, 1, cuda_available)
    assert (d.cuda, d.bf16) == (cuda, bf16)


@pytest.mark.parametrize("vpp, megatron", [(None, None), (1, None), (2, 2)])
def test_megatron_gets_a_virtual_pipeline_size_only_when_interleaved(vpp, megatron):
    cfg = load_config(["+model=tiny", "parallel.pp=2", f"parallel.vpp={'null' if vpp is None else vpp}"])
    d = derive(cfg, 2, False)
    assert d.virtual_pipeline_size == megatron
    assert d.vpp == (vpp or 1)


def test_a_job_too_small_for_one_model_copy_has_no_data_parallelism():
    # The validator reports it; derive itself must not divide by zero.
    d = derive(load_config(["+model=tiny", "parallel.tp=2"]), 1, False)
    assert (d.dp, d.num_microbatches) == (0, 0)
