"""What counts as a document: one rule for `alia-data tokenize` (encode_worker.py) and
`alia-data tokenizer train` (tokenizer_train.py), so both keep and skip the same records.

A record is a JSON object (a JSONL line) or a row of a columnar input. It is a document when its
text is a non-blank string of at most `max_chars` characters that encodes to UTF-8, and its
language (the record's, or --lang) is a safe file-name part: languages become file names
(PREFIX_<lang>.bin).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

from alia_train.data.readers import InputFile, iter_jsonl_blobs, iter_records

LANG_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
DEFAULT_MAX_CHARS = 10_000_000

# Reasons a record is skipped (the keys of the stats' "skipped" section).
INVALID_JSON = "invalid_json"
INVALID_UTF8 = "invalid_utf8"
MISSING_TEXT = "missing_text"
EMPTY = "empty"
TOO_LONG = "too_long"
MISSING_LANG = "missing_lang"
BAD_LANG = "bad_lang"
REASONS = (INVALID_JSON, INVALID_UTF8, MISSING_TEXT, EMPTY, TOO_LONG, MISSING_LANG, BAD_LANG)


def json_record(raw: bytes) -> dict | str:
    """The object of one JSONL line, or why it is not one (INVALID_UTF8, INVALID_JSON)."""
    try:
        obj = json.loads(raw)
    except UnicodeDecodeError:
        return INVALID_UTF8
    except ValueError:
        return INVALID_JSON
    return obj if isinstance(obj, dict) else INVALID_JSON


def document_problem(text, lang, max_chars: int = DEFAULT_MAX_CHARS) -> str | None:
    """Why (text, lang) is not a usable document (one of REASONS), or None when it is."""
    if not isinstance(text, str):
        return MISSING_TEXT
    if not text or text.isspace():
        return EMPTY
    if len(text) > max_chars:
        return TOO_LONG
    if not isinstance(lang, str) or not lang:
        return MISSING_LANG
    if not LANG_RE.match(lang):
        return BAD_LANG
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates from "\ud800"-style JSON escapes
        return INVALID_UTF8
    return None


def iter_documents(
    inputs: list[InputFile], text_key: str, lang_key: str, fixed_lang: str | None,
    chunk_bytes: int = 1 << 20, max_chars: int = DEFAULT_MAX_CHARS,
) -> Iterator[tuple[str, str]]:
    """(text, lang) of every document, in input order, read in this process; other records
    are skipped silently (`alia-data tokenize` counts them).

    For jobs where reading is cheap next to the work done on the text (tokenizer training)."""
    for text, lang in _iter_fields(inputs, text_key, lang_key, fixed_lang, chunk_bytes):
        lang = fixed_lang if fixed_lang is not None else lang
        if document_problem(text, lang, max_chars) is None:
            yield text, lang


def _iter_fields(inputs, text_key, lang_key, fixed_lang, chunk_bytes) -> Iterator[tuple]:
    """(text field, lang field) of every record (None for a missing field)."""
    for item in inputs:
        if item.kind == "jsonl":
            for _, blob, _ in iter_jsonl_blobs(item, chunk_bytes):
                for raw in blob.split(b"\n"):
                    obj = json_record(raw) if raw.strip() else None
                    if isinstance(obj, dict):
                        yield obj.get(text_key), obj.get(lang_key)
        else:
            key = None if fixed_lang else lang_key
            for _, texts, langs, _ in iter_records(item, text_key, key, chunk_bytes):
                yield from zip(texts, langs if langs else [None] * len(texts))
