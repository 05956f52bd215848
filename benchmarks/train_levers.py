"""The speed levers of the no-Transformer-Engine path on salamandra_2b, one GPU, one call.

    python benchmarks/train_levers.py --out DIR [--budget-s 420] [--dry-run]

Runs benchmarks/train_throughput.py once per variant, each in its own process (fresh GPU
memory; inductor's on-disk cache hands the compiled layer from one run to the next), in this
order of priority:

  1. seq 4096, every lever on, and transformers' LlamaForCausalLM on the same batches;
  2. seq 8192, the same;
  3. seq 4096, each lever off in turn: its marginal effect is tokens/s with it on / off.

The levers are config keys (LEVERS_ON): train.compile, train.fused_swiglu, optim.fused_adam,
train.loss_impl=chunked and train.recompute=none. Data-parallel overlap (parallel.overlap_*)
needs two GPUs or more and is not measured here.

No run is started that could overrun --budget-s (each is killed after --run-timeout-s); the
ones left out are listed. Prints one table with both MFU conventions (ours, causal attention
halved as Megatron-LM counts it, and PaLM's) and writes DIR/levers.log (every run's output),
DIR/levers.json and DIR/levers.md (the rows for docs/performance.md).

--dry-run: a tiny model on the CPU, one step, compile off (tests/model/test_compile.py covers
it on CPU): every variant's overrides are loaded and the first variant runs end to end through
this script and train_throughput.py, so the GPU call cannot fail on a typo here.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHAPE = ["+model=salamandra_2b", "train.micro_batch_size=1", "train.global_batch_size=8",
         "parallel.distributed_optimizer=false", "model.layer_impl=local"]
DRY_SHAPE = ["+model=tiny", "model.num_layers=2", "model.vocab_size=4096", "train.micro_batch_size=1",
             "train.global_batch_size=2", "parallel.distributed_optimizer=false", "train.device=cpu"]
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
    """Every run, most important first."""
    runs = [{"name": f"all levers on, seq {s}", "seq": s, "off": None, "baseline": True} for s in seqs]
    runs += [{"name": f"without {lever}, seq {seqs[0]}", "seq": seqs[0], "off": (lever, override),
              "baseline": False} for lever, override in LEVERS_OFF]
    return runs


def overrides_of(run: dict, shape: list[str], dry_run: bool) -> list[str]:
    levers = [o for o in LEVERS_ON if run["off"] is None or o.split("=")[0] != run["off"][1].split("=")[0]]
    off = [run["off"][1]] if run["off"] else []
    # On CPU the compile costs minutes: the dry run checks the plumbing, not inductor.
    dry = ["train.compile=false"] if dry_run else []
    return [*shape, f"train.seq_length={run['seq']}", *levers, *off, *dry]


def check_overrides(runs: list[dict], shape: list[str], dry_run: bool) -> None:
    """Load every variant's config first: a bad key fails here, before any GPU time is spent."""
    from alia_train.config import load_config

    for run in runs:
        load_config(overrides_of(run, shape, dry_run))


def run_one(run: dict, args, shape: list[str], log, tmp: Path) -> dict | None:
    out = tmp / "result.json"
    out.unlink(missing_ok=True)
    cmd = [sys.executable, str(HERE / "train_throughput.py"), *overrides_of(run, shape, args.dry_run),
           "--random-tokens", "--steps", str(args.steps), "--warmup", str(args.warmup), "--json", str(out)]
    if not run["baseline"]:
        cmd.append("--no-baseline")
    log.write(f"\n== {run['name']}\n$ {' '.join(cmd)}\n")
    log.flush()
    try:
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, timeout=args.run_timeout_s)
    except subprocess.TimeoutExpired:
        log.write(f"== killed after {args.run_timeout_s} s\n")
        return None
    if proc.returncode != 0 or not out.exists():
        log.write(f"== exit {proc.returncode}\n")
        return None
    return json.loads(out.read_text())


def run_all(runs: list[dict], args, shape: list[str], out_dir: Path) -> tuple[list[dict], list[str]]:
    """(the runs that finished, with their results; the names of those left out)."""
    done, left_out, took = [], [], []
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="alia-levers-") as tmp, open(out_dir / "levers.log", "w") as log:
        for run in runs:
            # Expect the next run to take as long as the longest so far (the first: its timeout).
            expected = min(args.run_timeout_s, 1.2 * max(took)) if took else args.run_timeout_s
            if time.monotonic() - start + expected > args.budget_s:
                left_out.append(f"{run['name']} (budget)")
                continue
            began = time.monotonic()
            result = run_one(run, args, shape, log, Path(tmp))
            took.append(time.monotonic() - began)
            if result is None:
                left_out.append(f"{run['name']} (failed, see levers.log)")
                continue
            done.append({**run, "device": result["device"], "results": result["results"]})
            print(f"done: {run['name']} ({time.monotonic() - start:.0f} s)", flush=True)
    return done, left_out


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
    return lines, md


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="levers_out")
    parser.add_argument("--budget-s", type=float, default=420)
    parser.add_argument("--run-timeout-s", type=float, default=240)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args()
    shape = DRY_SHAPE if args.dry_run else SHAPE
    runs = variants((32, 64) if args.dry_run else (4096, 8192))
    check_overrides(runs, shape, args.dry_run)
    if args.dry_run:
        args.steps, args.warmup, runs = 1, 1, runs[:1]
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    done, left_out = run_all(runs, args, shape, out_dir)
    lines, md = summary(done)
    print("\n".join(lines))
    if left_out:
        print("left out: " + "; ".join(left_out))
    (out_dir / "levers.json").write_text(json.dumps({"runs": done, "left_out": left_out}, indent=1))
    (out_dir / "levers.md").write_text("\n".join(md) + "\n")
    return 0 if done and not any("failed" in x for x in left_out) else 1


if __name__ == "__main__":
    sys.exit(main())
