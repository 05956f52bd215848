"""What only a GPU can show: NCCL, bf16 numerics against fp32 on the same batch, SDPA on a fused
kernel, and a short training run with its throughput figures. Run by scripts/gpu_check.sh on a
lent GPU. Skipped without CUDA (the CPU suite covers the same code paths over gloo), except in
the check's rehearsal on the CPU (scripts/gpu_check.sh --rehearse, ALIA_GPU_REHEARSAL=1), where
the tests that can run on the CPU do, shrunk, in the same bare environment, and those that need
NCCL or a GPU kernel say so and skip.

alia-train is started as `python -m alia_train.cli.train`: the check runs from the checkout
(PYTHONPATH=src) on an image where the project is not installed, so there is no console script."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from conftest import subprocess_env

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
needs_a_gpu = pytest.mark.skipif(not CUDA, reason="needs a GPU: NCCL or its kernels (skipped in the CPU rehearsal too)")
pytestmark = pytest.mark.gpu

SMALL = ["+model=tiny", "model.num_layers=4", "model.hidden_size=512", "model.ffn_hidden_size=1408",
         "model.num_attention_heads=8", "model.num_query_groups=4", "train.seq_length=1024", "train.micro_batch_size=2"]
# The rehearsal's shrink: the same overrides, narrower, shallower and shorter (one CPU core).
SHRUNK = ["model.num_layers=2", "model.hidden_size=128", "model.ffn_hidden_size=352", "model.num_attention_heads=4",
          "model.num_query_groups=2", "train.seq_length=128"]
SHAPE = SMALL if CUDA else [*SMALL, *SHRUNK]
SEQ = 1024 if CUDA else 128


@pytest.fixture(scope="module")
def runtime():
    from alia_train.config import load_config
    from alia_train.parallel.launch_env import detect_launch_env
    from alia_train.training.startup import process_groups

    with process_groups(load_config(SHAPE), detect_launch_env({})) as rt:
        yield rt


@needs_a_gpu
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

    cfg = load_config(SHAPE)
    model = build_model(cfg, vocab_size=4096, dtype=dtype, device=torch.device(DEVICE))[0]
    positions = torch.arange(tokens.shape[1], device=DEVICE).expand_as(tokens)
    with torch.no_grad():
        return model(tokens, positions, None, labels=tokens).float().mean().item()


def test_bf16_matches_fp32_on_the_same_batch(runtime):
    """The same weights (layout-independent init) and batch: bf16 loss within bf16's precision."""
    tokens = torch.randint(0, 4096, (2, SEQ), device=DEVICE, generator=torch.Generator(DEVICE).manual_seed(0))
    fp32, bf16 = _loss(torch.float32, tokens), _loss(torch.bfloat16, tokens)
    assert abs(bf16 - fp32) / fp32 < 1e-2, (fp32, bf16)


@needs_a_gpu
def test_sdpa_runs_on_a_fused_kernel(runtime):
    """With the math fallback excluded, our core attention still runs in bf16 (flash, cuDNN or
    memory-efficient): at seq 8192 the math kernel would materialise the score matrix."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q = torch.randn(1, 8, 4096, 64, device="cuda", dtype=torch.bfloat16)
    kv = torch.randn(1, 4, 4096, 64, device="cuda", dtype=torch.bfloat16)
    with sdpa_kernel([SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION]):
        out = torch.nn.functional.scaled_dot_product_attention(q, kv, kv, is_causal=True, enable_gqa=True)
    assert out.shape == q.shape


def test_short_training_run_reports_its_figures(tmp_path):
    run = tmp_path / "run"
    steps = 20 if CUDA else 8
    proc = subprocess.run(
        [sys.executable, "-m", "alia_train.cli.train", *SHAPE, f"train.steps={steps}", "train.global_batch_size=8",
         "logging.interval=4", f"run.dir={run}", f"data.cache_dir={tmp_path}/cache"],
        env=subprocess_env(), capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"{DEVICE} {'bfloat16' if CUDA else 'float32'}" in proc.stdout  # the run line: device, dtype
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r.get("kind") == "train"]
    assert train[-1]["loss"] < train[0]["loss"] and train[-1]["tokens_per_sec"] > 0
    if CUDA:
        assert 0 < train[-1]["mfu"] < 1 and train[-1]["peak_mem_gb"] > 0


@needs_a_gpu
def test_a_local_rank_without_its_gpu_is_one_line(tmp_path):
    """docs/cluster.md: a task whose local rank has no GPU (8 tasks on a node that shows 4) stops
    at start-up in one line. Two GPUs visible, local rank 7 (a task shown one GPU takes it)."""
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two GPUs: a task that sees one GPU takes it, whatever its local rank")
    env = subprocess_env(CUDA_VISIBLE_DEVICES="0,1", RANK="0", WORLD_SIZE="1", LOCAL_RANK="7")
    proc = subprocess.run([sys.executable, "-m", "alia_train.cli.train", "+model=tiny", f"run.dir={tmp_path}/run"],
                          env=env, capture_output=True, text=True, timeout=300)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("alia-train: error: ")]
    assert proc.returncode == 2 and len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "local rank 7 but only 2 GPU(s) visible" in errors[0]
