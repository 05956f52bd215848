"""Checkpoint directories on disk, and the rules that keep them safe.

    RUN_DIR/checkpoints/
        step_00000100/          a complete checkpoint (published)
            COMPLETE            written last, before publishing: file list with sizes
            ...                 megatron dist_checkpointing (torch_dist) files
        step_00000200.partial/  being written, or left by a crash: never loaded
        step_00000300.damaged/  found damaged when loading: set aside, never loaded or counted
        step_00000400.replaced/ while a re-save of the same step is published: removed after,
                                put back at the next start if the re-save did not finish
        latest                  "step_00000200", replaced atomically after each publish

A checkpoint is written under `.partial`, marked COMPLETE and renamed: a reader sees either the
whole checkpoint or nothing. COMPLETE lists every file with its size and CRC-32, so a checkpoint
whose files were later damaged (truncated, removed, or overwritten at the same size) fails
verification and the loader falls back to the one before.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import zlib
from pathlib import Path

from alia_train.fs import fsync_file, write_text_atomic

COMPLETE = "COMPLETE"
KEEP = "KEEP"
PARTIAL_SUFFIX = ".partial"
DAMAGED_SUFFIX = ".damaged"
REPLACED_SUFFIX = ".replaced"
_PUBLISHED_NAME = re.compile(r"step_\d+")
_READ_BLOCK = 8 << 20


def checkpoints_dir(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / "checkpoints"


def step_dir_name(step: int) -> str:
    return f"step_{step:08d}"


def step_of(path: Path) -> int:
    return int(path.name.split("_", 1)[1])


def partial_dir(run_dir, step: int) -> Path:
    return checkpoints_dir(run_dir) / (step_dir_name(step) + PARTIAL_SUFFIX)


def _file_manifest(directory: Path) -> dict[str, int]:
    return {
        str(p.relative_to(directory)): p.stat().st_size
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name != COMPLETE
    }


def file_crc32(path: Path) -> str:
    """CRC-32 of a file (zlib: ~2 GB/s, several times faster than SHA-256; it guards against
    disk and copy errors, not against tampering)."""
    crc = 0
    buf = bytearray(_READ_BLOCK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            crc = zlib.crc32(view[:n], crc)
    return f"{crc:08x}"


def checksums(directory: Path, names: list[str]) -> dict[str, str]:
    return {name: file_crc32(directory / name) for name in names}


def read_manifest(directory: Path) -> dict | None:
    try:
        manifest = json.loads((directory / COMPLETE).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and isinstance(manifest.get("files"), dict) else None


def verify(directory: Path, deep: tuple[int, int] | None = None) -> str | None:
    """None if `directory` is a complete, undamaged checkpoint; else what is wrong.

    Always checks that every listed file exists with its size. `deep=(rank, world)` also
    compares the CRC-32 of files rank, rank+world, ... with the manifest (every rank of a job
    reads its share). Checkpoints written before checksums existed are checked by size only."""
    if not (directory / COMPLETE).is_file():
        return "no COMPLETE marker (the save did not finish)"
    manifest = read_manifest(directory)
    if manifest is None:
        return "COMPLETE marker is unreadable"
    expected = manifest["files"]
    actual = _file_manifest(directory)
    for name, size in expected.items():
        if name not in actual:
            return f"file {name} is missing"
        if actual[name] != size:
            return f"file {name} has {actual[name]} bytes, expected {size}"
    crcs = manifest.get("crc32") or {}
    if deep is not None:
        rank, world = deep
        for name in sorted(crcs)[rank::world]:
            try:
                got = file_crc32(directory / name)
            except OSError as e:
                return f"file {name} is unreadable ({e.strerror})"
            if got != crcs[name]:
                return f"file {name} is corrupted (CRC-32 {got}, expected {crcs[name]})"
    return None


def publish(run_dir, step: int, extra: dict | None = None, crc32: dict[str, str] | None = None) -> Path:
    """Mark the `.partial` checkpoint of `step` complete, rename it to its final name and point
    `latest` at it. Called by one rank, after every rank finished writing (and fsynced: the
    writers fsync every file they write). `crc32`: checksums of the files, by name; files not in
    it are checksummed here."""
    src = partial_dir(run_dir, step)
    files = _file_manifest(src)
    crc32 = dict(crc32 or {})
    missing = [name for name in files if name not in crc32]
    for name in missing:  # written by rank 0's metadata step, not by a shard writer: small
        fsync_file(src / name)
    crc32.update(checksums(src, missing))
    manifest = {"step": step, "files": files, "crc32": {n: crc32[n] for n in files}, **(extra or {})}
    write_text_atomic(src / COMPLETE, json.dumps(manifest, indent=1))
    dst = checkpoints_dir(run_dir) / step_dir_name(step)
    # A re-save of the same step (after a resume, or in the portable form) replaces it whole;
    # the old one is moved aside first, so that a crash at any point leaves one of the two.
    replaced = dst.with_name(dst.name + REPLACED_SUFFIX)
    if dst.exists():
        os.replace(dst, replaced)
    os.replace(src, dst)
    write_text_atomic(checkpoints_dir(run_dir) / "latest", dst.name + "\n")  # fsyncs the rename too
    shutil.rmtree(replaced, ignore_errors=True)
    return dst


def complete_checkpoints(run_dir) -> list[Path]:
    """Published checkpoints, newest first (not verified)."""
    root = checkpoints_dir(run_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.glob("step_*") if p.is_dir() and _PUBLISHED_NAME.fullmatch(p.name)]
    return sorted(found, key=step_of, reverse=True)


def _latest_name(run_dir) -> str | None:
    latest_file = checkpoints_dir(run_dir) / "latest"
    try:
        return latest_file.read_text().strip() or None
    except OSError:
        return None


def candidates(run_dir) -> list[Path]:
    """Checkpoints to try loading, best first: the one `latest` names, then the others by step."""
    ordered = complete_checkpoints(run_dir)
    name = _latest_name(run_dir)
    if name:
        for p in ordered:
            if p.name == name:
                ordered.remove(p)
                ordered.insert(0, p)
                break
    return ordered


def remove_partials(run_dir) -> list[Path]:
    """Delete what interrupted saves left behind, and put back a checkpoint whose re-save did
    not finish. Only safe while no save runs (the run lock)."""
    root = checkpoints_dir(run_dir)
    removed = []
    if root.is_dir():
        for p in root.glob("*" + REPLACED_SUFFIX):
            final = p.with_name(p.name.removesuffix(REPLACED_SUFFIX))
            if final.exists():  # the re-save was published: the old one is not needed
                shutil.rmtree(p, ignore_errors=True)
            else:
                os.replace(p, final)
        for p in root.glob("*" + PARTIAL_SUFFIX):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


def set_aside(path: Path) -> Path:
    """Rename a damaged checkpoint to NAME.damaged: it is never tried or counted again, and stays
    on disk for inspection (delete it by hand)."""
    target = path.with_name(path.name + DAMAGED_SUFFIX)
    if target.exists():
        shutil.rmtree(target)
    os.replace(path, target)
    return target


def apply_retention(run_dir, keep: int) -> list[Path]:
    """Keep the newest `keep` intact checkpoints, plus any holding a KEEP file. A checkpoint that
    fails the quick check (files missing or of the wrong size) is not counted as one of `keep`,
    and is removed once `keep` intact ones are newer than it."""
    removed, intact = [], 0
    latest = _latest_name(run_dir)
    for p in complete_checkpoints(run_dir):
        if intact < keep:
            intact += verify(p) is None
            continue
        # `latest` is what a restart loads: never delete it, whatever its step.
        if not (p / KEEP).exists() and p.name != latest:
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
