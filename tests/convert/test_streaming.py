"""Conversion streams: memory stays far below the size of the model, both ways."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

from conftest import subprocess_env

HERE = Path(__file__).resolve().parent
# 24 layers of hidden 1024: ~290 M parameters, ~580 MB in bf16; largest tensor 5.8 MB.
SHAPE = ["model.hidden_size=1024", "model.ffn_hidden_size=2816", "model.num_layers=24",
         "model.num_attention_heads=8", "model.num_query_groups=4"]


def _write_hf_model(out: Path, tokenizer: Path, overrides: list[str]) -> int:
    """Random bf16 weights written shard by shard (never the whole model in memory here)."""
    from safetensors.torch import save_file

    from alia_train.config import load_config
    from alia_train.convert.hf_config import arch_of, llama_config
    from alia_train.convert.mapping import hf_shapes
    from alia_train.convert.safetensors_io import Entry, plan_shards, shard_names, write_index
    from alia_train.convert.tokenizer import write_hf_tokenizer

    out.mkdir()
    m = load_config(overrides).model
    special = write_hf_tokenizer(tokenizer.read_bytes(), out, m.max_position_embeddings)
    a = arch_of(m, 4096)
    (out / "config.json").write_text(json.dumps(llama_config(m, 4096, special, torch.bfloat16)))
    entries = [Entry(n, s, torch.bfloat16) for n, s in hf_shapes(a).items()]
    shards = plan_shards(entries, 64 * 2**20)
    gen = torch.Generator().manual_seed(0)
    for shard, fname in zip(shards, shard_names(len(shards))):
        tensors = {e.name: (torch.randn(e.shape, generator=gen) * 0.02).to(torch.bfloat16) for e in shard}
        save_file(tensors, str(out / fname), metadata={"format": "pt"})
    write_index(out, shards, shard_names(len(shards)))
    return sum(e.nbytes for e in entries)


def test_peak_memory_is_a_fraction_of_the_model(tmp_path, sample_tokenizer, same_weights):
    overrides = ["+model=tiny", *SHAPE]
    model_bytes = _write_hf_model(tmp_path / "hf", sample_tokenizer, overrides)
    work = tmp_path / "work"
    work.mkdir()
    proc = subprocess.run(
        [sys.executable, str(HERE / "memory_probe.py"), str(tmp_path / "hf"), str(work), *overrides],
        env=subprocess_env(), capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    model_mb = model_bytes / 2**20
    print(f"model {model_mb:.0f} MB; peak above imports: from-hf {report['from_hf_mb']:.0f} MB, "
          f"to-hf {report['to_hf_mb']:.0f} MB")
    assert report["from_hf_mb"] < model_mb / 4
    assert report["to_hf_mb"] < model_mb / 4
    same_weights(tmp_path / "hf", work / "hf")  # ... and the weights came back unchanged
