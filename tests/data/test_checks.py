"""Data-source mistakes stop `alia-train` at start-up with one line and exit 2.

One real process runs alia-train's entry point (`alia_train.cli.train.main`, what the console
script calls) once per case: importing torch costs seconds, four launches would cost four times.
"""

from __future__ import annotations

import json
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

    base = ["+model=tiny", f"run.dir={tmp_path / 'run'}", "train.steps=1", "data.use_sample=false"]
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
