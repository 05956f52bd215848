"""Micro-batches for this data-parallel rank, from a position in the global sample order.

A step reads the next global_batch_size samples from the position, whatever the layout: each
slice of micro_batch_size x DP consecutive samples is split across DP ranks. The order itself
does not depend on the batch size or the run's length (data/sample_order.py), so resuming needs
only `consumed_samples`, also with another global batch size: the new steps read on from there,
no sample skipped or read twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch


def _collate(items: list[dict]) -> dict[str, torch.Tensor]:
    out = {}
    for key in items[0]:
        out[key] = torch.from_numpy(np.stack([np.asarray(it[key]) for it in items]))
    return out


class MicroBatchIterator:
    def __init__(self, dataset, consumed_samples: int, micro_batch_size: int, dp_rank: int, dp_size: int):
        self.dataset = dataset
        self.position = consumed_samples
        self.mbs = micro_batch_size
        self.dp_rank = dp_rank
        self.dp_size = dp_size

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        start = self.position + self.dp_rank * self.mbs
        if self.position + self.mbs * self.dp_size > len(self.dataset):
            raise StopIteration
        items = [self.dataset[i] for i in range(start, start + self.mbs)]
        self.position += self.mbs * self.dp_size
        return _collate(items)


@dataclass(frozen=True)
class BatchReader:
    """How this rank reads any dataset: its data-parallel share, in micro-batches, with one
    iterator per model chunk (each virtual pipeline stage's forward step reads its own copy)."""

    micro_batch_size: int
    dp_rank: int
    dp_size: int
    num_chunks: int = 1

    def iterators(self, dataset, consumed_samples: int = 0) -> list[MicroBatchIterator]:
        return [MicroBatchIterator(dataset, consumed_samples, self.micro_batch_size, self.dp_rank, self.dp_size)
                for _ in range(self.num_chunks)]

    def microbatches_in(self, dataset) -> int:
        """How many micro-batches every DP rank can read from `dataset` from its start."""
        return len(dataset) // (self.micro_batch_size * self.dp_size)
