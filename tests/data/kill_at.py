"""Test-only launcher: run `alia-data ARGS...` and SIGKILL it at an exact point of a publish.

    python kill_at.py GLOB N {before,after,term,hold} ARGS...

The process kills itself with SIGKILL at the N-th `os.replace` whose destination matches
GLOB, just before or just after that rename ("term": sends itself SIGTERM after it instead). It lives in tests/ so that product code carries
no fault-injection hook; the kill is as real as `kill -9` from outside, at a chosen point.
"hold" pauses just before that rename instead: it creates the file $ALIA_TEST_HOLD and goes on
once the test removes it (a second process can then meet this one mid-run).
"""

from __future__ import annotations

import fnmatch
import os
import signal
import sys
import time


def main() -> int:
    pattern, nth, when, *argv = sys.argv[1:]
    seen = 0
    real_replace = os.replace

    def replace(src, dst, *args, **kwargs):
        nonlocal seen
        hit = fnmatch.fnmatch(os.fspath(dst), pattern)
        seen += hit
        if hit and seen == int(nth) and when == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        if hit and seen == int(nth) and when == "hold":
            hold = os.environ["ALIA_TEST_HOLD"]
            open(hold, "w").close()
            while os.path.exists(hold):
                time.sleep(0.05)
        real_replace(src, dst, *args, **kwargs)
        if hit and seen == int(nth) and when in ("after", "term"):
            os.kill(os.getpid(), signal.SIGKILL if when == "after" else signal.SIGTERM)

    os.replace = replace
    from alia_train.cli.data import main as alia_data

    return alia_data(argv)


if __name__ == "__main__":
    sys.exit(main())
