"""Host memory of a checkpoint save and load with the distributed optimizer, per rank, measured
from outside the processes.

    python benchmarks/checkpoint_memory.py [--dp 4] [--hidden 1024] [--layers 8] [--forms routine,portable]

For each form of the optimizer state (routine: each rank its own shard; portable: gathered
per stage, checkpoint/state_dict.py) it launches `torchrun --nproc_per_node=DP` of this file in
worker mode: one training step on CPU, a quiet second, a blocking save, a quiet second, a load
(checkpoint/resume.py's load_latest). Each rank writes when its save and load started and ended;
this process samples every rank's resident set size (psutil, every 5 ms) meanwhile. A spike is
the highest RSS during the save (or load) minus the median RSS of the quiet second before it,
and is reported against the checkpoint's size on disk.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

QUIET_S = 1.0


def worker(out: Path, form: str, hidden: int, layers: int) -> None:
    from alia_train.checkpoint.resume import load_latest
    from alia_train.config import load_config
    from alia_train.parallel.launch_env import detect_launch_env
    from alia_train.training.run import RunOptions, open_run

    h = hidden
    cfg = load_config([
        "+model=tiny", f"model.hidden_size={h}", f"model.ffn_hidden_size={h * 11 // 4}", f"model.num_layers={layers}",
        "model.num_attention_heads=8", "model.num_query_groups=8", f"run.dir={out}/run_{form}",
        "parallel.distributed_optimizer=true", "checkpoint.async_save=false", "checkpoint.keep=5",
        "train.micro_batch_size=1", "train.seq_length=32", "train.global_batch_size=8", "train.check_memory=false",
    ])
    launch = detect_launch_env()
    with open_run(cfg, launch, RunOptions(trackers=False)) as trainer:
        import torch.distributed as dist

        trainer.step(trainer.batches(0))
        trainer.progress.step = 1
        marks = {}
        for phase in ("save", "load"):
            dist.barrier()
            time.sleep(QUIET_S)
            marks[f"{phase}_start"] = time.time()
            if phase == "save":
                trainer.checkpoints.save(trainer.progress, blocking=True, portable=form == "portable")
            else:
                load_latest(trainer.state)
            marks[f"{phase}_end"] = time.time()
        dist.barrier()
        time.sleep(0.3)
        (out / f"marks_{form}_{launch.rank}.json").write_text(json.dumps({"pid": os.getpid(), **marks}))


def _sample(stop: threading.Event, root_pid: int, samples: dict[int, list[tuple[float, int]]]) -> None:
    import psutil

    root = psutil.Process(root_pid)
    while not stop.is_set():
        try:
            procs = root.children(recursive=True)
        except psutil.NoSuchProcess:
            return
        now = time.time()
        for p in procs:
            try:
                samples.setdefault(p.pid, []).append((now, p.memory_info().rss))
            except psutil.NoSuchProcess:
                pass
        time.sleep(0.005)


def _spike(series: list[tuple[float, int]], start: float, end: float) -> int:
    quiet = [rss for t, rss in series if start - QUIET_S * 0.8 <= t < start]
    during = [rss for t, rss in series if start <= t <= end + 0.05]
    return max(during) - int(statistics.median(quiet)) if quiet and during else 0


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def measure(form: str, dp: int, hidden: int, layers: int, out: Path) -> dict:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={dp}", __file__,
           "--worker", str(out), form, str(hidden), str(layers)]
    env = {**os.environ, "WANDB_MODE": "disabled", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    samples: dict[int, list[tuple[float, int]]] = {}
    stop = threading.Event()
    sampler = threading.Thread(target=_sample, args=(stop, proc.pid, samples), daemon=True)
    sampler.start()
    output = proc.communicate()[0]
    stop.set()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"checkpoint_memory: the {form} run failed:\n{output[-3000:]}")
    ckpt = out / f"run_{form}" / "checkpoints" / "step_00000001"
    size = _dir_bytes(ckpt)
    ranks = []
    for rank in range(dp):
        m = json.loads((out / f"marks_{form}_{rank}.json").read_text())
        series = samples.get(m["pid"], [])
        ranks.append({"save": _spike(series, m["save_start"], m["save_end"]),
                      "load": _spike(series, m["load_start"], m["load_end"]),
                      "save_s": m["save_end"] - m["save_start"]})
    return {"form": form, "dp": dp, "checkpoint_bytes": size,
            "save_spike_max": max(r["save"] for r in ranks), "load_spike_max": max(r["load"] for r in ranks),
            "save_s_max": max(r["save_s"] for r in ranks), "ranks": ranks}


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(Path(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dp", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--forms", default="routine,portable")
    ap.add_argument("--json", default=None, help="also write the figures here")
    a = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="alia-ckpt-mem-") as tmp:
        for form in a.forms.split(","):
            out = Path(tmp) / form
            out.mkdir()
            r = measure(form, a.dp, a.hidden, a.layers, out)
            rows.append(r)
            gb = r["checkpoint_bytes"] / 1e9
            print(f"{form:9s} DP{a.dp}: checkpoint {gb:.3f} GB on disk; per-rank RSS spike, worst rank: "
                  f"save {r['save_spike_max'] / 1e9:.3f} GB = {r['save_spike_max'] / r['checkpoint_bytes']:.2f}x, "
                  f"load {r['load_spike_max'] / 1e9:.3f} GB = {r['load_spike_max'] / r['checkpoint_bytes']:.2f}x; "
                  f"save {r['save_s_max']:.2f} s", flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
