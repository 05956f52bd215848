"""What only a GPU can show: NCCL, bf16 numerics against fp32 on the same batch, SDPA on a fused
kernel, and a short training run with its throughput figures. Skipped without CUDA (the CPU
suite covers the same code paths over gloo); run by scripts/gpu_check.sh on a lent GPU."""

from __future__ import annotations

import json
import subprocess

import pytest
import torch

from conftest import cli, subprocess_env

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

SMALL = ["+model=tiny", "model.num_layers=4", "model.hidden_size=512", "model.ffn_hidden_size=1408",
         "model.num_attention_heads=8", "model.num_query_groups=4", "train.seq_length=1024", "train.micro_batch_size=2"]


@pytest.fixture(scope="module")
def runtime():
    from alia_train.config import load_config
    from alia_train.parallel.launch_env import detect_launch_env
    from alia_train.parallel.runtime import init_runtime, shutdown

    rt = init_runtime(load_config(SMALL), detect_launch_env({}))
    yield rt
    shutdown()


def test_nccl_collectives(runtime):
    import torch.distributed as dist

    assert dist.get_backend() == "nccl"
    x = torch.arange(8.0, device="cuda")
    dist.all_reduce(x)
    out = torch.empty(8, device="cuda")
    dist.all_gather_into_tensor(out, x)
    dist.reduce_scatter_tensor(torch.empty(8, device="cuda"), out)
    torch.cuda.synchronize()
    assert torch.equal(out, torch.arange(8.0, device="cuda"))


def _loss(dtype: torch.dtype, tokens: torch.Tensor) -> float:
    from alia_train.config import load_config
    from alia_train.model.build import build_model

    cfg = load_config(SMALL)
    model = build_model(cfg, vocab_size=4096, dtype=dtype, device=torch.device("cuda"))[0]
    positions = torch.arange(tokens.shape[1], device="cuda").expand_as(tokens)
    with torch.no_grad():
        return model(tokens, positions, None, labels=tokens).float().mean().item()


def test_bf16_matches_fp32_on_the_same_batch(runtime):
    """The same weights (layout-independent init) and batch: bf16 loss within bf16's precision."""
    tokens = torch.randint(0, 4096, (2, 1024), device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    fp32, bf16 = _loss(torch.float32, tokens), _loss(torch.bfloat16, tokens)
    assert abs(bf16 - fp32) / fp32 < 1e-2, (fp32, bf16)


def test_sdpa_runs_on_a_fused_kernel(runtime):
    """With the math fallback excluded, our core attention still runs in bf16 (flash, cuDNN or
    memory-efficient): at seq 8192 the math kernel would materialise the score matrix."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q = torch.randn(1, 8, 4096, 64, device="cuda", dtype=torch.bfloat16)
    kv = torch.randn(1, 4, 4096, 64, device="cuda", dtype=torch.bfloat16)
    with sdpa_kernel([SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION]):
        out = torch.nn.functional.scaled_dot_product_attention(q, kv, kv, is_causal=True, enable_gqa=True)
    assert out.shape == q.shape


def test_short_training_run_reports_gpu_figures(tmp_path):
    run = tmp_path / "run"
    proc = subprocess.run(
        [cli("alia-train"), *SMALL, "train.steps=20", "train.global_batch_size=8", "logging.interval=5",
         f"run.dir={run}", f"data.cache_dir={tmp_path}/cache"],
        env=subprocess_env(), capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r.get("kind") == "train"]
    assert train[-1]["loss"] < train[0]["loss"]
    assert 0 < train[-1]["mfu"] < 1 and train[-1]["peak_mem_gb"] > 0
