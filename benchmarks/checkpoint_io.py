"""Checkpoint I/O on CPU: save and load throughput against the disk's own write speed, and the
training stall of an asynchronous save against a synchronous one, all in one process.

    python benchmarks/checkpoint_io.py [--dir /tmp/ckpt_bench] [--hidden 1024] [--layers 8] [--saves 3]

1. Disk: write the checkpoint's size as as many files at once as a save writes (16 MiB blocks,
   each fsynced; GB/s), measured right before each save (the disk's speed drifts on shared
   machines).
2. Sync save: checkpoint/writer.py's save(blocking=True) of model + Adam state. "first" is the first
   save of the process (one-time set-up included); "steady" the median of the next ones. Both
   include writing, fsync, the CRC-32 of every file and publishing.
3. Checksums: CRC-32 of the checkpoint's files alone (what COMPLETE's checksums cost).
4. Async save (checkpoint.async_save=true): the time save() blocks the training loop, the
   extra time of the next training steps while the writer runs (copy-on-write of the pages
   training changes, and on a small machine the writer's CPU), and the time until the
   checkpoint is published.
5. Load: checkpoint/resume.py's load_latest(), verification of sizes and checksums included (GB/s).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def disk_write_speed(path: Path, nbytes: int, files: int = 2) -> float:
    """GB/s of writing `nbytes` as `files` files at once (one thread each, 16 MiB blocks, each
    file fsynced), as a save writes its shard files: a single stream under-reports a disk that a
    parallel writer fills (the probe read below the saves themselves)."""
    from concurrent.futures import ThreadPoolExecutor

    block = os.urandom(16 << 20)
    per_file = -(-nbytes // files)

    def write(i: int) -> int:
        target = path.with_name(f"{path.name}.{i}")
        written = 0
        with open(target, "wb") as f:
            while written < per_file:
                f.write(block)
                written += len(block)
            f.flush()
            os.fsync(f.fileno())
        return written

    start = time.perf_counter()
    with ThreadPoolExecutor(files) as pool:
        total = sum(pool.map(write, range(files)))
    elapsed = time.perf_counter() - start
    for i in range(files):
        path.with_name(f"{path.name}.{i}").unlink()
    return total / elapsed


def checksum_seconds(ckpt: Path) -> float:
    from alia_train.checkpoint import directory

    start = time.perf_counter()
    for p in ckpt.iterdir():
        if p.is_file():
            directory.file_crc32(p)
    return time.perf_counter() - start


@contextmanager
def trained_one_step(root: Path, hidden: int, layers: int):
    """A run started as alia-train starts one (checks, lock, resume, launch record), after one
    optimizer step, so that Adam's moment tensors exist and are saved."""
    from alia_train.config import load_config
    from alia_train.parallel.launch_env import detect_launch_env
    from alia_train.training.run import RunOptions, open_run

    h = hidden
    overrides = ["+model=tiny", f"model.hidden_size={h}", f"model.ffn_hidden_size={h * 11 // 4}",
                 f"model.num_layers={layers}", "model.num_attention_heads=8", "model.num_query_groups=8",
                 f"run.dir={root}/run", "checkpoint.async_save=true", "checkpoint.keep=20",
                 # short steps: the optimizer update still rewrites every weight and Adam moment
                 "train.global_batch_size=1", "train.micro_batch_size=1", "train.seq_length=32"]
    cfg = load_config(overrides)
    with open_run(cfg, detect_launch_env(), RunOptions(trackers=False)) as trainer:
        trainer.step(trainer.batches(0))
        yield cfg, trainer


ASYNC_STEPS = 3


def estimated_bytes(trainer) -> int:
    """Parameters plus Adam's two moments in fp32, for the disk probe before the first save
    (later probes use the size of the checkpoint just written)."""
    params = sum(p.numel() for c in trainer.model for p in c.parameters())
    return params * 4 * 3


def async_cost(trainer, step: int) -> tuple[float, float, float]:
    """(seconds save() blocks the loop, extra seconds of the next ASYNC_STEPS training steps
    while the writer runs, seconds until the checkpoint is published)."""
    from alia_train.checkpoint.state_dict import TrainingProgress

    batches = trainer.batches(0)

    def timed_steps() -> float:
        start = time.perf_counter()
        for _ in range(ASYNC_STEPS):
            trainer.step(batches)
        return time.perf_counter() - start

    before = timed_steps()
    start = time.perf_counter()
    trainer.checkpoints.save(TrainingProgress(step=step))
    stall = time.perf_counter() - start
    after = timed_steps()
    trainer.checkpoints.finalize_pending(blocking=True)
    return stall, after - before, time.perf_counter() - start


def measure(cfg, trainer, root: Path, saves: int) -> None:
    from alia_train.checkpoint import directory
    from alia_train.checkpoint.state_dict import TrainingProgress

    mgr = trainer.checkpoints
    ckpt_of = lambda step: directory.checkpoints_dir(cfg.run.dir) / directory.step_dir_name(step)  # noqa: E731

    sync = []
    disk = []
    size, files = estimated_bytes(trainer), 2  # megatron's writer: 2 files per rank
    for step in range(1, saves + 1):
        # the disk's speed right before each save: it drifts on shared machines
        disk.append(disk_write_speed(root / "disk_probe.bin", size, files))
        start = time.perf_counter()
        mgr.save(TrainingProgress(step=step), blocking=True)
        sync.append(time.perf_counter() - start)
        size = dir_bytes(ckpt_of(step))
        files = max(1, len(list(ckpt_of(step).glob("*.distcp"))))
    crc = checksum_seconds(ckpt_of(saves))

    step = saves + 1
    stall, slowdown, async_total = async_cost(trainer, step)
    start = time.perf_counter()
    from alia_train.checkpoint.resume import load_latest

    loaded = load_latest(trainer.state)
    load_seconds = time.perf_counter() - start
    trainer.close()
    assert loaded.path is not None and loaded.path.name == directory.step_dir_name(step)

    params = sum(p.numel() for c in trainer.model for p in c.parameters())
    disk_speed = statistics.median(disk)
    steady = statistics.median(sync[1:]) if len(sync) > 1 else sync[0]
    print(f"model: {params / 1e6:.0f} M parameters (fp32) + Adam state; checkpoint {size / 1e9:.2f} GB")
    print(f"disk sequential write (fsync): {disk_speed / 1e9:.2f} GB/s (median of {len(disk)}: "
          f"{', '.join(f'{d / 1e9:.2f}' for d in disk)})")
    print(f"sync save, first of the process: {sync[0]:.2f} s = {size / sync[0] / 1e9:.2f} GB/s "
          f"({size / sync[0] / disk_speed:.0%} of disk)")
    print(f"sync save, steady (median of {len(sync) - 1}): {steady:.2f} s = {size / steady / 1e9:.2f} GB/s "
          f"({size / steady / disk_speed:.0%} of disk); all: {', '.join(f'{s:.2f}' for s in sync)} s")
    print(f"CRC-32 of the files alone: {crc:.2f} s = {size / crc / 1e9:.2f} GB/s "
          f"(inside every save; off the training loop in async saves)")
    print(f"async save: loop blocked {stall:.2f} s ({stall / steady:.0%} of a steady sync save); "
          f"published after {async_total:.2f} s; the {ASYNC_STEPS} training steps after it took "
          f"{slowdown:+.2f} s more than the {ASYNC_STEPS} before it (copy-on-write, and the "
          f"writer's CPU on this {os.cpu_count()}-core machine)")
    print(f"load (verification included): {load_seconds:.2f} s = {size / load_seconds / 1e9:.2f} GB/s")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", default="/tmp/alia_ckpt_bench")
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--saves", type=int, default=3, help="sync saves (the first one is reported apart)")
    args = ap.parse_args()
    root = Path(args.dir)
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)

    with trained_one_step(root, args.hidden, args.layers) as (cfg, trainer):
        measure(cfg, trainer, root, args.saves)
    shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
