"""Test-only launcher: `alia-data ARGS...`, holding one shard set mid-run.

    ALIA_TEST_HOLD_PREFIX=GLOB ALIA_TEST_HOLD=FILE python hold_tokenize.py ARGS...

The set whose output prefix matches GLOB (fnmatch) is held after its documents are encoded and
before anything of it is staged or published: the launcher creates FILE and waits until the
test removes it, or until a signal ends the run (scancel: SIGTERM, which alia-data turns into
"interrupted, nothing of this set published"). It lives in tests/ so that product code carries
no fault-injection hook; what the test does to the held task is as real as on a cluster.
"""

from __future__ import annotations

import fnmatch
import os
import sys
import time


def main() -> int:
    from alia_train.data import tokenize as tk

    pattern = os.environ.get("ALIA_TEST_HOLD_PREFIX", "")
    real = tk._run_results

    def held(tasks, run, progress, workers, initargs):
        real(tasks, run, progress, workers, initargs)
        if pattern and fnmatch.fnmatch(run.shards.prefix, pattern):
            hold = os.environ["ALIA_TEST_HOLD"]
            open(hold, "w").close()
            while os.path.exists(hold):
                time.sleep(0.05)

    tk._run_results = held
    from alia_train.cli.data import main as alia_data

    return alia_data(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
