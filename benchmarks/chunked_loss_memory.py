"""Peak memory of the loss step (output layer + cross entropy, forward and backward, from the
final hidden states to their gradient and the output weight's) on CPU: plain (megatron's
vocab_parallel_cross_entropy over the full logits, as GPTModel computes it) against
train.loss_impl=chunked (model/chunked_loss.py).

Prediction from shapes, before measuring (n tokens, V vocabulary, h hidden, c chunk tokens, p
bytes of the model dtype, e bytes held per logit element):
    plain    e·n·V + p·V·h + p·n·h      all logits (kept as the softmax, reused for the
                                        gradient) + the weight's and the hidden states' grads
    chunked  e·c·V + p·V·h + p·n·h      one chunk of logits + the same two gradients
with e = 4 in fp32 (the fp32 logits, modified in place) and e = 6 in bf16 (the bf16 matmul
output next to its fp32 copy in the forward; the fp32 gradient next to its bf16 cast in the
backward). Predicted ratio: plain / chunked; about (n + h·p/e) / (c + h·p/e) when V >> n.

Measured as the process's peak resident memory (VmHWM, reset through /proc/self/clear_refs)
above the resident memory before the step, each path in a fresh process so that one path's
freed memory cannot lower the other's figure (and with glibc's mmap threshold fixed, see
_ENV). Linux only.

    python benchmarks/chunked_loss_memory.py --tokens 1024 --hidden 256 --chunk-tokens 128 [--dtype bf16]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

VOCAB = 256_000
# glibc serves allocations under its mmap threshold (which grows up to 32 MiB as large blocks
# are freed) from the heap and may keep them resident after they are freed; a fixed threshold
# maps every large tensor on its own, so resident memory follows the live tensors.
_ENV = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}


def predicted_bytes(impl: str, n: int, v: int, h: int, c: int, dtype: str) -> int:
    p, e = (4, 4) if dtype == "fp32" else (2, 6)
    rows = n if impl == "plain" else min(c, n)
    return e * rows * v + p * v * h + p * n * h


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _measure(impl: str, n: int, v: int, h: int, c: int, dtype: str) -> int:
    """Peak bytes above the resident set before one forward + backward of the loss step."""
    from alia_train.config import load_config
    from alia_train.parallel.launch_env import detect_launch_env
    from alia_train.training.startup import process_groups

    with process_groups(load_config(["+model=tiny"]), detect_launch_env({})):
        return _measure_in_group(impl, n, v, h, c, dtype)


def _measure_in_group(impl: str, n: int, v: int, h: int, c: int, dtype: str) -> int:
    import torch
    import torch.distributed as dist
    from megatron.core.tensor_parallel import vocab_parallel_cross_entropy

    from alia_train.model.chunked_loss import chunked_linear_cross_entropy

    torch.set_num_threads(1)
    tdtype = torch.float32 if dtype == "fp32" else torch.bfloat16

    def loss_of(hidden, weight, labels):
        if impl == "chunked":
            return chunked_linear_cross_entropy(hidden, weight, labels, c)
        logits = hidden @ weight.t()  # [n, V]: GPTModel's output layer without TP
        return vocab_parallel_cross_entropy(logits, labels, tp_group=dist.group.WORLD)

    def inputs(rows: int, vocab: int):
        hidden = torch.randn(rows, h, dtype=tdtype, requires_grad=True)
        weight = torch.randn(vocab, h, dtype=tdtype, requires_grad=True)
        return hidden, weight, torch.randint(0, vocab, (rows,))

    # Load lazily initialised kernels and buffers outside the measurement.
    loss_of(*inputs(8, 1000)).sum().backward()
    hidden, weight, labels = inputs(n, v)
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current VmRSS
    before = _status_kb("VmRSS")
    loss_of(hidden, weight, labels).sum().backward()
    peak = _status_kb("VmHWM")
    return (peak - before) * 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=1024)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--chunk-tokens", type=int, default=128)
    ap.add_argument("--vocab", type=int, default=VOCAB)
    ap.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--json", action="store_true", help="one JSON line on stdout")
    ap.add_argument("--only", choices=["plain", "chunked"], help=argparse.SUPPRESS)  # the child process
    a = ap.parse_args()
    shape = (a.tokens, a.vocab, a.hidden, a.chunk_tokens, a.dtype)
    if a.only:
        print(_measure(a.only, *shape))
        return
    measured = {}
    for impl in ("plain", "chunked"):
        out = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--only", impl],
                             capture_output=True, text=True, check=True, env=_ENV)
        measured[impl] = int(out.stdout.strip().splitlines()[-1])
    predicted = {impl: predicted_bytes(impl, *shape) for impl in measured}
    result = {
        "tokens": a.tokens, "vocab": a.vocab, "hidden": a.hidden, "chunk_tokens": a.chunk_tokens,
        "dtype": a.dtype,
        "predicted_bytes": predicted, "measured_bytes": measured,
        "predicted_ratio": predicted["plain"] / predicted["chunked"],
        "measured_ratio": measured["plain"] / max(measured["chunked"], 1),
    }
    if a.json:
        print(json.dumps(result))
        return
    for impl in measured:
        print(f"{impl:8s} predicted {predicted[impl] / 2**20:9.1f} MiB  measured {measured[impl] / 2**20:9.1f} MiB")
    print(f"ratio    predicted {result['predicted_ratio']:.2f}x  measured {result['measured_ratio']:.2f}x")


if __name__ == "__main__":
    main()
