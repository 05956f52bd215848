"""Write a torch_dist checkpoint whose tensors are produced one chunk at a time.

megatron's own save resolves every tensor of the state dict before it writes the first byte,
so it needs the whole model in memory. torch.distributed.checkpoint's FileSystemWriter asks its
planner for each item just before writing it: a planner that builds each chunk on demand
(reading it from the Hugging Face files) keeps memory at one chunk.

What megatron's loader expects, and this writer reproduces:
* a tensor key is the ShardedTensor key, its size the global shape (layers stacked first);
  any chunking is fine, since reads are resolved by overlap;
* a ShardedObject is stored as bytes under "KEY/shard_OFFSETS_SHAPE", holding torch.save of
  a one-item list; the common state is the object "common_state/shard_0_1";
* metadata.json names the backend.
"""

from __future__ import annotations

import io
import json
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import FileSystemWriter
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.default_planner import DefaultSavePlanner
from torch.distributed.checkpoint.metadata import ChunkStorageMetadata, MetadataIndex, TensorProperties
from torch.distributed.checkpoint.planner import SavePlan, TensorWriteData, WriteItem, WriteItemType

from alia_train.convert.dist_reader import first_failure

BACKEND_METADATA = {"sharded_backend": "torch_dist", "sharded_backend_version": 1}


@dataclass
class Chunk:
    offsets: tuple[int, ...]
    sizes: tuple[int, ...]
    produce: Callable[[], torch.Tensor]  # returns a tensor of `sizes`


@dataclass
class TensorSpec:
    key: str
    global_shape: tuple[int, ...]
    dtype: torch.dtype
    chunks: list[Chunk] = field(default_factory=list)


def object_key(key: str, offset: tuple[int, ...], shape: tuple[int, ...]) -> str:
    """megatron's ShardedObject.unique_key."""
    return f"{key}/shard_{'.'.join(map(str, offset))}_{'.'.join(map(str, shape))}"


class _LazySavePlanner(DefaultSavePlanner):
    def __init__(self, tensors: list[TensorSpec], objects: dict[str, Any]):
        super().__init__(flatten_state_dict=False, flatten_sharded_tensors=False)
        self.tensors = tensors
        self.objects = objects
        self._chunks: dict[tuple[str, tuple[int, ...]], tuple[TensorSpec, Chunk]] = {}

    def create_local_plan(self) -> SavePlan:
        items: list[WriteItem] = []
        for spec in self.tensors:
            covered = sum(math.prod(c.sizes) for c in spec.chunks)
            if covered != math.prod(spec.global_shape):
                raise RuntimeError(f"{spec.key}: chunks cover {covered} of {math.prod(spec.global_shape)} values")
            props = TensorProperties(dtype=spec.dtype)
            for c in spec.chunks:
                offsets = torch.Size(c.offsets)
                self._chunks[(spec.key, tuple(c.offsets))] = (spec, c)
                items.append(WriteItem(
                    index=MetadataIndex(spec.key, offsets),
                    type=WriteItemType.SHARD,
                    tensor_data=TensorWriteData(
                        chunk=ChunkStorageMetadata(offsets=offsets, sizes=torch.Size(c.sizes)),
                        properties=props,
                        size=torch.Size(spec.global_shape),
                    ),
                ))
        for key in self.objects:
            items.append(WriteItem(index=MetadataIndex(key), type=WriteItemType.BYTE_IO))
        self.plan = SavePlan(items)
        return self.plan

    def resolve_data(self, write_item: WriteItem):
        fqn = write_item.index.fqn
        if write_item.type == WriteItemType.BYTE_IO:
            buf = io.BytesIO()
            torch.save([self.objects[fqn]], buf)
            return buf
        spec, chunk = self._chunks[(fqn, tuple(write_item.index.offset))]
        tensor = chunk.produce()
        if tuple(tensor.shape) != tuple(chunk.sizes):
            raise RuntimeError(f"{fqn} at {chunk.offsets}: produced {tuple(tensor.shape)}, expected {chunk.sizes}")
        return tensor.to(spec.dtype).contiguous()


def write_dist_checkpoint(directory: Path, tensors: list[TensorSpec], objects: dict[str, Any]) -> None:
    """Write `tensors` and `objects` (unique key -> picklable value) into `directory`."""
    writer = FileSystemWriter(str(directory), single_file_per_rank=True, sync_files=True, thread_count=1)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")
            dcp.save({}, storage_writer=writer, planner=_LazySavePlanner(tensors, objects), no_dist=True)
    except CheckpointException as e:  # a BaseException: unwrap what went wrong for the caller
        cause = first_failure(e)
        if cause is not e:  # an error, or Ctrl-C (KeyboardInterrupt), as itself
            raise cause from None
        raise
    (directory / "metadata.json").write_text(json.dumps(BACKEND_METADATA))
