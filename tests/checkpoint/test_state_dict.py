"""Loading across layer implementations (local <-> Transformer Engine), on real
dist_checkpointing files in one gloo process.

TE cannot be installed on these machines, so a TE model's request is reproduced by its
difference from a local one: TE layers add `_extra_state` objects (FP8 metadata) that local
checkpoints do not hold, and hold `_extra_state` objects a local model does not ask for. Every
other key is the same in both (the local spec maps its norms onto TE's fused names). Anything
else absent is refused in one line that names the fix.
"""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def gloo():
    from alia_train.config import load_config
    from alia_train.parallel.launch_env import detect_launch_env
    from alia_train.training.startup import process_groups

    with process_groups(load_config(["+model=tiny"]), detect_launch_env({})):
        yield


def _tensor(key: str, value: torch.Tensor):
    from megatron.core.dist_checkpointing.mapping import ShardedTensor

    return ShardedTensor.from_rank_offsets(key, value, replica_id=0)


def _extra(key: str, value=None):
    from megatron.core.dist_checkpointing.mapping import ShardedObject

    return ShardedObject(key, value, (1,), (0,), replica_id=0)


def _save(path, sd) -> None:
    from megatron.core import dist_checkpointing

    path.mkdir()
    dist_checkpointing.save(sd, str(path))


def _load(path, sd, saved_impl="local", current_impl="te"):
    from megatron.core.dist_checkpointing.serialization import get_default_load_sharded_strategy

    from alia_train.checkpoint.state_dict import load_sharded

    return load_sharded(sd, path, get_default_load_sharded_strategy(str(path)), saved_impl, current_impl)


QKV = "decoder.layers.self_attention.linear_qkv.weight"
NORM = "decoder.layers.self_attention.linear_qkv.layer_norm_weight"
EXTRA = "decoder.layers.self_attention.core_attention._extra_state"


def test_local_checkpoint_loads_into_a_te_request(gloo, tmp_path):
    _save(tmp_path / "local", {"model": {"qkv": _tensor(QKV, torch.arange(6.0)), "norm": _tensor(NORM, torch.ones(3))}})
    def want():
        return {"model": {"qkv": _tensor(QKV, torch.zeros(6)), "norm": _tensor(NORM, torch.zeros(3)),
                          "core_attention._extra_state": _extra(EXTRA)}}

    state = _load(tmp_path / "local", want())
    assert torch.equal(state["model"]["qkv"], torch.arange(6.0))
    assert "core_attention._extra_state" not in state["model"]  # left at the model's own value

    from megatron.core import dist_checkpointing

    from torch.distributed.checkpoint.api import CheckpointException

    with pytest.raises(CheckpointException, match="_extra_state"):  # what a plain load does with it
        dist_checkpointing.load(want(), str(tmp_path / "local"))


def test_te_checkpoint_loads_into_a_local_request(gloo, tmp_path):
    _save(tmp_path / "te", {"model": {"qkv": _tensor(QKV, torch.arange(6.0)), "x": _extra(EXTRA, b"fp8 meta")}})
    state = _load(tmp_path / "te", {"model": {"qkv": _tensor(QKV, torch.zeros(6))}}, saved_impl="te", current_impl="local")
    assert torch.equal(state["model"]["qkv"], torch.arange(6.0))


def test_missing_real_tensor_is_one_line_naming_the_fix(gloo, tmp_path):
    from alia_train.checkpoint.state_dict import CheckpointMismatchError

    _save(tmp_path / "ckpt", {"model": {"qkv": _tensor(QKV, torch.arange(6.0))}})
    want = {"model": {"qkv": _tensor(QKV, torch.zeros(6)), "norm": _tensor(NORM, torch.zeros(3))}}
    with pytest.raises(CheckpointMismatchError) as err:
        _load(tmp_path / "ckpt", want, saved_impl="local", current_impl="te")
    message = str(err.value)
    assert "\n" not in message and NORM in message
    assert "written with model.layer_impl=local, this run uses te" in message and "model.layer_impl=local" in message


def test_model_state_tolerates_only_absent_extra_state():
    from alia_train.checkpoint.state_dict import CheckpointMismatchError, load_model_state

    class WithExtraState(torch.nn.Module):  # like a TE layer
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(2))
            self.extra = b"fresh"

        def get_extra_state(self):
            return self.extra

        def set_extra_state(self, state):
            self.extra = state

    m = WithExtraState()
    assert "_extra_state" in m.state_dict()
    load_model_state(m, {"w": torch.ones(2)})
    assert torch.equal(m.w.data, torch.ones(2)) and m.extra == b"fresh"
    with pytest.raises(CheckpointMismatchError):
        load_model_state(m, {})
