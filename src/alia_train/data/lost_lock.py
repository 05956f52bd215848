"""Stopping at once when an output prefix's lock was taken over (`alia-data`'s PREFIX.lock, a
run directory's lock: parallel/run_lock.py), from the lock's heartbeat thread, while the main
thread encodes: before it could publish over the new holder's set.

A run finds it out twice: the heartbeat (every minute, from a thread) and, just before it
publishes, the check `tokenize` makes (a forced heartbeat in the main thread, which raises:
the run then cleans up as for any error and exits 4 from alia-data's main).
"""

from __future__ import annotations

import glob
import multiprocessing
import os
import socket
import sys
from contextlib import suppress

from alia_train.exit_codes import EXIT_LOCK_LOST


def stop_at_once(prefix: str, line: str) -> None:
    """Remove this process's own temporary files of `prefix` (fs.tmp_name: host and pid in the
    name), stop its encoding workers (SIGTERM: left to find their parent gone, each would print
    a broken pipe's traceback), print `line`, and exit EXIT_LOCK_LOST at once (before the pool
    could replace the workers). Called from a thread: the main thread is never waited for."""
    for path in glob.glob(f"{glob.escape(prefix)}[._]*.tmp-{socket.gethostname()}-{os.getpid()}"):
        with suppress(OSError):
            os.unlink(path)
    for child in multiprocessing.active_children():
        child.terminate()
    print(line, file=sys.stderr, flush=True)
    os._exit(EXIT_LOCK_LOST)
