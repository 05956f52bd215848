"""Small file-system helpers: durable atomic writes, fsync of files, trees and directories,
"is this process alive", and output directories checked before any work.

Write-then-rename: nothing half-written ever appears under a final name, and a crash leaves
the old file or the new one, whole.
"""

from __future__ import annotations

import glob
import json
import os
import socket
from pathlib import Path


def pid_alive(pid: int) -> bool:
    """Whether a process `pid` exists on this host (another user's counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def tmp_name(final: str | os.PathLike) -> str:
    # Host and pid in the name: concurrent writers never share a temporary file, and stale
    # ones (from a crashed run on this host) can be told apart from live ones.
    return f"{os.fspath(final)}.tmp-{socket.gethostname()}-{os.getpid()}"


def fsync_dir(directory: str | os.PathLike) -> None:
    """Make renames and creations inside `directory` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: str | os.PathLike) -> None:
    """Flush a file another writer left (or this one closed) to disk."""
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def fsync_tree(root: str | os.PathLike) -> None:
    """Flush every file under `root`, then `root` itself (deepest first)."""
    root = Path(root)
    for p in sorted(root.rglob("*"), reverse=True):
        if p.is_file():
            fsync_file(p)
    fsync_dir(root)


def write_synced(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` and fsync it (no rename: for files published later)."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def write_bytes_atomic(final: str | os.PathLike, data: bytes) -> None:
    """Write `data` to a temporary, fsync, rename over `final`, fsync the directory."""
    tmp = tmp_name(final)
    try:
        write_synced(tmp, data)
        os.replace(tmp, final)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    fsync_dir(os.path.dirname(os.path.abspath(final)))


def write_text_atomic(final: str | os.PathLike, text: str) -> None:
    write_bytes_atomic(final, text.encode("utf-8"))


def write_json_atomic(final: str | os.PathLike, obj, indent: int = 2) -> None:
    write_text_atomic(final, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n")


def remove_stale_tmps(pattern: str) -> list[str]:
    """Delete `pattern*.tmp-<this host>-<pid>` files whose process is gone; return them."""
    host = socket.gethostname()
    removed = []
    for path in glob.glob(glob.escape(pattern) + "*.tmp-*"):
        tail = path.rsplit(".tmp-", 1)[1]
        h, _, pid = tail.rpartition("-")
        if h != host or not pid.isdigit() or pid_alive(int(pid)):
            continue
        try:
            os.unlink(path)
            removed.append(path)
        except OSError:
            pass
    return removed


def ensure_parent(path: str | os.PathLike) -> None:
    Path(path).absolute().parent.mkdir(parents=True, exist_ok=True)


class OutputPathError(ValueError):
    """An output path whose directory cannot be created or written; the message says why."""


def make_writable_parent(path: str | os.PathLike, option: str) -> str:
    """Create the directory of `path` (an output named by `option`) and return it; raise
    OutputPathError, naming the obstacle, when it cannot be created or written."""
    parent = os.path.dirname(os.path.abspath(path))
    try:
        ensure_parent(path)
    except OSError as e:
        blocker = _existing_file_above(parent)
        why = f"{blocker} is a file, not a directory" if blocker else e.strerror
        raise OutputPathError(f"{option} {path}: cannot create {parent} ({why}); choose another path") from None
    if not os.access(parent, os.W_OK):
        raise OutputPathError(f"{option} {path}: {parent} is not writable (read-only?); choose another path")
    return parent


def _existing_file_above(path: str) -> str | None:
    while path and path != os.path.dirname(path):
        if os.path.isfile(path):
            return path
        path = os.path.dirname(path)
    return None
