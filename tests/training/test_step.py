"""The pieces of one step that need no process group: the loss accumulator's sums (overall,
token-weighted; per language) and the step schedule (which samples each data-parallel rank reads
in which micro-batch, and how many micro-batches a step has)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from alia_train.config.derived import microbatches_per_step
from alia_train.training.batches import BatchReader
from alia_train.training.step import LossAccumulator


def test_the_accumulator_sums_token_losses_overall_and_per_language():
    acc = LossAccumulator(num_langs=3, device=torch.device("cpu"))
    # Two micro-batches of two samples, 4 positions each; masked positions must not count.
    losses = torch.tensor([[1.0, 2.0, 3.0, 4.0], [10.0, 10.0, 10.0, 10.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]])
    loss_sum, tokens, report = acc.loss_func(mask, torch.tensor([0, 2]), losses)
    assert loss_sum.item() == pytest.approx(1 + 2 + 3 + 10 + 10) and tokens.item() == 5
    assert report["lm loss"].tolist() == pytest.approx([26.0, 5.0])
    acc.loss_func(torch.ones(2, 4), torch.tensor([2, 2]), torch.full((2, 4), 0.5))

    v = acc.values.tolist()
    assert v[:2] == pytest.approx([26.0 + 4.0, 5 + 8])  # Σ token losses, Σ tokens of the step
    assert v[2:5] == pytest.approx([6.0, 0.0, 20.0 + 4.0])  # per language: es, ca, eu
    assert v[5:] == pytest.approx([3, 0, 2 + 8])
    # The step's loss is the token-weighted mean, not a mean of micro-batch means.
    assert v[0] / v[1] == pytest.approx(30.0 / 13)
    acc.reset()
    assert not acc.values.any()


class _Numbered:
    """A dataset whose sample i says i."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        return {"tokens": np.array([i]), "lang_id": np.array(0)}


@pytest.mark.parametrize("dp,mbs", [(1, 4), (2, 2), (4, 1), (2, 1)])
def test_global_step_k_reads_samples_k_gbs_to_k_plus_1_gbs_on_every_layout(dp, mbs):
    gbs, steps, consumed = 8, 3, 16  # resumed after two steps
    n_micro = microbatches_per_step(gbs, mbs, dp)
    assert n_micro * mbs * dp == gbs
    data = _Numbered(100)
    per_rank = [BatchReader(mbs, rank, dp).iterators(data, consumed)[0] for rank in range(dp)]
    for k in range(steps):
        seen = sorted(int(t) for it in per_rank for _ in range(n_micro) for t in next(it)["tokens"].flatten())
        assert seen == list(range(consumed + k * gbs, consumed + (k + 1) * gbs))
    assert all(it.position == consumed + steps * gbs for it in per_rank)


def test_each_model_chunk_reads_its_own_copy_and_short_datasets_end():
    reader = BatchReader(micro_batch_size=2, dp_rank=1, dp_size=2, num_chunks=2)
    first, second = reader.iterators(_Numbered(9))
    assert next(first)["tokens"].flatten().tolist() == [2, 3]
    assert next(second)["tokens"].flatten().tolist() == [2, 3]  # not [6, 7]
    assert reader.microbatches_in(_Numbered(9)) == 2
    next(first)
    with pytest.raises(StopIteration):  # samples 8.. do not fill a round of 2 x 2
        next(first)
