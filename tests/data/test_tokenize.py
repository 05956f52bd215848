"""`alia-data tokenize`: round trip through real SentencePiece and megatron's IndexedDataset,
every input format, bad records counted per reason, errors before work, atomic outputs."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest
import sentencepiece as spm

from alia_train.data import encode_worker
from alia_train.data.readers import InputError
from alia_train.data.tokenize import TokenizeError, TokenizeOptions, stats_path, tokenize
from alia_train.data.tokenizer import TokenizerError


def _docs(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _final_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def _assert_round_trip(prefix: str, lang: str, texts: list[str], sp: spm.SentencePieceProcessor,
                       exact_text: bool = True) -> None:
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    ds = IndexedDataset(f"{prefix}_{lang}")
    assert len(ds) == len(texts)
    for i, text in enumerate(texts):
        tokens = ds[i].tolist()
        assert tokens == sp.encode(text) + [sp.eos_id()]  # EOD = eos (2) after every document
        if exact_text:  # Salamandra settings: NFC text comes back exactly
            assert sp.decode(tokens[:-1]) == text


def test_round_trip_every_jsonl_flavour(tmp_path, corpus_dir, tokenizer_path):
    import zstandard

    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "es.jsonl").write_bytes((corpus_dir / "es.jsonl").read_bytes())
    with gzip.open(inputs / "ca.jsonl.gz", "wb") as f:
        f.write((corpus_dir / "ca.jsonl").read_bytes())
    (inputs / "eu.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress((corpus_dir / "eu.jsonl").read_bytes()))
    prefix = str(tmp_path / "out" / "corpus")

    stats = tokenize(TokenizeOptions([str(inputs)], str(tokenizer_path), prefix, workers=2, chunk_bytes=4096,
                                     progress=False))

    sp = spm.SentencePieceProcessor(model_file=str(tokenizer_path))
    for lang in ("es", "ca", "eu"):
        texts = [d["text"] for d in _docs(corpus_dir / f"{lang}.jsonl")]
        _assert_round_trip(prefix, lang, texts, sp)
        out = stats["outputs"][lang]
        assert out["documents"] == len(texts)
        assert out["bytes"] == sum(len(t.encode()) for t in texts)
        assert out["tokens"] == sum(len(sp.encode(t)) + 1 for t in texts)
    assert stats["skipped"] == {}
    assert json.loads(Path(stats_path(prefix)).read_text())["totals"]["documents"] == stats["totals"]["documents"]


def test_parquet_and_hf_dataset_inputs(tmp_path, corpus_dir, tokenizer_path):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    en = _docs(corpus_dir / "en.jsonl")[:50]
    pq.write_table(pa.table({"content": [d["text"] for d in en], "lang": ["en"] * len(en)}), tmp_path / "en.parquet")
    code = _docs(corpus_dir / "code.jsonl")
    datasets.Dataset.from_dict({"content": [d["text"] for d in code]}).save_to_disk(str(tmp_path / "code_hf"))
    sp = spm.SentencePieceProcessor(model_file=str(tokenizer_path))

    prefix = str(tmp_path / "pq")
    tokenize(TokenizeOptions([str(tmp_path / "en.parquet")], str(tokenizer_path), prefix, text_key="content",
                             workers=0, progress=False))
    _assert_round_trip(prefix, "en", [d["text"] for d in en], sp)

    prefix = str(tmp_path / "hf")
    tokenize(TokenizeOptions([str(tmp_path / "code_hf")], str(tokenizer_path), prefix, text_key="content",
                             lang="code", workers=0, progress=False))
    _assert_round_trip(prefix, "code", [d["text"] for d in code], sp)


def test_language_from_each_document_or_from_lang_flag(tmp_path, corpus_dir, tokenizer_path):
    mixed = tmp_path / "mixed.jsonl"
    lines = [json.dumps(d) for lang in ("es", "eu") for d in _docs(corpus_dir / f"{lang}.jsonl")[:5]]
    mixed.write_text("\n".join(lines) + "\n")
    stats = tokenize(TokenizeOptions([str(mixed)], str(tokenizer_path), str(tmp_path / "a"), workers=0, progress=False))
    assert {k: v["documents"] for k, v in stats["outputs"].items()} == {"es": 5, "eu": 5}
    stats = tokenize(TokenizeOptions([str(mixed)], str(tokenizer_path), str(tmp_path / "b"), lang="xx",
                                     workers=0, progress=False))
    assert {k: v["documents"] for k, v in stats["outputs"].items()} == {"xx": 10}


def _bad_file(path: Path) -> None:
    good = json.dumps({"text": "Hola món, bon dia.", "lang": "ca"}).encode()
    lines = [
        good,                                                   # 1 ok
        b'{"text": "unterminated',                              # 2 invalid json
        json.dumps({"body": "no text", "lang": "ca"}).encode(),  # 3 missing text
        b'{"text": "caf\xe9 latin-1", "lang": "ca"}',           # 4 invalid utf-8
        json.dumps({"text": "   \n ", "lang": "ca"}).encode(),   # 5 empty
        json.dumps({"text": "x" * 500, "lang": "ca"}).encode(),  # 6 too long (max_chars=100)
        json.dumps({"text": "sense llengua"}).encode(),          # 7 missing lang
        json.dumps({"text": "bad", "lang": "../etc"}).encode(),  # 8 bad lang
        b"",                                                    # 9 blank line: not a record
        b'["not", "an", "object"]',                             # 10 invalid json
        b'{"text": "lone \\ud800 surrogate", "lang": "ca"}',    # 11 invalid utf-8
        json.dumps({"text": None, "lang": "ca"}).encode(),       # 12 missing text
        good,                                                   # 13 ok
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")


def test_bad_records_are_counted_per_reason_and_the_run_goes_on(tmp_path, tokenizer_path):
    bad = tmp_path / "bad.jsonl"
    _bad_file(bad)
    stats = tokenize(TokenizeOptions([str(bad)], str(tokenizer_path), str(tmp_path / "o"), max_chars=100,
                                     workers=0, progress=False))
    first = {reason: [int(s.rsplit(":", 1)[1]) for s in v["first"]] for reason, v in stats["skipped"].items()}
    assert first == {
        "invalid_json": [2, 10], "missing_text": [3, 12], "invalid_utf8": [4, 11], "empty": [5],
        "too_long": [6], "missing_lang": [7], "bad_lang": [8],
    }
    assert {r: v["count"] for r, v in stats["skipped"].items()} == {r: len(v) for r, v in first.items()}
    assert stats["outputs"]["ca"]["documents"] == 2
    assert stats["totals"] == {"records": 12, "documents": 2, "tokens": stats["outputs"]["ca"]["tokens"],
                               "bytes": 2 * len("Hola món, bon dia.".encode()), "skipped": 10, "blank_lines": 1}
    assert all(s.startswith(str(bad)) for v in stats["skipped"].values() for s in v["first"])


def test_strict_stops_at_the_first_bad_record_and_leaves_nothing(tmp_path, tokenizer_path):
    bad = tmp_path / "bad.jsonl"
    _bad_file(bad)
    out = tmp_path / "out"
    with pytest.raises(TokenizeError, match=r"bad\.jsonl:2: invalid json"):
        tokenize(TokenizeOptions([str(bad)], str(tokenizer_path), str(out / "o"), strict=True, workers=0,
                                 progress=False))
    assert _final_files(out) == []


def test_interrupted_run_leaves_no_output_under_a_final_name(tmp_path, corpus_dir, tokenizer_path, monkeypatch):
    real = encode_worker.process
    calls = {"n": 0}

    def dies_midway(task):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("simulated Ctrl-C")
        return real(task)

    monkeypatch.setattr(encode_worker, "process", dies_midway)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        tokenize(TokenizeOptions([str(corpus_dir)], str(tokenizer_path), str(out / "c"), workers=0, chunk_bytes=2048,
                                 progress=False))
    assert calls["n"] == 3
    assert _final_files(out) == []  # no .bin/.idx/.stats.json, and the temporaries are gone too


@pytest.mark.parametrize(
    "change, error, match",
    [
        (dict(inputs=["missing.jsonl"]), InputError, "missing.jsonl: no such file"),
        (dict(inputs=["notes.txt"]), InputError, "unsupported format"),
        (dict(tokenizer="garbage.model"), TokenizerError, "not a SentencePiece model"),
        (dict(tokenizer="nowhere.model"), TokenizerError, "no such file"),
        (dict(text_key="body"), TokenizeError, "unknown field 'body'"),
        (dict(lang_key="language"), TokenizeError, "no language"),
        (dict(lang="bad/lang"), TokenizeError, "--lang"),
    ],
)
def test_bad_requests_fail_before_any_work(tmp_path, corpus_dir, tokenizer_path, change, error, match):
    (tmp_path / "garbage.model").write_bytes(b"\x00not a model")
    (tmp_path / "notes.txt").write_text("hello")
    opts = dict(inputs=[str(corpus_dir / "es.jsonl")], tokenizer=str(tokenizer_path),
                output_prefix=str(tmp_path / "out" / "x"), workers=0, progress=False)
    for key, value in change.items():
        opts[key] = [str(tmp_path / v) for v in value] if key == "inputs" else (
            str(tmp_path / value) if key == "tokenizer" else value)
    with pytest.raises(error, match=match):
        tokenize(TokenizeOptions(**opts))
    assert not (tmp_path / "out").exists()


def test_rerun_skips_finished_outputs(tmp_path, corpus_dir, tokenizer_path):
    opts = TokenizeOptions([str(corpus_dir / "eu.jsonl")], str(tokenizer_path), str(tmp_path / "o"), workers=0,
                           progress=False)
    first = tokenize(opts)
    bin_file = tmp_path / "o_eu.bin"
    mtime = bin_file.stat().st_mtime_ns
    messages = []
    assert tokenize(opts, log=messages.append) == first
    assert bin_file.stat().st_mtime_ns == mtime and "up to date" in messages[0]

    # Other options over finished outputs: refused unless --force.
    other = TokenizeOptions(opts.inputs, opts.tokenizer, opts.output_prefix, lang="gl", workers=0, progress=False)
    with pytest.raises(TokenizeError, match="--force"):
        tokenize(other)
    other.force = True
    assert set(tokenize(other)["outputs"]) == {"gl"}

    # A deleted output means the run is not finished any more.
    os.unlink(tmp_path / "o_gl.idx")
    other.force = False
    assert tokenize(other)["outputs"]["gl"]["documents"] == first["outputs"]["eu"]["documents"]


def test_worker_counts_give_identical_shards(tmp_path, corpus_dir, tokenizer_path):
    outs = []
    for workers in (0, 2):
        prefix = tmp_path / f"w{workers}"
        tokenize(TokenizeOptions([str(corpus_dir)], str(tokenizer_path), str(prefix), workers=workers,
                                 chunk_bytes=3000, progress=False))
        outs.append({p.name.split("_", 1)[1]: p.read_bytes() for p in tmp_path.glob(f"w{workers}_*")})
    assert outs[0] == outs[1] and len(outs[0]) == 10


def test_bench_corpus_round_trip(tmp_path, shared_corpus):
    """Real multilingual text (skipped where ../shared/corpus is absent)."""
    src = shared_corpus / "bench" / "eu.jsonl.gz"
    prefix = str(tmp_path / "b")
    stats = tokenize(TokenizeOptions([str(src)], str(shared_corpus / "bench32k.model"), prefix, workers=2,
                                     progress=False))
    with gzip.open(src, "rt", encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line in f]
    assert stats["outputs"]["eu"]["documents"] == len(texts) and stats["skipped"] == {}
    # bench32k normalises with nmt_nfkc and folds whitespace, so only the tokens are compared.
    sp = spm.SentencePieceProcessor(model_file=str(shared_corpus / "bench32k.model"))
    _assert_round_trip(prefix, "eu", texts, sp, exact_text=False)
