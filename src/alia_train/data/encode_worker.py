"""Worker side of `alia-data tokenize`: parse, validate and encode one task.

Each worker process holds its own SentencePiece processor (loaded once, in `init_worker`) and
returns per-language token arrays with EOD appended, ready to be appended to the .bin files:
the main process only writes bytes. Bad records are counted per reason with their first line
numbers instead of stopping the run.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass, field, replace
from itertools import chain

import numpy as np
import sentencepiece as spm

from alia_train.data.documents import document_problem, json_record
from alia_train.data.readers import LinesTask, RecordsTask

MAX_FIRST_LINES = 10


@dataclass(frozen=True)
class WorkerConfig:
    text_key: str
    lang_key: str
    fixed_lang: str | None
    max_chars: int
    eod: int
    dtype: str  # numpy dtype name of the .bin tokens


@dataclass
class LangPart:
    tokens: np.ndarray  # all documents back to back, EOD after each
    lengths: np.ndarray  # int32 tokens per document (EOD included)
    nbytes: int  # UTF-8 bytes of the documents' text


@dataclass
class BatchResult:
    source: int
    records: int = 0
    blank_lines: int = 0
    parts: dict[str, LangPart] = field(default_factory=dict)
    # reason -> [count, first line numbers]
    skipped: dict[str, list] = field(default_factory=dict)

    def skip(self, reason: str, line: int) -> None:
        entry = self.skipped.setdefault(reason, [0, []])
        entry[0] += 1
        if len(entry[1]) < MAX_FIRST_LINES:
            entry[1].append(line)


_sp: spm.SentencePieceProcessor | None = None
_cfg: WorkerConfig | None = None


def init_worker(model_proto: bytes, cfg: WorkerConfig, in_pool: bool = True) -> None:
    global _sp, _cfg
    if in_pool:
        # The parent owns interruption: Ctrl-C and SIGTERM there terminate the pool cleanly.
        # (Not when encoding in the parent itself: it keeps its own handlers.)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    sp = spm.SentencePieceProcessor()
    sp.LoadFromSerializedProto(model_proto)
    _sp, _cfg = sp, cfg


def process(task: LinesTask | RecordsTask) -> BatchResult:
    assert _sp is not None and _cfg is not None, "init_worker was not called"
    result = BatchResult(source=task.source)
    # A task may carry its input's language (--lang-from-path): it overrides the records'.
    cfg = _cfg if task.lang is None else replace(_cfg, fixed_lang=task.lang)
    if isinstance(task, LinesTask):
        docs = _parse_lines(task, cfg, result)
    else:
        docs = _check_records(task, cfg, result)
    _encode(docs, _sp, cfg, result)
    return result


def _validate(text, lang, line: int, cfg: WorkerConfig, result: BatchResult):
    """(text, lang, utf8 byte count) or None after counting why the record is skipped."""
    if cfg.fixed_lang is not None:
        lang = cfg.fixed_lang
    problem = document_problem(text, lang, cfg.max_chars)
    if problem is not None:
        result.skip(problem, line)
        return None
    return text, lang, len(text.encode("utf-8"))


def _parse_lines(task: LinesTask, cfg: WorkerConfig, result: BatchResult) -> list[tuple]:
    docs = []
    lines = task.blob.split(b"\n")
    if lines and not lines[-1]:
        lines.pop()  # the blob ends with a newline
    text_key, lang_key = cfg.text_key, cfg.lang_key
    for i, raw in enumerate(lines):
        line = task.first_line + i
        if not raw.strip():
            result.blank_lines += 1
            continue
        result.records += 1
        obj = json_record(raw)
        if isinstance(obj, str):
            result.skip(obj, line)
            continue
        doc = _validate(obj.get(text_key), obj.get(lang_key), line, cfg, result)
        if doc is not None:
            docs.append(doc)
    return docs


def _check_records(task: RecordsTask, cfg: WorkerConfig, result: BatchResult) -> list[tuple]:
    docs = []
    langs = task.langs
    for i, text in enumerate(task.texts):
        result.records += 1
        doc = _validate(text, langs[i] if langs is not None else None, task.first_line + i, cfg, result)
        if doc is not None:
            docs.append(doc)
    return docs


def _encode(docs: list[tuple], sp: spm.SentencePieceProcessor, cfg: WorkerConfig, result: BatchResult) -> None:
    if not docs:
        return
    ids = sp.encode([d[0] for d in docs], num_threads=1)
    by_lang: dict[str, list[int]] = {}
    for j, d in enumerate(docs):
        by_lang.setdefault(d[1], []).append(j)
    eod = cfg.eod
    for lang, members in by_lang.items():
        seqs = [ids[j] for j in members]
        for s in seqs:
            s.append(eod)
        lengths = np.fromiter(map(len, seqs), dtype=np.int32, count=len(seqs))
        tokens = np.fromiter(chain.from_iterable(seqs), dtype=cfg.dtype, count=int(lengths.sum()))
        result.parts[lang] = LangPart(tokens, lengths, sum(docs[j][2] for j in members))
