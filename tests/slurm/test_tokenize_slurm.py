"""scripts/slurm/tokenize.sh under a real one-node Slurm (conftest.py), as a user types it:
`--tasks 3` over the shipped multilingual sample corpus (plain, .gz and .zst JSONL), one shard
set per input file (--set-bytes 1) so that each task writes two sets.

Task 1 is held (hold_tokenize.py) after encoding its second set, its first set published, and
cancelled there with scancel; the merge (afterany) then refuses in one line. The same command
submitted again runs only task 1, which keeps its first set and redoes the second; the result
is byte for byte what an uninterrupted run makes, its documents are SentencePiece's own
encoding, `alia-data mixture DIR/data.yaml` reads it, and so does a tiny training run.
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
import sentencepiece as spm
import yaml

from alia_train.data.indexed import read_documents
from alia_train.data.sample_corpus import sample_corpus_dir, sample_tokenizer_path

pytestmark = pytest.mark.slow  # a one-node Slurm started (~20 s), five jobs, a training run

REPO = Path(__file__).resolve().parents[2]
HOLD = Path(__file__).with_name("hold_tokenize.py")
TOK = str(sample_tokenizer_path())
SBATCH = ["--sbatch=--oversubscribe", "--sbatch=--cpus-per-task=1", "--merge-sbatch=--oversubscribe"]


def _corpus(root: Path) -> Path:
    import zstandard

    root.mkdir()
    for path in sorted(sample_corpus_dir().glob("*.jsonl")):
        data = path.read_bytes()
        if path.stem == "es":
            (root / "es.jsonl.gz").write_bytes(gzip.compress(data))
        elif path.stem == "code":
            (root / "code.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(data))
        else:
            (root / path.name).write_bytes(data)
    return root


def _submit(cluster, corpus: Path, out: Path, env: dict | None = None) -> tuple[int | None, int, str]:
    """(array job or None when every task finished before, merge job, the tasks submitted)."""
    cmd = ["bash", "scripts/slurm/tokenize.sh", "--tokenizer", TOK, "--output", str(out), "--tasks", "3",
           "--set-bytes", "1", *SBATCH, str(corpus)]
    proc = subprocess.run(cmd, cwd=REPO, env={**cluster.env, **(env or {})}, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    array = re.search(r"submitted array job (\d+): tasks (\S+) of 3", proc.stdout)
    merge = re.search(r"submitted merge job (\d+)", proc.stdout)
    assert merge and (array or "all 3 tasks finished before" in proc.stdout), proc.stdout + proc.stderr
    return (int(array.group(1)), int(merge.group(1)), array.group(2)) if array else (None, int(merge.group(1)), "")


def _wait(predicate, timeout: float, what: str, logs: Path) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            text = "".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in sorted(logs.glob("*.out")))
            pytest.fail(f"timed out ({timeout:.0f} s) waiting for {what}\n{text}")
        time.sleep(0.2)


def _state(cluster, job: str | int) -> tuple[str, str]:
    info = cluster.job(job)  # type: ignore[arg-type]
    return info.get("JobState", ""), info.get("ExitCode", "")


def _ended(cluster, job: str | int) -> bool:
    return _state(cluster, job)[0] in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT")


def _shard_files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "shards").glob("*/*")) if p.suffix in (".bin", ".idx")}


@pytest.fixture(scope="module")
def submitted(slurm_cluster, tmp_path_factory):
    """The whole story: submit with task 1 held, scancel it, let the merge refuse, resubmit."""
    cluster, tmp = slurm_cluster, tmp_path_factory.mktemp("tokenize_slurm")
    corpus, out, hold = _corpus(tmp / "corpus"), tmp / "tok", tmp / "hold"
    held = {"ALIA_DATA_CMD": f"{sys.executable} {HOLD}", "ALIA_TEST_HOLD_PREFIX": "*/task00001-set0001",
            "ALIA_TEST_HOLD": str(hold)}
    array, merge, todo = _submit(cluster, corpus, out, held)
    assert todo == "0-2"
    plan = json.loads((out / "plan.json").read_text())
    shard_dir = out / "shards" / plan["id"]
    assert [len(t["sets"]) for t in plan["tasks"]] == [2, 2, 2]
    _wait(hold.exists, 120, "task 1 to encode its second set", out / "logs")
    first_set = shard_dir / f"{plan['tasks'][1]['sets'][0]['name']}_{_lang(plan, 1, 0)}.bin"
    kept = first_set.stat()
    cluster.run("scancel", f"{array}_1")
    _wait(lambda: _ended(cluster, merge), 120, "the merge after the cancelled task", out / "logs")
    first = {"array": array, "merge": merge, "states": {i: _state(cluster, f"{array}_{i}") for i in range(3)},
             "merge_state": _state(cluster, merge),
             "merge_log": (out / "logs" / f"alia-tokenize-merge-{merge}.out").read_text(),
             "leftovers": sorted(p.name for p in shard_dir.glob("task00001-set0001*")),
             "markers": {i: (shard_dir / f"task0000{i}.done.json").stat().st_mtime_ns for i in (0, 2)}}
    hold.unlink()

    array2, merge2, todo2 = _submit(cluster, corpus, out)
    _wait(lambda: _ended(cluster, merge2), 120, "the second merge", out / "logs")
    second = {"array": array2, "merge": merge2, "todo": todo2, "merge_state": _state(cluster, merge2),
              "task_ids": re.findall(r"ArrayTaskId=(\S+)", cluster.run("scontrol", "show", "job", "-o",
                                                                     str(array2)).stdout),
              "task_log": (out / "logs" / f"alia-tokenize-{array2}_1.out").read_text(),
              "merge_log": (out / "logs" / f"alia-tokenize-merge-{merge2}.out").read_text(),
              "markers": {i: (shard_dir / f"task0000{i}.done.json").stat().st_mtime_ns for i in (0, 2)}}

    array3, merge3, _ = _submit(cluster, corpus, out)  # nothing left: the merge alone
    _wait(lambda: _ended(cluster, merge3), 120, "the third merge", out / "logs")
    second["third"] = (array3, _state(cluster, merge3))
    return {"corpus": corpus, "out": out, "plan": plan, "first": first, "second": second,
            "first_set": first_set, "kept": kept}


def _lang(plan: dict, task: int, s: int) -> str:
    name = Path(plan["tasks"][task]["sets"][s]["inputs"][0]).name
    return name.split(".")[0]


def test_a_cancelled_task_fails_the_merge_in_one_line(submitted):
    first = submitted["first"]
    assert first["states"][1][0] == "CANCELLED"
    assert first["states"][0] == first["states"][2] == ("COMPLETED", "0:0")
    assert first["merge_state"] == ("FAILED", "2:0")
    errors = re.findall(r"^alia-data: error: .*$", first["merge_log"], re.M)
    assert len(errors) == 1, first["merge_log"]
    assert "1 of 3 task(s)" in errors[0] and "unfinished (task 1: no completion marker; 1 of 2 shard set(s) " \
        "published)" in errors[0]
    assert first["leftovers"] == []  # the set being written when cancelled: nothing of it left


def test_the_resubmission_redoes_only_the_cancelled_tasks_work(submitted):
    second, out = submitted["second"], submitted["out"]
    assert second["todo"] == "1" and second["task_ids"] == ["1"]
    assert second["markers"] == submitted["first"]["markers"]  # tasks 0 and 2 untouched
    assert second["merge_state"] == ("COMPLETED", "0:0"), second["merge_log"]
    assert second["third"] == (None, ("COMPLETED", "0:0"))  # a third time: no array, the merge again
    log = second["task_log"]
    assert re.search(r"set 1/2 task00001-set0000: up to date", log), log
    assert re.search(r"set 2/2 task00001-set0001: \d+ documents", log), log
    st = submitted["first_set"].stat()
    assert (st.st_ino, st.st_mtime_ns) == (submitted["kept"].st_ino, submitted["kept"].st_mtime_ns)
    ran = {p.name for p in out.glob("logs/alia-tokenize-*_[0-9].out")}
    array = submitted["first"]["array"]
    assert ran == {f"alia-tokenize-{array}_{i}.out" for i in range(3)} | {f"alia-tokenize-{second['array']}_1.out"}

    # Byte for byte what an uninterrupted run of the same plan makes (here, without Slurm).
    from alia_train.cli.data import main

    ref = out.parent / "ref"
    base = ["tokenize", "--input", str(submitted["corpus"]), "--tokenizer", TOK, "--output-dir", str(ref),
            "--tasks", "3", "--set-bytes", "1", "--no-progress"]
    assert main([*base, "--plan"]) == 0
    for task in range(3):
        assert main([*base, "--task", str(task), "--workers", "0"]) == 0
    assert main(["merge", str(ref)]) == 0
    assert _shard_files(out) == _shard_files(ref) and len(_shard_files(out)) == 12
    got, want = (json.loads((d / "stats.json").read_text()) for d in (out, ref))
    assert (got["languages"], got["totals"], got["skipped"]) == (want["languages"], want["totals"], want["skipped"])


def test_documents_are_sentencepieces_encoding_and_mixture_reads_the_config(submitted):
    out = submitted["out"]
    config = yaml.safe_load((out / "data.yaml").read_text())
    assert config["tokenizer"] == TOK and config["use_sample"] is False
    assert yaml.safe_load((out / "data" / "tok.yaml").read_text()) == config
    sp = spm.SentencePieceProcessor(model_file=TOK)
    langs = set()
    for source in config["sources"]:
        lang = source["lang"]
        langs.add(lang)
        texts = [json.loads(line)["text"] for line in (sample_corpus_dir() / f"{lang}.jsonl").read_text().splitlines()]
        got = [d.tolist() for d in read_documents(source["path"])]
        assert got == [sp.encode(t) + [sp.eos_id()] for t in texts], lang
    assert langs == {"ca", "code", "en", "es", "eu", "gl"}
    stats = json.loads((out / "stats.json").read_text())
    assert stats["totals"]["documents"] == sum(v["documents"] for v in stats["languages"].values()) > 300

    proc = subprocess.run([sys.executable, "-m", "alia_train.cli.data", "mixture", str(out / "data.yaml")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert {line.split()[0] for line in proc.stdout.splitlines()[2:8]} == langs
    assert "lang" in submitted["second"]["merge_log"] and "effective" in submitted["second"]["merge_log"]


def test_a_tiny_training_run_reads_the_data_config(submitted, tmp_path):
    out = submitted["out"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "RANK", "WORLD_SIZE"))}
    proc = subprocess.run([str(Path(sys.executable).parent / "alia-train"), "--config-dir", str(out), "data=tok",
                           "+model=tiny", "train.device=cpu", "train.steps=2", f"run.dir={tmp_path / 'run'}",
                           "logging.console=plain"],
                          capture_output=True, text=True, timeout=300, env={**env, "WANDB_MODE": "disabled"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "training finished at step 2" in proc.stdout + proc.stderr
    resolved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["data"]
    assert [s["path"] for s in resolved["sources"]] == [s["path"] for s in
                                                        yaml.safe_load((out / "data.yaml").read_text())["sources"]]
