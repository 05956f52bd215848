"""build_datasets on real megatron-core (BlendedMegatronDatasetBuilder + GPTDataset, gloo).

The shards are generated so that each language owns a disjoint range of token ids: the
language of every token a sample holds can be read off its content, independently of the
dataset bookkeeping that produced it.
"""

from __future__ import annotations

import numpy as np
import pytest

from alia_train.config.schema import Config, DataSource
from alia_train.data.indexed import read_index_info, write_index
from alia_train.data.mixture import plan_mixture

LANG_TOKENS = {"es": 400_000, "ca": 200_000, "eu": 30_000, "en": 500_000, "code": 100_000}
BASE, WIDTH, EOD = 10, 50, 2
SEQ = 32


def _lang_of_token(tok: np.ndarray, langs: list[str]) -> np.ndarray:
    return (tok - BASE) // WIDTH  # index into `langs` (the order of LANG_TOKENS)


def _write_shard(prefix, lang_idx: int, n_tokens: int, rng) -> None:
    lengths, docs, total = [], [], 0
    while total < n_tokens:
        n = int(rng.integers(100, 400))
        docs.append(np.append(rng.integers(BASE + WIDTH * lang_idx, BASE + WIDTH * (lang_idx + 1), n), EOD))
        lengths.append(n + 1)
        total += n + 1
    np.concatenate(docs).astype(np.uint16).tofile(f"{prefix}.bin")
    write_index(f"{prefix}.idx", np.array(lengths), np.uint16)


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> list[DataSource]:
    d = tmp_path_factory.mktemp("shards")
    rng = np.random.default_rng(0)
    sources = []
    for i, (lang, n) in enumerate(LANG_TOKENS.items()):
        _write_shard(d / f"c_{lang}", i, n, rng)
        sources.append(DataSource(str(d / f"c_{lang}"), lang))
    return sources


@pytest.fixture(scope="module")
def tokenizer(tokenizer_path):
    from alia_train.data.tokenizer import load_tokenizer

    return load_tokenizer(tokenizer_path)


def _cfg(tmp_path, sources, **data) -> Config:
    cfg = Config()
    cfg.train.seq_length = SEQ
    cfg.train.seed = 1234
    cfg.data.sources = list(sources)
    cfg.data.split = "95,5,0"
    cfg.data.cache_dir = str(tmp_path / "cache")
    for k, v in data.items():
        setattr(cfg.data, k, v)
    return cfg


@pytest.fixture(scope="module")
def bundle(megatron_dist, shards, tokenizer, tmp_path_factory):
    from alia_train.data.datasets import build_datasets

    cfg = _cfg(tmp_path_factory.mktemp("run"), shards)
    return cfg, build_datasets(cfg, tokenizer, train_samples=200_000, valid_samples=64)


def test_realised_mixture_matches_the_plan(bundle, shards):
    cfg, b = bundle
    langs = list(LANG_TOKENS)
    assert b.languages == sorted(langs)
    plan = plan_mixture(shards, cfg.data.multipliers)
    assert b.planned_shares == pytest.approx(plan.shares())
    # Co-official languages at 2x, code at 0.5x, English at 1x of their natural shares.
    nat = {lp.lang: lp.natural_share for lp in plan.languages}
    mass = sum(LANG_TOKENS[k] * m for k, m in {"es": 2, "ca": 2, "eu": 2, "en": 1, "code": 0.5}.items())
    assert b.planned_shares["eu"] == pytest.approx(2 * LANG_TOKENS["eu"] / mass, rel=0.02)  # shards overshoot a bit
    assert b.planned_shares["eu"] / nat["eu"] == pytest.approx(2 * b.planned_shares["en"] / nat["en"])

    # 200,000 samples of SEQ tokens each: per-language token shares within 1 point of the plan.
    assert len(b.train) >= 200_000
    ids = b.train.lang_ids()[:200_000]
    realised = np.bincount(ids, minlength=len(b.languages)) / len(ids)
    for i, lang in enumerate(b.languages):
        assert abs(realised[i] - b.planned_shares[lang]) < 0.01, (lang, realised[i], b.planned_shares[lang])

    # The content agrees: every token of a sample belongs to the sample's language, and token
    # shares counted from the tokens themselves match the plan too.
    counts = np.zeros(len(langs))
    for idx in range(3000):
        item = b.train[idx]
        tok = item["tokens"].numpy()
        owner = _lang_of_token(tok[tok != EOD], langs)
        assert (owner == langs.index(b.languages[int(item["lang_id"])])).all()
        counts += np.bincount(owner, minlength=len(langs))
    for i, lang in enumerate(langs):
        assert abs(counts[i] / counts.sum() - b.planned_shares[lang]) < 0.01


def test_items_have_the_training_loop_format(bundle):
    _, b = bundle
    item = b.train[5]
    assert set(item) == {"tokens", "labels", "loss_mask", "position_ids", "lang_id"}
    for key, dtype in (("tokens", "int64"), ("labels", "int64"), ("position_ids", "int64"), ("loss_mask", "float32")):
        assert str(item[key].dtype).endswith(dtype) and tuple(item[key].shape) == (SEQ,)
    assert item["lang_id"].shape == () and str(item["lang_id"].dtype).endswith("int64")
    assert (item["tokens"][1:] == item["labels"][:-1]).all()  # labels = tokens shifted by one
    assert (item["position_ids"].numpy() == np.arange(SEQ)).all()
    assert (item["loss_mask"].numpy() == 1).all()


def test_validation_per_language_from_the_split(bundle):
    _, b = bundle
    assert set(b.valid) == set(b.languages)
    for lang, ds in b.valid.items():
        assert len(ds) >= 64
        item = ds[3]
        assert b.languages[int(item["lang_id"])] == lang
        tok = item["tokens"].numpy()
        assert (_lang_of_token(tok[tok != EOD], list(LANG_TOKENS)) == list(LANG_TOKENS).index(lang)).all()


def test_sample_order_is_deterministic_for_a_seed(bundle, shards, tokenizer, tmp_path):
    from alia_train.data.datasets import build_datasets

    cfg, b = bundle
    again = build_datasets(cfg, tokenizer, train_samples=200_000, valid_samples=64)  # from the index cache
    fresh_cfg = _cfg(tmp_path, shards)  # rebuilt from scratch in another cache
    fresh = build_datasets(fresh_cfg, tokenizer, train_samples=200_000, valid_samples=64)
    for other in (again, fresh):
        assert np.array_equal(other.train.lang_ids(), b.train.lang_ids())
        for i in (0, 1, 777, 199_999):
            assert (other.train[i]["tokens"] == b.train[i]["tokens"]).all()
    fresh_cfg.train.seed = 99
    reseeded = build_datasets(fresh_cfg, tokenizer, train_samples=1000, valid_samples=0)
    assert reseeded.valid == {}
    assert not all((reseeded.train[i]["tokens"] == b.train[i]["tokens"]).all() for i in range(4))


def test_separate_validation_sources_and_multiplier_overrides(megatron_dist, shards, tokenizer, tmp_path):
    from alia_train.data.datasets import build_datasets

    train = [DataSource(s.path, s.lang, 1.0 if s.lang == "eu" else None) for s in shards if s.lang != "code"]
    valid = [s for s in shards if s.lang in ("eu", "code")]
    cfg = _cfg(tmp_path, train, valid_sources=valid, multipliers={"es": 3.0})
    b = build_datasets(cfg, tokenizer, train_samples=5000, valid_samples=16)
    assert b.languages == ["ca", "code", "en", "es", "eu"]
    assert set(b.valid) == {"code", "eu"}
    tokens = {s.lang: read_index_info(s.path).tokens for s in train}
    mass = sum((3 if k == "es" else 1) * n for k, n in tokens.items())
    assert b.planned_shares == pytest.approx({k: (3 if k == "es" else 1) * n / mass for k, n in tokens.items()})
    ids = b.train.lang_ids()
    assert b.languages.index("code") not in set(ids.tolist())


def test_shipped_sample_corpus_is_prepared_and_reused(megatron_dist, tmp_path):
    from alia_train.data.datasets import build_datasets
    from alia_train.data.sample_corpus import sample_corpus_dir
    from alia_train.data.tokenizer import load_tokenizer

    tok = load_tokenizer(None)
    cfg = _cfg(tmp_path, [])
    b = build_datasets(cfg, tok, train_samples=256, valid_samples=8)
    corpus_langs = sorted(p.stem for p in sample_corpus_dir().glob("*.jsonl"))
    assert b.languages == corpus_langs
    assert b.planned_shares["es"] > 0 and set(b.valid) <= set(corpus_langs)
    stats = next((tmp_path / "cache" / "sample").rglob("sample.stats.json"))
    mtime = stats.stat().st_mtime_ns
    build_datasets(cfg, tok, train_samples=256, valid_samples=8)
    assert stats.stat().st_mtime_ns == mtime  # reused, not re-tokenized


def test_shards_of_another_tokenizer_are_refused(megatron_dist, corpus_dir, tokenizer, tmp_path):
    from alia_train.data.checks import DataSourceError
    from alia_train.data.datasets import build_datasets
    from alia_train.data.sample_corpus import sample_tokenizer_path
    from alia_train.data.tokenize import TokenizeOptions, tokenize

    stats = tokenize(TokenizeOptions([str(corpus_dir / "eu.jsonl")], str(sample_tokenizer_path()),
                                     str(tmp_path / "s"), workers=0, progress=False))
    cfg = _cfg(tmp_path, [DataSource(stats["outputs"]["eu"]["path"], "eu")])
    with pytest.raises(DataSourceError, match="was tokenized with .*tokenizer.model"):
        build_datasets(cfg, tokenizer, train_samples=10, valid_samples=0)


def test_shards_rewritten_in_place_get_fresh_index_caches(megatron_dist, tokenizer, tmp_path):
    """Megatron keys its index caches by path, seed, lengths and tokenizer, not by content:
    shards re-tokenized under the same prefix (--force) must not reuse the old indices."""
    from alia_train.data.datasets import build_datasets

    rng = np.random.default_rng(1)
    prefix = tmp_path / "s" / "c_eu"
    prefix.parent.mkdir()
    cfg = _cfg(tmp_path, [DataSource(str(prefix), "eu")], split="100,0,0")
    _write_shard(prefix, 2, 30_000, rng)
    build_datasets(cfg, tokenizer, train_samples=2000, valid_samples=0)
    _write_shard(prefix, 3, 6_000, rng)  # fewer documents, other tokens, same path
    again = build_datasets(cfg, tokenizer, train_samples=2000, valid_samples=0)
    fresh = build_datasets(_cfg(tmp_path / "other", cfg.data.sources, split="100,0,0"), tokenizer,
                           train_samples=2000, valid_samples=0)
    for i in (0, 1, 999, 1999):
        tokens = again.train[i]["tokens"].numpy()
        assert (tokens == fresh.train[i]["tokens"].numpy()).all()
        assert (_lang_of_token(tokens[tokens != EOD], list(LANG_TOKENS)) == 3).all()


def test_document_ranges_are_megatrons(bundle, shards):
    """doc_range (used to leave out sources with no documents in a split) gives the documents
    megatron's builder really took, for the train and the validation split."""
    from alia_train.data.datasets import doc_range, split_matrix

    cfg, b = bundle
    matrix = split_matrix(cfg.data.split)
    assert matrix == [(0, 0.95), (0.95, 1.0), None]
    documents = {s.path: read_index_info(s.path).documents for s in shards}
    for source in b.train.blended.sources:
        ds = source.epoch  # megatron's GPTDataset of one epoch
        assert np.array_equal(ds.indices, np.arange(*doc_range(documents[ds.dataset_path], matrix, 0)))
    for lang, vds in b.valid.items():
        (source,) = vds.blended.sources  # one source per language
        ds = source.epoch
        assert np.array_equal(ds.indices, np.arange(*doc_range(documents[ds.dataset_path], matrix, 1)))
    assert doc_range(10, split_matrix("98,2,0"), 1) == (10, 10)  # empty, as megatron rounds it
    assert split_matrix("100,0,0")[1] is None and doc_range(7, split_matrix("100,0,0"), 1) == (0, 0)
