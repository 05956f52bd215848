"""Turn a failed checkpoint write into one line that says why (disk full, file-size limit, no
permission) instead of the serializer's traceback ("unexpected pos 704 vs 598")."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import resource
from pathlib import Path

_DISK_FULL = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exhausted",
              errno.EFBIG: "a file-size limit was reached"}
_MESSAGES = {"No space left on device": errno.ENOSPC, "Disk quota exceeded": errno.EDQUOT,
             "File too large": errno.EFBIG}


class CheckpointWriteError(RuntimeError):
    """A checkpoint could not be written; the message is one line for the user."""


def _chain(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _errno_of(exc: BaseException) -> int | None:
    for e in _chain(exc):
        if isinstance(e, OSError) and e.errno in _DISK_FULL:
            return e.errno
        for text, code in _MESSAGES.items():
            if text in str(e):
                return code
    return None


def _free_bytes(path: Path) -> int | None:
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def _hit_file_size_limit(target: Path) -> bool:
    """A file in `target` reached this process's file-size limit (ulimit -f)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    if soft == resource.RLIM_INFINITY:
        return False
    try:
        return any(p.is_file() and p.stat().st_size >= soft for p in target.rglob("*"))
    except OSError:
        return False


def explain(exc: BaseException, target: Path, previous: str | None) -> CheckpointWriteError | None:
    """A one-line CheckpointWriteError if `exc` is a storage failure (disk full, quota, file-size
    limit), else None. torch's zip writer drops errno ("unexpected pos ..."), so a failure
    with (almost) no space left on the target's file system counts as disk full, and one that
    left a file of the target at this process's file-size limit as that limit."""
    code = _errno_of(exc)
    free = _free_bytes(target)
    if code is None and free is not None and free < (4 << 20):
        code = errno.ENOSPC
    if code is None and _hit_file_size_limit(target):
        code = errno.EFBIG
    if code is None:
        return None
    where = f"{free / 2**20:.1f} MiB free there" if free is not None else "free space unknown"
    resume = f"it resumes from {previous}" if previous else "it starts over (no earlier checkpoint)"
    fix = ("raise the limit (ulimit -f)" if code == errno.EFBIG
           else "free space there (or lower checkpoint.keep, or move run.dir to a larger disk)")
    return CheckpointWriteError(
        f"checkpoint: cannot write {target}: {_DISK_FULL[code]} ({where}); the unfinished "
        f"checkpoint was removed and earlier ones are intact; {fix}, then start the same "
        f"command again: {resume}"
    )


# megatron's shard writer logs a failed write (e.g. "Local worker 0 encountered an error: ...
# unexpected pos 704 vs 598") before raising; those lines are held back and shown only when the
# failure is not one that `explain` turns into a clear line.
_WRITER_LOGGERS = ("megatron.core.dist_checkpointing.strategies.filesystem_async",)


class _Hold(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def filter(self, record: logging.LogRecord) -> bool:
        self.records.append(record)
        return False


@contextlib.contextmanager
def writer_logs_held():
    """Hold the writer's log records; re-emit them on leaving unless `.records` was cleared."""
    hold = _Hold()
    loggers = [logging.getLogger(name) for name in _WRITER_LOGGERS]
    for logger in loggers:
        logger.addFilter(hold)
    try:
        yield hold
    finally:
        for logger in loggers:
            logger.removeFilter(hold)
        for record in hold.records:
            logging.getLogger(record.name).handle(record)
