"""A stand-in for alia-train in the fast Slurm-script test: records what it was started with,
then behaves like the real loop around a signal. First run: waits for SIGUSR1, "checkpoints"
and exits 75. A run that finds the checkpoint: "resumes" and exits 0."""

import json
import os
import signal
import sys
import time
from pathlib import Path

state = Path(os.environ["SLURM_STANDIN_STATE"])
rank = int(os.environ["SLURM_PROCID"])
restart = int(os.environ.get("SLURM_RESTART_COUNT", "0"))
keys = [k for k in os.environ if k.startswith(("SLURM_", "ALIA_", "MASTER_", "NCCL_", "CUDA_", "TORCH_", "WANDB_", "HF_", "TRANSFORMERS_"))]
record = {"argv": sys.argv[1:], "env": {k: os.environ[k] for k in keys}}
(state / f"fake-{rank}-{restart}.json").write_text(json.dumps(record))
ckpt = state / "fake-checkpoint"
if ckpt.exists():
    print(f"[fake] rank {rank}: resumed from {ckpt} at step {ckpt.read_text()}", flush=True)
    sys.exit(0)

got = []
signal.signal(signal.SIGUSR1, lambda s, f: got.append(s))
(state / f"fake-started-{rank}").touch()
deadline = time.monotonic() + 60
while not got and time.monotonic() < deadline:
    time.sleep(0.05)
if not got:
    print(f"[fake] rank {rank}: no signal came", flush=True)
    sys.exit(1)
if rank == 0:
    ckpt.write_text("7")
print(f"[fake] rank {rank}: checkpoint saved, exiting 75", flush=True)
sys.exit(75)
