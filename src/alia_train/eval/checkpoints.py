"""Which checkpoints of a run alia-eval scores: `--checkpoints all | latest | S1,S2,...`.

Only published checkpoints (checkpoint/directory.py: renamed from .partial after COMPLETE was
written) are candidates, so a save in progress is never read. Each is checked before it is
loaded (COMPLETE lists every file with its size: a file missing or cut short skips that
checkpoint, with a warning). A checkpoint's identity is its step plus the CRC-32 of its COMPLETE
manifest: a step saved again after a resume (other weights) is scored again.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from alia_train.checkpoint import directory
from alia_train.eval.errors import EvalError


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    step: int
    ident: str  # CRC-32 of COMPLETE


def _ident(path: Path) -> str:
    try:
        return f"{zlib.crc32((path / directory.COMPLETE).read_bytes()):08x}"
    except OSError:
        return "missing"


def parse_selection(text: str) -> str | list[int]:
    text = text.strip()
    if text in ("all", "latest"):
        return text
    try:
        steps = sorted({int(s) for s in text.split(",") if s.strip()})
    except ValueError:
        steps = []
    if not steps or any(s < 0 for s in steps):
        raise EvalError(f"--checkpoints: '{text}' is not all, latest or a list of steps (e.g. 1000,2000)")
    return steps


def select(run_dir: Path, selection: str | list[int], log: Callable[[str], None]) -> list[Checkpoint]:
    """The selected checkpoints, oldest first; damaged ones left out with a warning."""
    if not run_dir.is_dir():
        raise EvalError(f"{run_dir}: no such run directory")
    published = sorted(directory.complete_checkpoints(run_dir), key=directory.step_of)
    if not published:
        raise EvalError(f"{run_dir}: no checkpoints (expected {directory.checkpoints_dir(run_dir)}/step_*; "
                        "has the run saved one yet? checkpoint.interval sets how often it saves)")
    by_step = {directory.step_of(p): p for p in published}
    if selection == "latest":
        newest = directory.candidates(run_dir)[0]
        chosen = [newest]
    elif selection == "all":
        chosen = published
    else:
        missing = [s for s in selection if s not in by_step]
        if missing:
            have = ", ".join(str(s) for s in sorted(by_step))
            raise EvalError(f"--checkpoints: no checkpoint at step {missing[0]} in {run_dir} (steps saved: {have})")
        chosen = [by_step[s] for s in selection]
    out = []
    for path in chosen:
        problem = directory.verify(path)
        if problem:
            log(f"WARNING: skipping checkpoint {path.name}: {problem}")
            continue
        out.append(Checkpoint(path, directory.step_of(path), _ident(path)))
    return out
