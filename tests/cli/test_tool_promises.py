"""What the docs promise about the failures of the other tools, checked from outside (issue #24),
as tests/cli/test_doc_promises.py does for alia-train, alia-convert and alia-data's Ctrl-C: each
test runs the installed console script in a subprocess on real files, then checks the exit code,
that an error is one line with no traceback, and the files afterwards: nothing lost, nothing
silently wrong.

* `alia-data tokenize` whose `PREFIX.lock` another process takes over (docs/configuration.md
  "Exit codes": 4), found just before publishing and, by the heartbeat, while encoding: exit 4,
  one line naming the prefix and the new holder, the previous set intact and "up to date";
* `alia-data tokenize` rerun after a shard or an `.idx` was truncated, or a shard changed at the
  same size and time: redone, saying why (docs/data.md "Re-running");
* `alia-report` that cannot write its output (exit 1), and bad run directories (exit 2)
  (docs/configuration.md "Exit codes", docs/observability.md);
* `alia-plan` on a run that does not fit: exit 1 with suggestions, each of which fits (exit 0)
  (docs/cluster.md, docs/long-context.md).
"""

from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from report.synthetic import make_run, records

from alia_train.data.sample_corpus import sample_tokenizer_path
from alia_train.exit_codes import EXIT_CONFIG, EXIT_DOES_NOT_FIT, EXIT_FAILED, EXIT_LOCK_LOST, EXIT_OK
from conftest import cli, subprocess_env
from helpers import files_of, group_is_gone


def _run(cmd: list, timeout: int = 120, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=subprocess_env(),
                          timeout=timeout, **kwargs)


def _one_error_line(proc, prog: str) -> str:
    """The whole of stderr: one `PROG: error:` line, no traceback, nothing else."""
    stderr = proc.stderr if isinstance(proc.stderr, str) else proc.stderr.decode()
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: ") and "Traceback" not in stderr, stderr[-4000:]
    return lines[0]


# ------------------------------------------------------------------------------------------
# alia-data tokenize: its lock taken over (exit 4)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    """A small input of two languages, and highly compressible .jsonl.gz inputs that take long
    to encode but little disk: `slow` (25 MB of text: a few seconds) and `endless` (300 MB:
    more than a minute on a 2-core machine)."""
    root = tmp_path_factory.mktemp("inputs")
    small = root / "small.jsonl"
    small.write_text("".join(json.dumps({"text": f"document {i}: " + "la casa de la paraula " * (i % 5 + 1),
                                         "lang": ("es", "ca")[i % 2]}) + "\n" for i in range(40)), encoding="utf-8")
    line = (json.dumps({"text": "la casa de la paraula etxea herri 1234 " * 60, "lang": "es"}) + "\n").encode()
    found = {"small": small}
    for name, text_bytes in (("slow", 25_000_000), ("endless", 300_000_000)):
        found[name] = root / f"{name}.jsonl.gz"
        with gzip.open(found[name], "wb", compresslevel=1) as f:
            for _ in range(text_bytes // len(line) // 1000):
                f.write(line * 1000)
    return found


def _tokenize(src: Path, prefix: Path, *extra: str) -> list[str]:
    return [cli("alia-data"), "tokenize", "--input", str(src), "--tokenizer", str(sample_tokenizer_path()),
            "--output-prefix", str(prefix), "--no-progress", *extra]


def _set_files(prefix: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(prefix.parent.glob(prefix.name + "[._]*"))}


def _up_to_date(src: Path, prefix: Path) -> bool:
    again = _run(_tokenize(src, prefix, "--workers", "0"))
    assert again.returncode == EXIT_OK, again.stderr
    return again.stderr.startswith(f"up to date: {prefix}.stats.json")


# Test-side, as tests/cli/test_doc_promises.py's PUBLISH_WITH_CTRL_C: alia-data's own main, with
# the lock's heartbeat every 0.2 s instead of every 60 s, so that the heartbeat (not the check
# before publishing) is what finds the lock taken.
FAST_HEARTBEAT = """
import sys
from alia_train.parallel.run_lock import RunLock
beat = RunLock.start_heartbeat
RunLock.start_heartbeat = lambda self, every_s=None, on_lost=None: beat(self, 0.2, on_lost)
from alia_train.cli.data import main
sys.exit(main(sys.argv[1:]))
"""


def _take_over_while_encoding(cmd: list[str], prefix: Path, wait_for: str) -> dict:
    """Start `cmd` (a --force tokenize into `prefix`); once `wait_for` (a glob) exists, take its
    PREFIX.lock over as another alia-data would after 15 minutes without a heartbeat (a holder
    whose node froze): the lock's time set back 16 minutes, then RunLock takes it, from this
    process. Returns the run's exit code, stderr, seconds from the takeover to its end, and
    whether this process still holds the lock afterwards."""
    from alia_train.parallel.run_lock import RunLock

    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=subprocess_env(),
                            start_new_session=True)
    lock_path = Path(f"{prefix}.lock")
    ours = RunLock(prefix.parent, path=lock_path, subject=f"output prefix {prefix}")
    try:
        deadline = time.monotonic() + 60
        # The run's record in the lock (not a lock file created and not yet written), and `wait_for`.
        while not ((h := ours.holder()) is not None and h.pid == proc.pid and list(prefix.parent.glob(wait_for))):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.01)
        old = time.time() - 16 * 60
        os.utime(lock_path, (old, old))
        ours.acquire()  # breaks the stale lock and takes it
        taken = time.monotonic()
        _, err = proc.communicate(timeout=120)
        seconds = time.monotonic() - taken
        now = ours.holder()
        still_ours = now is not None and now.token == ours.token
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
            proc.wait()
        ours.release()
    return {"code": proc.returncode, "stderr": err, "seconds": seconds, "still_ours": still_ours, "pgid": proc.pid}


def _check_lost_lock(run: dict, prefix: Path, published: dict, small: Path) -> None:
    assert run["code"] == EXIT_LOCK_LOST, run["stderr"][-3000:]
    line = _one_error_line(subprocess.CompletedProcess([], run["code"], "", run["stderr"]), "alia-data")
    assert line.startswith(f"alia-data: error: lost the lock {prefix}.lock of output prefix {prefix} "
                           f"(now held by pid {os.getpid()} on host "), line
    assert line.endswith("nothing more was published into it: run the same command again once the other has "
                         "finished"), line
    assert run["still_ours"], "the run that lost the lock removed its new holder's lock"
    assert group_is_gone(run["pgid"]), "an encoding worker outlived the run"
    assert _set_files(prefix) == published  # the previous set, byte for byte: nothing was published over it
    assert not list(prefix.parent.glob("*.tmp-*")), sorted(p.name for p in prefix.parent.iterdir())
    assert _up_to_date(small, prefix)


def test_a_tokenize_whose_lock_is_taken_over_publishes_nothing_and_exits_4(inputs, tmp_path):
    """docs/configuration.md, Exit codes: 4 = "alia-data: another process took the output
    prefix's lock; this one stopped writing". A --force run over a finished set, encoding (one
    worker), has its lock taken over; it finishes encoding within seconds, before its heartbeat
    (a minute) looks: the check just before publishing finds the lock gone, and it publishes
    nothing. Exit 4, one line naming the lock, the prefix and the new holder; the new holder's
    lock is left alone; no worker or temporary file left; the previous set intact and still
    "up to date"."""
    prefix = tmp_path / "c"
    assert _run(_tokenize(inputs["small"], prefix, "--workers", "0")).returncode == EXIT_OK
    published = _set_files(prefix)
    run = _take_over_while_encoding(_tokenize(inputs["slow"], prefix, "--workers", "1", "--force"), prefix, "c.lock")
    _check_lost_lock(run, prefix, published, inputs["small"])


def test_a_lock_taken_over_while_encoding_stops_the_run_at_its_next_heartbeat(inputs, tmp_path):
    """The same, found by the heartbeat while a long encoding goes on (alia-data's main with the
    heartbeat every 0.2 s, FAST_HEARTBEAT): the run stops within seconds, not at the end of the
    encoding (more than a minute), with the same one line: its worker stopped (not a broken
    pipe's traceback), its temporary shard (there when the lock was taken) removed."""
    prefix = tmp_path / "c"
    assert _run(_tokenize(inputs["small"], prefix, "--workers", "0")).returncode == EXIT_OK
    published = _set_files(prefix)
    cmd = [sys.executable, "-c", FAST_HEARTBEAT, *_tokenize(inputs["endless"], prefix, "--workers", "1", "--force")[1:]]
    run = _take_over_while_encoding(cmd, prefix, "c_es.bin.tmp-*")
    assert run["seconds"] < 10, run
    _check_lost_lock(run, prefix, published, inputs["small"])


# ------------------------------------------------------------------------------------------
# alia-data tokenize: rerun after the set was damaged


def test_tokenize_after_a_shard_or_idx_was_truncated_redoes_it_saying_why(inputs, tmp_path):
    """docs/data.md, Re-running: "a file that does not match (changed, truncated, deleted)
    means the run is redone, saying why" (in-process: tests/data/test_publish.py). The same
    command, after each damage: a .bin truncated, an .idx truncated, a .bin changed at the same
    size with its modification time put back (only the SHA-256 sees it). Each rerun says which
    file and why, never "up to date", and gives the first run's files back, byte for byte."""
    prefix = tmp_path / "c"
    cmd = _tokenize(inputs["small"], prefix, "--workers", "0")
    assert _run(cmd).returncode == EXIT_OK
    first = {k: v for k, v in _set_files(prefix).items() if not k.endswith(".stats.json")}

    def truncate(path: Path) -> None:
        path.write_bytes(path.read_bytes()[:-8])

    def same_size_and_time(path: Path) -> None:
        st = path.stat()
        data = bytearray(path.read_bytes())
        assert data[-16:-8] != bytes(8)
        data[-16:-8] = bytes(8)
        path.write_bytes(bytes(data))
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))

    damages = [("c_ca.bin", truncate, "bytes, the manifest says"), ("c_es.idx", truncate, "bytes, the manifest says"),
               ("c_es.bin", same_size_and_time, "content differs from the manifest (sha256)")]
    for name, damage, why in damages:
        damage(tmp_path / name)
        rerun = _run(cmd)
        assert rerun.returncode == EXIT_OK, rerun.stderr
        said = rerun.stderr.splitlines()
        assert len(said) == 1 and said[0].startswith(f"not up to date ({tmp_path / name}: "), rerun.stderr
        assert said[0].endswith("); redoing the run") and why in said[0], rerun.stderr
        now = {k: v for k, v in _set_files(prefix).items() if not k.endswith(".stats.json")}
        assert now == first, name
        assert _up_to_date(inputs["small"], prefix)


# ------------------------------------------------------------------------------------------
# alia-report


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A run directory as alia-train leaves one (tests/report/synthetic.py): metrics.jsonl of 12
    steps with validation, config.yaml and mixture.json. Reported once as it should be, which
    also builds matplotlib's font cache before a test limits the size of the files it writes."""
    root = tmp_path_factory.mktemp("report")
    run = make_run(root / "run", records(1, 12), steps=12)
    ok = _run([cli("alia-report"), run, "--out", root / "ok"])
    assert ok.returncode == EXIT_OK and (root / "ok" / "report.md").is_file(), ok.stdout + ok.stderr
    return run


@pytest.fixture
def unwritable(request, tmp_path):
    """An --out alia-report cannot write: under a file, a file, a read-only file system (a
    read-only tmpfs as root, a 0o555 directory otherwise), a full one (a 20 KiB tmpfs, root
    only), a file-size limit (`ulimit -f`, anyone). Yields (out, preexec_fn)."""
    import resource

    kind = request.param
    (tmp_path / "a_file").write_text("not a directory")
    if kind in ("under_a_file", "a_file", "file_size_limit"):
        limit = (lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (10_000, 10_000))) if kind == "file_size_limit" else None
        yield {"under_a_file": tmp_path / "a_file" / "report", "a_file": tmp_path / "a_file",
               "file_size_limit": tmp_path / "report"}[kind], limit
        return
    mount = tmp_path / "mnt"
    mount.mkdir()
    options = "size=64k,ro" if kind == "read_only" else "size=20k"
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount)],
                                           capture_output=True).returncode != 0:
        if kind == "full_disk" or os.geteuid() == 0:  # root writes into a 0o555 directory all the same
            pytest.skip("mounting a small tmpfs needs root (and a mount namespace that allows it)")
        mount.chmod(0o555)
        yield mount / "report", None
        return
    try:
        yield mount / "report", None
    finally:
        subprocess.run(["umount", str(mount)], check=True)


@pytest.mark.parametrize("unwritable", ["under_a_file", "a_file", "read_only", "full_disk", "file_size_limit"],
                         indirect=True)
def test_alia_report_that_cannot_write_its_output_exits_1_in_one_line(run_dir, unwritable):
    """docs/configuration.md, Exit codes: 1 = "alia-report: an output it could not write";
    docs/observability.md. One line naming the output directory and what to do, no traceback;
    no report.md (nor a temporary file) written, the run directory as it was."""
    out, preexec = unwritable
    before = files_of(run_dir)
    proc = _run([cli("alia-report"), run_dir, "--out", out], preexec_fn=preexec)
    assert proc.returncode == EXIT_FAILED, proc.stdout + proc.stderr
    line = _one_error_line(proc, "alia-report")
    assert line.startswith(f"alia-report: error: cannot write the report to {out}"), line
    assert "choose another --out DIR" in line, line
    assert files_of(run_dir) == before
    if out.is_dir():
        assert not (out / "report.md").exists() and not list(out.glob("*.tmp-*")), sorted(out.iterdir())


def test_alia_report_on_a_bad_run_directory_is_one_line_exit_2(run_dir, tmp_path):
    """docs/observability.md: "Errors are one line with exit code 2: no metrics.jsonl in
    RUN_DIR, or no complete record in it yet"; and an input it cannot read, named. Nothing is
    written."""
    no_metrics = tmp_path / "empty"
    no_metrics.mkdir()
    torn = make_run(tmp_path / "torn", [], tail='{"kind": "train", "step": 2, "lo')
    evals_unreadable = make_run(tmp_path / "evals", records(1, 6))
    (evals_unreadable / "evals.jsonl").mkdir()
    cases = [(no_metrics, f"{no_metrics}/metrics.jsonl: no such file (is {no_metrics} a run directory?)"),
             (tmp_path / "missing", f"{tmp_path}/missing/metrics.jsonl: no such file"),
             (torn, f"{torn}/metrics.jsonl: no complete record yet"),
             (evals_unreadable, f"cannot read {evals_unreadable}/evals.jsonl: Is a directory")]
    for run, says in cases:
        before = files_of(run) if run.exists() else None
        proc = _run([cli("alia-report"), run])
        assert proc.returncode == EXIT_CONFIG, (run, proc.stdout + proc.stderr)
        line = _one_error_line(proc, "alia-report")
        assert line.startswith(f"alia-report: error: {says}"), line
        assert (files_of(run) if run.exists() else None) == before, run


def test_alia_report_skips_a_damaged_line_and_reports_the_rest_unchanged(run_dir, tmp_path):
    """docs/observability.md, Restarts: "A line cut short by a kill ... is skipped or
    salvaged". The same run with a torn line (a launch killed mid-write, the next one's record
    glued to it) and a line of garbage in its metrics.jsonl: exit 0, and report.md and every
    plot are byte for byte those of the clean file."""
    run = tmp_path / "run"
    make_run(run, records(1, 12), steps=12)
    clean = _run([cli("alia-report"), run, "--out", tmp_path / "clean", "-q"])
    assert clean.returncode == EXIT_OK and clean.stdout == "", clean.stdout + clean.stderr
    metrics = run / "metrics.jsonl"
    lines = metrics.read_text().splitlines(keepends=True)
    lines[3] = '{"kind": "train", "step": 99, "loss": 1.' + lines[3]  # half a record, the next glued to it
    lines.insert(6, "\x00\x00 not json at all \xff\n")
    metrics.write_text("".join(lines))
    damaged = _run([cli("alia-report"), run, "--out", tmp_path / "damaged"])
    assert damaged.returncode == EXIT_OK and damaged.stderr == "", damaged.stderr
    assert files_of(tmp_path / "damaged") == files_of(tmp_path / "clean")


# ------------------------------------------------------------------------------------------
# alia-plan

LONG_CONTEXT = ["+model=alia_40b_32k", "cluster=marenostrum5", "cluster.nodes=256"]


def test_alia_plan_of_a_run_that_does_not_fit_exits_1_and_each_layout_it_suggests_fits():
    """docs/configuration.md, Exit codes: 1 = "alia-plan: the run does not fit (suggestions
    printed)"; docs/long-context.md: the 32k stage without CP "needs 100.6 GiB per GPU on the
    last stage; alia-plan then exits 1, names parallel.cp=2 among what would help, and lists
    layouts that fit: parallel.cp=4, parallel.cp=4 train.recompute=selective, parallel.cp=8".
    Each listed layout, added to the same command, fits (exit 0); so does the recipe itself."""
    proc = _run([cli("alia-plan"), *LONG_CONTEXT, "parallel.cp=1"])
    assert proc.returncode == EXIT_DOES_NOT_FIT, proc.stdout[-3000:] + proc.stderr
    assert proc.stderr == "", proc.stderr
    out = proc.stdout
    assert "= total per GPU" in out and "100.59" in out and "fits in 64 GiB: NO" in out, out
    helps = out.split("what would help:\n", 1)[1].split("layouts that fit", 1)[0]
    assert "parallel.cp=2 splits each 32,768-token sequence over 2 GPUs" in helps, helps
    listed = out.split("layouts that fit (add these overrides):\n", 1)[1].split("\n\n", 1)[0].splitlines()
    layouts = [re.match(r"\s+(.*?)\s+\(peak ([\d.]+) GiB\)$", line).groups() for line in listed]
    assert [overrides for overrides, _ in layouts] == [
        "parallel.cp=4", "parallel.cp=4 train.recompute=selective", "parallel.cp=8"], listed
    for overrides, peak in layouts:
        fits = _run([cli("alia-plan"), *LONG_CONTEXT, "parallel.cp=1", *overrides.split()])
        assert fits.returncode == EXIT_OK, (overrides, fits.stdout[-3000:] + fits.stderr)
        assert "fits in 64 GiB: yes" in fits.stdout, overrides
        totals = re.search(r"= total per GPU\s+([\d.]+)\s+([\d.]+)", fits.stdout).groups()  # first, last stage
        assert abs(max(map(float, totals)) - float(peak)) <= 0.05, (overrides, peak, totals)
    recipe = _run([cli("alia-plan"), *LONG_CONTEXT])
    assert recipe.returncode == EXIT_OK and "fits in 64 GiB: yes" in recipe.stdout, recipe.stdout[-3000:]
