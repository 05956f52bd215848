"""`alia-data tokenize`: corpus files -> per-language Megatron indexed datasets + stats JSON.

Outputs of `--output-prefix PREFIX`:
    PREFIX_<lang>.bin / PREFIX_<lang>.idx   one indexed dataset per language
    PREFIX.stats.json                       documents, tokens, bytes, skipped records by reason;
                                            written last, it marks the run as finished.
Everything checkable is checked before the first token is encoded (inputs exist and are
readable, the tokenizer loads, the text/lang fields exist). A finished run with the same
inputs, tokenizer and options is not redone.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

from alia_train.data import encode_worker as ew
from alia_train.data.atomic import ensure_parent, remove_stale_tmps, write_json_atomic, write_text_atomic
from alia_train.data.indexed import dataset_exists, token_dtype
from alia_train.data.progress import Progress
from alia_train.data.readers import (
    InputError,
    InputFile,
    LinesTask,
    RecordsTask,
    Task,
    columnar_schema,
    discover_inputs,
    iter_jsonl_blobs,
    iter_records,
    peek_jsonl_keys,
)
from alia_train.data.shard_writer import ShardSet, shard_prefix
from alia_train.data.tokenizer import Tokenizer, load_tokenizer

STATS_VERSION = 1
DEFAULT_MAX_CHARS = 10_000_000
DEFAULT_CHUNK_BYTES = 256 * 1024


class TokenizeError(ValueError):
    """A problem with the request or the data (--strict); the message names it."""


@dataclass
class TokenizeOptions:
    inputs: list[str]
    tokenizer: str | None
    output_prefix: str
    lang: str | None = None
    text_key: str = "text"
    lang_key: str = "lang"
    # None = one worker per available core; 0 = encode in this process (no pool).
    workers: int | None = None
    strict: bool = False
    max_chars: int = DEFAULT_MAX_CHARS
    chunk_bytes: int = DEFAULT_CHUNK_BYTES
    force: bool = False
    progress: bool = True


def stats_path(prefix: str) -> str:
    return f"{prefix}.stats.json"


def data_config_path(prefix: str) -> str:
    return f"{prefix}.data.yaml"


def _data_config_yaml(tok: Tokenizer, outputs: dict) -> str:
    """The shards as a data config (copy it to configs/data/NAME.yaml, train with data=NAME)."""
    import json

    lines = [
        "# Written by `alia-data tokenize`: these shards as a data config. Copy it to",
        "# configs/data/NAME.yaml and train with `data=NAME`; unlisted fields keep their defaults.",
        f"tokenizer: {json.dumps(tok.path)}",
        "use_sample: false",
        "sources:" if outputs else "sources: []",
    ]
    lines += [f"  - {{path: {json.dumps(o['path'])}, lang: {json.dumps(lang)}}}" for lang, o in outputs.items()]
    return "\n".join(lines) + "\n"


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


# ---------------------------------------------------------------------------------------------
# Checks before any work


def _check_fields(inputs: list[InputFile], opts: TokenizeOptions) -> None:
    need_lang = opts.lang is None
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
                f"(fields: {shown}); pass --lang LANG or --lang-key FIELD"
            )


def _fingerprint(inputs: list[InputFile], tok: Tokenizer, opts: TokenizeOptions) -> dict:
    files = []
    for item in inputs:
        st = os.stat(item.path)
        files.append({"path": item.path, "size": item.size, "mtime_ns": st.st_mtime_ns})
    return {
        "version": STATS_VERSION,
        "inputs": files,
        "tokenizer_sha256": tok.sha256,
        "text_key": opts.text_key,
        "lang_key": opts.lang_key,
        "lang": opts.lang,
        "max_chars": opts.max_chars,
    }


def finished_stats(prefix: str, fingerprint: dict | None = None) -> dict | None:
    """The stats of a finished run at `prefix` (matching `fingerprint` if given), else None."""
    import json

    path = stats_path(prefix)
    try:
        with open(path, encoding="utf-8") as f:
            stats = json.load(f)
    except (OSError, ValueError):
        return None
    if fingerprint is not None and stats.get("fingerprint") != fingerprint:
        return None
    outputs = stats.get("outputs", {})
    if not all(dataset_exists(o["path"]) for o in outputs.values()):
        return None
    return stats


# ---------------------------------------------------------------------------------------------
# The run


def _tasks(inputs: list[InputFile], opts: TokenizeOptions) -> Iterator[tuple[Task, float]]:
    """Tasks in input order, with the input bytes read so far (for progress)."""
    done = 0.0
    lang_key = None if opts.lang else opts.lang_key
    for src, item in enumerate(inputs):
        if item.kind == "jsonl":
            for first, blob, consumed in iter_jsonl_blobs(item, opts.chunk_bytes):
                yield LinesTask(src, first, blob), done + consumed
        else:
            for first, texts, langs, frac in iter_records(item, opts.text_key, lang_key, opts.chunk_bytes):
                yield RecordsTask(src, first, texts, langs), done + frac * item.size
        done += item.size


class _Run:
    """Accumulates results in input order: shards, per-input counts, skipped records."""

    def __init__(self, inputs: list[InputFile], shards: ShardSet, strict: bool) -> None:
        self.inputs = inputs
        self.shards = shards
        self.strict = strict
        self.records = [0] * len(inputs)
        self.blank_lines = 0
        self.skipped: dict[str, dict] = {}
        self.documents = self.tokens = self.text_bytes = 0

    def add(self, r: ew.BatchResult) -> None:
        path = self.inputs[r.source].path
        if self.strict and r.skipped:
            reason, line = min(((k, v[1][0]) for k, v in r.skipped.items()), key=lambda kv: kv[1])
            raise TokenizeError(f"{path}:{line}: {reason.replace('_', ' ')} (--strict stops at the first bad record)")
        self.records[r.source] += r.records
        self.blank_lines += r.blank_lines
        for reason, (count, lines) in r.skipped.items():
            entry = self.skipped.setdefault(reason, {"count": 0, "first": []})
            entry["count"] += count
            room = ew.MAX_FIRST_LINES - len(entry["first"])
            entry["first"].extend(f"{path}:{n}" for n in lines[:room])
        for lang, part in r.parts.items():
            self.shards.append(lang, part)
            self.documents += len(part.lengths)
            self.tokens += len(part.tokens)
            self.text_bytes += part.nbytes


def _pool_context() -> mp.context.BaseContext:
    # fork is cheapest, but unsafe once torch (and its threads) is loaded in this process,
    # e.g. when the training job prepares the sample corpus itself.
    if "torch" in sys.modules or sys.platform != "linux":
        return mp.get_context("spawn")
    return mp.get_context("fork")


def _run_results(tasks: Iterator[tuple[Task, float]], run: _Run, progress: Progress,
                 workers: int, initargs: tuple) -> None:
    def report(done: float) -> None:
        progress.update(done, run.documents, run.tokens, run.text_bytes)

    if workers == 0:
        ew.init_worker(*initargs)
        for task, done in tasks:
            run.add(ew.process(task))
            report(done)
        return
    ctx = _pool_context()
    # Workers must not inherit our SIGTERM handler (fork copies it before their initializer
    # runs): pool.terminate() stops them with SIGTERM.
    handler = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        pool = ctx.Pool(workers, initializer=ew.init_worker, initargs=initargs)
    finally:
        signal.signal(signal.SIGTERM, handler)
    try:
        # A bounded window of tasks in flight: ordered results, bounded memory (Pool.imap would
        # read the whole input ahead), and every worker busy.
        window = 2 * workers + 2
        pending: deque = deque()
        for task, done in tasks:
            pending.append((pool.apply_async(ew.process, (task,)), done))
            if len(pending) >= window:
                res, d = pending.popleft()
                run.add(res.get())
                report(d)
        while pending:
            res, d = pending.popleft()
            run.add(res.get())
            report(d)
        pool.close()
        pool.join()
    except BaseException:
        pool.terminate()
        pool.join()
        raise


def _sigterm_as_interrupt() -> object:
    def handler(signum, frame):  # noqa: ARG001
        raise KeyboardInterrupt(f"signal {signum}")

    try:
        return signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        return None


def tokenize(opts: TokenizeOptions, log=print) -> dict:
    """Run (or skip, when already finished) a tokenize job; return its stats."""
    inputs = discover_inputs(opts.inputs)
    tok = load_tokenizer(opts.tokenizer)
    if opts.lang is not None and not ew.LANG_RE.match(opts.lang):
        raise TokenizeError(f"--lang {opts.lang!r}: use letters, digits, '_', '-' or '.'")
    if opts.max_chars <= 0 or opts.chunk_bytes <= 0:
        raise TokenizeError("--max-chars and the chunk size must be positive")
    workers = available_cores() if opts.workers is None else opts.workers
    if workers < 0:
        raise TokenizeError(f"--workers {workers}: must be >= 0")
    _check_fields(inputs, opts)

    prefix = os.path.abspath(opts.output_prefix)
    fingerprint = _fingerprint(inputs, tok, opts)
    previous = finished_stats(prefix)
    if previous is not None and not opts.force:
        if previous.get("fingerprint") == fingerprint:
            log(f"up to date: {stats_path(prefix)} (same inputs, tokenizer and options; --force redoes it)")
            return previous
        raise TokenizeError(
            f"{stats_path(prefix)} holds a finished run with other inputs, tokenizer or options; "
            "use another --output-prefix, or --force to overwrite it"
        )
    try:
        ensure_parent(prefix)
    except OSError as e:
        raise TokenizeError(f"--output-prefix {opts.output_prefix}: cannot create its directory ({e})") from None
    remove_stale_tmps(prefix)

    dtype = token_dtype(tok.vocab_size)
    cfg = ew.WorkerConfig(opts.text_key, opts.lang_key, opts.lang, opts.max_chars, tok.eod, dtype.__name__)
    shards = ShardSet(prefix, dtype)
    run = _Run(inputs, shards, opts.strict)
    progress = Progress(sum(i.size for i in inputs), enabled=opts.progress)
    t0 = time.perf_counter()
    old_handler = _sigterm_as_interrupt()
    try:
        _run_results(_tasks(inputs, opts), run, progress, workers, (tok.model_proto, cfg))
        elapsed = time.perf_counter() - t0
        progress.update(progress.total, run.documents, run.tokens, run.text_bytes, force=True)
        progress.close()
        outputs = shards.finalize()
        stats = _stats(fingerprint, tok, inputs, run, outputs, elapsed, workers, dtype)
        write_text_atomic(data_config_path(prefix), _data_config_yaml(tok, outputs))
        write_json_atomic(stats_path(prefix), stats)  # last: marks the run finished
    except BaseException:
        shards.abort()
        raise
    finally:
        if old_handler is not None:
            signal.signal(signal.SIGTERM, old_handler)  # type: ignore[arg-type]
    return stats


def _stats(fingerprint: dict, tok: Tokenizer, inputs: list[InputFile], run: _Run,
           outputs: dict, elapsed: float, workers: int, dtype: type) -> dict:
    skipped_total = sum(v["count"] for v in run.skipped.values())
    return {
        "fingerprint": fingerprint,
        "tokenizer": {"path": tok.path, "sha256": tok.sha256, "vocab_size": tok.vocab_size, "eod": tok.eod},
        "dtype": dtype.__name__,
        "inputs": [
            {"path": i.path, "kind": i.kind + i.compression, "bytes_on_disk": i.size, "records": n}
            for i, n in zip(inputs, run.records)
        ],
        "outputs": outputs,
        "totals": {
            "records": sum(run.records),
            "documents": run.documents,
            "tokens": run.tokens,
            "bytes": run.text_bytes,
            "skipped": skipped_total,
            "blank_lines": run.blank_lines,
        },
        "skipped": dict(sorted(run.skipped.items())),
        "elapsed_s": round(elapsed, 3),
        "bytes_per_s": round(run.text_bytes / elapsed, 1) if elapsed > 0 else None,
        "workers": workers,
    }


__all__ = [
    "InputError",
    "TokenizeError",
    "TokenizeOptions",
    "finished_stats",
    "shard_prefix",
    "stats_path",
    "tokenize",
]
