"""What a tokenize run is asked to do, checked before any work: its options, the inputs and
tokenizer they name, the fields the records must have, the language of each input, and the
fingerprint that says whether a finished set answers the same request.

Everything checkable is checked before the first token is encoded (inputs exist and are
readable, the tokenizer loads, the text/lang fields exist, the output directory is usable).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from alia_train.data.documents import DEFAULT_MAX_CHARS, LANG_RE
from alia_train.data.manifest import MANIFEST_VERSION
from alia_train.data.path_lang import path_language
from alia_train.data.readers import InputFile, columnar_schema, discover_inputs, peek_jsonl_keys
from alia_train.data.tokenizer import Tokenizer, load_tokenizer
from alia_train.fs import make_writable_parent

STATS_VERSION = MANIFEST_VERSION
DEFAULT_CHUNK_BYTES = 256 * 1024


class TokenizeError(ValueError):
    """A problem with the request or the data (--strict); the message names it."""


class OtherRequestError(TokenizeError):
    """The output prefix holds a finished run of other inputs, tokenizer or options."""


@dataclass
class TokenizeOptions:
    inputs: list[str]
    tokenizer: str | None
    output_prefix: str
    lang: str | None = None
    text_key: str = "text"
    lang_key: str = "lang"
    # The language from each input's path instead (path_lang.py: dir, name or a regex).
    lang_from_path: str | None = None
    # None = one worker per available core; 0 = encode in this process (no pool).
    workers: int | None = None
    strict: bool = False
    max_chars: int = DEFAULT_MAX_CHARS
    chunk_bytes: int = DEFAULT_CHUNK_BYTES
    force: bool = False
    progress: bool = True


@dataclass(frozen=True)
class Request:
    """A request that can be done: its inputs with the language each gives every record
    (None: the record's --lang-key field), the tokenizer and the number of workers."""

    inputs: list[InputFile]
    langs: list[str | None]
    tokenizer: Tokenizer
    workers: int


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def check_request(opts: TokenizeOptions) -> Request:
    """The request, or an error naming why it cannot be done."""
    inputs = discover_inputs(opts.inputs)
    tok = load_tokenizer(opts.tokenizer)
    if opts.lang is not None and not LANG_RE.match(opts.lang):
        raise TokenizeError(f"--lang {opts.lang!r}: use letters, digits, '_', '-' or '.'")
    if opts.lang is not None and opts.lang_from_path is not None:
        raise TokenizeError("--lang and --lang-from-path: give one (every document's language, or "
                            "each input's from its path)")
    if opts.max_chars <= 0 or opts.chunk_bytes <= 0:
        raise TokenizeError("--max-chars and the chunk size must be positive")
    workers = available_cores() if opts.workers is None else opts.workers
    if workers < 0:
        raise TokenizeError(f"--workers {workers}: must be >= 0")
    langs = input_languages(inputs, opts)
    _check_fields(inputs, opts)
    return Request(inputs, langs, tok, workers)


def input_languages(inputs: list[InputFile], opts: TokenizeOptions) -> list[str | None]:
    if opts.lang_from_path is not None:
        return [path_language(item.path, opts.lang_from_path) for item in inputs]
    return [opts.lang] * len(inputs)


def _check_fields(inputs: list[InputFile], opts: TokenizeOptions) -> None:
    need_lang = opts.lang is None and opts.lang_from_path is None
    for item in inputs:
        if item.kind == "jsonl":
            keys, parsed = peek_jsonl_keys(item)
            if parsed == 0:
                continue  # nothing parseable up front: the per-line counts will say why
            where = f"the first {parsed} records"
        else:
            schema = columnar_schema(item)
            keys = set(schema)
            where = "its columns"
            if opts.text_key in schema and "string" not in schema[opts.text_key]:
                raise TokenizeError(
                    f"input {item.path}: field '{opts.text_key}' has type {schema[opts.text_key]}, not string"
                )
        shown = ", ".join(sorted(keys)[:20]) or "none"
        if opts.text_key not in keys:
            raise TokenizeError(
                f"input {item.path}: unknown field '{opts.text_key}' (not in {where}; fields: {shown}); "
                "choose it with --text-key"
            )
        if need_lang and opts.lang_key not in keys:
            raise TokenizeError(
                f"input {item.path}: no language: field '{opts.lang_key}' is not in {where} "
                f"(fields: {shown}); pass --lang LANG or --lang-key FIELD (or --lang-from-path RULE)"
            )


def check_output_prefix(raw: str, prefix: str) -> None:
    """A usable --output-prefix: a file-name prefix in a directory we can create and write."""
    if raw.endswith(os.sep) or os.path.isdir(prefix):
        raise TokenizeError(f"--output-prefix {raw}: is a directory; give a file-name prefix inside it, "
                            f"e.g. {os.path.join(raw, 'corpus')}")
    make_writable_parent(prefix, "--output-prefix")


def fingerprint(inputs: list[InputFile], tok: Tokenizer, opts: TokenizeOptions) -> dict:
    files = []
    for item in inputs:
        st = os.stat(item.path)
        files.append({"path": item.path, "size": item.size, "mtime_ns": st.st_mtime_ns})
    found = {
        "version": STATS_VERSION,
        "inputs": files,
        "tokenizer_sha256": tok.sha256,
        "text_key": opts.text_key,
        "lang_key": opts.lang_key,
        "lang": opts.lang,
        "max_chars": opts.max_chars,
    }
    if opts.lang_from_path is not None:  # only when used: sets finished before still match
        found["lang_from_path"] = opts.lang_from_path
    return found


def same_request(a: object, b: dict) -> bool:
    """Same inputs, tokenizer and options (the stats format version aside)."""
    if not isinstance(a, dict):
        return False
    return {k: v for k, v in a.items() if k != "version"} == {k: v for k, v in b.items() if k != "version"}


def request_differences(old: object, new: dict, shown: int = 3) -> str:
    """What differs between the request a finished set answers (`old`, its fingerprint) and
    `new`, in words: each changed, added or dropped input by its path, another tokenizer, each
    other option. At most `shown` items, then how many more."""
    if not isinstance(old, dict):
        return "the set records no request"
    found = []
    before = {i.get("path"): i for i in old.get("inputs") or [] if isinstance(i, dict)}
    now = {i["path"]: i for i in new["inputs"]}
    for path, i in now.items():
        o = before.get(path)
        if o is None:
            found.append(f"input {path} is new")
        elif o.get("size") != i["size"]:
            found.append(f"input {path} changed size since the set was made ({o.get('size')} -> {i['size']} bytes)")
        elif o.get("mtime_ns") != i["mtime_ns"]:
            found.append(f"input {path} was modified since the set was made (same size)")
    found += [f"input {path} is no longer given" for path in before if path not in now]
    if not found and list(before) != list(now):
        found.append("the same inputs in another order")
    if old.get("tokenizer_sha256") != new["tokenizer_sha256"]:
        found.append(f"another tokenizer (sha256 {str(old.get('tokenizer_sha256'))[:12]} -> "
                     f"{new['tokenizer_sha256'][:12]})")
    for key in sorted((set(old) | set(new)) - {"version", "inputs", "tokenizer_sha256"}):
        if old.get(key) != new.get(key):
            found.append(f"--{key.replace('_', '-')} {old.get(key)!r} -> {new.get(key)!r}")
    more = f", and {len(found) - shown} more" if len(found) > shown else ""
    return "; ".join(found[:shown]) + more if found else "the recorded request differs"
