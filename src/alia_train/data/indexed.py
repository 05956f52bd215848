"""Megatron indexed datasets (`PREFIX.bin` / `PREFIX.idx`) without importing megatron-core.

Byte-compatible with `megatron.core.datasets.indexed_dataset` (format version 1): we write it
ourselves because importing megatron-core costs 10-15 s, too much for `alia-data tokenize`
and its workers. One document = one sequence (no sentence splitting), as Megatron-LM's
`tools/preprocess_data.py` writes for GPT pretraining.

.idx layout (little endian):
    b"MMIDIDX\\x00\\x00"  u64 version=1  u8 dtype code
    u64 sequence_count  u64 document_count (= sequences + 1)
    i32[sequence_count] lengths  i64[sequence_count] byte pointers  i64[document_count] doc idx
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

INDEX_HEADER = b"MMIDIDX\x00\x00"
INDEX_VERSION = 1
# Megatron's DType enum codes.
DTYPE_CODES: dict[type, int] = {
    np.uint8: 1, np.int8: 2, np.int16: 3, np.int32: 4, np.int64: 5,
    np.float64: 6, np.float32: 7, np.uint16: 8,
}
CODE_DTYPES = {code: dtype for dtype, code in DTYPE_CODES.items()}
_HEADER_SIZE = 9 + 8 + 1 + 8 + 8


def token_dtype(vocab_size: int) -> type:
    """The dtype Megatron picks for a vocabulary (`DType.optimal_dtype`)."""
    return np.uint16 if vocab_size < 65500 else np.int32


def resolve_path(path: str) -> str:
    """Relative source prefixes are taken from the directory the command was started in."""
    return os.path.abspath(os.path.expanduser(path))


def bin_path(prefix: str | os.PathLike) -> str:
    return f"{os.fspath(prefix)}.bin"


def idx_path(prefix: str | os.PathLike) -> str:
    return f"{os.fspath(prefix)}.idx"


def write_index(path: str | os.PathLike, lengths: np.ndarray, dtype: type) -> None:
    """Write the .idx for documents of `lengths` tokens stored back to back in the .bin."""
    lengths = np.ascontiguousarray(lengths, dtype=np.int32)
    itemsize = np.dtype(dtype).itemsize
    pointers = np.zeros(len(lengths), dtype=np.int64)
    if len(lengths) > 1:
        np.cumsum(lengths[:-1].astype(np.int64) * itemsize, out=pointers[1:])
    doc_idx = np.arange(len(lengths) + 1, dtype=np.int64)
    with open(path, "wb") as f:
        f.write(INDEX_HEADER)
        f.write(struct.pack("<Q", INDEX_VERSION))
        f.write(struct.pack("<B", DTYPE_CODES[dtype]))
        f.write(struct.pack("<Q", len(lengths)))
        f.write(struct.pack("<Q", len(doc_idx)))
        f.write(lengths.tobytes(order="C"))
        f.write(pointers.tobytes(order="C"))
        f.write(doc_idx.tobytes(order="C"))
        f.flush()
        os.fsync(f.fileno())


@dataclass(frozen=True)
class IndexInfo:
    """What an .idx says about its dataset: enough for mixtures and splits."""

    path: str
    dtype: type
    documents: int
    tokens: int


def read_index_info(prefix: str | os.PathLike) -> IndexInfo:
    """Document and token counts of `PREFIX.idx` (reads the header and the length array)."""
    path = idx_path(prefix)
    dtype, n_seq, n_doc = _read_header(path)
    tokens = 0
    if n_seq:
        lengths = np.memmap(path, dtype=np.int32, mode="r", offset=_HEADER_SIZE, shape=(n_seq,))
        tokens = int(lengths.sum(dtype=np.int64))
        del lengths
    return IndexInfo(path=path, dtype=dtype, documents=n_doc - 1, tokens=tokens)


def _read_header(path: str) -> tuple[type, int, int]:
    """(dtype, sequence count, document count) of an .idx; ValueError when it is not one."""
    with open(path, "rb") as f:
        head = f.read(_HEADER_SIZE)
    if len(head) < _HEADER_SIZE or head[:9] != INDEX_HEADER:
        raise ValueError(f"{path}: not a Megatron indexed dataset index (bad header)")
    version, code, n_seq, n_doc = struct.unpack("<QBQQ", head[9:])
    if version != INDEX_VERSION or code not in CODE_DTYPES:
        raise ValueError(f"{path}: unsupported index version {version} / dtype code {code}")
    return CODE_DTYPES[code], n_seq, n_doc


def pair_problem(prefix: str | os.PathLike) -> str | None:
    """Why `PREFIX.bin` and `PREFIX.idx` are not one dataset, or None when they are.

    Reads only the header and the last length and pointer: the .idx must have the size its
    header implies and the .bin exactly the bytes its last document ends at, which a .bin from
    one run beside an .idx from another almost never has.
    """
    path = idx_path(prefix)
    try:
        dtype, n_seq, n_doc = _read_header(path)
        size = os.path.getsize(path)
        bin_size = os.path.getsize(bin_path(prefix))
    except (OSError, ValueError) as e:
        return str(e)
    want = _HEADER_SIZE + 12 * n_seq + 8 * n_doc
    if size != want:
        return f"{path}: {size} bytes, its header implies {want} (truncated or damaged)"
    end = 0
    if n_seq:
        with open(path, "rb") as f:
            f.seek(_HEADER_SIZE + 4 * (n_seq - 1))
            (last_len,) = struct.unpack("<i", f.read(4))
            f.seek(_HEADER_SIZE + 4 * n_seq + 8 * (n_seq - 1))
            (last_ptr,) = struct.unpack("<q", f.read(8))
        end = last_ptr + last_len * np.dtype(dtype).itemsize
    if bin_size != end:
        return (f"{bin_path(prefix)}: {bin_size} bytes, but {path} describes {end}: "
                "the two files do not belong together")
    return None


# Blocks of each .bin whose token ids the start-up check reads: the first, the last and two
# between (4 reads a shard, the size of a file-system block; caught: a shard overwritten or made
# with a larger vocabulary, not a few bad ids between the blocks).
PROBE_BLOCKS = 4
PROBE_BYTES = 64 << 10


def token_range_problem(prefix: str | os.PathLike, vocab_size: int) -> str | None:
    """'PREFIX.bin: token id X at token N' for the first id outside [0, vocab_size) in the
    sampled blocks, or None."""
    dtype, _, _ = _read_header(idx_path(prefix))
    path = bin_path(prefix)
    count = os.path.getsize(path) // np.dtype(dtype).itemsize
    per = min(PROBE_BYTES // np.dtype(dtype).itemsize, count)
    for start in sorted({(count - per) * k // (PROBE_BLOCKS - 1) for k in range(PROBE_BLOCKS)}):
        block = np.fromfile(path, dtype=dtype, count=per, offset=start * np.dtype(dtype).itemsize)
        bad = np.flatnonzero((block < 0) | (block >= vocab_size))
        if bad.size:
            return f"{path}: token id {block[bad[0]]} at token {start + bad[0]}"
    return None


def read_document_lengths(prefix: str | os.PathLike) -> np.ndarray:
    path = idx_path(prefix)
    with open(path, "rb") as f:
        head = f.read(_HEADER_SIZE)
    n_seq = struct.unpack("<Q", head[18:26])[0]
    return np.fromfile(path, dtype=np.int32, count=n_seq, offset=_HEADER_SIZE)


def read_documents(prefix: str | os.PathLike) -> list[np.ndarray]:
    """Every document's tokens (small datasets: tests and tools)."""
    info = read_index_info(prefix)
    lengths = read_document_lengths(prefix)
    data = np.fromfile(bin_path(prefix), dtype=info.dtype)
    bounds = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
    return [data[bounds[i] : bounds[i + 1]] for i in range(len(lengths))]


def dataset_exists(prefix: str | os.PathLike) -> bool:
    return Path(bin_path(prefix)).is_file() and Path(idx_path(prefix)).is_file()
