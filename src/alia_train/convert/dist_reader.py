"""Read single tensors (or slices of them) out of a torch_dist checkpoint.

megatron's torch_dist format is a torch.distributed.checkpoint directory: `.metadata` lists
every global tensor with the chunks each rank wrote, `__R_I.distcp` files hold the bytes.
Global tensors do not depend on the layout that wrote them, so reading is the same for any
TP / PP / DP. Reads go through DCP itself with a planner that asks for one slice, in this
process alone (no process group): memory stays at the size of what is read.
"""

from __future__ import annotations

import io
import math
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
from torch.distributed.checkpoint.metadata import ChunkStorageMetadata, Metadata, TensorStorageMetadata
from torch.distributed.checkpoint.planner import LoadPlan, ReadItem
from torch.distributed.checkpoint.planner_helpers import create_read_items_for_chunk_list

from alia_train.convert.errors import ConversionError

COMMON_STATE_KEY = "common_state/shard_0_1"


def first_failure(e: BaseException) -> BaseException:
    """DCP wraps each rank's failure as (exception, traceback) in a CheckpointException."""
    failures = getattr(e, "failures", None)
    if isinstance(failures, dict) and failures:
        first = next(iter(failures.values()))
        return first[0] if isinstance(first, tuple) else first
    return e


class _CachedMetadataReader(FileSystemReader):
    """Reuses the parsed `.metadata` (megabytes for a large model) across reads."""

    def __init__(self, path: str, metadata: Metadata):
        super().__init__(path)
        self._metadata = metadata

    def read_metadata(self, *args, **kwargs) -> Metadata:
        return self._metadata


class _SlicePlanner(DefaultLoadPlanner):
    """Loads the requested slice of each named global tensor into a tensor of its own."""

    def __init__(self, requests: dict[str, tuple[tuple[int, ...], torch.Tensor]]):
        super().__init__()
        self.requests = requests

    def create_local_plan(self) -> LoadPlan:
        items: list[ReadItem] = []
        for fqn, (offsets, dest) in self.requests.items():
            md = self.metadata.state_dict_metadata[fqn]
            chunk = ChunkStorageMetadata(offsets=torch.Size(offsets), sizes=dest.size())
            found = create_read_items_for_chunk_list(fqn, md, [chunk])
            covered = sum(math.prod(it.lengths) for it in found)
            if covered != dest.numel():
                raise ConversionError(
                    f"checkpoint tensor {fqn}: the saved shards cover {covered} of the {dest.numel()} "
                    "values asked for (an incomplete checkpoint)"
                )
            items += found
        return LoadPlan(items)

    def resolve_tensor(self, read_item: ReadItem) -> torch.Tensor:
        dest = self.requests[read_item.dest_index.fqn][1]
        return self.transform_tensor(read_item, dest)  # the part of `dest` this item fills

    def commit_tensor(self, read_item: ReadItem, tensor: torch.Tensor) -> None:
        pass  # the reader copied straight into our tensor


class DistCheckpointReader:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self.metadata = FileSystemReader(str(self.path)).read_metadata()
        except FileNotFoundError:
            raise ConversionError(f"{self.path}: not a torch_dist checkpoint (no .metadata)") from None
        except Exception as e:
            raise ConversionError(f"{self.path}: unreadable checkpoint metadata ({type(e).__name__}: {e})") from None

    def _tensor_md(self, key: str) -> TensorStorageMetadata:
        md = self.metadata.state_dict_metadata.get(key)
        if not isinstance(md, TensorStorageMetadata):
            raise ConversionError(f"{self.path}: checkpoint has no tensor {key}")
        return md

    def has_tensor(self, key: str) -> bool:
        return isinstance(self.metadata.state_dict_metadata.get(key), TensorStorageMetadata)

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self._tensor_md(key).size)

    def dtype(self, key: str) -> torch.dtype:
        return self._tensor_md(key).properties.dtype

    def read(self, slices: dict[str, tuple[tuple[int, ...], tuple[int, ...]]]) -> dict[str, torch.Tensor]:
        """{key: (offsets, sizes)} -> {key: tensor of `sizes`} in the stored dtype."""
        requests = {}
        for key, (offsets, sizes) in slices.items():
            md = self._tensor_md(key)
            if len(offsets) != len(md.size) or any(o + s > n for o, s, n in zip(offsets, sizes, md.size)):
                raise ConversionError(
                    f"checkpoint tensor {key} {tuple(md.size)}: slice {offsets}+{sizes} is outside it"
                )
            requests[key] = (tuple(offsets), torch.empty(sizes, dtype=md.properties.dtype))
        self._load(requests, _SlicePlanner(requests))
        return {k: t for k, (_, t) in requests.items()}

    def read_layer(self, key: str, layer: int) -> torch.Tensor:
        """One layer of a layer-stacked tensor, without the stacked axis."""
        shape = self.shape(key)
        offsets = (layer,) + (0,) * (len(shape) - 1)
        return self.read({key: (offsets, (1, *shape[1:]))})[key][0]

    def read_rows(self, key: str, rows: int) -> torch.Tensor:
        shape = self.shape(key)
        return self.read({key: ((0,) * len(shape), (rows, *shape[1:]))})[key]

    def read_object(self, unique_key: str) -> Any:
        if unique_key not in self.metadata.state_dict_metadata:
            raise ConversionError(f"{self.path}: checkpoint has no object {unique_key}")
        state: dict[str, Any] = {unique_key: io.BytesIO()}
        self._load(state, DefaultLoadPlanner())
        value = state[unique_key]
        if isinstance(value, io.BytesIO):  # older torch leaves the bytes to us
            value.seek(0)
            value = torch.load(value, weights_only=False)
        return value[0]  # megatron stores a ShardedObject as a one-item list

    def common_state(self) -> dict:
        legacy = self.path / "common.pt"  # megatron before the common state moved into DCP
        if COMMON_STATE_KEY not in self.metadata.state_dict_metadata and legacy.is_file():
            return torch.load(legacy, map_location="cpu", weights_only=False)
        return self.read_object(COMMON_STATE_KEY)

    def _load(self, state_dict: dict, planner) -> None:
        try:
            with warnings.catch_warnings():
                # "torch.distributed is ... uninitialized, assuming ... a single process": yes.
                warnings.filterwarnings("ignore", message="torch.distributed is disabled")
                dcp.load(state_dict, storage_reader=_CachedMetadataReader(str(self.path), self.metadata),
                         planner=planner, no_dist=True)
        except (Exception, CheckpointException) as e:  # CheckpointException is a BaseException
            cause = first_failure(e)
            if cause is not e and not isinstance(cause, Exception):  # Ctrl-C inside DCP: not damage
                raise cause from None
            if isinstance(cause, ConversionError):
                raise cause from None
            if isinstance(cause, FileNotFoundError):
                raise ConversionError(f"{self.path}: checkpoint file missing ({cause.filename or cause})") from None
            reason = str(cause).split(". ")[0]  # torch's messages go on with generic advice
            raise ConversionError(f"{self.path}: cannot read checkpoint ({type(cause).__name__}: {reason})") from None
