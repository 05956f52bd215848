"""Training throughput of alia-train on one device, side by side with Hugging Face transformers.

    python benchmarks/train_throughput.py +model=salamandra_2b train.seq_length=4096 \
        train.micro_batch_size=1 train.global_batch_size=8 --steps 10 --warmup 3

Runs the given alia-train config for `--warmup` + `--steps` optimizer steps (one process,
parallel.tp=pp=1) and reports tokens/s, TFLOP/s per GPU, MFU (FLOPs per token from
alia_train.model.flops: 6*N_nonembed + 6*L*s*h + 6*h*V; PaLM's MFU counts 12*L*s*h for the
attention instead) and peak memory. In the same call it
trains the same shape as `transformers.LlamaForCausalLM` (sdpa attention, bf16 weights, fused
AdamW) on the same token batches (the micro-batches alia-train's data pipeline yields for those
steps, with the same labels and loss mask) and reports the ratio. The two runs share the process, so
machine noise hits both. Results go to stdout and, with --json PATH, to a file.

The released models' vocabulary (256,000) has no tokenizer in the repository: `--random-tokens`
trains on random token batches over `model.vocab_size` instead of the data pipeline (same shapes,
same FLOPs; the baseline trains on the same batches). Without it the config's vocabulary must be
the tokenizer's. scripts/gpu_check.sh runs it that way for salamandra_2b.

The baseline is built directly on the device in the run's precision (bf16 on a GPU), not in fp32
on the CPU and then moved. With --json, alia-train's figures are written as soon as they are
measured, before the baseline starts; where transformers is not installed the baseline is left
out, saying so, and the figures stand.

On a CPU machine it runs too (the run's precision, fp32 by default: scripts/gpu_check.sh
--rehearse), but the numbers mean nothing there.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass


def _sync(cuda: bool) -> None:
    import torch

    if cuda:
        torch.cuda.synchronize()


def _time_steps(one_step, steps: int, warmup: int, cuda: bool) -> tuple[float, list]:
    """Seconds for `steps` calls of one_step after `warmup` untimed ones (peak memory reset
    after warm-up), and what the timed calls returned."""
    import torch

    for _ in range(warmup):
        one_step()
    _sync(cuda)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    outputs = [one_step() for _ in range(steps)]
    _sync(cuda)
    return time.perf_counter() - start, outputs


@dataclass
class RandomTokens:
    """Stands in for a tokenizer with `--random-tokens`: the model's own vocabulary (256,000 for
    the released models), for which no SentencePiece model ships with the repository."""

    vocab_size: int
    path: str = "random-tokens"
    sha256: str = "-"


def random_batches(count: int, micro_batch_size: int, seq_length: int, vocab: int) -> list[dict]:
    import torch

    gen = torch.Generator().manual_seed(1234)
    batches = []
    for _ in range(count):
        tokens = torch.randint(0, vocab, (micro_batch_size, seq_length + 1), generator=gen)
        batches.append({
            "tokens": tokens[:, :-1].contiguous(),
            "labels": tokens[:, 1:].contiguous(),
            "loss_mask": torch.ones(micro_batch_size, seq_length),
            "position_ids": torch.arange(seq_length).expand(micro_batch_size, seq_length).contiguous(),
            "lang_id": torch.zeros(micro_batch_size, dtype=torch.long),
        })
    return batches


def _alia_steps(trainer, steps: int, warmup: int, random_tokens: bool, cuda: bool):
    """(the micro-batches the steps consume, seconds of the timed steps, their results, peak
    GPU memory in GB or None)."""
    import torch

    tr = trainer.cfg.train
    n_batches = (steps + warmup) * trainer.shape.num_microbatches
    if random_tokens:
        batches = random_batches(n_batches, tr.micro_batch_size, tr.seq_length, trainer.tokenizer.vocab_size)
        its = [iter(batches) for _ in trainer.model]
    else:
        its = trainer.batches(0)
        # The same samples again, from the start: one step takes num_microbatches of them.
        batches = [{k: b[k] for k in ("tokens", "labels", "loss_mask")}
                   for b in itertools.islice(trainer.batches(0)[0], n_batches)]
    elapsed, results = _time_steps(lambda: trainer.step(its), steps, warmup, cuda)
    peak_gb = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
    return batches, elapsed, results, peak_gb


def bench_alia(overrides: list[str], steps: int, warmup: int, random_tokens: bool = False) -> tuple[dict, list[dict]]:
    """alia-train's figures, and the micro-batches its timed and warm-up steps consumed (in
    order, on the CPU) for the baseline to train on. The run starts as alia-train starts one
    (checks, lock, launch record)."""
    import torch

    from alia_train.config import load_config
    from alia_train.model.build import uses_te
    from alia_train.model.flops import mfu, training_flops_per_token
    from alia_train.model.flops import palm_flops_per_token as palm_flops_per_token_of
    from alia_train.parallel.launch_env import detect_launch_env
    from alia_train.training.errors import RunError
    from alia_train.training.run import RunOptions, open_run

    cfg = load_config(overrides)
    cfg.train.steps = steps + warmup
    cfg.checkpoint.save_on_signal = False
    tr = cfg.train
    stand_in = None
    if random_tokens:
        if cfg.model.vocab_size is None:
            sys.exit("train_throughput: --random-tokens needs model.vocab_size")
        stand_in = RandomTokens(cfg.model.vocab_size)
    options = RunOptions(trackers=False, with_data=not random_tokens, tokenizer=stand_in)
    try:
        with open_run(cfg, detect_launch_env(), options) as trainer:
            cuda, dtype = trainer.rt.cuda, trainer.rt.dtype  # train.device and precision, resolved
            batches, elapsed, results, peak_gb = _alia_steps(trainer, steps, warmup, random_tokens, cuda)
    except RunError as e:
        hint = "; or pass --random-tokens to train the model's own vocabulary" if str(e).startswith("model.vocab_size") else ""
        sys.exit(f"train_throughput: {e}{hint}")
    vocab = trainer.tokenizer.vocab_size
    losses = [r.loss for r in results]
    tokens_per_sec = steps * tr.global_batch_size * tr.seq_length / elapsed
    flops_per_token = training_flops_per_token(cfg.model, tr.seq_length, vocab)
    palm_flops_per_token = palm_flops_per_token_of(cfg.model, tr.seq_length, vocab)
    result = {
        "system": "alia-train",
        "layer_impl": "te" if uses_te(cfg, cuda) else "local+sdpa",
        "device": "cuda" if cuda else "cpu",
        "dtype": str(dtype).removeprefix("torch."),
        "tokens_per_sec": tokens_per_sec,
        "tflops_per_gpu": tokens_per_sec * flops_per_token / 1e12,
        "mfu": mfu(tokens_per_sec, flops_per_token, cfg.cluster.peak_tflops),
        "mfu_palm": mfu(tokens_per_sec, palm_flops_per_token, cfg.cluster.peak_tflops),
        "peak_mem_gb": peak_gb,
        "last_loss": losses[-1],
        "flops_per_token": flops_per_token,
        "palm_flops_per_token": palm_flops_per_token,
        "shape": {"layers": cfg.model.num_layers, "hidden": cfg.model.hidden_size, "seq": tr.seq_length,
                  "micro_batch": tr.micro_batch_size, "global_batch": tr.global_batch_size, "vocab": vocab},
    }
    del trainer
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    return result, batches


def bench_hf(shape: dict, model_overrides: list[str], batches: list[dict], steps: int, warmup: int,
             flops_per_token: float, peak_tflops: float, palm_flops_per_token: float,
             device: str, dtype_name: str) -> dict:
    """The same shape as transformers' LlamaForCausalLM on `device` in `dtype_name` (alia-train's
    run: its device and precision), trained on the same micro-batches."""
    import torch
    import torch.nn.functional as F
    from transformers import LlamaConfig, LlamaForCausalLM

    from alia_train.config import load_config

    m = load_config(model_overrides).model
    cuda = device == "cuda"
    dtype = getattr(torch, dtype_name)
    config = LlamaConfig(
        vocab_size=shape["vocab"], hidden_size=m.hidden_size, intermediate_size=m.ffn_hidden_size,
        num_hidden_layers=shape["layers"], num_attention_heads=m.num_attention_heads,
        num_key_value_heads=m.num_query_groups, max_position_embeddings=max(shape["seq"], m.max_position_embeddings),
        rms_norm_eps=m.norm_eps, rope_theta=m.rope_theta, tie_word_embeddings=False,
        attention_bias=False, mlp_bias=False, torch_dtype=dtype,
    )
    config._attn_implementation = "sdpa"
    # Built where it runs, in its precision: initialising 2B parameters in fp32 on the CPU and
    # moving them takes minutes of a GPU call's budget.
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(default_dtype)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1,
                            fused=cuda)
    n_micro = shape["global_batch"] // shape["micro_batch"]
    assert len(batches) == (steps + warmup) * n_micro
    feed = iter(batches)

    def one_step():
        # alia-train's loss: token-weighted mean over the step's masked tokens (labels are
        # already shifted, so the logits are compared as they are).
        step = [next(feed) for _ in range(n_micro)]
        step_tokens = sum(float(b["loss_mask"].sum()) for b in step)
        total = torch.zeros((), device=device)
        for b in step:
            tokens, labels = b["tokens"].to(device), b["labels"].to(device)
            mask = b["loss_mask"].to(device).float()
            logits = model(input_ids=tokens).logits
            losses = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), reduction="none")
            loss = (losses * mask.flatten()).sum() / step_tokens
            loss.backward()
            total += loss.detach()  # no host sync inside the timed loop
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return total

    elapsed, losses = _time_steps(one_step, steps, warmup, cuda)
    losses = [float(x) for x in losses]
    tokens_per_sec = steps * shape["global_batch"] * shape["seq"] / elapsed
    return {
        "system": "transformers LlamaForCausalLM (sdpa, fused AdamW)",
        "last_loss": losses[-1],
        "tokens_per_sec": tokens_per_sec,
        "tflops_per_gpu": tokens_per_sec * flops_per_token / 1e12,
        "mfu": tokens_per_sec * flops_per_token / (peak_tflops * 1e12),
        "mfu_palm": tokens_per_sec * palm_flops_per_token / (peak_tflops * 1e12),
        "peak_mem_gb": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--random-tokens", action="store_true",
                        help="random token batches over model.vocab_size instead of the data pipeline")
    parser.add_argument("--json", default=None)
    args, overrides = parser.parse_known_args()
    import torch

    with tempfile.TemporaryDirectory(prefix="alia-train-bench-") as tmp:
        # A run directory of its own unless one is given: a benchmark never touches a real run.
        run_dir = [] if any(o.startswith("run.dir=") for o in overrides) else [f"run.dir={tmp}"]
        alia, batches = bench_alia([*overrides, *run_dir], args.steps, args.warmup, args.random_tokens)
    device = torch.cuda.get_device_name() if alia["device"] == "cuda" else "cpu"
    rows = [alia]
    report = {"device": device, "overrides": overrides, "results": rows}
    _write(args.json, report)  # alia-train's figures are kept whatever the baseline does
    if not args.no_baseline:
        hf = _baseline(alia, overrides, batches, args)
        if isinstance(hf, str):
            report["baseline_left_out"] = hf
            print(f"baseline left out: {hf}")
        else:
            rows.append(hf)
            _write(args.json, report)
    print(f"device: {device}; shape: {alia['shape']}; {args.steps} timed steps after {args.warmup} warm-up")
    print(f"{'system':52s} {'tokens/s':>10s} {'TFLOP/s':>8s} {'MFU':>6s} {'PaLM MFU':>9s} {'peak GB':>8s}")
    for r in rows:
        mem = f"{r['peak_mem_gb']:.1f}" if r["peak_mem_gb"] is not None else "-"
        print(f"{r['system'][:52]:52s} {r['tokens_per_sec']:10,.0f} {r['tflops_per_gpu']:8.1f} {100 * r['mfu']:5.1f}%"
              f" {100 * r['mfu_palm']:8.1f}% {mem:>8s}")
    if len(rows) == 2:
        print(f"alia-train / transformers tokens/s ratio: {rows[0]['tokens_per_sec'] / rows[1]['tokens_per_sec']:.2f}")
    return 0


def _baseline(alia: dict, overrides: list[str], batches: list[dict], args) -> dict | str:
    """transformers' figures on the same batches, or why there are none."""
    try:
        import transformers  # noqa: F401
    except ImportError as e:
        return f"transformers cannot be imported ({e}); pip install 'alia-train[hf]'"
    from alia_train.config import load_config

    cluster = load_config(overrides).cluster
    model_overrides = [o for o in overrides if o.startswith(("+model=", "model."))]
    return bench_hf(alia["shape"], model_overrides, batches, args.steps, args.warmup, alia["flops_per_token"],
                    cluster.peak_tflops, alia["palm_flops_per_token"], alia["device"], alia["dtype"])


def _write(path: str | None, report: dict) -> None:
    if path:
        tmp = f"{path}.tmp"
        with open(tmp, "w") as f:
            json.dump(report, f, indent=1)
        os.replace(tmp, path)


if __name__ == "__main__":
    sys.exit(main())
