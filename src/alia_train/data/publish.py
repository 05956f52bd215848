"""Publish a set of staged files under their final names, atomically as a set for readers.

Everything that takes disk space is written first, under temporary names, and fsynced
(`StagedFile`). Then, with no write left that could fail for want of space:

    1. the manifest is replaced by a "publishing" marker naming every file about to change;
    2. every staged file is renamed into place;
    3. the new manifest (staged too) is renamed over the marker: the commit point;
    4. files only the previous manifest named are deleted.

A kill before 1 leaves the previous set intact; a kill between 1 and 3 leaves a marker, which
readers refuse and `alia-data tokenize` redoes; after 3 the new set is complete.
"""

from __future__ import annotations

import os
import signal
from contextlib import contextmanager
from dataclasses import dataclass

from alia_train.data.manifest import publishing_marker, read_manifest
from alia_train.fs import fsync_dir, tmp_name, write_json_atomic, write_synced


@dataclass(frozen=True)
class StagedFile:
    tmp: str
    final: str


def stage_text(final: str, text: str) -> StagedFile:
    """Write `text` to a fsynced temporary beside `final` (not the name write_*_atomic uses:
    the manifest is staged while the marker is written over its final name)."""
    tmp = tmp_name(f"{final}.staged")
    write_synced(tmp, text.encode("utf-8"))
    return StagedFile(tmp, final)


class InterruptedAfterPublishing(KeyboardInterrupt):
    """Ctrl-C or SIGTERM arrived while a set was being published: the set was completed (its
    manifest, args[0], vouches for it), then the interrupt was acted on."""


def publish_set(files: list[StagedFile], manifest: StagedFile) -> list[str]:
    """Rename `files` into place, then `manifest`; return the stale files removed.

    Ctrl-C and SIGTERM wait until the set is complete (a few renames): only SIGKILL or a
    crash can stop it half-way, and then the marker says so. An interrupt held until then is
    raised as InterruptedAfterPublishing, so that the message can say the set is complete."""
    removed = None
    try:
        with _signals_held():
            removed = _publish(files, manifest)
    except KeyboardInterrupt as e:
        if removed is None and isinstance(e.__context__, OSError):
            raise e.__context__ from None  # the publish failed (the marker stays): that is the news
        if removed is None:
            raise
        raise InterruptedAfterPublishing(manifest.final) from e
    return removed


@contextmanager
def _signals_held():
    """Ctrl-C / SIGTERM arriving inside are acted on when it ends (by the handlers in place).

    Python-level handlers, not a signal mask: a process-directed signal blocked in the main
    thread is delivered to another thread (numpy's), and Python runs handlers in the main
    thread anyway."""
    caught: list[int] = []
    try:
        previous = {s: signal.signal(s, lambda signum, frame: caught.append(signum))
                    for s in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread: signals are not ours to handle
        yield
        return
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        for s in caught[:1]:
            signal.raise_signal(s)


def _publish(files: list[StagedFile], manifest: StagedFile) -> list[str]:
    directory = os.path.dirname(os.path.abspath(manifest.final))
    previous = read_manifest(manifest.final) or {}
    old_files = previous.get("files")
    old_names = set(old_files) if isinstance(old_files, dict) else set()
    new_names = {os.path.basename(f.final) for f in files}
    write_json_atomic(manifest.final, publishing_marker(sorted(old_names | new_names)))
    fsync_dir(directory)
    for f in files:
        os.replace(f.tmp, f.final)
    fsync_dir(directory)
    os.replace(manifest.tmp, manifest.final)
    fsync_dir(directory)
    removed = []
    stem = os.path.basename(manifest.final).removesuffix(".stats.json")
    for name in sorted(old_names - new_names - {os.path.basename(manifest.final)}):
        if os.path.basename(name) != name or not name.startswith((f"{stem}_", f"{stem}.")):
            continue  # only files of this prefix, beside the manifest: never follow a path out
        path = os.path.join(directory, name)
        try:
            os.unlink(path)
            removed.append(path)
        except FileNotFoundError:
            pass
    return removed


def discard(files: list[StagedFile]) -> None:
    for f in files:
        try:
            os.unlink(f.tmp)
        except FileNotFoundError:
            pass
