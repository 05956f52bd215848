"""Publishing a shard set is atomic as a set: real `alia-data` processes SIGKILLed at every
step of a `--force` publish, shards damaged after publishing, and what readers then do.

Readers are `alia-data tokenize` itself ("up to date" only for a set its manifest vouches
for), training's start-up check (`check_sources`) and `alia-data mixture`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from alia_train.data.checks import source_problem
from alia_train.data.indexed import pair_problem
from alia_train.data.manifest import is_publishing, read_manifest
from alia_train.data.sample_corpus import sample_tokenizer_path
from alia_train.data.tokenize import TokenizeOptions, finished_stats, tokenize
from alia_train.data.tokenizer import load_tokenizer

KILL_AT = str(Path(__file__).with_name("kill_at.py"))
OLD_LANGS, NEW_LANGS = ("ca", "es", "gl"), ("ca", "es", "eu")


def _write_jsonl(path: Path, docs: dict[str, int], salt: str) -> Path:
    lines = [json.dumps({"text": f"{lang} {salt} document {i}: " + "paraula casa etxea " * (i % 7 + 1), "lang": lang})
             for lang, n in docs.items() for i in range(n)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    """Old and new inputs (different languages and sizes) and reference outputs of each."""
    root = tmp_path_factory.mktemp("sets")
    old = _write_jsonl(root / "old.jsonl", {"ca": 30, "es": 40, "gl": 20}, "old")
    new = _write_jsonl(root / "new.jsonl", {"ca": 35, "es": 60, "eu": 25}, "new")
    refs = {}
    for name, src in (("old", old), ("new", new)):
        prefix = root / "ref" / name
        tokenize(TokenizeOptions([str(src)], None, str(prefix), workers=0, progress=False))
        refs[name] = {lang: (Path(f"{prefix}_{lang}.bin").read_bytes(), Path(f"{prefix}_{lang}.idx").read_bytes())
                      for lang in (OLD_LANGS if name == "old" else NEW_LANGS)}
    return {"old": old, "new": new, "refs": refs, "tok": str(sample_tokenizer_path())}


def _alia_data(*args: str, kill: tuple | None = None) -> subprocess.CompletedProcess:
    head = [sys.executable, KILL_AT, *map(str, kill)] if kill else [sys.executable, "-m", "alia_train.cli.data"]
    return subprocess.run([*head, *map(str, args)], capture_output=True, text=True, timeout=120)


def _tokenize_args(sets, which: str, prefix: Path, *extra: str) -> list[str]:
    return ["tokenize", "--input", sets[which], "--tokenizer", sets["tok"], "--output-prefix", prefix,
            "--workers", "0", "--no-progress", *extra]


def _readers_see(sets, prefix: Path) -> str:
    """'old' or 'new' when the readers accept the set (and it is exactly that one), else
    'refused'; a set the readers accept that is neither fails the test."""
    stats = finished_stats(str(prefix), deep=True)
    problems = {lang: source_problem(f"{prefix}_{lang}") for lang in OLD_LANGS + NEW_LANGS}
    if stats is None:
        listed = [lang for lang in OLD_LANGS + NEW_LANGS if Path(f"{prefix}_{lang}.bin").exists()]
        assert all(problems[lang] is not None for lang in listed), problems  # training refuses them all
        return "refused"
    langs = tuple(sorted(stats["outputs"]))
    which = "old" if langs == OLD_LANGS else "new"
    for lang in langs:
        assert problems[lang] is None
        got = (Path(f"{prefix}_{lang}.bin").read_bytes(), Path(f"{prefix}_{lang}.idx").read_bytes())
        assert got == sets["refs"][which][lang], f"{lang}: the manifest vouches for files of neither run"
    return which


def test_kill_at_the_first_bin_rename_is_refused_then_redone(tmp_path, sets):
    """The reported sequence: tokenize, then --force killed right after the first .bin rename,
    then the same command without --force."""
    prefix = tmp_path / "out" / "c"
    assert _alia_data(*_tokenize_args(sets, "old", prefix)).returncode == 0
    killed = _alia_data(*_tokenize_args(sets, "new", prefix, "--force"), kill=(f"{prefix}_*.bin", 1, "after"))
    assert killed.returncode == -9, killed.stderr

    # The reported state: a new .bin beside an old .idx; but the manifest is a marker now.
    assert any(pair_problem(f"{prefix}_{lang}") for lang in ("ca", "es"))
    assert is_publishing(read_manifest(f"{prefix}.stats.json"))
    assert _readers_see(sets, prefix) == "refused"
    assert "stopped while publishing" in source_problem(f"{prefix}_es", load_tokenizer(None))
    for arg in (f"{prefix}.data.yaml", f"{prefix}.stats.json"):
        mix = _alia_data("mixture", arg)
        assert mix.returncode == 2 and mix.stderr.count("\n") == 1, mix.stderr
        assert mix.stderr.startswith("alia-data: error: ") and "stopped while publishing" in mix.stderr

    rerun = _alia_data(*_tokenize_args(sets, "new", prefix))
    assert rerun.returncode == 0, rerun.stderr
    assert "stopped while publishing; redoing it" in rerun.stderr and "up to date" not in rerun.stderr
    assert _readers_see(sets, prefix) == "new"
    assert not list(prefix.parent.glob("c_gl.*")), "files only the old set had are removed"
    assert not list(prefix.parent.glob("*.tmp-*"))
    again = _alia_data(*_tokenize_args(sets, "new", prefix))
    assert again.returncode == 0 and "up to date" in again.stderr


# (destination glob, n-th matching rename, before/after it) -> what readers see after the kill
KILL_POINTS = [
    ("*.stats.json", 1, "before", "old"),      # staged everything, marker not yet written
    ("*.stats.json", 1, "after", "refused"),   # marker written, nothing renamed
    ("*_*.idx", 3, "after", "refused"),        # every shard renamed
    ("*.data.yaml", 1, "after", "refused"),    # everything but the manifest renamed
    ("*.stats.json", 2, "after", "new"),       # committed, stale old files not yet removed
]


@pytest.mark.parametrize("glob, nth, when, seen", KILL_POINTS, ids=[f"{g}#{n}-{w}" for g, n, w, _ in KILL_POINTS])
def test_a_kill_anywhere_in_a_publish_leaves_old_new_or_refused(tmp_path, sets, glob, nth, when, seen):
    prefix = tmp_path / "c"
    tokenize(TokenizeOptions([sets["old"]], sets["tok"], str(prefix), workers=0, progress=False))
    killed = _alia_data(*_tokenize_args(sets, "new", prefix, "--force"), kill=(str(tmp_path / glob), nth, when))
    assert killed.returncode == -9, killed.stderr
    assert _readers_see(sets, prefix) == seen

    # The same --force command again (or, once the old set is gone, without --force) ends
    # with the new set, verified.
    extra = ("--force",) if seen == "old" else ()
    rerun = _alia_data(*_tokenize_args(sets, "new", prefix, *extra))
    assert rerun.returncode == 0, rerun.stderr
    assert ("up to date" in rerun.stderr) == (seen == "new")
    assert _readers_see(sets, prefix) == "new"


def test_sigterm_during_a_publish_waits_for_the_set_to_be_complete(tmp_path, sets):
    prefix = tmp_path / "c"
    tokenize(TokenizeOptions([sets["old"]], sets["tok"], str(prefix), workers=0, progress=False))
    termed = _alia_data(*_tokenize_args(sets, "new", prefix, "--force"), kill=(f"{prefix}_*.bin", 1, "term"))
    assert termed.returncode == 130 and "interrupted" in termed.stderr, termed.stderr
    assert _readers_see(sets, prefix) == "new"


def test_shards_changed_after_publishing_are_never_up_to_date(tmp_path, sets):
    prefix = tmp_path / "c"
    opts = TokenizeOptions([sets["old"]], sets["tok"], str(prefix), workers=0, progress=False)
    tokenize(opts)
    es_bin, es_idx = Path(f"{prefix}_es.bin"), Path(f"{prefix}_es.idx")

    # Same size, other bytes: the start-up check sees the modification time (a stat), "up to
    # date" the checksum.
    data = bytearray(es_bin.read_bytes())
    data[100:108] = bytes(8)
    es_bin.write_bytes(bytes(data))
    assert "modified after the manifest was written" in source_problem(str(prefix) + "_es")
    log: list[str] = []
    tokenize(opts, log=log.append)
    assert "content differs from the manifest" in log[0] and "redoing" in log[0]
    assert _readers_see(sets, prefix) == "old"

    # A truncated .idx: training's start-up check names the file.
    es_idx.write_bytes(es_idx.read_bytes()[:-8])
    assert "the manifest says" in source_problem(str(prefix) + "_es")

    # No manifest at all (shards from elsewhere): an .idx from another run is still caught.
    Path(f"{prefix}.stats.json").unlink()
    shutil.copy(tmp_path / "c_ca.idx", es_idx)
    assert "do not belong together" in source_problem(str(prefix) + "_es")


@pytest.fixture
def small_dir(request, tmp_path):
    """A directory where writes fail: a real 300 KiB tmpfs ("tmpfs", root only:
    ENOSPC) or a 100 KB file-size limit ("ulimit", anyone: EFBIG). Yields (dir, preexec)."""
    import os
    import resource

    d = tmp_path / "small"
    d.mkdir()
    if request.param == "ulimit":
        yield d, lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
        return
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(d)],
                                           capture_output=True).returncode != 0:
        pytest.skip("mounting a tmpfs needs root")
    try:
        yield d, None
    finally:
        subprocess.run(["umount", str(d)], check=True)


@pytest.mark.parametrize("small_dir", ["tmpfs", "ulimit"], indirect=True)
def test_a_full_disk_fails_in_one_line_and_keeps_the_previous_set(tmp_path, sets, small_dir):
    directory, preexec = small_dir
    prefix = directory / "c"
    big = _write_jsonl(tmp_path / "big.jsonl", {"es": 3000, "ca": 1000}, "big")
    assert _alia_data(*_tokenize_args(sets, "old", prefix)).returncode == 0
    full = subprocess.run([sys.executable, "-m", "alia_train.cli.data", "tokenize", "--input", big, "--tokenizer",
                           sets["tok"], "--output-prefix", prefix, "--workers", "0", "--no-progress", "--force"],
                          capture_output=True, text=True, timeout=120, preexec_fn=preexec)
    assert full.returncode == 2 and full.stderr.count("\n") == 1, full.stderr
    assert full.stderr.startswith("alia-data: error: cannot write ") and "earlier outputs are untouched" in full.stderr
    assert _readers_see(sets, prefix) == "old"
    assert sorted(p.name for p in directory.iterdir()) == [
        "c.data.yaml", "c.stats.json", *(f"c_{lang}.{ext}" for lang in OLD_LANGS for ext in ("bin", "idx"))]
    again = _alia_data(*_tokenize_args(sets, "old", prefix))
    assert again.returncode == 0 and "up to date" in again.stderr


def test_a_read_only_output_directory_is_refused_before_any_work(tmp_path, sets):
    import os

    directory = tmp_path / "ro"
    directory.mkdir()
    if os.geteuid() == 0:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,ro", "tmpfs", str(directory)], check=True)
    else:
        directory.chmod(0o555)
    try:
        proc = _alia_data(*_tokenize_args(sets, "old", directory / "c"))
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", str(directory)], check=True)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "is not writable" in proc.stderr and "choose another path" in proc.stderr


def test_a_second_tokenize_into_a_prefix_in_use_is_refused(tmp_path, sets):
    """Two `tokenize --force` into one prefix at once, with different inputs: the first holds
    PREFIX.lock (paused just before it publishes); the second is refused in one line naming
    it and the prefix, and the first then publishes its own set, intact."""
    import os
    import time

    prefix = tmp_path / "c"
    hold = tmp_path / "hold"
    first = subprocess.Popen([sys.executable, KILL_AT, str(tmp_path / "*.stats.json"), "1", "hold",
                              *map(str, _tokenize_args(sets, "old", prefix, "--force"))],
                             stderr=subprocess.PIPE, text=True, env={**os.environ, "ALIA_TEST_HOLD": str(hold)})
    try:
        deadline = time.monotonic() + 120
        while not hold.exists():
            assert first.poll() is None and time.monotonic() < deadline, first.stderr.read()
            time.sleep(0.05)
        second = _alia_data(*_tokenize_args(sets, "new", prefix, "--force"))
    finally:
        hold.unlink(missing_ok=True)
        _, err = first.communicate(timeout=120)
    assert second.returncode == 2 and second.stderr.count("\n") == 1, second.stderr
    assert second.stderr.startswith(f"alia-data: error: output prefix {prefix} is in use by pid {first.pid} ")
    assert first.returncode == 0, err
    assert _readers_see(sets, prefix) == "old"
    assert not Path(f"{prefix}.lock").exists()
    # Once the first is done: without --force, other inputs are refused over its finished set;
    # with it, the command goes through.
    other = _alia_data(*_tokenize_args(sets, "new", prefix))
    assert other.returncode == 2 and other.stderr.count("\n") == 1 and "--force" in other.stderr, other.stderr
    assert _alia_data(*_tokenize_args(sets, "new", prefix, "--force")).returncode == 0
    assert _readers_see(sets, prefix) == "new"
