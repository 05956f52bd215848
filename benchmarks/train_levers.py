"""The speed levers of the no-Transformer-Engine path on the salamandra_2b recipe, one GPU, one call.

    python benchmarks/train_levers.py --out DIR [--budget-s 420] [--rehearse] [--print-shape]

Runs benchmarks/train_throughput.py once per variant, each in its own process (fresh GPU
memory; inductor's on-disk cache hands the compiled layer from one run to the next), the most
informative first, so that a budget cut drops the least:

  1. seq 4096, every lever on, and transformers' LlamaForCausalLM on the same batches;
  2. seq 4096, each lever off in turn: its marginal effect is tokens/s with it on / off;
  3. seq 8192, every lever on, and the baseline.

The levers are config keys (LEVERS_ON): train.compile, train.fused_swiglu, optim.fused_adam,
train.loss_impl=chunked and train.recompute=none. One GPU has no data parallelism: the recipe's
distributed optimizer and data-parallel overlap (parallel.*) are off, as they would do nothing
but add buffers; they need several GPUs and are not measured here.

Every variant's config is validated as alia-train validates it before any run starts (a refused
combination fails here, not after minutes of GPU time). No run is started that could overrun
--budget-s (each is killed after --run-timeout-s); the ones left out are listed. DIR/levers.json
is rewritten after every run, so what was measured survives a kill. Prints one table with both
MFU conventions (ours, causal attention halved as Megatron-LM counts it, and PaLM's) and writes
DIR/levers.log (every run's output) and DIR/levers.md (the rows for docs/performance.md).

--rehearse: the same runs on the CPU, the model shrunk in width and depth and the sequences
shortened (REHEARSAL_SHAPE), fewer steps: scripts/gpu_check.sh --rehearse, which CI runs.
--print-shape: the overrides of the first run, one per line (scripts/gpu_check.sh plans them).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHAPE = ["+model=salamandra_2b", "train.micro_batch_size=1", "train.global_batch_size=8", "model.layer_impl=local",
         "parallel.distributed_optimizer=false", "parallel.overlap_grad_reduce=false",
         "parallel.overlap_param_gather=false"]
SEQS = (4096, 8192)
# The same recipe on the CPU: width and depth shrunk (head dim 128 as in the 2B), a smaller
# vocabulary and shorter sequences, so that all seven runs take a few minutes. torch.compile
# traces the same graphs but runs them on eager kernels: inductor would generate C++ here, not
# the GPU's Triton, at a minute of CPU per run (tests/model/test_compile.py covers it).
REHEARSAL_SHAPE = [*SHAPE, "model.num_layers=2", "model.hidden_size=256", "model.ffn_hidden_size=680",
                   "model.num_attention_heads=2", "model.num_query_groups=2", "model.vocab_size=8192",
                   "train.compile_backend=aot_eager"]
REHEARSAL_SEQS = (256, 512)
LEVERS_ON = ["train.compile=true", "train.fused_swiglu=true", "optim.fused_adam=true",
             "train.loss_impl=chunked", "train.recompute=none"]
# (lever, the override that turns it off)
LEVERS_OFF = [
    ("torch.compile of the layers", "train.compile=false"),
    ("fused SwiGLU", "train.fused_swiglu=false"),
    ("fused AdamW", "optim.fused_adam=false"),
    ("chunked cross entropy", "train.loss_impl=plain"),
    ("no recompute", "train.recompute=selective"),
]


def variants(seqs: tuple[int, int]) -> list[dict]:
    """Every run, most informative first."""
    first, second = seqs
    runs = [{"name": f"all levers on, seq {first}", "seq": first, "off": None, "baseline": True}]
    runs += [{"name": f"without {lever}, seq {first}", "seq": first, "off": (lever, override),
              "baseline": False} for lever, override in LEVERS_OFF]
    runs.append({"name": f"all levers on, seq {second}", "seq": second, "off": None, "baseline": True})
    return runs


def overrides_of(run: dict, shape: list[str]) -> list[str]:
    off_key = run["off"][1].split("=")[0] if run["off"] else None
    levers = [o for o in LEVERS_ON if o.split("=")[0] != off_key]
    off = [run["off"][1]] if run["off"] else []
    return [*shape, f"train.seq_length={run['seq']}", *levers, *off]


def check_overrides(runs: list[dict], shape: list[str]) -> None:
    """Every variant loads and passes alia-train's validation for one GPU (with TE absent, as
    model.layer_impl=local runs): a refused combination stops the call before any run."""
    from alia_train.config import load_config
    from alia_train.config.validate import config_problems

    for run in runs:
        problems = config_problems(load_config(overrides_of(run, shape)), 1, cuda=True, te_available=False)
        if problems:
            sys.exit(f"train_levers: the run '{run['name']}' would be refused: " + "; ".join(problems))


def run_one(run: dict, args, shape: list[str], log, tmp: Path) -> dict | None:
    out = tmp / "result.json"
    out.unlink(missing_ok=True)
    cmd = [sys.executable, str(HERE / "train_throughput.py"), *overrides_of(run, shape),
           "--random-tokens", "--steps", str(args.steps), "--warmup", str(args.warmup), "--json", str(out)]
    if not run["baseline"]:
        cmd.append("--no-baseline")
    log.write(f"\n== {run['name']}\n$ {' '.join(cmd)}\n")
    log.flush()
    try:
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, timeout=args.run_timeout_s)
        failed = None if proc.returncode == 0 else f"exit {proc.returncode}"
    except subprocess.TimeoutExpired:
        failed = f"killed after {args.run_timeout_s:.0f} s"
    if failed:
        log.write(f"== {failed}\n")
    # What the run measured before it failed or was killed is kept (alia-train's figures are
    # written before the baseline starts).
    return {**json.loads(out.read_text()), "failed": failed} if out.exists() else None


def expected_seconds(took: list[float], timeout: float) -> float:
    """How long the next run may take. The first run pays the cold compile and the baseline, so
    the runs after it are the guide once there are any; until then, half the first."""
    if not took:
        return timeout
    return min(timeout, 1.2 * max(took[1:]) if len(took) > 1 else 0.5 * took[0])


def run_all(runs: list[dict], args, shape: list[str], out_dir: Path) -> tuple[list[dict], list[str]]:
    """(the runs that finished, with their results; the names of those left out). levers.json
    is rewritten after each run."""
    done, left_out, took = [], [], []
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="alia-levers-") as tmp, open(out_dir / "levers.log", "w") as log:
        for run in runs:
            if time.monotonic() - start + expected_seconds(took, args.run_timeout_s) > args.budget_s:
                left_out.append(f"{run['name']} (budget)")
                continue
            began = time.monotonic()
            result = run_one(run, args, shape, log, Path(tmp))
            took.append(time.monotonic() - began)
            if result is not None:
                done.append({**run, "device": result["device"], "results": result["results"],
                             "seconds": round(took[-1], 1)})
            if result is None or result["failed"]:
                left_out.append(f"{run['name']} ({result['failed'] if result else 'failed'}, see levers.log)")
            print(f"{'done' if result else 'FAILED'}: {run['name']} ({took[-1]:.0f} s; "
                  f"{time.monotonic() - start:.0f} s in all)", flush=True)
            write_json(out_dir, done, left_out)
    return done, left_out


def write_json(out_dir: Path, done: list[dict], left_out: list[str]) -> None:
    tmp = out_dir / "levers.json.tmp"
    tmp.write_text(json.dumps({"runs": done, "left_out": left_out}, indent=1))
    tmp.replace(out_dir / "levers.json")


def _row(name: str, r: dict) -> str:
    mem = f"{r['peak_mem_gb']:.1f}" if r.get("peak_mem_gb") is not None else "-"
    return (f"{name[:46]:46s} {r['tokens_per_sec']:10,.0f} {r['tflops_per_gpu']:8.1f} {100 * r['mfu']:6.1f}%"
            f" {100 * r['mfu_palm']:8.1f}% {mem:>8s}")


def summary(done: list[dict]) -> tuple[list[str], list[str]]:
    """(console lines, markdown lines for docs/performance.md)."""
    lines = [f"{'run':46s} {'tokens/s':>10s} {'TFLOP/s':>8s} {'MFU':>7s} {'PaLM MFU':>9s} {'peak GB':>8s}"]
    md = ["| seq | tokens/s | TFLOP/s | MFU | MFU (PaLM) | peak GB | transformers tokens/s | ratio | device |",
          "|---|---|---|---|---|---|---|---|---|"]
    all_on = {d["seq"]: d["results"][0] for d in done if d["off"] is None}
    for d in done:
        alia = d["results"][0]
        lines.append(_row(d["name"], alia))
        if d["off"] is not None and d["seq"] in all_on:
            gain = all_on[d["seq"]]["tokens_per_sec"] / alia["tokens_per_sec"] - 1
            lines.append(f"  -> {d['off'][0]}: {100 * gain:+.1f}% tokens/s with it on")
        if len(d["results"]) > 1:
            hf = d["results"][1]
            ratio = alia["tokens_per_sec"] / hf["tokens_per_sec"]
            lines.append(_row("  transformers LlamaForCausalLM", hf))
            lines.append(f"  -> alia-train / transformers tokens/s: {ratio:.2f}")
            md.append(f"| {d['seq']} | {alia['tokens_per_sec']:,.0f} | {alia['tflops_per_gpu']:.0f} | "
                      f"{100 * alia['mfu']:.1f}% | {100 * alia['mfu_palm']:.1f}% | {alia['peak_mem_gb'] or 0:.1f} | "
                      f"{hf['tokens_per_sec']:,.0f} | {ratio:.2f} | {d['device']} |")
    if done:
        lines.append(f"median seconds per run: {statistics.median(d['seconds'] for d in done):.0f}")
    return lines, md


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="levers_out")
    parser.add_argument("--budget-s", type=float, default=420)
    parser.add_argument("--run-timeout-s", type=float, default=200)
    parser.add_argument("--steps", type=int, default=None, help="timed steps per run (default 5; 2 with --rehearse)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 2; 1 with --rehearse)")
    parser.add_argument("--rehearse", action="store_true", help="the same runs on the CPU, shrunk")
    parser.add_argument("--print-shape", action="store_true", help="print the first run's overrides and exit")
    args = parser.parse_args()
    shape, seqs = (REHEARSAL_SHAPE, REHEARSAL_SEQS) if args.rehearse else (SHAPE, SEQS)
    runs = variants(seqs)
    if args.print_shape:
        print("\n".join(overrides_of(runs[0], shape)))
        return 0
    args.steps = args.steps or (2 if args.rehearse else 5)
    args.warmup = args.warmup or (1 if args.rehearse else 2)
    check_overrides(runs, shape)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    done, left_out = run_all(runs, args, shape, out_dir)
    lines, md = summary(done)
    print("\n".join(lines))
    if left_out:
        print("left out: " + "; ".join(left_out))
    (out_dir / "levers.md").write_text("\n".join(md) + "\n")
    return 0 if done and not any("budget" not in x for x in left_out) else 1


if __name__ == "__main__":
    sys.exit(main())
