"""`alia-data tokenize`: corpus files -> per-language Megatron indexed datasets + stats JSON.

Outputs of `--output-prefix PREFIX`:
    PREFIX_<lang>.bin / PREFIX_<lang>.idx   one indexed dataset per language
    PREFIX.data.yaml                        the shards as a data config
    PREFIX.stats.json                       documents, tokens, bytes, skipped records by reason,
                                            and the manifest of the set (every file's size and
                                            SHA-256); renamed into place last (see publish.py).
Everything checkable is checked before the first token is encoded (tokenize_request.py).
A finished run with the same inputs, tokenizer and options, whose files still match its
manifest, is not redone.
"""

from __future__ import annotations

import errno
import json
import multiprocessing as mp
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from typing import Protocol

import yaml

from alia_train.data import encode_worker as ew
from alia_train.data.indexed import token_dtype
from alia_train.data.manifest import is_publishing, manifest_problem, read_manifest, record_times, stats_path
from alia_train.data.publish import StagedFile, discard, publish_set, stage_text
from alia_train.data.readers import InputError, InputFile, LinesTask, RecordsTask, Task, iter_jsonl_blobs, iter_records
from alia_train.data.shard_writer import ShardSet, shard_prefix
from alia_train.data.tokenize_request import (
    STATS_VERSION,
    OtherRequestError,
    Request,
    TokenizeError,
    TokenizeOptions,
    available_cores,
    check_output_prefix,
    check_request,
    fingerprint,
    request_differences,
    same_request,
)
from alia_train.data.tokenizer import Tokenizer
from alia_train.fs import remove_stale_tmps
from alia_train.progress import ByteProgress


class Progress(Protocol):
    """What a run reports its progress to (ByteProgress; a task of many sets passes its own)."""

    total: float

    def update(self, done_bytes: float, docs: int, tokens: int, text_bytes: int, force: bool = False) -> None: ...

    def close(self) -> None: ...


def data_config_path(prefix: str) -> str:
    return f"{prefix}.data.yaml"


_DATA_CONFIG_HEADER = """\
# Written by `alia-data tokenize`: these shards as a data config. Copy it to
# DIR/data/NAME.yaml and train with `alia-train --config-dir DIR ... data=NAME`;
# unlisted fields keep their defaults.
"""


def _data_config_yaml(tok: Tokenizer, outputs: dict) -> str:
    """The shards as a data config group entry (DIR/data/NAME.yaml, then data=NAME)."""
    config = {
        "tokenizer": tok.path,
        "use_sample": False,
        "sources": [{"path": o["path"], "lang": lang} for lang, o in outputs.items()],
    }
    # Flow style for each source: one line per shard, as a person would write it.
    body = yaml.safe_dump(config, sort_keys=False, default_flow_style=None, allow_unicode=True, width=10**6)
    return _DATA_CONFIG_HEADER + body


def finished_stats(prefix: str, fingerprint: dict | None = None, deep: bool = False) -> dict | None:
    """The stats of a finished run at `prefix` whose files match its manifest (by size, and
    by SHA-256 when `deep`), matching `fingerprint` if given; else None."""
    path = stats_path(prefix)
    stats = read_manifest(path)
    if stats is None or manifest_problem(path, stats, deep) is not None:
        return None
    if fingerprint is not None and not same_request(stats.get("fingerprint"), fingerprint):
        return None
    return stats


def _previous_run(prefix: str, fingerprint: dict, log, still_ours: Callable[[], None] | None) -> dict | None:
    """The verified stats of the same finished run (nothing to do), or None (do the run).

    Raises when a finished run of another request is there: --force is needed."""
    path = stats_path(prefix)
    previous = read_manifest(path)
    if previous is None:
        return None
    if is_publishing(previous):
        log(f"{path}: the previous run was stopped while publishing; redoing it")
        return None
    if not same_request(previous.get("fingerprint"), fingerprint):
        raise OtherRequestError(
            f"{path} holds a finished run with other inputs, tokenizer or options "
            f"({request_differences(previous.get('fingerprint'), fingerprint)}); "
            "use another --output-prefix, or --force to overwrite it"
        )
    problem = manifest_problem(path, previous, deep=True)
    if problem is not None:
        log(f"not up to date ({problem}); redoing the run")
        return None
    if still_ours is not None:
        still_ours()  # the hash may have taken long: write the times only while the prefix is ours
    record_times(path, previous)  # the same content under new times (copied, touched): trusted again
    log(f"up to date: {path} (same inputs, tokenizer and options; files match its manifest; "
        "--force redoes it)")
    return previous


# ---------------------------------------------------------------------------------------------
# The run


def _tasks(req: Request, opts: TokenizeOptions) -> Iterator[tuple[Task, float]]:
    """Tasks in input order, with the input bytes read so far (for progress)."""
    done = 0.0
    for src, (item, lang) in enumerate(zip(req.inputs, req.langs)):
        if item.kind == "jsonl":
            for first, blob, consumed in iter_jsonl_blobs(item, opts.chunk_bytes):
                yield LinesTask(src, first, blob, lang), done + consumed
        else:
            lang_key = None if lang else opts.lang_key
            for first, texts, langs, frac in iter_records(item, opts.text_key, lang_key, opts.chunk_bytes):
                yield RecordsTask(src, first, texts, langs, lang), done + frac * item.size
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
        ew.init_worker(*initargs, in_pool=False)
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


def tokenize(opts: TokenizeOptions, log=print, hold: Callable[[str], AbstractContextManager] | None = None,
             progress: Progress | None = None) -> dict:
    """Run (or skip, when already finished) a tokenize job; return its stats.

    `hold(prefix)` keeps other writers off the prefix from the "up to date" check to the publish
    (alia-data's PREFIX.lock): two runs into one prefix would each publish over the other. What
    it yields, if callable, is called just before anything is published, and raises if the
    prefix is no longer ours (its lock was taken over): nothing is published then.
    `progress` replaces the run's own progress line (a task of many sets shows one for all)."""
    req = check_request(opts)
    prefix = os.path.abspath(opts.output_prefix)
    fp = fingerprint(req.inputs, req.tokenizer, opts)
    check_output_prefix(opts.output_prefix, prefix)
    with hold(prefix) if hold is not None else nullcontext() as held:
        still_ours = held if callable(held) else None
        if not opts.force:
            previous = _previous_run(prefix, fp, log, still_ours)
            if previous is not None:
                return previous
        if progress is None:
            progress = ByteProgress("tokenize", sum(i.size for i in req.inputs), enabled=opts.progress)
        return _run(opts, req, prefix, fp, progress, still_ours)


def _run(opts: TokenizeOptions, req: Request, prefix: str, fp: dict, progress: Progress,
         still_ours: Callable[[], None] | None = None) -> dict:
    remove_stale_tmps(prefix)
    tok = req.tokenizer
    dtype = token_dtype(tok.vocab_size)
    cfg = ew.WorkerConfig(opts.text_key, opts.lang_key, opts.lang, opts.max_chars, tok.eod, dtype.__name__)
    shards = ShardSet(prefix, dtype)
    run = _Run(req.inputs, shards, opts.strict)
    t0 = time.perf_counter()
    old_handler = _sigterm_as_interrupt()
    staged: list[StagedFile] = []
    publishing = False
    try:
        _run_results(_tasks(req, opts), run, progress, req.workers, (tok.model_proto, cfg))
        elapsed = time.perf_counter() - t0
        progress.update(progress.total, run.documents, run.tokens, run.text_bytes, force=True)
        progress.close()
        if run.documents == 0:
            raise TokenizeError(_no_documents(req.inputs, run))
        files, entries = shards.stage()
        staged += files
        outputs = shards.summary()
        stats = _stats(fp, tok, req.inputs, run, outputs, elapsed, req.workers, dtype)
        stats["files"] = {name: e.as_json() for name, e in sorted(entries.items())}
        staged.append(stage_text(data_config_path(prefix), _data_config_yaml(tok, outputs)))
        manifest = stage_text(stats_path(prefix), json.dumps(stats, indent=2, ensure_ascii=False) + "\n")
        staged.append(manifest)
        if still_ours is not None:
            still_ours()  # the lock may have been taken over while encoding: then publish nothing
        publishing = True
        publish_set(staged[:-1], manifest)  # the manifest last: the commit point
    except OSError as e:
        shards.abort()
        discard(staged)
        raise TokenizeError(_write_error(prefix, e, publishing)) from None
    except BaseException:
        shards.abort()
        discard(staged)
        raise
    finally:
        if old_handler is not None:
            signal.signal(signal.SIGTERM, old_handler)  # type: ignore[arg-type]
    return stats


def _no_documents(inputs: list[InputFile], run: _Run) -> str:
    reasons = ", ".join(f"{v['count']} {k.replace('_', ' ')}" for k, v in sorted(run.skipped.items()))
    return (f"no usable documents in {len(inputs)} input(s) ({sum(run.records)} records"
            + (f": {reasons}" if reasons else "") + "); nothing was written")


def _write_error(prefix: str, e: OSError, publishing: bool) -> str:
    where = e.filename or f"the outputs in {os.path.dirname(prefix)}"
    if publishing:  # some files may be renamed already: the marker makes readers refuse them
        return (f"publishing {prefix}_* failed ({where}: {e.strerror or e}); the set is marked "
                f"incomplete in {stats_path(prefix)}: run the same command again")
    if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):  # disk full, quota, ulimit -f
        return (f"cannot write {where}: {e.strerror}; free some space or choose another "
                "--output-prefix (nothing was published; earlier outputs are untouched)")
    return f"{where}: {e.strerror or e}; nothing was published"


def _stats(fingerprint: dict, tok: Tokenizer, inputs: list[InputFile], run: _Run,
           outputs: dict, elapsed: float, workers: int, dtype: type) -> dict:
    skipped_total = sum(v["count"] for v in run.skipped.values())
    return {
        "version": STATS_VERSION,
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
    "available_cores",
    "TokenizeError",
    "TokenizeOptions",
    "finished_stats",
    "shard_prefix",
    "stats_path",
    "tokenize",
]
