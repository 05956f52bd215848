"""Data-source mistakes stop `alia-train` at start-up with one line and exit 2, shards changed
after publishing included (`alia-data verify` accepts a set again after a copy).

One real process runs alia-train's entry point (`alia_train.cli.train.main`, what the console
script calls) once per case: importing torch costs seconds, four launches would cost four times.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

from alia_train.data.tokenize import TokenizeOptions, tokenize

LAUNCHER = textwrap.dedent("""
    import contextlib, io, json, sys
    from alia_train.cli.train import main
    results = []
    for argv in json.loads(sys.argv[1]):
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            rc = main(argv)
        results.append([rc, err.getvalue()])
    print("RESULTS " + json.dumps(results))
""")


def _sources(*pairs: tuple[str, str]) -> str:
    return "data.sources=[" + ",".join(f"{{path:'{p}',lang:{lang}}}" for p, lang in pairs) + "]"


def _damaged_sets(tmp_path: Path, corpus_dir: Path) -> dict[str, str]:
    """Shard sets (eu, sample tokenizer) changed after publishing, by name: their `_eu` prefix."""
    made = {}
    for name in ("changed", "overwritten", "foreign", "copied", "truncated", "pair"):
        prefix = tmp_path / name / "c"
        lang = "es" if name == "pair" else "eu"
        tokenize(TokenizeOptions([str(corpus_dir / f"{lang}.jsonl")], None, str(prefix), workers=0, progress=False))
        made[name] = f"{prefix}_{lang}"
    with open(f"{made['changed']}.bin", "r+b") as f:  # 8 bytes in place: same size
        f.seek(100)
        f.write(bytes(8))
    for name in ("overwritten", "foreign"):  # every token id 65535, beyond the 4,096 pieces
        path = Path(f"{made[name]}.bin")
        path.write_bytes(b"\xff" * path.stat().st_size)
    for name in ("foreign", "pair"):  # shards from another tool: no manifest
        Path(tmp_path / name / "c.stats.json").unlink()
    shutil.copy(f"{made['truncated']}.idx", f"{made['pair']}.idx")  # an .idx of another set
    idx = Path(f"{made['truncated']}.idx")
    idx.write_bytes(idx.read_bytes()[:-8])
    for f in (tmp_path / "copied").iterdir():  # copied without their times (cp without -p)
        data = f.read_bytes()
        f.unlink()
        f.write_bytes(data)
    return made


def test_bad_sources_are_one_line_exit_2_before_any_work(tmp_path, corpus_dir, tokenizer_path):
    # Shards made with the test tokenizer; the run uses the shipped sample tokenizer.
    other = tmp_path / "other" / "c"
    tokenize(TokenizeOptions([str(corpus_dir / "eu.jsonl")], str(tokenizer_path), str(other), workers=0,
                             progress=False))
    # A set whose publish was interrupted: the manifest is a marker.
    broken = tmp_path / "broken" / "c"
    tokenize(TokenizeOptions([str(corpus_dir / "eu.jsonl")], None, str(broken), workers=0, progress=False))
    marker = {"version": 2, "state": "publishing", "files": {"c_eu.bin": None, "c_eu.idx": None}}
    Path(f"{broken}.stats.json").write_text(json.dumps(marker))

    damaged = _damaged_sets(tmp_path, corpus_dir)
    base = ["+model=tiny", f"run.dir={tmp_path / 'run'}", "train.steps=1", "data.use_sample=false"]
    changed = ["modified after the manifest was written", "re-tokenize (--force)", "alia-data verify"]
    cases = {
        "missing": (base + [_sources((str(tmp_path / "nowhere" / "c_es"), "es"))],
                    ["data.sources[0] (lang es)", "nowhere/c_es.bin and", "nowhere/c_es.idx missing",
                     "run alia-data tokenize"]),
        "tokenizer": (base + [_sources((f"{other}_eu", "eu"))],
                      ["was tokenized with", str(tokenizer_path), "but data.tokenizer is", "tokenizer.model",
                       "sha256"]),
        "interrupted": (base + [_sources((f"{broken}_eu", "eu"), (str(tmp_path / "nope"), "es"))],
                        ["stopped while publishing", "run the same alia-data tokenize", "(and 1 more"]),
        "empty": (base, ["data.sources is empty and data.use_sample is false", "data.use_sample=true"]),
        "changed": (base + [_sources((damaged["changed"], "eu"))], [f"{damaged['changed']}.bin: ", *changed]),
        "overwritten": (base + [_sources((damaged["overwritten"], "eu"))],
                        [f"{damaged['overwritten']}.bin: ", *changed]),
        "foreign": (base + [_sources((damaged["foreign"], "eu"))],
                    [f"{damaged['foreign']}.bin: token id 65535 at token 0, outside the 4096 pieces",
                     "damaged or was made with another tokenizer"]),
        "truncated": (base + [_sources((damaged["truncated"], "eu"))],
                      [f"{damaged['truncated']}.idx: ", "bytes, the manifest says", "re-tokenize (--force)"]),
        "pair": (base + [_sources((damaged["pair"], "es"))],
                 [f"{damaged['pair']}.bin: ", "the two files do not belong together", "re-create the shards"]),
        "copied": (base + [_sources((damaged["copied"], "eu"))],
                   [f"{damaged['copied']}.bin: ", *changed, f"alia-data verify {tmp_path / 'copied' / 'c'}`"]),
    }
    proc = subprocess.run([sys.executable, "-c", LAUNCHER, json.dumps([argv for argv, _ in cases.values()])],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.split("RESULTS ", 1)[1])
    for (name, (_, needles)), (rc, err) in zip(cases.items(), results):
        assert rc == 2, (name, err)
        assert err.count("\n") == 1 and err.startswith("alia-train: error: "), (name, err)
        for needle in needles:
            assert needle in err, (name, needle, err)
    assert not (tmp_path / "run" / "checkpoints").exists()

    # The copy is the same content: `alia-data verify` hashes it and records its new times; a
    # set changed in place is refused by it, naming the file.
    from alia_train.data.checks import source_problem
    from conftest import cli

    for name, code, said in (("copied", 0, "files match their SHA-256"), ("changed", 2, "content differs")):
        proc = subprocess.run([cli("alia-data"), "verify", str(tmp_path / name / "c")], capture_output=True,
                              text=True, timeout=120)
        out = proc.stdout if code == 0 else proc.stderr
        assert proc.returncode == code and said in out and out.count("\n") == 1, proc.stdout + proc.stderr
    assert source_problem(damaged["copied"]) is None and source_problem(damaged["changed"]) is not None


def test_ids_beyond_the_vocabulary_between_the_sampled_blocks_stop_the_run_in_one_line(tmp_path):
    """The start-up samples a few blocks of each shard (indexed.token_range_problem); ids beyond
    the vocabulary elsewhere, in a shard changed in place with its times put back (what the
    start-up cannot see, docs/data.md), are caught in the sample that reads them: one line
    naming the shard and the id, exit 2, before torch's embedding sees them; nothing saved."""
    import os

    import numpy as np

    from alia_train.data.indexed import PROBE_BLOCKS, PROBE_BYTES, bin_path, read_index_info
    from alia_train.data.sample_corpus import sample_corpus_dir
    from conftest import cli, subprocess_env

    # Enough text that the sampled blocks leave most of the shard unread at start-up.
    lines = (sample_corpus_dir() / "es.jsonl").read_text().splitlines()
    text = tmp_path / "es.jsonl"
    text.write_text("\n".join(lines * 24) + "\n")
    prefix = tmp_path / "big" / "c"
    tokenize(TokenizeOptions([str(text)], None, str(prefix), workers=0, progress=False))
    source = f"{prefix}_es"
    path = Path(bin_path(source))
    itemsize = np.dtype(read_index_info(source).dtype).itemsize
    count, per = path.stat().st_size // itemsize, PROBE_BYTES // itemsize
    assert count > 3 * PROBE_BLOCKS * per, count  # most of it between the sampled blocks
    tokens = np.fromfile(path, dtype=read_index_info(source).dtype)
    sampled = np.zeros(count, dtype=bool)
    for start in {(count - per) * k // (PROBE_BLOCKS - 1) for k in range(PROBE_BLOCKS)}:
        sampled[start:start + per] = True
    tokens[~sampled] = np.iinfo(tokens.dtype).max
    times = path.stat()
    with open(path, "r+b") as f:  # in place, same size, its times put back (rsync -t of a bad copy)
        f.write(tokens.tobytes())
    os.utime(path, ns=(times.st_atime_ns, times.st_mtime_ns))

    run = tmp_path / "run"
    proc = subprocess.run([cli("alia-train"), "+model=tiny", f"run.dir={run}", f"data.cache_dir={tmp_path / 'cache'}",
                           "train.steps=4", "checkpoint.interval=1", "data.use_sample=false",
                           _sources((source, "es"))],
                          env=subprocess_env(), capture_output=True, text=True, timeout=600)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("alia-train: error: ")]
    assert proc.returncode == 2 and len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert f"{source}.bin: token id {np.iinfo(tokens.dtype).max} in sample " in errors[0]
    assert "outside the 4096 pieces of data.tokenizer" in errors[0] and "alia-data verify" in errors[0]
    assert not list((run / "checkpoints").glob("step_*")) if (run / "checkpoints").exists() else True
