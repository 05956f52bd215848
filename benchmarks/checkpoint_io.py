"""Checkpoint I/O on CPU: save and load throughput against the disk's own write speed, and the
training stall of an asynchronous save against a synchronous one, all in one process.

    python benchmarks/checkpoint_io.py [--dir /tmp/ckpt_bench] [--hidden 1024] [--layers 8]

1. Disk: write a file of the checkpoint's size in 16 MiB blocks and fsync it (GB/s).
2. Sync save: CheckpointManager.save(blocking=True) of model + Adam state (GB/s of files written).
3. Async save: the time save() blocks the training loop (checkpoint.async_save=true), and the
   time until the checkpoint is published.
4. Load: CheckpointManager.load_latest() (GB/s).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def disk_write_speed(path: Path, nbytes: int) -> float:
    block = os.urandom(16 << 20)
    start = time.perf_counter()
    with open(path, "wb") as f:
        written = 0
        while written < nbytes:
            f.write(block)
            written += len(block)
        f.flush()
        os.fsync(f.fileno())
    elapsed = time.perf_counter() - start
    path.unlink()
    return written / elapsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", default="/tmp/alia_ckpt_bench")
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=8)
    args = ap.parse_args()
    root = Path(args.dir)
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)

    from alia_train.checkpoint import layout
    from alia_train.checkpoint.manager import CheckpointManager, TrainingProgress
    from alia_train.config import load_config
    from alia_train.data.tokenizer import load_tokenizer
    from alia_train.parallel.launch_env import detect_launch_env
    from alia_train.parallel.runtime import init_runtime
    from alia_train.training.trainer import Trainer

    h = args.hidden
    overrides = ["+model=tiny", f"model.hidden_size={h}", f"model.ffn_hidden_size={h * 11 // 4}",
                 f"model.num_layers={args.layers}", "model.num_attention_heads=8", "model.num_query_groups=8",
                 f"run.dir={root}/run", "checkpoint.async_save=true", "checkpoint.keep=10"]
    cfg = load_config(overrides)
    tok = load_tokenizer(cfg.data.tokenizer)
    rt = init_runtime(cfg, detect_launch_env())
    trainer = Trainer(cfg, rt, tok)
    # One optimizer step so Adam's moment tensors exist and are saved.
    trainer.build_data()
    trainer.cfg.train.steps = 1
    from alia_train.training.step import train_step

    its = trainer._iterators(trainer.data.train, 0)
    train_step(trainer.model, trainer.optimizer, trainer.scheduler, its, trainer.acc,
               num_microbatches=trainer.num_microbatches, seq_length=cfg.train.seq_length,
               micro_batch_size=cfg.train.micro_batch_size, device=rt.device)
    mgr: CheckpointManager = trainer.checkpoints

    start = time.perf_counter()
    mgr.save(TrainingProgress(step=1), blocking=True)
    sync_seconds = time.perf_counter() - start
    ckpt = layout.checkpoints_dir(cfg.run.dir) / layout.step_dir_name(1)
    size = dir_bytes(ckpt)

    disk = disk_write_speed(root / "disk_probe.bin", size)

    start = time.perf_counter()
    mgr.save(TrainingProgress(step=2))
    stall = time.perf_counter() - start
    mgr.finalize_pending(blocking=True)
    async_total = time.perf_counter() - start

    start = time.perf_counter()
    loaded = mgr.load_latest()
    load_seconds = time.perf_counter() - start
    mgr.close()
    assert loaded is not None and loaded.path.name == layout.step_dir_name(2)

    params = sum(p.numel() for c in trainer.model for p in c.parameters())
    print(f"model: {params / 1e6:.0f} M parameters (fp32) + Adam state; checkpoint {size / 1e9:.2f} GB")
    print(f"disk sequential write (fsync): {disk / 1e9:.2f} GB/s")
    print(f"sync save:  {sync_seconds:.2f} s = {size / sync_seconds / 1e9:.2f} GB/s "
          f"({size / sync_seconds / disk:.0%} of disk)")
    print(f"async save: loop blocked {stall:.2f} s ({stall / sync_seconds:.0%} of the sync save); "
          f"published after {async_total:.2f} s")
    print(f"load:       {load_seconds:.2f} s = {size / load_seconds / 1e9:.2f} GB/s")
    shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
