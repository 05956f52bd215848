"""Fixtures shared by the conversion tests, built once per session:

* `hf_source`: a LlamaForCausalLM made by transformers itself (random weights, norms too,
  bf16, saved in several safetensors shards) with the sample tokenizer;
* `imported`: that model through `from-hf`;
* `layouts`: ONE torchrun launch (2 processes) that trains the tiny model under TP=1 (DP=2),
  TP=2 and PP=2 (with linear RoPE scaling), and loads `imported` at TP=2, each time writing
  alia-train's own logits for fixed tokens, computed in the process that holds the weights;
  `layout_overrides`: the overrides those runs were trained with (to resume one with alia-train).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import scratch, subprocess_env

HERE = Path(__file__).resolve().parent
TEXT = "El català és una llengua romànica. The quick brown fox jumps over the lazy dog; def f(x): return x + 1"
# Padding rows on every layout (4096 -> 4100 at TP=1, 4200 at TP=2), so dropping them is tested.
COMMON = [
    "+model=tiny", "train.steps=3", "logging.interval=1", "train.global_batch_size=4",
    "train.micro_batch_size=2", "train.seq_length=64", "model.make_vocab_size_divisible_by=100",
]
LAYOUT_JOBS = {
    "tp1": [],
    "tp2": ["parallel.tp=2"],
    "pp2": ["parallel.pp=2", "model.rope_scaling_factor=2.0"],
}


@pytest.fixture(scope="session", autouse=True)
def offline():
    # Everything here must work without a network: make any attempt fail fast instead.
    saved = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    os.environ.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def sample_tokenizer() -> Path:
    from alia_train.data.sample_corpus import sample_tokenizer_path

    path = Path(sample_tokenizer_path())
    assert path.is_file(), f"the sample tokenizer is shipped in the package but missing: {path}"
    return path


def make_hf_model(out: Path, tokenizer: Path, **overrides) -> Path:
    """A tiny-shaped LlamaForCausalLM saved by transformers (sharded, bf16)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from alia_train.convert.tokenizer import write_hf_tokenizer

    kwargs = dict(
        vocab_size=4096, hidden_size=128, intermediate_size=352, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=1024, rms_norm_eps=1e-5, rope_theta=10000.0,
        tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=3,
    )
    kwargs.update(overrides)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**kwargs))
    with torch.no_grad():  # norms away from 1, so a swapped norm shows in the logits
        for p in model.parameters():
            if p.dim() == 1:
                p.copy_(1 + 0.1 * torch.randn_like(p))
            else:
                p.normal_(0, 0.05)
    model.to(torch.bfloat16).save_pretrained(out, max_shard_size="1MB")
    write_hf_tokenizer(tokenizer.read_bytes(), out, kwargs["max_position_embeddings"])
    return out


def load_hf_weights(hf_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors import safe_open

    index = json.loads((hf_dir / "model.safetensors.index.json").read_text())["weight_map"]
    out = {}
    for name, fname in index.items():
        with safe_open(str(hf_dir / fname), "pt") as f:
            out[name] = f.get_tensor(name)
    return out


def assert_same_weights(a_dir: Path, b_dir: Path) -> None:
    """Same tensor names, dtypes, shapes and bits."""
    a, b = load_hf_weights(a_dir), load_hf_weights(b_dir)
    assert sorted(a) == sorted(b)
    for name in a:
        x, y = a[name], b[name]
        assert x.dtype == y.dtype and x.shape == y.shape, name
        assert torch.equal(x.reshape(-1).view(torch.uint8), y.reshape(-1).view(torch.uint8)), name


@pytest.fixture(scope="session")
def same_weights():
    """`assert_same_weights`, for test modules (which cannot import this conftest)."""
    return assert_same_weights


@pytest.fixture(scope="session")
def hf_source(request, tmp_path_factory, sample_tokenizer) -> Path:
    return make_hf_model(scratch(request, tmp_path_factory, "hf") / "src", sample_tokenizer)


@pytest.fixture(scope="session")
def imported(request, hf_source, tmp_path_factory) -> Path:
    from alia_train.convert.from_hf import import_from_hf

    out = scratch(request, tmp_path_factory, "imported") / "ckpt"
    import_from_hf(hf_source, out, ["+model=tiny"], log=lambda *_: None)
    return out


@pytest.fixture(scope="session")
def layouts(request, tmp_path_factory, imported, sample_tokenizer) -> Path:
    root = scratch(request, tmp_path_factory, "layouts")
    jobs = [{"name": name, "overrides": o} for name, o in LAYOUT_JOBS.items()]
    jobs.append({"name": "imported_tp2", "overrides": ["parallel.tp=2", f"checkpoint.load={imported}"], "train": False})
    spec = root / "jobs.json"
    spec.write_text(json.dumps({
        "root": str(root), "text": TEXT, "jobs": jobs,
        "common": [*COMMON, f"data.cache_dir={root}/data_cache"],
    }))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(HERE / "layout_runs.py"), str(spec)]
    proc = subprocess.run(cmd, env=subprocess_env(), capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return root


@pytest.fixture(scope="session")
def layout_overrides(layouts) -> list[str]:
    """What every layout run was launched with: `alia-train *layout_overrides run.dir=...`
    resumes a copy of one of them (LAYOUT_JOBS adds the layout's own)."""
    return [*COMMON, f"data.cache_dir={layouts}/data_cache"]
