"""Realised vs planned language mixture of the training dataset built on the bench corpus.

    python benchmarks/mixture_realised.py [--corpus ../shared/corpus/bench]
        [--tokenizer ../shared/corpus/bench32k.model] [--samples 200000] [--seq-length 2048]

Tokenizes the corpus with `alia-data tokenize` (skipped when already done in --work),
plans the mixture with the default multipliers (es, ca, eu, gl 2.0; code 0.5; others 1.0),
builds the training dataset exactly as training does (megatron's BlendedMegatronDatasetBuilder
+ GPTDataset over gloo, one process), draws the first --samples samples and compares each
language's share of their tokens with the plan. Exit status 1 when a language is off by more
than --tolerance (1 percentage point by default).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "corpus"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", type=Path, default=SHARED / "bench")
    ap.add_argument("--tokenizer", type=Path, default=SHARED / "bench32k.model")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "alia_mixture_bench")
    ap.add_argument("--samples", type=int, default=200_000)
    ap.add_argument("--seq-length", type=int, default=2048)
    ap.add_argument("--check-items", type=int, default=2000, help="first samples read in full as a cross-check")
    ap.add_argument("--tolerance", type=float, default=0.01)
    a = ap.parse_args()
    if not a.corpus.is_dir() or not a.tokenizer.is_file():
        print(f"benchmark corpus not found ({a.corpus}, {a.tokenizer})", file=sys.stderr)
        return 2

    from alia_train.data.tokenize import TokenizeOptions, tokenize

    stats = tokenize(TokenizeOptions([str(a.corpus)], str(a.tokenizer), str(a.work / "bench"), progress=False))

    from alia_train.config.schema import Config
    from alia_train.parallel.launch_env import detect_launch_env
    from alia_train.training.startup import process_groups

    cfg = Config()
    with process_groups(cfg, detect_launch_env({})):
        return _measure(a, cfg, stats)


def _measure(a, cfg, stats) -> int:
    from alia_train.config.schema import DataSource
    from alia_train.data.datasets import build_datasets
    from alia_train.data.tokenizer import load_tokenizer

    cfg.train.seq_length = a.seq_length
    cfg.data.split = "98,2,0"
    cfg.data.cache_dir = str(a.work / "cache")
    cfg.data.sources = [DataSource(o["path"], lang) for lang, o in stats["outputs"].items()]
    tok = load_tokenizer(a.tokenizer)
    t = time.perf_counter()
    bundle = build_datasets(cfg, tok, train_samples=a.samples, valid_samples=0)
    build_s = time.perf_counter() - t

    ids = bundle.train.lang_ids()[: a.samples]
    realised = np.bincount(ids, minlength=len(bundle.languages)) / len(ids)
    # Every sample holds seq_length tokens (the training split drops partial sequences):
    # check on real items, and that token shares therefore equal sample shares.
    tokens_per_lang = np.zeros(len(bundle.languages))
    for idx in range(min(a.check_items, a.samples)):
        item = bundle.train[idx]
        assert item["tokens"].shape[0] == a.seq_length
        tokens_per_lang[int(item["lang_id"])] += int(item["loss_mask"].sum())
    checked = tokens_per_lang / tokens_per_lang.sum()

    print(f"{a.samples:,} samples x {a.seq_length} tokens (dataset built in {build_s:.1f} s)")
    print(f"{'lang':<6}{'planned':>10}{'realised':>10}{'diff (pp)':>11}{'first ' + str(a.check_items):>12}")
    worst = 0.0
    for i, lang in enumerate(bundle.languages):
        planned = bundle.planned_shares[lang]
        diff = 100 * (realised[i] - planned)
        worst = max(worst, abs(diff))
        print(f"{lang:<6}{planned:>10.3%}{realised[i]:>10.3%}{diff:>+11.3f}{checked[i]:>12.2%}")
    ok = worst <= 100 * a.tolerance
    print(f"largest deviation {worst:.3f} percentage points: {'OK' if ok else 'FAIL'} "
          f"(tolerance {100 * a.tolerance:.1f})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
