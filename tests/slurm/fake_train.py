"""A stand-in for alia-train in tests/slurm/test_real_slurm.py's argument and environment job:
each task of the real srun step writes what it was started with (argv, and the environment
the batch script and Slurm gave it) to $ALIA_FAKE_TRAIN_DIR/task-<SLURM_PROCID>.json and
exits 0. For what a recipe passes that the tiny CPU run cannot take (the recipe's own model)."""

import json
import os
import sys
from pathlib import Path

PREFIXES = ("SLURM_", "ALIA_", "MASTER_", "NCCL_", "CUDA_", "TORCH_", "WANDB_", "HF_", "TRANSFORMERS_", "OMP_")
record = {"argv": sys.argv[1:], "env": {k: v for k, v in os.environ.items() if k.startswith(PREFIXES)}}
out = Path(os.environ["ALIA_FAKE_TRAIN_DIR"]) / f"task-{os.environ['SLURM_PROCID']}.json"
out.write_text(json.dumps(record))
