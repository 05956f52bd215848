"""RUN_DIR/evals.jsonl, written: batches of rows appended line by line (the format and the one
reader are in alia_train.report.evals).

Each row is one `os.write` of a whole line on a file opened O_APPEND, then fsync: a crash
leaves at most one torn last line, never a change to an earlier row. Before a batch, a file
that does not end in a newline (a torn line from a crash) gets one, so the new rows never glue
onto the torn one. A batch (one checkpoint, one asked-for task) is complete when all its
`rows` rows are there; only complete batches count as scored. One alia-eval at a time per run
directory (a lock file beside evals.jsonl): a second one waits, then skips what the first one
scored.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from alia_train.report.evals import EVALS_FILE, read_evals

LOCK_FILE = ".evals.lock"


def settings_key(settings: dict) -> str:
    """A short, stable name for the settings that change a score (few-shot, limit, dtype)."""
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def batch_key(step: int, checkpoint_id: str, group: str, settings: str) -> tuple[int, str, str, str]:
    return (step, checkpoint_id, group, settings)


def scored(run_dir: str | Path) -> set[tuple[int, str, str, str]]:
    """Batch keys of the complete batches already in RUN_DIR/evals.jsonl."""
    rows = read_evals(Path(run_dir) / EVALS_FILE).rows
    return {batch_key(r["step"], str(r.get("checkpoint_id")), str(r.get("group")), str(r.get("settings")))
            for r in rows}


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _ends_with_newline(fd: int) -> bool:
    size = os.fstat(fd).st_size
    return size == 0 or os.pread(fd, 1, size - 1) == b"\n"


def append_batch(run_dir: str | Path, rows: list[dict]) -> Path:
    """Append one batch: every row gets `rows` (the batch size), one line each, fsynced."""
    path = Path(run_dir) / EVALS_FILE
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        if not _ends_with_newline(fd):
            _write_all(fd, b"\n")  # close a torn line: it stays unreadable, and alone
        for row in rows:
            line = json.dumps({**row, "rows": len(rows)}, ensure_ascii=False, allow_nan=False) + "\n"
            _write_all(fd, line.encode("utf-8"))
            os.fsync(fd)
    finally:
        os.close(fd)
    return path


@contextmanager
def run_dir_lock(run_dir: str | Path, log: Callable[[str], None]) -> Iterator[None]:
    """Held while alia-eval scores a run directory; a second alia-eval waits for it."""
    path = Path(run_dir) / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            log(f"another alia-eval (pid {holder}) is scoring {run_dir}: waiting for it to finish")
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock
