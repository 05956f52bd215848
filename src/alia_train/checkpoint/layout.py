"""Checkpoint directories on disk, and the rules that keep them safe.

    RUN_DIR/checkpoints/
        step_00000100/          a complete checkpoint (published)
            COMPLETE            written last, before publishing: file list with sizes
            ...                 megatron dist_checkpointing (torch_dist) files
        step_00000200.partial/  being written, or left by a crash: never loaded
        latest                  "step_00000200", replaced atomically after each publish

A checkpoint is written under `.partial`, verified, marked COMPLETE and renamed: a reader sees
either the whole checkpoint or nothing. A COMPLETE checkpoint whose files were later damaged
(truncated, removed) fails verification and the loader falls back to the one before.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

COMPLETE = "COMPLETE"
KEEP = "KEEP"
PARTIAL_SUFFIX = ".partial"


def checkpoints_dir(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / "checkpoints"


def step_dir_name(step: int) -> str:
    return f"step_{step:08d}"


def step_of(path: Path) -> int:
    return int(path.name.split("_", 1)[1])


def partial_dir(run_dir, step: int) -> Path:
    return checkpoints_dir(run_dir) / (step_dir_name(step) + PARTIAL_SUFFIX)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _file_manifest(directory: Path) -> dict[str, int]:
    return {
        str(p.relative_to(directory)): p.stat().st_size
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name != COMPLETE
    }


def verify(directory: Path) -> str | None:
    """None if `directory` is a complete, undamaged checkpoint; else what is wrong."""
    marker = directory / COMPLETE
    if not marker.is_file():
        return "no COMPLETE marker (the save did not finish)"
    try:
        expected = json.loads(marker.read_text())["files"]
    except (ValueError, KeyError):
        return "COMPLETE marker is unreadable"
    actual = _file_manifest(directory)
    for name, size in expected.items():
        if name not in actual:
            return f"file {name} is missing"
        if actual[name] != size:
            return f"file {name} has {actual[name]} bytes, expected {size}"
    return None


def publish(run_dir, step: int, extra: dict | None = None) -> Path:
    """Mark the `.partial` checkpoint of `step` complete, rename it to its final name and point
    `latest` at it. Called by one rank, after every rank finished writing."""
    src = partial_dir(run_dir, step)
    for p in src.rglob("*"):
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
    manifest = {"step": step, "files": _file_manifest(src), **(extra or {})}
    write_atomic(src / COMPLETE, json.dumps(manifest, indent=1))
    dst = checkpoints_dir(run_dir) / step_dir_name(step)
    if dst.exists():  # a re-save of the same step (e.g. after a resume): replace it whole
        shutil.rmtree(dst)
    os.replace(src, dst)
    write_atomic(checkpoints_dir(run_dir) / "latest", dst.name + "\n")
    _fsync_dir(checkpoints_dir(run_dir))
    return dst


def complete_checkpoints(run_dir) -> list[Path]:
    """Published checkpoints, newest first (not verified)."""
    root = checkpoints_dir(run_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.glob("step_*") if p.is_dir() and not p.name.endswith(PARTIAL_SUFFIX)]
    return sorted(found, key=step_of, reverse=True)


def candidates(run_dir) -> list[Path]:
    """Checkpoints to try loading, best first: the one `latest` names, then the others by step."""
    ordered = complete_checkpoints(run_dir)
    latest_file = checkpoints_dir(run_dir) / "latest"
    if latest_file.is_file():
        name = latest_file.read_text().strip()
        for p in ordered:
            if p.name == name:
                ordered.remove(p)
                ordered.insert(0, p)
                break
    return ordered


def remove_partials(run_dir) -> list[Path]:
    """Delete what interrupted saves left behind. Only safe while no save runs (the run lock)."""
    root = checkpoints_dir(run_dir)
    removed = []
    if root.is_dir():
        for p in root.glob("*" + PARTIAL_SUFFIX):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


def apply_retention(run_dir, keep: int) -> list[Path]:
    """Keep the newest `keep` complete checkpoints, plus any holding a KEEP file."""
    removed = []
    for p in complete_checkpoints(run_dir)[keep:]:
        if not (p / KEEP).exists():
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


def load_candidates(path: str) -> list[Path]:
    """`checkpoint.load` may name one checkpoint, a run dir or its checkpoints/ dir."""
    p = Path(path)
    if (p / COMPLETE).exists() or (p / "metadata.json").exists():
        return [p]
    run_dir = p.parent if p.name == "checkpoints" else p
    found = candidates(run_dir)
    if not found:
        raise FileNotFoundError(f"checkpoint.load: no checkpoint found at {path}")
    return found
