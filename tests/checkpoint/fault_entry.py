"""Test-only entry point: `python fault_entry.py PAUSE_SECONDS [--delay-writes=S] [alia-train args...]`
runs alia-train with

* writer.before_publish_hook set to hold every save for PAUSE_SECONDS after its files are
  written and before it is published, announcing it on stdout, so a test can kill the run in
  that window;
* with --delay-writes=S, every checkpoint writer (the forked child of an async save) waiting S
  seconds before it writes, so that training has changed the weights by the time it does.

Product code only has the hook (None); nothing here ships in the package."""

from __future__ import annotations

import sys
import time


def main() -> int:
    pause = float(sys.argv[1])
    args = sys.argv[2:]
    from alia_train.checkpoint import async_write, writer
    from alia_train.cli.train import main as alia_train

    def hold(target) -> None:
        print(f"[fault] pausing {pause}s before publishing {target.name}", flush=True)
        time.sleep(pause)

    writer.before_publish_hook = hold
    if args and args[0].startswith("--delay-writes="):
        delay = float(args.pop(0).split("=", 1)[1])
        write = async_write.WriteThenChecksum.__call__

        def late_write(self, *a, **kw):
            time.sleep(delay)
            return write(self, *a, **kw)

        async_write.WriteThenChecksum.__call__ = late_write
    return alia_train(args)


if __name__ == "__main__":  # checkpoint writers may start processes that re-import this file
    sys.exit(main())
