"""Accepting a launch: RUN_DIR/config.yaml, and the `{"kind": "launch"}` record alia-train
appends to RUN_DIR/metrics.jsonl at every start, written once nothing can refuse the launch.

It says where this launch starts (`step`: 0, or the step it resumed at), on what (world size and
parallel layout, host) and with which code (versions, git commit of a checkout). alia-report
uses it to drop the records a crashed launch logged past the checkpoint it is resumed from
(alia_train/metrics_file.py), and lists the launches.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import time
from importlib import metadata
from pathlib import Path

from alia_train.config.derived import data_parallel_size
from alia_train.config.load import to_yaml
from alia_train.config.schema import Config
from alia_train.fs import write_text_atomic


def _version(dist_name: str) -> str | None:
    try:
        return metadata.version(dist_name)
    except metadata.PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    """The commit of the checkout alia-train runs from (an editable install), "+dirty" when
    tracked files differ; None for a wheel install."""
    src = Path(__file__).resolve().parents[3]
    if not (src / ".git").exists():
        return None
    try:
        head = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(src), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "")


def launch_record(cfg: Config, world_size: int, step: int, consumed_samples: int, device: str) -> dict:
    par = cfg.parallel
    return {
        "kind": "launch",
        "step": step,
        "consumed_samples": consumed_samples,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": socket.gethostname(),
        "world_size": world_size,
        "layout": {"tp": par.tp, "pp": par.pp, "vpp": par.vpp, "cp": par.cp,
                   "dp": data_parallel_size(world_size, par.tp, par.pp, par.cp)},
        "device": device,
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "git": _git_commit(),
        "versions": {
            "alia-train": _version("alia-train"),
            "megatron-core": _version("megatron-core"),
            "torch": _version("torch"),
            "python": platform.python_version(),
        },
    }


def append_launch_record(run_dir: str, record: dict) -> None:
    """Append `record` as one line; ends a half line a killed launch left first."""
    path = Path(run_dir) / "metrics.jsonl"
    with open(path, "ab") as f:
        if f.tell() > 0:
            with open(path, "rb") as r:
                r.seek(-1, os.SEEK_END)
                if r.read(1) != b"\n":
                    f.write(b"\n")
        f.write((json.dumps(record) + "\n").encode("utf-8"))
        f.flush()
        os.fsync(f.fileno())


def save_run_config(cfg: Config) -> None:
    """Write RUN_DIR/config.yaml atomically (temporary file, fsync, rename, fsync of the
    directory): readers see the previous file or the new one whole, never a truncated one (a
    full disk fails here, before the old file is touched)."""
    run_dir = Path(cfg.run.dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(run_dir / "config.yaml", to_yaml(cfg))


def accept_launch(cfg: Config, world_size: int, step: int, consumed_samples: int, device: str) -> str | None:
    """Rank 0, once nothing can refuse the launch any more (config, tokenizer, data, lock,
    memory, resume): write config.yaml and the launch record. A refused launch leaves the run
    directory's config.yaml as the last accepted launch wrote it. Returns an error or None."""
    record = launch_record(cfg, world_size, step, consumed_samples, device)
    for name, write in (("config.yaml", lambda: save_run_config(cfg)),
                        ("metrics.jsonl", lambda: append_launch_record(cfg.run.dir, record))):
        try:
            write()
        except OSError as e:
            return (f"run.dir: cannot write {os.path.join(cfg.run.dir, name)} ({e.strerror}); "
                    "free space or choose another run.dir")
    return None
