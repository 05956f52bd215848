"""Test-only entry point: `python run_growth_entry.py TRACE_FILE STOP_AT [alia-train args...]`
runs alia-train with

* every read of a training sample appended to TRACE_FILE as "index sha1-of-its-tokens", so a
  test sees which samples each launch consumed (validation reads are not traced);
* with STOP_AT > 0, SIGUSR1 sent to itself once step STOP_AT is done: the real stop path
  (saved at that step's boundary, exit 75), at a step known in advance.

Product code is untouched: the wrappers are installed here; nothing here ships in the package."""

from __future__ import annotations

import hashlib
import os
import signal
import sys


class TracedDataset:
    def __init__(self, dataset, trace_path: str):
        self.dataset = dataset
        self.trace = open(trace_path, "a", buffering=1)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, idx: int):
        item = self.dataset[idx]
        digest = hashlib.sha1(item["tokens"].numpy().tobytes()).hexdigest()[:16]
        self.trace.write(f"{int(idx)} {digest}\n")
        return item


def main() -> int:
    trace_path, stop_at, args = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    from alia_train.cli.train import main as alia_train
    from alia_train.data import datasets
    from alia_train.training.trainer import Trainer

    build = datasets.build_datasets

    def traced_build(*a, **kw):
        bundle = build(*a, **kw)
        bundle.train = TracedDataset(bundle.train, trace_path)
        return bundle

    datasets.build_datasets = traced_build
    if stop_at > 0:
        advance = Trainer._advance

        def advance_then_signal(self, result) -> None:
            advance(self, result)
            if self.progress.step == stop_at:
                os.kill(os.getpid(), signal.SIGUSR1)

        Trainer._advance = advance_then_signal
    return alia_train(args)


if __name__ == "__main__":
    sys.exit(main())
