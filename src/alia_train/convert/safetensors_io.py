"""Sharded safetensors, written and read one tensor at a time.

Writing: `safetensors.torch.save_file` wants every tensor of a file in memory at once (5 GB per
shard, more for big embeddings). The format is simple enough to stream instead: an 8-byte
header length, a JSON header with each tensor's dtype, shape and byte range, then the raw bytes
in that order. Since every shape is known before any tensor is read, the header is written
first and tensors are appended as they are produced.

Reading: safetensors' own `safe_open`, one tensor at a time.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from alia_train.convert.errors import ConversionError

_DTYPES = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16"}
INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"


@dataclass(frozen=True)
class Entry:
    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype

    @property
    def nbytes(self) -> int:
        n = self.dtype.itemsize
        for s in self.shape:
            n *= s
        return n


def plan_shards(entries: list[Entry], max_shard_bytes: int) -> list[list[Entry]]:
    """Consecutive groups of at most `max_shard_bytes` (a larger tensor gets a shard alone)."""
    shards: list[list[Entry]] = [[]]
    size = 0
    for e in entries:
        if shards[-1] and size + e.nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(e)
        size += e.nbytes
    return shards


def shard_names(n: int) -> list[str]:
    return [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]


class ShardWriter:
    """One safetensors file whose tensors are appended in the order of `entries`."""

    def __init__(self, path: Path, entries: list[Entry]):
        self.path = path
        self.entries = entries
        header: dict = {"__metadata__": {"format": "pt"}}
        offset = 0
        for e in entries:
            header[e.name] = {
                "dtype": _DTYPES[e.dtype], "shape": list(e.shape), "data_offsets": [offset, offset + e.nbytes],
            }
            offset += e.nbytes
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)  # the data starts 8-byte aligned
        self._file = open(path, "wb")
        self._file.write(struct.pack("<Q", len(raw)))
        self._file.write(raw)
        self._next = 0

    def write(self, name: str, tensor: torch.Tensor) -> None:
        e = self.entries[self._next]
        if name != e.name or tuple(tensor.shape) != e.shape or tensor.dtype != e.dtype:
            raise RuntimeError(f"{self.path.name}: expected {e}, got {name} {tuple(tensor.shape)} {tensor.dtype}")
        data = tensor.detach().contiguous().reshape(-1).view(torch.uint8)
        self._file.write(memoryview(data.numpy()))
        self._next += 1

    def close(self) -> None:
        if self._next != len(self.entries):
            raise RuntimeError(f"{self.path.name}: {len(self.entries) - self._next} tensors were never written")
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()

    def abort(self) -> None:
        self._file.close()


def write_index(out_dir: Path, shards: list[list[Entry]], names: list[str]) -> None:
    total = sum(e.nbytes for shard in shards for e in shard)
    weight_map = {e.name: fname for shard, fname in zip(shards, names) for e in shard}
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (out_dir / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n")


def _tensor_infos(path: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    """{name: (shape, safetensors dtype code)} of one file (the header only)."""
    try:
        with safe_open(path, framework="pt") as f:
            slices = {name: f.get_slice(name) for name in f.keys()}
            return {name: (tuple(sl.get_shape()), sl.get_dtype()) for name, sl in slices.items()}
    except (OSError, SafetensorError) as e:
        raise ConversionError(f"{path}: unreadable safetensors file ({e})") from None


def _weight_files(directory: Path) -> tuple[dict | None, list[str]]:
    """(the index's weight map or None for a single file, the safetensors files)."""
    index = directory / INDEX_NAME
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (ValueError, KeyError) as e:
            raise ConversionError(f"{index}: not a safetensors index ({e})") from None
    elif (directory / SINGLE_NAME).is_file():
        weight_map = None
    else:
        bins = sorted(p.name for p in directory.glob("*.bin"))
        hint = f" (found {', '.join(bins[:3])}: convert PyTorch .bin weights to safetensors first)" if bins else ""
        raise ConversionError(f"{directory}: no {INDEX_NAME} or {SINGLE_NAME}{hint}")
    files = sorted(set(weight_map.values())) if weight_map else [SINGLE_NAME]
    missing = [f for f in files if not (directory / f).is_file()]
    if missing:
        raise ConversionError(f"{directory}: missing safetensors shard(s): {', '.join(missing)}")
    return weight_map, files


class SafetensorsCheckpoint:
    """A Hugging Face model directory's safetensors files, sharded or not, read with
    safetensors' `safe_open`.

    Each read opens its file and closes it again: the pages of a memory map stay resident (and
    count against the job's memory) until the map is closed, which would hold the whole model."""

    def __init__(self, directory: Path):
        self.directory = directory
        weight_map, files = _weight_files(directory)
        self._entries: dict[str, tuple[Path, tuple[int, ...], str]] = {}
        for f in files:
            for name, (shape, code) in _tensor_infos(directory / f).items():
                if weight_map is None or weight_map.get(name) == f:  # the index is authoritative
                    self._entries[name] = (directory / f, shape, code)
        if weight_map:
            absent = [n for n in weight_map if n not in self._entries]
            if absent:
                raise ConversionError(
                    f"{directory}: tensors listed in the index are not in their shard: {', '.join(absent[:5])}"
                )

    def names(self) -> list[str]:
        return list(self._entries)

    def shape(self, name: str) -> tuple[int, ...]:
        return self._entries[name][1]

    def dtype(self, name: str) -> torch.dtype:
        return _from_safetensors_dtype(self._entries[name][2])

    def get(self, name: str) -> torch.Tensor:
        path = self._entries[name][0]
        try:
            with safe_open(path, framework="pt") as f:
                return f.get_tensor(name)
        except (OSError, SafetensorError) as e:
            raise ConversionError(f"{path}: cannot read {name} ({e})") from None


def _from_safetensors_dtype(code: str) -> torch.dtype:
    for dtype, c in _DTYPES.items():
        if c == code:
            return dtype
    raise ConversionError(f"unsupported safetensors dtype {code} (expected F32, BF16 or F16)")
