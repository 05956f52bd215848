"""The sample order of a blend: sample i depends on the seed, the sources and their weights, the
sequence length and the split, never on how many samples a run asks for.

megatron's GPTDataset built for `num_samples` shuffles all its epochs but the last as one
permutation, so its sample i moves when num_samples does: a longer run or another global batch
size would read another order. Here each source is megatron's GPTDataset for one epoch (its
document and sample shuffles, cached on disk and shared by every run), and

* SourceEpochs repeats that epoch: epoch e >= 1 is a permutation of it seeded by (seed, split,
  source, e), generated when first read, so asking for more epochs never changes earlier ones;
* Blend draws the sources by megatron's own greedy assignment (build_blending_indices, which
  BlendedDataset uses), computed once for PERIOD samples and repeated: sample i's source and its
  place in that source follow from i and the weights alone. Every period holds each source's
  count exactly, so the shares are megatron's to within 1/PERIOD.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch

# Samples per blending period. Changing it changes every blended order (as a new seed would).
PERIOD = 1 << 20


class SourceEpochs(torch.utils.data.Dataset):
    """One source's samples, epoch after epoch: index j is sample j % n of epoch j // n (n = the
    samples of one epoch); epoch 0 is megatron's order, the later ones reshuffled."""

    # Reshuffled epochs kept in memory (4 or 8 bytes a sample each): readers move forwards.
    CACHED_EPOCHS = 2

    def __init__(self, epoch, key: tuple[int, ...]):
        if len(epoch) == 0:
            raise ValueError(f"{getattr(epoch, 'dataset_path', 'a source')}: no sample in its epoch")
        self.epoch = epoch  # megatron's GPTDataset of one epoch (or anything indexable)
        self.samples_per_epoch = len(epoch)
        self.key = key
        self._orders: OrderedDict[int, np.ndarray] = OrderedDict()

    def locate(self, j: int) -> tuple[int, int]:
        """(epoch, sample of the one-epoch dataset) of index j."""
        epoch, k = divmod(int(j), self.samples_per_epoch)
        return epoch, k if epoch == 0 else int(self._order(epoch)[k])

    def __getitem__(self, j: int):
        return self.epoch[self.locate(j)[1]]

    def _order(self, epoch: int) -> np.ndarray:
        order = self._orders.get(epoch)
        if order is None:
            # RandomState: numpy keeps its stream fixed across versions (Generator may change).
            order = np.random.RandomState([*self.key, epoch]).permutation(self.samples_per_epoch)
            order = order.astype(np.int32 if self.samples_per_epoch < 2**31 else np.int64)
            self._orders[epoch] = order
            while len(self._orders) > self.CACHED_EPOCHS:
                self._orders.popitem(last=False)
        self._orders.move_to_end(epoch)
        return order


def _period_indices(weights: list[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """megatron's greedy blend over one period: (source of each sample, its index among that
    source's samples of the period, samples per source per period)."""
    from megatron.core.datasets import helpers

    w = np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    source = np.zeros(PERIOD, dtype=np.int16)
    within = np.zeros(PERIOD, dtype=np.int64)
    helpers.build_blending_indices(source, within, w, len(w), PERIOD, False)
    counts = np.bincount(source, minlength=len(w)).astype(np.int64)
    return source, within.astype(np.int32), counts


class Blend(torch.utils.data.Dataset):
    """Sources interleaved in proportion to `weights`; `size` samples long (what the run reads)
    without any sample depending on it. Items are the source's items plus `dataset_id`."""

    def __init__(self, sources: list[SourceEpochs], weights: list[float], size: int):
        if len(sources) != len(weights) or not sources or min(weights) <= 0:
            raise ValueError("a blend needs one positive weight per source")
        self.sources = sources
        self.size = int(size)
        if len(sources) == 1:
            self._source = self._within = None
            self.counts = np.array([PERIOD], dtype=np.int64)
        else:
            self._source, self._within, self.counts = _period_indices(weights)

    def __len__(self) -> int:
        return self.size

    def locate(self, i: int) -> tuple[int, int]:
        """(source, index into that source's SourceEpochs) of sample i."""
        if self._source is None:
            return 0, int(i)
        period, r = divmod(int(i), PERIOD)
        source = int(self._source[r])
        return source, period * int(self.counts[source]) + int(self._within[r])

    def __getitem__(self, i: int) -> dict:
        if not 0 <= i < self.size:
            raise IndexError(f"sample {i} of a blend of {self.size}")
        source, j = self.locate(i)
        return {"dataset_id": source, **self.sources[source][j]}

    def source_ids(self, n: int | None = None) -> np.ndarray:
        """The source of each of the first n samples (default: all), without reading any."""
        n = self.size if n is None else n
        if self._source is None:
            return np.zeros(n, dtype=np.int64)
        reps = -(-n // PERIOD)
        return np.tile(self._source, reps)[:n].astype(np.int64)
