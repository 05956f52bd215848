"""Test-only launcher: run `alia-convert ARGS...` and press Ctrl-C at an exact point of it.

    python interrupt_convert.py {read,write} N ARGS...

The process sends itself SIGINT (what Ctrl-C in a terminal sends) at the N-th tensor read from
a checkpoint (`read`: to-hf, inside torch.distributed.checkpoint's load) or the N-th tensor
written into one (`write`: from-hf, inside its save). Just before, it prints what the staging
directory `OUT_DIR.partial-<pid>` holds then (`STAGED <files>`), so the test can show there
was a half-written output to clean up. It lives in tests/ so that product code carries no
fault-injection hook; otherwise it is the console script: `sys.exit(main())`.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path


def _staged(out_dir: str) -> list[str]:
    out = Path(os.path.abspath(out_dir))
    stage = out.with_name(f"{out.name}.partial-{os.getpid()}")
    return sorted(str(p.relative_to(stage)) for p in stage.rglob("*") if p.is_file()) if stage.is_dir() else []


def main() -> int:
    where, nth, *argv = sys.argv[1:]
    out_dir = argv[2]  # to-hf SOURCE OUT_DIR / from-hf HF_DIR OUT_DIR
    seen = 0

    def ctrl_c() -> None:
        nonlocal seen
        seen += 1
        if seen == int(nth):
            print("STAGED " + " ".join(_staged(out_dir)), flush=True)
            os.kill(os.getpid(), signal.SIGINT)  # KeyboardInterrupt at the next bytecode, as from a terminal

    if where == "read":
        from alia_train.convert import dist_reader

        real_read = dist_reader._CachedMetadataReader.read_data

        def read_data(self, *args, **kwargs):
            ctrl_c()
            return real_read(self, *args, **kwargs)

        dist_reader._CachedMetadataReader.read_data = read_data
    else:
        from alia_train.convert import dist_writer

        real_resolve = dist_writer._LazySavePlanner.resolve_data

        def resolve_data(self, write_item):
            ctrl_c()
            return real_resolve(self, write_item)

        dist_writer._LazySavePlanner.resolve_data = resolve_data

    from alia_train.cli.convert import main as alia_convert

    return alia_convert(argv)


if __name__ == "__main__":
    sys.exit(main())
