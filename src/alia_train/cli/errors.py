"""How every alia-* command reports a mistake: `PROG: error: <line>` on stderr, one per line of
the message, and the exit code to leave with (alia_train.exit_codes)."""

from __future__ import annotations

import sys

from alia_train.exit_codes import EXIT_CONFIG


def report_error(prog: str, message: str, code: int = EXIT_CONFIG) -> int:
    for line in message.splitlines():
        print(f"{prog}: error: {line}", file=sys.stderr, flush=True)
    return code
