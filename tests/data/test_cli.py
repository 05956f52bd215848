"""The `alia-data` command line: subcommands, exit codes, messages, and a light start-up."""

from __future__ import annotations

import gzip
import subprocess
import sys

import pytest

from alia_train.cli.data import main


def test_tokenize_then_mixture(tmp_path, corpus_dir, tokenizer_path, capsys):
    prefix = tmp_path / "out" / "corpus"
    rc = main(["tokenize", "--input", str(corpus_dir), "--tokenizer", str(tokenizer_path),
               "--output-prefix", str(prefix), "--workers", "0", "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0
    for lang in ("ca", "code", "en", "es", "eu"):
        assert f"{prefix}_{lang}.bin/.idx" in out
    assert f"stats: {prefix}.stats.json" in out

    rc = main(["mixture", f"{prefix}.stats.json", "--tokens", "1e7", "multipliers.eu=4"])
    out = capsys.readouterr().out
    assert rc == 0
    assert out.splitlines()[0].split() == ["lang", "tokens", "natural", "effective", "to", "be", "seen", "epochs"]
    assert "WARNING: eu would be repeated" in out

    # The data config written beside the shards gives the same plan.
    assert main(["mixture", f"{prefix}.data.yaml", "multipliers.eu=4", "--tokens", "1e7"]) == 0
    assert capsys.readouterr().out == out


@pytest.fixture(scope="module")
def bad(tmp_path_factory, corpus_dir):
    """A folder of broken inputs (and a good one, es.jsonl)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    d = tmp_path_factory.mktemp("bad")
    good = (corpus_dir / "es.jsonl").read_bytes()
    (d / "es.jsonl").write_bytes(good)
    (d / "trunc.jsonl.gz").write_bytes(gzip.compress(good)[:400])
    (d / "plain.jsonl.gz").write_bytes(good[:200])
    (d / "junk.jsonl.zst").write_bytes(bytes(range(256)) * 2)
    (d / "junk.parquet").write_bytes(b"PAR1" + bytes(300))
    pq.write_table(pa.table({"text": [f"hola {i} " * 40 for i in range(3000)], "lang": ["es"] * 3000}),
                   d / "ok.parquet", row_group_size=300)
    data = bytearray((d / "ok.parquet").read_bytes())
    (d / "trunc.parquet").write_bytes(bytes(data[: len(data) // 2]))
    data[len(data) // 3 : len(data) // 3 + 200] = bytes(200)  # inside a row group: found while reading
    (d / "damaged.parquet").write_bytes(bytes(data))
    pq.write_table(pa.table({"text": list(range(5)), "lang": ["es"] * 5}), d / "int_text.parquet")
    (d / "empty.jsonl").write_bytes(b"")
    (d / "binary.jsonl").write_bytes(bytes(range(128, 256)) * 20)
    (d / "notes.txt").write_text("hello")
    (d / "empty_dir").mkdir()
    (d / "fake_hf").mkdir()
    for name in ("state.json", "dataset_info.json"):
        (d / "fake_hf" / name).write_text("{")
    (d / "a_file").write_text("")
    (d / "a_dir").mkdir()
    (d / "bad.yaml").write_text("a: [1\n")
    (d / "list.yaml").write_text("- 1\n")
    (d / "other.stats.json").write_text('{"x": 1}')
    return d


# (id, argv with {d} = the bad folder and {tok} = a good tokenizer, what the line must say)
BAD_INPUTS = [
    ("missing-input", "tokenize --input {d}/nope.jsonl", "nope.jsonl: no such file"),
    ("empty-dir", "tokenize --input {d}/empty_dir", "holds no .jsonl"),
    ("unsupported", "tokenize --input {d}/notes.txt", "unsupported format"),
    ("input-twice", "tokenize --input {d}/es.jsonl {d}", "given twice"),
    ("truncated-gz", "tokenize --input {d}/trunc.jsonl.gz", "cannot decompress"),
    ("not-gzip", "tokenize --input {d}/plain.jsonl.gz", "cannot decompress"),
    ("corrupt-zst", "tokenize --input {d}/junk.jsonl.zst", "cannot decompress"),
    ("junk-parquet", "tokenize --input {d}/junk.parquet", "not a readable Parquet file"),
    ("truncated-parquet", "tokenize --input {d}/trunc.parquet", "not a readable Parquet file"),
    ("damaged-parquet", "tokenize --input {d}/damaged.parquet", "cannot read its records"),
    ("int-text-column", "tokenize --input {d}/int_text.parquet", "has type int64, not string"),
    ("corrupt-hf-dataset", "tokenize --input {d}/fake_hf", "cannot load Hugging Face dataset"),
    ("empty-jsonl", "tokenize --input {d}/empty.jsonl", "no usable documents"),
    ("binary-jsonl", "tokenize --input {d}/binary.jsonl", "no usable documents"),
    ("tokenizer-missing", "tokenize --input {d}/es.jsonl --tokenizer {d}/nope.model", "no such file"),
    ("tokenizer-dir", "tokenize --input {d}/es.jsonl --tokenizer {d}", "is a directory"),
    ("tokenizer-garbage", "tokenize --input {d}/es.jsonl --tokenizer {d}/notes.txt", "not a SentencePiece model"),
    ("prefix-under-file", "tokenize --input {d}/es.jsonl --output-prefix {d}/a_file/x", "a_file is a file"),
    ("prefix-is-dir", "tokenize --input {d}/es.jsonl --output-prefix {d}/a_dir", "is a directory"),
    ("bad-workers", "tokenize --input {d}/es.jsonl --workers -1", "--workers -1"),
    ("bad-max-chars", "tokenize --input {d}/es.jsonl --max-chars abc", "expected a number"),
    ("bad-lang", "tokenize --input {d}/es.jsonl --lang a/b", "--lang"),
    ("unknown-text-key", "tokenize --input {d}/es.jsonl --text-key body", "unknown field 'body'"),
    ("missing-option", "tokenize --input {d}/es.jsonl --output-prefix", "expected one argument"),
    ("mixture-missing", "mixture {d}/nope.yaml", "no such file"),
    ("mixture-bad-yaml", "mixture {d}/bad.yaml", "not valid YAML"),
    ("mixture-not-mapping", "mixture {d}/list.yaml", "expected a mapping"),
    ("mixture-not-stats", "mixture {d}/other.stats.json", "not a stats file"),
    ("mixture-missing-stats", "mixture {d}/nope.stats.json", "no such file"),
    ("mixture-only-overrides", "mixture multipliers.eu=3", "give a data config"),
    ("unknown-lang-key", "tokenize --input {d}/es.jsonl --lang-key region", "pass --lang LANG or --lang-key FIELD"),
    ("strict", "tokenize --input {d}/binary.jsonl --strict", "(--strict stops at the first bad record)"),
    ("verify-not-a-set", "verify {d}/es", "no shard-set manifest"),
    ("tokenizer-train-output", "tokenizer train --input {d}/es.jsonl --output {d}/t.bin", "must end with .model"),
    ("tokenizer-train-under-file", "tokenizer train --input {d}/es.jsonl --output {d}/a_file/t.model",
     "a_file is a file"),
    ("tokenizer-train-empty", "tokenizer train --input {d}/empty.jsonl --output {d}/o/t.model --vocab-size 300",
     "no usable documents"),
    ("unknown-command", "bogus", "invalid choice"),
]


@pytest.mark.parametrize("argv, needle", [c[1:] for c in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(bad, tokenizer_path, argv, needle):
    """From outside: the console script in a subprocess (alia-data starts in ~0.3 s)."""
    from conftest import cli, subprocess_env

    args = argv.format(d=bad).split()
    if args[0] == "tokenize":
        defaults = {"--tokenizer": str(tokenizer_path), "--output-prefix": str(bad / "o" / "x"), "--workers": "0"}
        args += [a for k, v in defaults.items() if k not in args for a in (k, v)] + ["--no-progress"]
    before = sorted(p.name for p in bad.rglob("*") if p.is_file())
    proc = subprocess.run([cli("alia-data"), *args], env=subprocess_env(), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr
    assert err.count("\n") == 1 and err.startswith("alia-data: error: "), err
    assert needle in err, err
    assert sorted(p.name for p in bad.rglob("*") if p.is_file()) == before  # nothing written or removed


def test_a_mixture_with_bad_numbers_is_refused(tmp_path, corpus_dir, tokenizer_path, capsys):
    from conftest import cli, subprocess_env

    prefix = tmp_path / "c"
    assert main(["tokenize", "--input", str(corpus_dir / "eu.jsonl"), "--tokenizer", str(tokenizer_path),
                 "--output-prefix", str(prefix), "--workers", "0", "--no-progress"]) == 0
    capsys.readouterr()
    for extra, needle in ((["--tokens", "-5"], "must be positive"), (["multipliers.eu=abc"], "Float"),
                          (["nokey=1"], "not in 'DataConfig'")):
        proc = subprocess.run([cli("alia-data"), "mixture", f"{prefix}.stats.json", *extra], env=subprocess_env(),
                              capture_output=True, text=True, timeout=120)
        err = proc.stderr
        assert proc.returncode == 2 and err.count("\n") == 1 and err.startswith("alia-data: error: "), err
        assert needle in err, err


def test_tokenize_never_loads_torch_or_megatron(tmp_path, corpus_dir, tokenizer_path):
    code = (
        "import sys; from alia_train.cli.data import main; "
        f"rc = main(['tokenize', '--input', {str(corpus_dir / 'eu.jsonl')!r}, '--tokenizer', {str(tokenizer_path)!r},"
        f" '--output-prefix', {str(tmp_path / 'x')!r}, '--workers', '1', '--no-progress']); "
        "heavy = [m for m in ('torch', 'megatron', 'datasets') if m in sys.modules]; "
        "print('HEAVY', heavy); sys.exit(rc)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY []" in proc.stdout
