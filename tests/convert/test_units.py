"""The small pieces: tensor cuts, shard planning, all-or-nothing output, size arguments."""

from __future__ import annotations

import json

import pytest
import torch

from alia_train.convert.mapping import Arch, fuse_qkv, split_fc1, split_qkv
from alia_train.convert.safetensors_io import Entry, plan_shards, shard_names
from alia_train.convert.staging import staged_output

ARCH = Arch(num_layers=2, hidden_size=8, ffn_hidden_size=6, num_attention_heads=4, num_query_groups=2, vocab_size=10)


def test_qkv_is_grouped_per_query_group():
    # Rows labelled by role: megatron's layout is [q heads of group 0, k_0, v_0, q heads of group 1, ...].
    d = ARCH.head_dim  # 2
    labels = []
    for g in range(2):
        labels += [f"q{g * 2 + h}" for h in range(2) for _ in range(d)] + [f"k{g}"] * d + [f"v{g}"] * d
    codes = {name: i for i, name in enumerate(sorted(set(labels)))}
    qkv = torch.tensor([[codes[x]] * 8 for x in labels], dtype=torch.float32)
    q, k, v = split_qkv(qkv, ARCH)
    assert [int(r[0]) for r in q[::d]] == [codes[f"q{i}"] for i in range(4)]
    assert [int(r[0]) for r in k[::d]] == [codes["k0"], codes["k1"]]
    assert [int(r[0]) for r in v[::d]] == [codes["v0"], codes["v1"]]
    assert torch.equal(fuse_qkv(q, k, v, ARCH), qkv)


def test_fc1_is_gate_then_up():
    fc1 = torch.arange(12 * 8, dtype=torch.float32).reshape(12, 8)
    gate, up = split_fc1(fc1, ARCH)
    assert torch.equal(gate, fc1[:6]) and torch.equal(up, fc1[6:])


def test_shard_planning():
    entries = [Entry(f"t{i}", (100,), torch.float32) for i in range(5)] + [Entry("big", (1000,), torch.float32)]
    shards = plan_shards(entries, 1000)
    assert [[e.name for e in s] for s in shards] == [["t0", "t1"], ["t2", "t3"], ["t4"], ["big"]]
    assert shard_names(2) == ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]


def test_staged_output_is_all_or_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with staged_output(tmp_path / "out") as stage:
            (stage / "half.bin").write_bytes(b"x")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with staged_output(tmp_path / "out") as stage:
        (stage / "done.bin").write_bytes(b"x")
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert (tmp_path / "out" / "done.bin").is_file()


def test_size_arguments():
    from alia_train.cli.convert import _size

    assert _size("5GB") == 5 * 2**30 and _size("500MB") == 500 * 2**20 and _size("1000") == 1000
    assert _size("1.5GiB") == int(1.5 * 2**30)


def test_safetensors_checkpoint_reads_through_safe_open(tmp_path):
    from safetensors.torch import save_file

    from alia_train.convert.errors import ConversionError
    from alia_train.convert.safetensors_io import INDEX_NAME, SafetensorsCheckpoint

    a, b = torch.arange(12, dtype=torch.float32).reshape(3, 4).to(torch.bfloat16), torch.ones(5)
    save_file({"a": a, "stray": b}, str(tmp_path / "x.safetensors"))
    save_file({"b": b}, str(tmp_path / "y.safetensors"))
    weight_map = {"a": "x.safetensors", "b": "y.safetensors"}
    (tmp_path / INDEX_NAME).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    st = SafetensorsCheckpoint(tmp_path)
    assert sorted(st.names()) == ["a", "b"]  # the index is authoritative: "stray" is not listed
    assert st.shape("a") == (3, 4) and st.dtype("a") == torch.bfloat16 and st.dtype("b") == torch.float32
    assert torch.equal(st.get("a"), a) and torch.equal(st.get("b"), b)

    data = (tmp_path / "y.safetensors").read_bytes()
    (tmp_path / "y.safetensors").write_bytes(data[:-4])  # cut short
    with pytest.raises(ConversionError, match="y.safetensors: unreadable safetensors file"):
        SafetensorsCheckpoint(tmp_path)
