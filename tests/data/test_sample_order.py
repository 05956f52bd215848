"""The training order does not depend on how long a run is or on its batch size (issue #26):
sample i of the dataset built for 10 steps is sample i of the one built for 100 steps or for
another global batch size, across epochs; later epochs are reshuffled without touching earlier
ones; the blend draws the sources by megatron's greedy assignment, period after period."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from alia_train.config.schema import Config
from alia_train.data import sample_order
from alia_train.data.sample_order import Blend, SourceEpochs

TINY_SEQ, TINY_GBS = 128, 8  # configs/model/tiny.yaml


@pytest.fixture(scope="module")
def sample_cfg(tmp_path_factory) -> Config:
    """The shipped sample corpus (data=sample) as the tiny model reads it."""
    cfg = Config()
    cfg.train.seq_length = TINY_SEQ
    cfg.data.split = "95,5,0"
    cfg.data.cache_dir = str(tmp_path_factory.mktemp("cache"))
    return cfg


def _tokens(dataset, i: int) -> np.ndarray:
    return dataset[i]["tokens"].numpy()


def test_sample_i_is_the_same_for_any_steps_or_batch_size(megatron_dist, sample_cfg):
    from alia_train.data.datasets import build_datasets
    from alia_train.data.tokenizer import load_tokenizer

    tok = load_tokenizer(None)
    runs = {"steps=10": 10 * TINY_GBS, "steps=40": 40 * TINY_GBS, "steps=40 gbs=16": 40 * 16,
            "steps=100": 100 * TINY_GBS}
    built, caches = {}, []
    for name, n in runs.items():
        built[name] = build_datasets(sample_cfg, tok, train_samples=n, valid_samples=n // 10)
        caches.append(sorted(p.name for p in Path(sample_cfg.data.cache_dir, "index_cache").rglob("*.npy")))
    longest = built["steps=100"]
    for name, n in runs.items():
        train = built[name].train
        for i in range(n):
            assert np.array_equal(_tokens(train, i), _tokens(longest.train, i)), (name, i)
        assert len(train) == n, name
        for lang, valid in built[name].valid.items():  # validation too: its first samples
            assert all(np.array_equal(_tokens(valid, i), _tokens(longest.valid[lang], i)) for i in range(len(valid)))

    assert caches[0] and all(c == caches[0] for c in caches)  # one set of index caches for every run
    # The comparison above crossed into the second epoch of the small languages.
    blend = longest.train.blended
    epochs = [blend.sources[s].locate(j)[0] for s, j in map(blend.locate, range(40 * 16))]
    assert max(epochs) >= 1 and 0 in epochs


def test_later_epochs_are_reshuffled_and_never_change_earlier_ones():
    n = 1000
    fresh, jumped = SourceEpochs(list(range(n)), (1234, 0, 3)), SourceEpochs(list(range(n)), (1234, 0, 3))
    [jumped[j] for j in (7 * n, 5 * n, 9 * n + 1)]  # far epochs first: the cache must not matter
    epochs = [[fresh[e * n + k] for k in range(n)] for e in range(3)]
    assert epochs[0] == list(range(n))  # epoch 0: megatron's own order
    assert all(sorted(e) == list(range(n)) for e in epochs)  # every sample once per epoch
    assert epochs[1] != epochs[0] and epochs[2] != epochs[1]
    assert [jumped[j] for j in range(3 * n)] == sum(epochs, [])
    other_source = SourceEpochs(list(range(n)), (1234, 0, 4))
    assert [other_source[n + k] for k in range(n)] != epochs[1]


def test_the_blend_is_megatrons_greedy_repeated_per_period(monkeypatch):
    from megatron.core.datasets import helpers

    period = 97
    monkeypatch.setattr(sample_order, "PERIOD", period)
    weights = [0.5, 0.3, 0.15, 0.05]
    n = 5 * period + 13
    blend = Blend([SourceEpochs([{"k": k} for k in range(50)], (0, 0, s)) for s in range(4)], weights, n)
    located = [blend.locate(i) for i in range(n)]
    # Within the first period: exactly megatron's BlendedDataset indices for that size.
    source, within = np.zeros(period, np.int16), np.zeros(period, np.int64)
    helpers.build_blending_indices(source, within, np.array(weights), 4, period, False)
    assert located[:period] == list(zip(source.tolist(), within.tolist()))
    # Every source's samples are read in order, each once, and the shares hold at every prefix.
    for s in range(4):
        assert [j for t, j in located if t == s] == list(range(sum(t == s for t, _ in located)))
    counts = np.cumsum(np.eye(4)[[t for t, _ in located]], axis=0)
    drift = np.abs(counts - np.outer(np.arange(1, n + 1), weights))
    assert drift.max() < 2 + n / period
    assert np.array_equal(blend.source_ids(), [t for t, _ in located])
    last = blend[n - 1]
    assert last["dataset_id"] == located[-1][0] and last["k"] == blend.sources[located[-1][0]].locate(located[-1][1])[1]
    with pytest.raises(IndexError):
        blend[n]
