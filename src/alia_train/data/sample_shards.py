"""The shipped sample corpus, tokenized on first use.

With no `data.sources`, training tokenizes `sample_data/corpus/*.jsonl` (its `lang` field
gives the language) into `data.cache_dir` on first use: rank 0 does it while the others wait,
and later runs reuse the shards as long as the corpus files and the tokenizer are unchanged
(the shard directory is named after the tokenizer's hash; tokenize's own fingerprint covers
the corpus files). The cache directory must be visible to every rank (a shared file system).
"""

from __future__ import annotations

import os

from alia_train.config.schema import DataSource
from alia_train.data.sample_corpus import sample_corpus_files


def sample_shard_prefix(cache_dir: str, tokenizer_sha256: str) -> str:
    return os.path.join(cache_dir, "sample", f"tok-{tokenizer_sha256[:12]}", "sample")


def prepare_sample_sources(cache_dir: str, tokenizer) -> list[DataSource]:
    """Tokenize the sample corpus (rank 0; others wait) and return its shards as sources."""
    from alia_train.data.tokenize import TokenizeOptions, finished_stats, tokenize
    from alia_train.data.tokenize_request import OtherRequestError

    prefix = sample_shard_prefix(cache_dir, tokenizer.sha256)
    error = None
    if _rank() == 0:
        options = TokenizeOptions(inputs=sample_corpus_files(), tokenizer=tokenizer.path,
                                  output_prefix=prefix, workers=0, progress=False)
        try:
            try:
                tokenize(options, log=lambda *_: None)
            except OtherRequestError:  # made by another alia-train (or corpus): ours to redo
                options.force = True
                tokenize(options, log=lambda *_: None)
        except Exception as e:  # noqa: BLE001 - re-raised on every rank below
            error = f"{type(e).__name__}: {e}"
    error = _share_from_rank0(error)
    if error is not None:
        raise RuntimeError(f"preparing the sample corpus in {os.path.dirname(prefix)} failed: {error}")
    stats = finished_stats(prefix)
    if stats is None:
        raise RuntimeError(f"sample corpus shards at {prefix} are not visible on this rank (shared cache_dir?)")
    return [DataSource(path=o["path"], lang=lang) for lang, o in sorted(stats["outputs"].items())]


def _rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _share_from_rank0(value):
    """Broadcast rank 0's value; also the barrier that makes the others wait for its files."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]
