"""One rule for what a document is: `alia-data tokenize` and tokenizer training keep the same
records and skip the same bad ones."""

from __future__ import annotations

import json

import pytest

from alia_train.data.documents import REASONS, document_problem, iter_documents
from alia_train.data.readers import discover_inputs
from alia_train.data.tokenize import TokenizeOptions, tokenize

GOOD = [("Hola món", "ca"), ("Kaixo mundua", "eu"), ("hello", "en_GB"), ("x" * 50, "es")]
BAD = [  # (JSONL line, the reason tokenize counts it under)
    ('{"text": "", "lang": "es"}', "empty"),
    ('{"text": " \\n\\t ", "lang": "es"}', "empty"),
    ('{"lang": "es"}', "missing_text"),
    ('{"text": 3, "lang": "es"}', "missing_text"),
    ('{"text": "sin idioma"}', "missing_lang"),
    ('{"text": "idioma vacío", "lang": ""}', "missing_lang"),
    ('{"text": "idioma raro", "lang": "../es"}', "bad_lang"),
    ('{"text": "surrogate \\ud800 here", "lang": "es"}', "invalid_utf8"),
    ('{"text": "' + "y" * 51 + '", "lang": "es"}', "too_long"),
    ('[1, 2]', "invalid_json"),
    ('{"text": "cut', "invalid_json"),
]


def test_reasons_are_the_documented_ones():
    assert set(REASONS) == {
        "invalid_json", "invalid_utf8", "missing_text", "empty", "too_long", "missing_lang", "bad_lang"}


def test_document_problem():
    assert document_problem("text", "es") is None
    assert document_problem("text", "es", max_chars=3) == "too_long"
    assert document_problem(None, "es") == "missing_text"
    assert document_problem("text", None) == "missing_lang"
    assert document_problem("text", "a/b") == "bad_lang"


@pytest.fixture
def mixed(tmp_path):
    lines = [json.dumps({"text": t, "lang": lang}) for t, lang in GOOD] + [line for line, _ in BAD]
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_tokenize_and_tokenizer_training_keep_the_same_documents(mixed, tmp_path, tokenizer_path):
    stats = tokenize(TokenizeOptions([str(mixed)], str(tokenizer_path), str(tmp_path / "out"),
                                     workers=0, max_chars=50, progress=False))
    skipped = {reason: entry["count"] for reason, entry in stats["skipped"].items()}
    expected: dict[str, int] = {}
    for _, reason in BAD:
        expected[reason] = expected.get(reason, 0) + 1
    assert skipped == expected
    kept = {lang: out["documents"] for lang, out in stats["outputs"].items()}

    docs = list(iter_documents(discover_inputs([str(mixed)]), "text", "lang", None, max_chars=50))
    assert docs == GOOD  # tokenizer training reads exactly the documents tokenize keeps
    assert kept == {lang: 1 for _, lang in GOOD}


def test_fixed_language_applies_to_both(mixed, tmp_path, tokenizer_path):
    stats = tokenize(TokenizeOptions([str(mixed)], str(tokenizer_path), str(tmp_path / "out"), lang="gl",
                                     workers=0, max_chars=50, progress=False))
    docs = list(iter_documents(discover_inputs([str(mixed)]), "text", "lang", "gl", max_chars=50))
    assert stats["totals"]["documents"] == len(docs) == len(GOOD) + 3  # + no/empty/bad lang
    assert {lang for _, lang in docs} == {"gl"}
