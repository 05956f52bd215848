"""Start-up checks of a run's data sources: cheap, before any model is built.

`check_sources(cfg, tokenizer)` refuses, with one line naming the source and the fix:
no sources at all (and no sample corpus), a prefix without its .bin/.idx, a shard set whose
manifest (`PREFIX.stats.json`) does not vouch for the files (an interrupted publish, files
changed since: size or modification time), a .bin/.idx pair that does not belong together,
shards tokenized with another tokenizer than `data.tokenizer`, and token ids outside its
vocabulary in a few sampled blocks of each .bin. Reads sizes, times, headers and those blocks
(256 KiB a shard), never all the tokens.
"""

from __future__ import annotations

import os

import numpy as np

from alia_train.data.indexed import (
    bin_path,
    idx_path,
    pair_problem,
    read_index_info,
    resolve_path,
    token_range_problem,
)
from alia_train.data.manifest import find_manifest, is_publishing, manifest_problem


class DataSourceError(ValueError):
    """A data source training cannot use; the message names it and the fix."""


def check_sources(cfg, tokenizer) -> None:
    """Raise DataSourceError for the first unusable source of `cfg.data` (others counted)."""
    data = cfg.data
    if not data.sources and not data.use_sample:
        raise DataSourceError(
            "data.sources is empty and data.use_sample is false: no training data; list shard "
            "prefixes under data.sources (alia-data tokenize writes them to PREFIX.data.yaml) "
            "or set data.use_sample=true")
    problems = []
    for key, sources in (("data.sources", data.sources), ("data.valid_sources", data.valid_sources)):
        for i, s in enumerate(sources):
            problem = source_problem(resolve_path(s.path), tokenizer)
            if problem is not None:
                problems.append(f"{key}[{i}] (lang {s.lang}): {problem}")
    if problems:
        more = f" (and {len(problems) - 1} more source(s) with problems)" if len(problems) > 1 else ""
        raise DataSourceError(problems[0] + more)


def check_source(path: str, tokenizer=None) -> None:
    problem = source_problem(path, tokenizer)
    if problem is not None:
        raise DataSourceError(f"source {problem}")


def source_problem(path: str, tokenizer=None) -> str | None:
    """Why the indexed dataset at `path` cannot be trained on (with `tokenizer`), or None."""
    missing = [p for p in (bin_path(path), idx_path(path)) if not os.path.isfile(p)]
    if missing:
        return (f"{path}: no indexed dataset there ({' and '.join(missing)} missing); "
                "fix the path or run alia-data tokenize")
    found = find_manifest(path)
    if found is not None:
        problem = _manifest_problem(path, *found)
        if problem is not None:
            return problem
    problem = pair_problem(path)
    if problem is not None:
        return f"{problem}; re-create the shards (alia-data tokenize --force)"
    if tokenizer is None:
        return None
    if found is not None:
        problem = _tokenizer_problem(path, found[0], found[1].get("tokenizer"), tokenizer)
        if problem is not None:
            return problem
    info = read_index_info(path)
    if info.dtype == np.uint16 and tokenizer.vocab_size > 65536:
        return (f"{path}: 16-bit tokens, but data.tokenizer {tokenizer.path} has {tokenizer.vocab_size} "
                "pieces; re-tokenize with it")
    problem = token_range_problem(path, tokenizer.vocab_size)
    if problem is not None:  # would fail in the embedding, as a traceback (a device assert on GPU)
        return (f"{problem}, outside the {tokenizer.vocab_size} pieces of data.tokenizer {tokenizer.path}: the "
                "shard is damaged or was made with another tokenizer; re-tokenize it (alia-data tokenize --force)")
    return None


def _manifest_problem(path: str, manifest_path: str, manifest: dict) -> str | None:
    if is_publishing(manifest):
        return (f"{path}: {manifest_path} says alia-data tokenize was stopped while publishing this "
                "shard set; run the same alia-data tokenize command again")
    if not manifest.get("files"):
        return None  # written before manifests: the pair check below still applies
    name = os.path.basename(path)
    problem = manifest_problem(manifest_path, manifest, deep=False, only=[f"{name}.bin", f"{name}.idx"])
    if problem is not None:
        return (f"{problem}; the shards were changed after alia-data tokenize wrote them: re-tokenize (--force), "
                f"or, if they were only copied without their times, `alia-data verify "
                f"{manifest_path.removesuffix('.stats.json')}` checks their SHA-256 and records the new times")
    return None


def _tokenizer_problem(path: str, manifest_path: str, made_with, tokenizer) -> str | None:
    if not isinstance(made_with, dict) or made_with.get("sha256") in (None, tokenizer.sha256):
        return None
    return (f"{path} was tokenized with {made_with.get('path')} (sha256 {str(made_with['sha256'])[:12]}, "
            f"per {manifest_path}), but data.tokenizer is {tokenizer.path} (sha256 {tokenizer.sha256[:12]}); "
            "set data.tokenizer to the first or re-tokenize with the second")
