"""The memory planner's CPU estimate against the peak resident memory of real CPU runs.

    python benchmarks/plan_memory_vs_rss.py [--steps 2] [--only NAME ...] [--json PATH]

Runs `alia-train` (the console script, as a user would) on the three recipes shrunk in width and
depth, one CPU process each: salamandra_2b (MHA, seq 4096, fp32), salamandra_7b (GQA 4:1, micro
batch 2, fp32) and alia_40b (GQA 8:1, seq 4096, bf16 with the recipe's bf16 gradient reduce),
each keeping its recipe's FFN ratio, optimizer, distributed optimizer and recompute setting, on
the shipped sample corpus and tokenizer. A fourth run, the tiny model, is the fixed per-process overhead the
planner adds (memory.CPU_PROCESS_OVERHEAD_GIB).

Measured from outside the process: the kernel's high-water mark of its resident memory,
/proc/PID/status VmHWM when the last step's line is printed (training), and os.wait4's
ru_maxrss when it has exited (the whole run, its final checkpoint save included). The estimate
is what alia-train's launch check compares with the machine's memory: the planner's peak per
process for a CPU run (plan.levers.peak_memory), with the tokenizer's vocabulary; without its
checkpoint-save term it is the training steps' estimate.

Prints one row per run: for the training steps and for the whole run, the estimate, the measured
peak and estimate / measured. Linux only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

GIB = 2**30
ALIA_TRAIN = Path(sys.executable).parent / "alia-train"
# The 2B's width (2048) at depth 2: tensors of real size (activations of 32-128 MB, which
# glibc maps and unmaps one by one, as in the full models, where smaller ones would fragment
# its heap), ~0.12 B parameters so that their state and activations (5-6 GB in all) outweigh
# the process's fixed ~1.2 GB, and two steps in a few minutes on two cores.
SHRUNK = ["model.num_layers=2", "model.hidden_size=2048", "model.num_attention_heads=16", "model.vocab_size=null"]
RUNS: dict[str, list[str]] = {
    "salamandra_2b": ["+model=salamandra_2b", *SHRUNK, "model.ffn_hidden_size=5440", "model.num_query_groups=16",
                      "train.seq_length=4096", "train.global_batch_size=1"],
    "salamandra_7b": ["+model=salamandra_7b", *SHRUNK, "model.ffn_hidden_size=5504", "model.num_query_groups=4",
                      "parallel.tp=1", "parallel.sp=false", "train.seq_length=2048", "train.global_batch_size=2"],
    "alia_40b": ["+model=alia_40b", *SHRUNK, "model.ffn_hidden_size=6144", "model.num_query_groups=2",
                 "parallel.tp=1", "parallel.pp=1", "parallel.sp=false", "train.precision=bf16",
                 "train.seq_length=4096", "train.global_batch_size=1"],
}
OVERHEAD_RUN = ["+model=tiny"]


@dataclass
class Row:
    name: str
    estimate_gib: float  # the launch check's figure: the whole run, a checkpoint save included
    estimate_training_gib: float  # the same without the save: the training steps' peak
    training_peak_gib: float  # VmHWM at the last step's log line
    run_peak_gib: float  # ru_maxrss at exit (the final checkpoint save included)
    seconds: float

    @property
    def ratio_training(self) -> float:
        return self.estimate_training_gib / self.training_peak_gib

    @property
    def ratio_run(self) -> float:
        return self.estimate_gib / self.run_peak_gib


def estimate_bytes(overrides: list[str]) -> tuple[float, float]:
    """The launch check's figure, the planner's peak per CPU process for this config, and the
    same without the checkpoint save (the training steps alone)."""
    from dataclasses import replace

    from alia_train.config.load import load_config
    from alia_train.data.tokenizer import load_tokenizer
    from alia_train.plan.levers import peak_memory
    from alia_train.plan.parallel_layout import layout_from_config

    cfg = load_config(overrides)
    vocab = cfg.model.vocab_size or load_tokenizer(cfg.data.tokenizer).vocab_size
    peak = peak_memory(cfg.model, vocab, layout_from_config(cfg, 1, "cpu"))
    return peak.total, replace(peak, checkpoint_copy=0.0).total


def _hwm_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM")


def measure(overrides: list[str], steps: int, work: Path, cache: Path) -> tuple[int, int, float, str]:
    """(training peak, whole-run peak) resident bytes of one alia-train process, its seconds
    and its output."""
    cmd = [str(ALIA_TRAIN), *overrides, f"train.steps={steps}", "logging.interval=1", "logging.console=plain",
           f"run.dir={work}", f"data.cache_dir={cache}"]
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1", "CUDA_VISIBLE_DEVICES": ""}
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    training_peak, lines = 0, []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        if line.startswith(f"step {steps}/{steps}"):  # before the final save starts
            training_peak = _hwm_bytes(proc.pid)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    output = "".join(lines)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{output[-3000:]}")
    run_peak = usage.ru_maxrss * 1024
    return training_peak or run_peak, run_peak, time.perf_counter() - start, output


def bench(name: str, overrides: list[str], steps: int, root: Path) -> Row:
    training, run, seconds, _ = measure(overrides, steps, root / name, root / "cache")
    whole, steps_only = estimate_bytes(overrides)
    return Row(name, whole / GIB, steps_only / GIB, training / GIB, run / GIB, seconds)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=2, help="optimizer steps per run (Adam's state exists from step 2 on)")
    p.add_argument("--only", nargs="*", default=None, help=f"runs to make, of {', '.join(['tiny', *RUNS])}")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    runs = {"tiny": OVERHEAD_RUN, **RUNS}
    names = args.only or list(runs)
    rows = []
    with tempfile.TemporaryDirectory(prefix="plan-vs-rss-") as tmp:
        for name in names:
            row = bench(name, runs[name], args.steps, Path(tmp))
            rows.append(row)
            print(f"{row.name:<14} training: estimate {row.estimate_training_gib:5.2f} GiB, peak RSS "
                  f"{row.training_peak_gib:5.2f} GiB, ratio {row.ratio_training:4.2f} | whole run (with the "
                  f"checkpoint save): estimate {row.estimate_gib:5.2f}, peak RSS {row.run_peak_gib:5.2f}, ratio "
                  f"{row.ratio_run:4.2f} | {row.seconds:.0f} s", flush=True)
    if args.json:
        args.json.write_text(json.dumps([{**asdict(r), "ratio_training": r.ratio_training, "ratio_run": r.ratio_run}
                                         for r in rows], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
