"""Write-then-rename helpers: nothing half-written ever appears under a final name."""

from __future__ import annotations

import glob
import json
import os
import socket
from pathlib import Path


def tmp_name(final: str | os.PathLike) -> str:
    # Host and pid in the name: concurrent writers never share a temporary file, and stale
    # ones (from a crashed run on this host) can be told apart from live ones.
    return f"{os.fspath(final)}.tmp-{socket.gethostname()}-{os.getpid()}"


def fsync_replace(tmp: str, final: str) -> None:
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, final)


def write_text_atomic(final: str | os.PathLike, text: str) -> None:
    tmp = tmp_name(final)
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json_atomic(final: str | os.PathLike, obj) -> None:
    write_text_atomic(final, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def remove_stale_tmps(pattern: str) -> list[str]:
    """Delete `pattern*.tmp-<this host>-<pid>` files whose process is gone; return them."""
    host = socket.gethostname()
    removed = []
    for path in glob.glob(glob.escape(pattern) + "*.tmp-*"):
        tail = path.rsplit(".tmp-", 1)[1]
        h, _, pid = tail.rpartition("-")
        if h != host or not pid.isdigit() or _alive(int(pid)):
            continue
        try:
            os.unlink(path)
            removed.append(path)
        except OSError:
            pass
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def ensure_parent(path: str | os.PathLike) -> None:
    Path(path).absolute().parent.mkdir(parents=True, exist_ok=True)
