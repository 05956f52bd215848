"""All-or-nothing output directories.

A conversion writes into a sibling `OUT_DIR.partial-<pid>` and renames it to OUT_DIR only once
everything is written and flushed; on any error the staging directory is removed, so OUT_DIR
either holds a complete conversion or does not exist.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alia_train.convert.errors import ConversionError
from alia_train.fs import fsync_dir, fsync_tree


def check_output_dir(out_dir: str | os.PathLike) -> Path:
    out = Path(os.path.abspath(out_dir))
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConversionError(f"{out}: already exists and is not empty; choose a new output directory")
    return out


@contextmanager
def staged_output(out_dir: str | os.PathLike) -> Iterator[Path]:
    out = check_output_dir(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = out.with_name(f"{out.name}.partial-{os.getpid()}")
    if stage.exists():  # left by an earlier crash of a process with our pid
        shutil.rmtree(stage)
    stage.mkdir()
    try:
        yield stage
        fsync_tree(stage)
        if out.exists():
            out.rmdir()  # empty (checked above); os.replace cannot swap a directory for one
        os.replace(stage, out)
        fsync_dir(out.parent)  # the rename itself, durable
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
