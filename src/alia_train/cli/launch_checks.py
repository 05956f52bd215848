"""Checks of the paths a launch will use, made before any process group starts, so a wrong path
is one line and exit 2 rather than a traceback from deep inside the first write."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from alia_train.config.schema import Config


def _first_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def writable_dir_problem(key: str, directory: str) -> str | None:
    """Why `directory` (the value of config `key`) cannot be used or created as a directory
    to write in, or None."""
    path = Path(directory)
    if path.exists() and not path.is_dir():
        return f"{key}: {path} is a file, not a directory; choose another {key}"
    base = _first_existing(path)
    if not base.is_dir():
        return f"{key}: {path} is under {base}, which is a file; choose another {key}"
    try:
        # A real write, not os.access: root passes every permission check, and a full or
        # read-only file system only shows when writing.
        os.rmdir(tempfile.mkdtemp(prefix=".alia-train-write-test-", dir=base))
    except OSError as e:
        return f"{key}: cannot write in {base} ({e.strerror}); choose a {key} you may write"
    return None


def paths_problem(cfg: Config) -> str | None:
    """The first problem with the run's output directories or its checkpoint.load, or None."""
    return (writable_dir_problem("run.dir", cfg.run.dir)
            or writable_dir_problem("data.cache_dir", cfg.data.cache_dir)
            or checkpoint_load_problem(cfg))


def checkpoint_load_problem(cfg: Config) -> str | None:
    """Why `checkpoint.load` cannot be used, or None. Only asked when the run has no checkpoint
    of its own: a run that already saved resumes from those, whatever checkpoint.load says."""
    from alia_train.checkpoint.layout import complete_checkpoints, load_candidates

    source = cfg.checkpoint.load
    if not source or complete_checkpoints(cfg.run.dir):
        return None
    if not os.path.exists(source):
        return (f"checkpoint.load: {source} does not exist; give a checkpoint directory or a run "
                "directory with checkpoints, or checkpoint.load=null")
    try:
        load_candidates(source)
    except FileNotFoundError as e:
        return f"{e}; give a checkpoint directory (step_*) or a run directory with checkpoints"
    return None
