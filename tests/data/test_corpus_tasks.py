"""A corpus in N tasks without Slurm: `alia-data tokenize --output-dir DIR --tasks N` with --plan
and --task I, then `alia-data merge DIR` (what scripts/slurm/tokenize.sh runs; the real-Slurm
test is tests/slurm/test_tokenize_slurm.py). Real SentencePiece, real files of every input kind
(JSONL plain/.gz, a Parquet-backed folder, a dataset saved with save_to_disk), real SIGKILLs.
"""

from __future__ import annotations

import gzip
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
import sentencepiece as spm
import yaml

from alia_train.cli.data import build_parser, main
from alia_train.data.corpus_plan import (
    DEFAULT_SET_BYTES,
    array_ranges,
    corpus_request,
    cut_sets,
    make_plan,
    split_by_size,
)
from alia_train.data.corpus_merge import config_name
from alia_train.data.indexed import read_documents
from alia_train.data.readers import discover_inputs
from alia_train.data.sample_corpus import sample_corpus_dir, sample_tokenizer_path
from alia_train.data.tokenize import TokenizeOptions

TOK = str(sample_tokenizer_path())
KILL_AT = str(Path(__file__).with_name("kill_at.py"))


def _texts(lang: str) -> list[str]:
    return [json.loads(line)["text"] for line in (sample_corpus_dir() / f"{lang}.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """The sample corpus laid out by language, records without a language field, in every
    input kind: corpus/<lang>/... (--lang-from-path '/corpus/([a-z]+)/')."""
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = tmp_path_factory.mktemp("in") / "corpus"
    for lang in ("ca", "es", "gl"):
        (root / lang).mkdir(parents=True)
    (root / "ca" / "web.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in _texts("ca")))
    (root / "es" / "web.jsonl.gz").write_bytes(gzip.compress("".join(json.dumps({"text": t}) + "\n"
                                                                     for t in _texts("es")).encode()))
    (root / "gl" / "web.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in _texts("gl")))
    en = root / "en" / "data"  # a Parquet-backed dataset as the Hub lays it out
    en.mkdir(parents=True)
    (root / "en" / "README.md").write_text("---\nconfigs: [{config_name: default, data_files: data/*.parquet}]\n---\n")
    texts = _texts("en")
    for i in range(2):
        pq.write_table(pa.table({"text": texts[i::2]}), en / f"train-{i:05d}-of-00002.parquet")
    datasets.Dataset.from_dict({"text": _texts("eu")}).save_to_disk(str(root / "eu" / "saved"), num_shards=2)
    return root


def _expected(corpus: Path, lang: str) -> list[str]:
    if lang == "en":  # the Parquet parts hold every other document
        texts = _texts("en")
        return texts[0::2] + texts[1::2]
    return _texts(lang)


def _base(corpus: Path, out: Path, *extra: str) -> list[str]:
    return ["tokenize", "--input", str(corpus), "--tokenizer", TOK, "--output-dir", str(out),
            "--lang-from-path", "/corpus/([a-z]+)/", "--no-progress", *extra]


def _one_line_error(capsys, needle: str) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("alia-data: error: ") and needle in err, err
    return err


def test_the_split_is_balanced_and_independent_of_the_listing_order():
    rng = random.Random(0)
    sizes = {f"/c/{i:03d}.jsonl": int(rng.lognormvariate(15, 1.5)) for i in range(300)}
    groups = split_by_size(sizes, 7)
    for _ in range(3):
        shuffled = dict(rng.sample(list(sizes.items()), len(sizes)))
        assert split_by_size(shuffled, 7) == groups
    assert sorted(p for g in groups for p in g) == sorted(sizes)
    loads = [sum(sizes[p] for p in g) for g in groups]
    assert max(loads) <= sum(loads) / 7 + max(sizes.values())  # greedy's bound
    assert max(loads) / (sum(loads) / 7) < 1.05  # and in practice close to even
    assert split_by_size({"a": 5, "b": 5, "c": 1}, 2) == [["a", "c"], ["b"]]

    sets = cut_sets(sorted(sizes), sizes, 10**7)
    assert [p for s in sets for p in s] == sorted(sizes)
    assert all(len(s) == 1 or sum(sizes[p] for p in s) <= 10**7 for s in sets)
    assert array_ranges([5, 0, 1, 2, 7, 8]) == "0-2,5,7-8"
    # data=NAME under --config-dir DIR: DIR's name, unless a packaged option has it (found first)
    assert (config_name("/gpfs/tok/salamandra v2"), config_name("/x/sample")) == ("salamandra_v2", "sample_corpus")


def test_the_same_files_listed_in_any_way_make_the_same_plan(corpus):
    files = [i.path for i in discover_inputs([str(corpus)])]
    assert len(files) == 7  # 3 JSONL, 2 Parquet parts, 2 Arrow files of the saved dataset
    ways = [[str(corpus)], list(reversed(files)), [str(corpus / "*")],
            [str(corpus / "eu" / "saved"), str(corpus / "*" / "web.*"), str(corpus / "en" / "**" / "*.parquet")]]
    plans = []
    for inputs in ways:
        opts = TokenizeOptions(inputs=inputs, tokenizer=TOK, output_prefix="", lang_from_path="/corpus/([a-z]+)/")
        plans.append(make_plan("/x", corpus_request(opts, 3, 1, check_fields=False)))
    assert len({p.id for p in plans}) == 1 and len({p.tasks for p in plans}) == 1


def test_plan_tasks_and_merge_without_slurm(corpus, tmp_path, capsys):
    out = tmp_path / "tok"
    assert main(_base(corpus, out, "--tasks", "3", "--plan")) == 0
    assert capsys.readouterr().out == "0-2\n"
    assert main(["merge", str(out)]) == 2
    _one_line_error(capsys, "3 of 3 task(s)")
    assert not (out / "data.yaml").exists()

    for task in (2, 0, 1):  # any order, as a scheduler runs them
        assert main(_base(corpus, out, "--tasks", "3", "--task", str(task), "--workers", "0")) == 0
    capsys.readouterr()
    marker = next((out / "shards").glob("*/task00001.done.json"))
    before = marker.stat().st_mtime_ns
    assert main(_base(corpus, out, "--tasks", "3", "--task", "1")) == 0
    assert "task 1 of 3: finished before" in capsys.readouterr().err and marker.stat().st_mtime_ns == before
    assert main(_base(corpus, out, "--tasks", "3", "--plan")) == 0
    assert capsys.readouterr().out == "\n"  # nothing left to do

    assert main(["merge", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "total" in printed and "effective" in printed and "data=tok" in printed
    config = yaml.safe_load((out / "data.yaml").read_text())
    assert yaml.safe_load((out / "data" / "tok.yaml").read_text()) == config
    sp = spm.SentencePieceProcessor(model_file=TOK)
    stats = json.loads((out / "stats.json").read_text())
    for lang in ("ca", "en", "es", "eu", "gl"):
        docs = [tuple(d.tolist()) for s in config["sources"] if s["lang"] == lang for d in read_documents(s["path"])]
        want = [tuple(sp.encode(t) + [sp.eos_id()]) for t in _expected(corpus, lang)]
        assert sorted(docs) == sorted(want), lang
        assert stats["languages"][lang]["documents"] == len(want)
        assert stats["languages"][lang]["bytes"] == sum(len(t.encode()) for t in _expected(corpus, lang))
    assert len(stats["tasks"]) == 3 and stats["skipped"] == {}

    for argv in (["mixture", str(out / "data.yaml")], ["mixture", "--config-dir", str(out), "data=tok"]):
        assert main(argv) == 0
        assert capsys.readouterr().out.splitlines()[0].split()[:3] == ["lang", "tokens", "natural"]


def test_a_task_killed_mid_publish_goes_on_from_its_last_published_set(tmp_path, capsys):
    """SIGKILL (a node failure, a time limit's second signal) right after the first shard of the
    task's second set was renamed into place: that set is marked as publishing, the first set is
    whole. The rerun keeps the first set and redoes the second, as a clean run makes it."""
    corpus = sample_corpus_dir()
    args = ["tokenize", "--input", str(corpus), "--tokenizer", TOK, "--tasks", "2", "--set-bytes", "1",
            "--workers", "0", "--no-progress"]
    out, ref = tmp_path / "out", tmp_path / "ref"
    assert main([*args, "--output-dir", str(out), "--plan"]) == 0
    capsys.readouterr()
    plan = json.loads((out / "plan.json").read_text())
    shards = out / "shards" / plan["id"]
    assert len(plan["tasks"][0]["sets"]) == 3
    killed = subprocess.run([sys.executable, KILL_AT, "*task00000-set0001_*.bin", "1", "after", *args,
                             "--output-dir", str(out), "--task", "0"], capture_output=True, text=True, timeout=120)
    assert killed.returncode == -9, killed.stderr
    assert json.loads((shards / "task00000-set0001.stats.json").read_text())["state"] == "publishing"
    assert main(["merge", str(out)]) == 2
    _one_line_error(capsys, "(tasks 0-1; task 0: no completion marker; 1 of 3 shard set(s) published)")

    first = next(shards.glob("task00000-set0000_*.bin")).stat()
    stale = shards / "task00000-set0001_xx.bin.tmp-another-node-4242"  # left by a node that died
    stale.write_bytes(b"partial")
    assert main([*args, "--output-dir", str(out), "--task", "0"]) == 0
    err = capsys.readouterr().err
    assert "set 1/3 task00000-set0000: up to date" in err
    assert "stopped while publishing; redoing it" in err and "temporary file(s) of" in err, err
    assert not stale.exists()
    again = next(shards.glob("task00000-set0000_*.bin")).stat()
    assert (again.st_ino, again.st_mtime_ns) == (first.st_ino, first.st_mtime_ns)

    assert main([*args, "--output-dir", str(out), "--task", "1"]) == 0
    assert main(["merge", str(out)]) == 0
    assert main([*args, "--output-dir", str(ref), "--plan"]) == 0
    for task in ("0", "1"):
        assert main([*args, "--output-dir", str(ref), "--task", task]) == 0
    ref_shards = ref / "shards" / plan["id"]
    for path in sorted(ref_shards.glob("*.[bi][id][nx]")):
        assert (shards / path.name).read_bytes() == path.read_bytes(), path.name


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    for lang in ("ca", "es"):
        (d / f"{lang}.jsonl").write_bytes((sample_corpus_dir() / f"{lang}.jsonl").read_bytes())
    (d / "notes.txt").write_text("hello")
    (d / "hf").mkdir()
    (d / "hf" / "dataset_info.json").write_text("{}")
    (d / "hf" / "state.json").write_text(json.dumps({"_data_files": [{"filename": "data-00000-of-00001.arrow"}]}))
    return d


PLAN = "--output-dir {o} --tasks 2 --plan"
BAD = [
    ("too-many-tasks", "--input {d}/ca.jsonl {d}/es.jsonl --output-dir {o} --tasks 3 --plan", "use --tasks 2 or fewer"),
    ("no-tasks", "--input {d}/ca.jsonl --output-dir {o} --plan", "--output-dir needs --tasks N"),
    ("no-plan-or-task", "--input {d}/ca.jsonl --output-dir {o} --tasks 1", "give --plan"),
    ("force-in-a-task", "--input {d}/ca.jsonl --output-dir {o} --tasks 1 --task 0 --force", "give it with --plan"),
    ("task-with-prefix", "--input {d}/ca.jsonl --output-prefix {o}/x --task 0", "--task needs --output-dir"),
    ("task-out-of-range", "--input {d}/*.jsonl --output-dir {o} --tasks 2 --task 2", "has tasks 0 to 1"),
    ("set-bytes", "--input {d}/ca.jsonl --output-dir {o} --tasks 1 --set-bytes 0 --plan", "--set-bytes 0"),
    ("unsupported", "--input {d}/notes.txt " + PLAN, "unsupported format"),
    ("missing", "--input {d}/nope.jsonl " + PLAN, "nope.jsonl: no such file"),
    ("glob-matches-nothing", "--input {d}/*.parquet " + PLAN, "no file or directory matches"),
    ("dataset-file-missing", "--input {d}/hf --output-prefix {o}/x", "data file data-00000-of-00001.arrow is missing"),
    ("rule-no-group", "--input {d}/*.jsonl --lang-from-path [a-z]+ " + PLAN, "has no (group)"),
    ("rule-no-match", "--input {d}/*.jsonl --lang-from-path /corpus/(.+)/ " + PLAN, "finds no language"),
    ("rule-bad-lang", "--input {d}/*.jsonl --lang-from-path (/.+)/ " + PLAN, "not a language"),
    ("rule-and-lang", "--input {d}/*.jsonl --lang es --lang-from-path name " + PLAN, "give one"),
]


@pytest.mark.parametrize("argv, needle", [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_requests_are_one_line_exit_2_and_write_nothing(bad, tmp_path, argv, needle):
    """From outside: the console script in a subprocess (a glob given quoted, as alia-data expands it)."""
    from conftest import cli, subprocess_env

    out = tmp_path / "out"
    args = ["tokenize", *argv.format(d=bad, o=out).split(), "--tokenizer", TOK, "--workers", "0", "--no-progress"]
    proc = subprocess.run([cli("alia-data"), *args], env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr
    assert err.count("\n") == 1 and err.startswith("alia-data: error: ") and needle in err, err
    assert not (out / "plan.json").exists() and not list(tmp_path.rglob("*.bin"))


def test_a_changed_input_or_an_unfinished_task_is_refused_in_one_line(bad, tmp_path, capsys):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("ca.jsonl", "es.jsonl"):
        (inputs / name).write_bytes((bad / name).read_bytes())
    out = tmp_path / "out"
    args = ["tokenize", "--input", str(inputs), "--tokenizer", TOK, "--output-dir", str(out), "--tasks", "2",
            "--workers", "0", "--no-progress"]
    assert main([*args, "--plan"]) == 0
    capsys.readouterr()
    plan = (out / "plan.json").read_text()
    with open(inputs / "es.jsonl", "a") as f:
        f.write(json.dumps({"text": "Una línea más.", "lang": "es"}) + "\n")
    assert main([*args, "--task", "0"]) == 2
    _one_line_error(capsys, f"1 input(s) changed, e.g. {inputs / 'es.jsonl'}")
    assert (out / "plan.json").read_text() == plan and not list(out.rglob("*.bin"))
    assert main(["merge", str(tmp_path / "nowhere")]) == 2
    _one_line_error(capsys, "no such directory")

    assert main([*args, "--plan", "--force"]) == 0  # the new request replaces the plan
    assert "replacing the plan" in capsys.readouterr().err
    assert main([*args, "--task", "1"]) == 0
    capsys.readouterr()
    assert main(["merge", str(out)]) == 2
    _one_line_error(capsys, "1 of 2 task(s)")


def _exit_code(args: list[str]) -> int:
    try:
        return main(args)
    except SystemExit as e:  # argparse's usage errors
        return int(e.code)


def test_defaults_come_from_the_data_modules():
    """Each default is written once, in the module that uses it (#23): argparse reads them."""
    import inspect
    import dataclasses

    from alia_train.data.mixture import format_mixture_plan
    from alia_train.data.tokenizer_train import TokenizerTrainOptions

    parser = build_parser()
    a = parser.parse_args(["tokenize", "--input", "x", "--tokenizer", "t", "--output-prefix", "p"])
    fields = {f.name: f.default for f in dataclasses.fields(TokenizeOptions) if f.default is not dataclasses.MISSING}
    assert {k: getattr(a, k) for k in fields if hasattr(a, k)} == {k: v for k, v in fields.items() if k != "chunk_bytes"}
    assert a.set_bytes == DEFAULT_SET_BYTES
    t = parser.parse_args(["tokenizer", "train", "--input", "x", "--output", "o.model"])
    fields = {f.name: f.default for f in dataclasses.fields(TokenizerTrainOptions)
              if f.default is not dataclasses.MISSING and hasattr(t, f.name)}
    assert len(fields) >= 11 and all(getattr(t, k) == v for k, v in fields.items())
    epochs = inspect.signature(format_mixture_plan).parameters["max_epochs"].default
    assert parser.parse_args(["mixture", "c.yaml"]).max_epochs == parser.parse_args(["merge", "d"]).max_epochs == epochs
