"""The shipped sample corpus, tokenized into data.cache_dir on first use, is alia-train's own
cache: shards that another request made there (another alia-train version's options, a changed
corpus) are redone, not refused (the demo must work after an upgrade)."""

from __future__ import annotations

from alia_train.data.sample_corpus import sample_corpus_files, sample_tokenizer_path
from alia_train.data.sample_shards import prepare_sample_sources, sample_shard_prefix
from alia_train.data.tokenize import TokenizeOptions, finished_stats, tokenize
from alia_train.data.tokenizer import load_tokenizer


def test_sample_shards_of_another_request_are_redone(tmp_path):
    tokenizer = load_tokenizer(str(sample_tokenizer_path()))
    prefix = sample_shard_prefix(str(tmp_path), tokenizer.sha256)
    # What an older alia-train left: the same corpus under other options.
    tokenize(TokenizeOptions(inputs=sample_corpus_files(), tokenizer=tokenizer.path, output_prefix=prefix,
                             workers=0, progress=False, max_chars=123_456), log=lambda *_: None)
    before = finished_stats(prefix)["fingerprint"]
    sources = prepare_sample_sources(str(tmp_path), tokenizer)
    after = finished_stats(prefix)["fingerprint"]
    assert before != after and sources and all(s.path.startswith(str(tmp_path)) for s in sources)
    assert prepare_sample_sources(str(tmp_path), tokenizer) == sources  # up to date now: reused
