"""Parameter counts of the released models, from configs alone (nothing is allocated)."""

import pytest

from alia_train.config import load_config
from alia_train.model.params import count_params, padded_vocab_size


@pytest.mark.parametrize(
    "name, total, embedding",
    [
        ("salamandra_2b", 2_253_490_176, 524_288_000),
        ("salamandra_7b", 7_768_117_248, 1_048_576_000),
        ("alia_40b", 40_433_885_184, 2_097_152_000),
    ],
)
def test_model_card_counts(name, total, embedding):
    m = load_config([f"+model={name}"]).model
    counts = count_params(m)
    assert counts.total == total
    assert counts.embedding == embedding
    assert counts.output == embedding  # untied


def test_vocab_padding():
    assert padded_vocab_size(256_000, 128, 1) == 256_000
    assert padded_vocab_size(256_000, 128, 4) == 256_000
    assert padded_vocab_size(4_000, 128, 1) == 4_096
    assert padded_vocab_size(4_097, 128, 2) == 4_352
