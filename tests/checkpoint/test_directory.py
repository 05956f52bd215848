"""Checkpoint directories on disk (no training process): checksums in COMPLETE, what counts as
published, setting damaged checkpoints aside, and retention that never counts a damaged one."""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import pytest

from alia_train.checkpoint import directory
from alia_train.fs import write_text_atomic


def _checkpoint(run_dir: Path, step: int, payload: bytes = b"") -> Path:
    partial = directory.partial_dir(run_dir, step)
    partial.mkdir(parents=True)
    (partial / "__0_0.distcp").write_bytes(payload or os.urandom(64 << 10))
    (partial / ".metadata").write_bytes(b"meta %d" % step)
    return directory.publish(run_dir, step)


def test_crc32_matches_zlib_over_the_whole_file(tmp_path):
    data = os.urandom((8 << 20) + 12345)  # more than one read block
    (tmp_path / "f").write_bytes(data)
    assert directory.file_crc32(tmp_path / "f") == f"{zlib.crc32(data):08x}"


def test_same_size_overwrite_fails_deep_verification_only(tmp_path):
    ckpt = _checkpoint(tmp_path, 2)
    assert directory.verify(ckpt, deep=(0, 1)) is None
    shard = ckpt / "__0_0.distcp"
    with open(shard, "r+b") as f:
        f.seek(1000)
        f.write(b"\0" * 4096)
    assert directory.verify(ckpt) is None  # sizes alone cannot see it
    assert "__0_0.distcp is corrupted" in directory.verify(ckpt, deep=(0, 1))
    # Ranks share the work: file i is read by rank i % world; together they find it.
    found = [directory.verify(ckpt, deep=(r, 2)) for r in range(2)]
    assert sum(p is not None for p in found) == 1


def test_checkpoints_without_checksums_are_checked_by_size(tmp_path):
    ckpt = _checkpoint(tmp_path, 2)
    manifest = directory.read_manifest(ckpt)
    del manifest["crc32"]  # as written before checksums existed
    write_text_atomic(ckpt / directory.COMPLETE, __import__("json").dumps(manifest))
    assert directory.verify(ckpt, deep=(0, 1)) is None


def test_set_aside_and_retention_never_count_damaged(tmp_path):
    for step in (2, 4, 6):
        _checkpoint(tmp_path, step)
    aside = directory.set_aside(directory.checkpoints_dir(tmp_path) / "step_00000006")
    assert aside.name == "step_00000006.damaged" and aside.is_dir()
    assert [p.name for p in directory.complete_checkpoints(tmp_path)] == ["step_00000004", "step_00000002"]
    # A truncated checkpoint nobody has loaded yet is not one of `keep` either.
    _checkpoint(tmp_path, 8)
    with open(directory.checkpoints_dir(tmp_path) / "step_00000008" / "__0_0.distcp", "r+b") as f:
        f.truncate(10)
    directory.apply_retention(tmp_path, keep=2)
    names = [p.name for p in directory.complete_checkpoints(tmp_path)]
    assert names == ["step_00000008", "step_00000004", "step_00000002"]  # 4 and 2 are the two kept
    _checkpoint(tmp_path, 10)
    directory.apply_retention(tmp_path, keep=2)
    names = [p.name for p in directory.complete_checkpoints(tmp_path)]
    assert names == ["step_00000010", "step_00000008", "step_00000004"]  # damaged 8 not counted
    _checkpoint(tmp_path, 12)
    directory.apply_retention(tmp_path, keep=2)
    # Two intact ones newer than it: the damaged 8 goes, with the old ones.
    assert [p.name for p in directory.complete_checkpoints(tmp_path)] == ["step_00000012", "step_00000010"]
    assert aside.is_dir()  # set-aside checkpoints are left for the user


def test_publish_merges_writer_checksums(tmp_path):
    partial = directory.partial_dir(tmp_path, 2)
    partial.mkdir(parents=True)
    (partial / "__0_0.distcp").write_bytes(b"abc")
    ckpt = directory.publish(tmp_path, 2, crc32={"__0_0.distcp": f"{zlib.crc32(b'abc'):08x}"})
    assert directory.read_manifest(ckpt)["crc32"] == {"__0_0.distcp": f"{zlib.crc32(b'abc'):08x}"}
    assert (directory.checkpoints_dir(tmp_path) / "latest").read_text().strip() == "step_00000002"


def _names(paths) -> list[str]:
    return [p.name for p in paths]


def test_a_save_is_invisible_until_published(tmp_path):
    """partial -> COMPLETE + rename -> latest: a checkpoint being written is never a candidate."""
    partial = directory.partial_dir(tmp_path, 4)
    partial.mkdir(parents=True)
    (partial / "__0_0.distcp").write_bytes(b"x" * 100)
    assert directory.candidates(tmp_path) == [] and directory.complete_checkpoints(tmp_path) == []
    ckpt = directory.publish(tmp_path, 4, extra={"layout": {"tp": 1}})
    assert ckpt.name == "step_00000004" and not partial.exists()
    manifest = directory.read_manifest(ckpt)
    assert manifest["step"] == 4 and manifest["files"] == {"__0_0.distcp": 100}
    assert manifest["layout"] == {"tp": 1} and set(manifest["crc32"]) == {"__0_0.distcp"}
    assert (directory.checkpoints_dir(tmp_path) / "latest").read_text() == "step_00000004\n"
    assert directory.verify(ckpt, deep=(0, 1)) is None


def test_partials_are_removed_and_never_loaded(tmp_path):
    _checkpoint(tmp_path, 2)
    directory.partial_dir(tmp_path, 4).mkdir()
    assert _names(directory.candidates(tmp_path)) == ["step_00000002"]
    assert _names(directory.remove_partials(tmp_path)) == ["step_00000004.partial"]
    assert sorted(_names(directory.checkpoints_dir(tmp_path).iterdir())) == ["latest", "step_00000002"]
    assert directory.verify(directory.partial_dir(tmp_path, 6)) == "no COMPLETE marker (the save did not finish)"


def test_latest_first_then_newest(tmp_path):
    for step in (2, 4, 6):
        _checkpoint(tmp_path, step)
    write_text_atomic(directory.checkpoints_dir(tmp_path) / "latest", "step_00000004\n")
    assert _names(directory.candidates(tmp_path)) == ["step_00000004", "step_00000006", "step_00000002"]
    (directory.checkpoints_dir(tmp_path) / "latest").unlink()  # lost: newest step first
    assert _names(directory.candidates(tmp_path)) == ["step_00000006", "step_00000004", "step_00000002"]


def test_retention_keeps_the_newest_and_marked_ones(tmp_path):
    for step in (2, 4, 6, 8):
        _checkpoint(tmp_path, step)
    (directory.checkpoints_dir(tmp_path) / "step_00000002" / directory.KEEP).touch()
    removed = directory.apply_retention(tmp_path, keep=2)
    assert _names(removed) == ["step_00000004"]
    assert _names(directory.complete_checkpoints(tmp_path)) == ["step_00000008", "step_00000006", "step_00000002"]


def test_retention_never_removes_what_latest_names(tmp_path):
    """A stage restarted at a lower step (another run's checkpoint as its start) publishes a
    checkpoint older by step than the ones already there; it is the one a restart loads."""
    for step in (6, 8, 2):
        _checkpoint(tmp_path, step)
    assert (directory.checkpoints_dir(tmp_path) / "latest").read_text().strip() == "step_00000002"
    directory.apply_retention(tmp_path, keep=1)
    assert _names(directory.complete_checkpoints(tmp_path)) == ["step_00000008", "step_00000002"]
    assert _names(directory.candidates(tmp_path))[0] == "step_00000002"


def test_load_accepts_a_checkpoint_a_run_or_its_checkpoints_dir(tmp_path):
    for step in (2, 4):
        _checkpoint(tmp_path, step)
    ckpts = directory.checkpoints_dir(tmp_path)
    assert _names(directory.load_candidates(str(ckpts / "step_00000002"))) == ["step_00000002"]
    assert _names(directory.load_candidates(str(tmp_path))) == ["step_00000004", "step_00000002"]
    assert _names(directory.load_candidates(str(ckpts))) == ["step_00000004", "step_00000002"]
    empty = tmp_path / "empty_run"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="checkpoint.load: no checkpoint found at .*empty_run"):
        directory.load_candidates(str(empty))


def test_a_re_save_of_a_step_replaces_it_and_a_crash_half_way_keeps_one(tmp_path):
    """A step saved again (in the portable form, or after a resume) replaces the first save
    whole; a crash between moving the old one aside and publishing the new one must not lose
    the step: the next start puts the old one back."""
    first = _checkpoint(tmp_path, 4, b"a" * 100)
    again = _checkpoint(tmp_path, 4, b"b" * 100)
    assert again == first and (again / "__0_0.distcp").read_bytes() == b"b" * 100
    assert sorted(_names(directory.checkpoints_dir(tmp_path).iterdir())) == ["latest", "step_00000004"]
    # The crash: old moved aside, new still .partial (COMPLETE written or not).
    os.replace(again, again.with_name(again.name + directory.REPLACED_SUFFIX))
    directory.partial_dir(tmp_path, 4).mkdir()
    assert directory.candidates(tmp_path) == []
    directory.remove_partials(tmp_path)
    assert _names(directory.candidates(tmp_path)) == ["step_00000004"]
    assert directory.verify(again, deep=(0, 1)) is None and (again / "__0_0.distcp").read_bytes() == b"b" * 100
