"""alia_train.fs: atomic writes leave the old file or the new one, stale temporaries of dead
processes are cleaned, output directories are checked before any work."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from alia_train.fs import (
    OutputPathError,
    make_writable_parent,
    pid_alive,
    remove_stale_tmps,
    tmp_name,
    write_bytes_atomic,
    write_json_atomic,
    write_text_atomic,
)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_atomic_writes_replace_whole_files(tmp_path):
    path = tmp_path / "f.json"
    write_json_atomic(path, {"a": "é"})
    assert path.read_text(encoding="utf-8") == '{\n  "a": "é"\n}\n'
    write_text_atomic(path, "new")
    write_bytes_atomic(path, b"newer")
    assert path.read_bytes() == b"newer"
    assert os.listdir(tmp_path) == ["f.json"]  # no temporary left behind


def test_a_failed_write_keeps_the_old_file_and_no_temporary(tmp_path):
    (tmp_path / "d").mkdir()  # a directory cannot be replaced by a file
    with pytest.raises(OSError):
        write_bytes_atomic(tmp_path / "d", b"x")
    assert (tmp_path / "d").is_dir() and sorted(os.listdir(tmp_path)) == ["d"]


def test_pid_alive():
    assert pid_alive(os.getpid())
    assert not pid_alive(_dead_pid())


def test_remove_stale_tmps_only_of_dead_processes_on_this_host(tmp_path):
    prefix = str(tmp_path / "out")
    host = socket.gethostname()
    dead = f"{prefix}_es.bin.tmp-{host}-{_dead_pid()}"
    live = tmp_name(f"{prefix}_ca.bin")
    other_host = f"{prefix}_eu.bin.tmp-elsewhere-{_dead_pid()}"
    for p in (dead, live, other_host):
        open(p, "w").close()
    assert remove_stale_tmps(prefix) == [dead]
    assert sorted(os.listdir(tmp_path)) == sorted(os.path.basename(p) for p in (live, other_host))


def test_make_writable_parent_names_the_obstacle(tmp_path):
    assert make_writable_parent(tmp_path / "a" / "b" / "x", "--output") == str(tmp_path / "a" / "b")
    (tmp_path / "file").write_text("")
    with pytest.raises(OutputPathError, match=r"--output .*: cannot create .* \(.*file is a file, not a directory\)"):
        make_writable_parent(tmp_path / "file" / "sub" / "x", "--output")
