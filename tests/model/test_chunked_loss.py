"""train.loss_impl=chunked: the same loss and gradients as the plain output layer + cross
entropy (fp32 to 1e-5, bf16 looser), over vocabulary shards split across tensor-parallel ranks
(two gloo processes), through the whole model (build_model), and the peak memory it saves at
vocab 256,000 (benchmarks/chunked_loss_memory.py, measured in its own process)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from alia_train.config import load_config
from alia_train.model.chunked_loss import chunked_linear_cross_entropy

REPO = Path(__file__).resolve().parents[2]


def _plain(hidden, weight, labels):
    logits = (hidden @ weight.t()).float()
    return F.cross_entropy(logits.view(-1, logits.shape[-1]), labels.view(-1), reduction="none").view(labels.shape)


def _loss_and_grads(loss_fn, hidden, weight, labels, grad_loss):
    h = hidden.detach().clone().requires_grad_()
    w = weight.detach().clone().requires_grad_()
    loss = loss_fn(h, w, labels)
    loss.backward(grad_loss)
    return loss.detach(), h.grad, w.grad


def _inputs(dtype, n=(3, 37), h=16, v=500, seed=0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(*n, h, generator=g).to(dtype)
    weight = (torch.randn(v, h, generator=g) * 0.5).to(dtype)
    labels = torch.randint(0, v, n, generator=g)
    grad_loss = torch.rand(*n, generator=g)  # per-token weights, as a loss mask would give
    return hidden, weight, labels, grad_loss


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize("chunk", [1, 16, 111, 1000])
def test_loss_and_grads_match_the_plain_path(dtype, tol, chunk):
    hidden, weight, labels, grad_loss = _inputs(dtype)
    ref = _loss_and_grads(_plain, hidden, weight, labels, grad_loss)
    got = _loss_and_grads(lambda h, w, y: chunked_linear_cross_entropy(h, w, y, chunk), hidden, weight, labels,
                          grad_loss)
    for name, r, g in zip(("loss", "grad hidden", "grad weight"), ref, got):
        assert g.dtype == r.dtype and g.shape == r.shape, name
        err = (g.float() - r.float()).abs().max() / r.float().abs().max()
        assert err < tol, f"{name}: relative error {err:.2e}"


def test_a_wrong_gradient_would_be_caught():
    hidden, weight, labels, grad_loss = _inputs(torch.float32)
    ref = _loss_and_grads(_plain, hidden, weight, labels, grad_loss)
    got = _loss_and_grads(lambda h, w, y: chunked_linear_cross_entropy(h, w, y, 16), hidden, weight, labels,
                          torch.ones_like(grad_loss))
    assert (got[1] - ref[1]).abs().max() > 1e-3


def _tp_worker(rank: int, world: int, port: int, out: str) -> None:
    from alia_train.parallel.launch_env import detect_launch_env
    from alia_train.training.startup import process_groups

    env = {"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank), "MASTER_PORT": str(port)}
    with process_groups(load_config(["+model=tiny", f"parallel.tp={world}"]), detect_launch_env(env)):
        hidden, weight, labels, grad_loss = _inputs(torch.float32, v=512)
        shard = weight.chunk(world)[rank]  # vocabulary rows of this rank, as ColumnParallelLinear holds them
        loss, grad_h, grad_w = _loss_and_grads(
            lambda h, w, y: chunked_linear_cross_entropy(h, w, y, 20, group=dist.group.WORLD), hidden, shard,
            labels, grad_loss)
        torch.save({"loss": loss, "grad_h": grad_h, "grad_w": grad_w}, f"{out}/rank{rank}.pt")


def test_vocab_parallel_over_two_ranks_matches_the_whole_vocabulary(tmp_path):
    """Each rank's loss is the full-vocabulary loss; its grad of the hidden states is its shard's
    part (ColumnParallelLinear's input mapping all-reduces them); its weight grad is its rows'."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(_tp_worker, args=(2, port, str(tmp_path)), nprocs=2, start_method="spawn")
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    hidden, weight, labels, grad_loss = _inputs(torch.float32, v=512)
    loss, grad_h, grad_w = _loss_and_grads(_plain, hidden, weight, labels, grad_loss)
    for r in ranks:
        torch.testing.assert_close(r["loss"], loss, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ranks[0]["grad_h"] + ranks[1]["grad_h"], grad_h, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.cat([r["grad_w"] for r in ranks]), grad_w, rtol=1e-5, atol=1e-5)


TINY = ["+model=tiny", "train.seq_length=32", "train.micro_batch_size=2"]


def _model_loss_and_grads(overrides: list[str], dtype: torch.dtype):
    from alia_train.model.build import build_model

    cfg = load_config([*TINY, *overrides])
    (model,) = build_model(cfg, vocab_size=4096, dtype=dtype, device=torch.device("cpu"))
    g = torch.Generator().manual_seed(3)
    tokens = torch.randint(0, 4096, (2, 32), generator=g)
    labels = torch.randint(0, 4096, (2, 32), generator=g)
    positions = torch.arange(32).expand(2, 32)
    loss = model(tokens, positions, None, labels=labels)
    loss.sum().backward()
    return type(getattr(model, "module", model)).__name__, loss.detach(), {n: p.grad for n, p in model.named_parameters()}


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 3e-2)])
def test_the_model_trains_on_the_same_loss_and_gradients(runtime, dtype, tol):
    plain_cls, plain_loss, plain_grads = _model_loss_and_grads([], dtype)
    cls, loss, grads = _model_loss_and_grads(["train.loss_impl=chunked", "train.loss_chunk_size=24"], dtype)
    assert (plain_cls, cls) == ("GPTModel", "ChunkedLossGPTModel")
    assert loss.shape == plain_loss.shape == (2, 32)
    torch.testing.assert_close(loss, plain_loss, rtol=tol, atol=tol)
    assert grads.keys() == plain_grads.keys()
    for name, grad in grads.items():
        ref = plain_grads[name].float()
        err = (grad.float() - ref).abs().max() / ref.abs().max()
        assert err < tol, f"{name}: relative error {err:.2e}"


def test_training_over_tp2_with_sequence_parallelism_matches_one_process(tmp_path):
    """Through the trainer: the output layer's input mapping (the sequence-parallel all-gather
    and its reduce-scatter) and the vocabulary split, against one plain process."""
    from helpers import relative_diff, run_layouts, train_losses

    common = ["+model=tiny", "train.steps=3", "train.global_batch_size=4", "train.micro_batch_size=2",
              "logging.interval=1", f"data.cache_dir={tmp_path}/cache"]
    run_layouts(tmp_path, common, {"single": []}, nproc=1)
    run_layouts(tmp_path, common, {"tp2_sp_chunked": ["parallel.tp=2", "parallel.sp=true", "train.loss_impl=chunked",
                                                      "train.loss_chunk_size=100"]}, nproc=2)
    reference, losses = train_losses(tmp_path / "single"), train_losses(tmp_path / "tp2_sp_chunked")
    assert sorted(losses) == sorted(reference) == [1, 2, 3]
    assert max(relative_diff(losses[s], reference[s]) for s in reference) < 1e-4, (losses, reference)


def test_peak_memory_at_vocab_256000_shrinks_by_the_predicted_factor():
    """Small shapes for speed (256 tokens, hidden 32, chunks of 32); the full-size figure is in
    docs/performance.md from the same script."""
    out = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "chunked_loss_memory.py"), "--tokens", "256", "--hidden", "32",
         "--chunk-tokens", "32", "--json"],
        capture_output=True, text=True, timeout=300, check=True,
    )
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["vocab"] == 256_000
    assert r["predicted_ratio"] == pytest.approx((256 + 32) / (32 + 32), rel=0.01)  # (n + h) / (c + h), V >> n
    assert r["measured_ratio"] >= 0.5 * r["predicted_ratio"], r
