"""Sharded safetensors, written and read one tensor at a time.

`safetensors.torch.save_file` wants every tensor of a file in memory at once (5 GB per shard,
more for big embeddings). The format is simple enough to stream instead: an 8-byte header
length, a JSON header with each tensor's dtype, shape and byte range, then the raw bytes in
that order. Since every shape is known before any tensor is read, the header is written first
and tensors are appended as they are produced; reading seeks to one tensor at a time.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import torch

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


def read_header(path: Path) -> tuple[dict, int]:
    """(header, offset of the data) of a safetensors file."""
    try:
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) != 8:
                raise ValueError("file too short")
            (n,) = struct.unpack("<Q", raw)
            if n > 100 * 2**20:
                raise ValueError(f"header of {n} bytes")
            header = json.loads(f.read(n))
    except (OSError, ValueError) as e:
        raise ConversionError(f"{path}: unreadable safetensors file ({e})") from None
    header.pop("__metadata__", None)
    return header, 8 + n


class SafetensorsCheckpoint:
    """A Hugging Face model directory's safetensors files, sharded or not.

    Tensors are read with plain file reads rather than through a memory map: mapped pages
    would stay resident (and count against the job's memory) until the file is closed."""

    def __init__(self, directory: Path):
        self.directory = directory
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
        self._entries: dict[str, tuple[Path, int, dict]] = {}
        for f in files:
            path = directory / f
            header, data_start = read_header(path)
            size = path.stat().st_size
            for name, info in header.items():
                if weight_map is not None and weight_map.get(name) != f:
                    continue  # the index is authoritative
                begin, end = info["data_offsets"]
                if data_start + end > size:
                    raise ConversionError(f"{path}: truncated (tensor {name} ends past the end of the file)")
                self._entries[name] = (path, data_start, info)
        if weight_map:
            absent = [n for n in weight_map if n not in self._entries]
            if absent:
                raise ConversionError(
                    f"{directory}: tensors listed in the index are not in their shard: {', '.join(absent[:5])}"
                )

    def names(self) -> list[str]:
        return list(self._entries)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._entries[name][2]["shape"])

    def dtype(self, name: str) -> torch.dtype:
        return _from_safetensors_dtype(self._entries[name][2]["dtype"])

    def get(self, name: str) -> torch.Tensor:
        path, data_start, info = self._entries[name]
        begin, end = info["data_offsets"]
        buf = torch.empty(end - begin, dtype=torch.uint8)
        with open(path, "rb") as f:
            f.seek(data_start + begin)
            if f.readinto(memoryview(buf.numpy())) != end - begin:
                raise ConversionError(f"{path}: truncated while reading {name}")
        return buf.view(self.dtype(name)).reshape(self.shape(name))


def _from_safetensors_dtype(code: str) -> torch.dtype:
    for dtype, c in _DTYPES.items():
        if c == code:
            return dtype
    raise ConversionError(f"unsupported safetensors dtype {code} (expected F32, BF16 or F16)")
