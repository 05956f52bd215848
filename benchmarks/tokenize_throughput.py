"""Steady-state throughput of `alia-data tokenize` against SentencePiece's own in-memory bound.

    python benchmarks/tokenize_throughput.py [--corpus ../shared/corpus/bench]
        [--tokenizer ../shared/corpus/bench32k.model] [--workers N] [--scaling] [--json OUT]

* Bound: SentencePiece encoding the corpus texts already in memory with every core, the
  faster of its own threads (`encode(texts, num_threads=N)`) and a process pool (each
  process encodes its share of the texts, nothing but a count comes back).
* alia-data: the real console script on the .jsonl.gz files, timed end to end on the corpus
  once (1x) and twice over (2x); steady bytes/s = (bytes 2x - bytes 1x) / (time 2x - time 1x),
  so process start-up, imports and the last straggling task cancel out.
* --scaling: the same for 1, 2, 4, ... workers up to the cores (parallel efficiency =
  rate(N) / (N x rate(1))); the issue asks for it where 16 cores are available.
Rounds (--repeats) interleave bound and alia-data; the reported fraction is the median of the
per-round ratios, so a noisy neighbour slows both sides of a ratio alike. CPU seconds per byte
(all processes) are compared as well: unlike wall time, they hardly depend on neighbours.
"""

from __future__ import annotations

import argparse
import gzip
import json
import multiprocessing as mp
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import sentencepiece as spm

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CORPUS = REPO.parent / "shared" / "corpus" / "bench"
DEFAULT_TOKENIZER = REPO.parent / "shared" / "corpus" / "bench32k.model"

_texts: list[str] = []
_model = ""


def load_texts(files: list[Path]) -> list[str]:
    texts = []
    for f in files:
        with gzip.open(f, "rb") as fh:
            texts += [json.loads(line)["text"] for line in fh if line.strip()]
    return texts


def _encode_share(args: tuple[int, int]) -> int:
    sp = spm.SentencePieceProcessor(model_file=_model)
    i, n = args
    return sum(len(ids) for ids in sp.encode(_texts[i::n], num_threads=1))


def bound_threads(texts: list[str], model: str, cores: int) -> tuple[float, float]:
    """(wall s, CPU s) of SentencePiece's threaded batch encode."""
    sp = spm.SentencePieceProcessor(model_file=model)
    t, c = time.perf_counter(), time.process_time()
    sp.encode(texts, num_threads=cores)
    return time.perf_counter() - t, time.process_time() - c


def bound_pool(texts: list[str], model: str, cores: int) -> float:
    global _texts, _model
    _texts, _model = texts, model
    with mp.get_context("fork").Pool(cores) as pool:
        pool.map(abs, range(cores))  # workers started before the clock
        t = time.perf_counter()
        pool.map(_encode_share, [(i, cores) for i in range(cores)])
        return time.perf_counter() - t


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_alia_data(files: list[Path], model: str, workers: int, out: Path) -> tuple[float, float, int]:
    """Wall time and CPU time (all its processes) of the console script, and its text bytes."""
    if out.parent.exists():
        shutil.rmtree(out.parent)
    exe = shutil.which("alia-data", path=str(Path(sys.executable).parent)) or "alia-data"
    cmd = [exe, "tokenize", "--input", *map(str, files), "--tokenizer", model, "--output-prefix", str(out),
           "--workers", str(workers), "--no-progress"]
    t, c = time.perf_counter(), _children_cpu()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wall, cpu = time.perf_counter() - t, _children_cpu() - c
    stats = json.loads(Path(f"{out}.stats.json").read_text())
    return wall, cpu, stats["totals"]["bytes"]


def steady_rate(files: list[Path], model: str, workers: int, tmp: Path) -> dict:
    """One paired measurement: the corpus once and twice, back to back."""
    twice = tmp / "twice"
    twice.mkdir(exist_ok=True)
    doubled = list(files)
    for f in files:  # the corpus a second time, under other names (copies: a link is "given twice")
        copy = twice / f"again_{f.name}"
        if not copy.exists():
            shutil.copy(f, copy)
        doubled.append(copy)
    t1, c1, b1 = run_alia_data(files, model, workers, tmp / "out_1x" / "c")
    t2, c2, b2 = run_alia_data(doubled, model, workers, tmp / "out_2x" / "c")
    rate = (b2 - b1) / (t2 - t1)
    return {"workers": workers, "time_1x_s": t1, "time_2x_s": t2, "bytes_1x": b1, "bytes_2x": b2,
            "steady_bytes_per_s": rate, "startup_s": t1 - b1 / rate,
            "steady_cpu_s_per_mb": (c2 - c1) / (b2 - b1) * 1e6}


def _median(xs: list[float]) -> float:
    return statistics.median(xs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    ap.add_argument("--tokenizer", type=Path, default=DEFAULT_TOKENIZER)
    ap.add_argument("--workers", type=int, default=None, help="default: every core")
    ap.add_argument("--scaling", action="store_true", help="also measure 1, 2, 4, ... workers")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    files = sorted(a.corpus.glob("*.jsonl.gz"))
    if not files or not a.tokenizer.is_file():
        print(f"benchmark corpus not found ({a.corpus}, {a.tokenizer})", file=sys.stderr)
        return 2
    cores = len(os.sched_getaffinity(0))
    workers = a.workers or cores
    texts = load_texts(files)
    nbytes = sum(len(t.encode()) for t in texts)
    print(f"corpus: {len(texts):,} documents, {nbytes / 1e6:.1f} MB of text; {cores} cores")

    result: dict = {"cores": cores, "corpus_bytes": nbytes, "tokenizer": str(a.tokenizer)}
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        rounds = []
        for _ in range(a.repeats):  # interleaved: bound then ours, compared within each round
            tw, tc = bound_threads(texts, str(a.tokenizer), cores)
            tp = bound_pool(texts, str(a.tokenizer), cores)
            ours = steady_rate(files, str(a.tokenizer), workers, tmp)
            bound = nbytes / min(tw, tp)
            rounds.append({"bound_threads_bytes_per_s": nbytes / tw, "bound_pool_bytes_per_s": nbytes / tp,
                           "bound_bytes_per_s": bound, "bound_cpu_s_per_mb": tc / nbytes * 1e6,
                           "alia_data": ours, "fraction_of_bound": ours["steady_bytes_per_s"] / bound})
            print(f"round {len(rounds)}: bound {bound / 1e6:.2f} MB/s (threads {nbytes / tw / 1e6:.2f}, "
                  f"pool {nbytes / tp / 1e6:.2f}); alia-data 1x {ours['time_1x_s']:.2f} s, 2x {ours['time_2x_s']:.2f} s "
                  f"-> steady {ours['steady_bytes_per_s'] / 1e6:.2f} MB/s = {rounds[-1]['fraction_of_bound']:.1%}")
        frac = _median([r["fraction_of_bound"] for r in rounds])
        cpu_ratio = _median([r["bound_cpu_s_per_mb"] for r in rounds]) / _median(
            [r["alia_data"]["steady_cpu_s_per_mb"] for r in rounds])
        result.update(rounds=rounds, fraction_of_bound=frac, cpu_efficiency=cpu_ratio,
                      startup_s=_median([r["alia_data"]["startup_s"] for r in rounds]))
        print(f"alia-data tokenize --workers {workers}: median {frac:.1%} of the in-memory bound; "
              f"CPU per byte {cpu_ratio:.1%} as efficient as SentencePiece alone; "
              f"start-up + tail {result['startup_s']:.2f} s")
        if a.scaling:
            counts = sorted({1, *[2**k for k in range(1, 10) if 2**k < cores], cores})
            scaling = []
            for w in counts:
                runs = [steady_rate(files, str(a.tokenizer), w, tmp) for _ in range(a.repeats)]
                scaling.append({"workers": w, "steady_bytes_per_s": _median([r["steady_bytes_per_s"] for r in runs]),
                                "runs": runs})
            base = scaling[0]["steady_bytes_per_s"]
            for s in scaling:
                s["parallel_efficiency"] = s["steady_bytes_per_s"] / (s["workers"] * base)
                print(f"  workers {s['workers']:>3}: {s['steady_bytes_per_s'] / 1e6:7.2f} MB/s, "
                      f"efficiency {s['parallel_efficiency']:.1%}")
            result["scaling"] = scaling
    if a.json:
        a.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
