"""Steady-state rate of one task of a corpus in tasks against `alia-data tokenize` on the same group.

    python benchmarks/tokenize_task_throughput.py [--corpus ../shared/corpus/bench]
        [--tokenizer ../shared/corpus/bench32k.model] [--tasks 3] [--group 0] [--workers N]
        [--set-bytes B] [--repeats 3] [--json OUT]

The corpus's *.jsonl.gz files are split as `--tasks N` splits them (corpus_plan.split_by_size);
group `--group` is the input of both sides, back to back in each round:
* alia-data tokenize --input GROUP --output-prefix P (one shard set);
* alia-data tokenize --input GROUP --output-dir D --tasks 1 --task 0: the task path (plan check,
  shard sets of --set-bytes, their locks, completion marker, merge-ready outputs) on the same
  files; with --tasks 1 the task's group is exactly GROUP.
Each side runs on the group once (1x) and twice over (2x, copies of the files added);
steady bytes/s = (text bytes 2x - 1x) / (time 2x - 1x), so start-up and the last straggling
block cancel out (as benchmarks/tokenize_throughput.py does). The reported ratio is the median
of the per-round ratios task / tokenize; CPU seconds per MB (all processes) are compared too.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CORPUS = REPO.parent / "shared" / "corpus" / "bench"
DEFAULT_TOKENIZER = REPO.parent / "shared" / "corpus" / "bench32k.model"
ALIA_DATA = shutil.which("alia-data", path=str(Path(sys.executable).parent)) or "alia-data"


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _timed(cmd: list[str]) -> tuple[float, float]:
    t, c = time.perf_counter(), _children_cpu()
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:2])} ... exited with {proc.returncode}: {proc.stderr[-2000:]}")
    return time.perf_counter() - t, _children_cpu() - c


def run_tokenize(files: list[Path], model: str, workers: int, out: Path) -> tuple[float, float, int]:
    shutil.rmtree(out, ignore_errors=True)
    wall, cpu = _timed([ALIA_DATA, "tokenize", "--input", *map(str, files), "--tokenizer", model,
                        "--output-prefix", str(out / "c"), "--workers", str(workers), "--no-progress"])
    return wall, cpu, json.loads((out / "c.stats.json").read_text())["totals"]["bytes"]


def run_task(files: list[Path], model: str, workers: int, out: Path, set_bytes: int | None) -> tuple[float, float, int]:
    shutil.rmtree(out, ignore_errors=True)
    extra = ["--set-bytes", str(set_bytes)] if set_bytes else []
    wall, cpu = _timed([ALIA_DATA, "tokenize", "--input", *map(str, files), "--tokenizer", model,
                        "--output-dir", str(out), "--tasks", "1", "--task", "0", "--workers", str(workers),
                        "--no-progress", *extra])
    marker = json.loads(next(out.glob("shards/*/task00000.done.json")).read_text())
    return wall, cpu, sum(s["totals"]["bytes"] for s in marker["sets"])


def steady(run, files: list[Path], doubled: list[Path]) -> dict:
    t1, c1, b1 = run(files)
    t2, c2, b2 = run(doubled)
    return {"time_1x_s": t1, "time_2x_s": t2, "bytes_1x": b1, "bytes_2x": b2,
            "steady_bytes_per_s": (b2 - b1) / (t2 - t1), "steady_cpu_s_per_mb": (c2 - c1) / (b2 - b1) * 1e6}


def _group(corpus: Path, tasks: int, group: int) -> list[Path]:
    from alia_train.data.corpus_plan import split_by_size

    sizes = {str(p): p.stat().st_size for p in sorted(corpus.glob("*.jsonl.gz"))}
    return [Path(p) for p in split_by_size(sizes, tasks)[group]]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    ap.add_argument("--tokenizer", type=Path, default=DEFAULT_TOKENIZER)
    ap.add_argument("--tasks", type=int, default=3)
    ap.add_argument("--group", type=int, default=0)
    ap.add_argument("--workers", type=int, default=None, help="default: every core")
    ap.add_argument("--set-bytes", type=int, default=None, help="the task's shard-set size (default: the plan's)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    if not a.corpus.is_dir() or not a.tokenizer.is_file():
        print(f"benchmark corpus not found ({a.corpus}, {a.tokenizer})", file=sys.stderr)
        return 2
    workers = a.workers or len(os.sched_getaffinity(0))
    files = _group(a.corpus, a.tasks, a.group)
    print(f"group {a.group} of {a.tasks}: {', '.join(f.name for f in files)} "
          f"({sum(f.stat().st_size for f in files) / 1e6:.1f} MB on disk); {workers} workers")
    rounds = []
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        (tmp / "again").mkdir()
        doubled = list(files)
        for f in files:
            shutil.copy(f, tmp / "again" / f"again_{f.name}")  # a copy: a link would be "given twice"
            doubled.append(tmp / "again" / f"again_{f.name}")
        model = str(a.tokenizer)
        sides = {"tokenize": lambda fs: run_tokenize(fs, model, workers, tmp / "plain"),
                 "task": lambda fs: run_task(fs, model, workers, tmp / "task", a.set_bytes)}
        for r in range(a.repeats):
            # Back to back, the side going first alternating: a noisy neighbour or a drift in the
            # machine's speed slows both sides of a round alike.
            order = ["tokenize", "task"] if r % 2 == 0 else ["task", "tokenize"]
            got = {side: steady(sides[side], files, doubled) for side in order}
            plain, task = got["tokenize"], got["task"]
            ratio = task["steady_bytes_per_s"] / plain["steady_bytes_per_s"]
            rounds.append({"tokenize": plain, "task": task, "ratio": ratio})
            print(f"round {r + 1} ({order[0]} first): tokenize {plain['steady_bytes_per_s'] / 1e6:.2f} MB/s "
                  f"(1x {plain['time_1x_s']:.2f} s, 2x {plain['time_2x_s']:.2f} s); task "
                  f"{task['steady_bytes_per_s'] / 1e6:.2f} MB/s (1x {task['time_1x_s']:.2f} s, "
                  f"2x {task['time_2x_s']:.2f} s); ratio {ratio:.3f}; CPU s/MB tokenize "
                  f"{plain['steady_cpu_s_per_mb']:.3f}, task {task['steady_cpu_s_per_mb']:.3f}")
    ratio = statistics.median(r["ratio"] for r in rounds)
    # CPU seconds hardly depend on what else runs on the machine; wall time does.
    cpu = statistics.median(r["task"]["steady_cpu_s_per_mb"] / r["tokenize"]["steady_cpu_s_per_mb"] for r in rounds)
    print(f"task / tokenize steady-state rate: median {ratio:.3f} over {len(rounds)} rounds; "
          f"CPU per MB: task / tokenize {cpu:.3f}")
    if a.json:
        a.json.write_text(json.dumps({"workers": workers, "files": [str(f) for f in files], "rounds": rounds,
                                      "ratio": ratio, "cpu_ratio": cpu}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
