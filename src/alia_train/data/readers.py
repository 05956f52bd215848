"""Input discovery and streaming for `alia-data tokenize`.

Inputs are files, directories (searched recursively, in sorted order) or glob patterns.
A Hugging Face dataset saved with `save_to_disk` becomes one input per Arrow file it holds
(the Arrow IPC streams that `datasets` writes, read with pyarrow): a large dataset is then
split across tasks like any set of files. Parquet-backed datasets are folders of .parquet
files and need nothing special.

Inputs are cut into tasks of about `chunk_bytes` of text for the worker pool. JSONL is shipped
as raw bytes (the workers parse it: JSON decoding is ~5% of the tokenizing cost and should
run on every core, not in the one reading process). Parquet and Hugging Face datasets are
columnar and already decoded, so their text columns are shipped as lists of strings.
"""

from __future__ import annotations

import glob
import gzip
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
COMPRESSIONS = ("", ".gz", ".zst", ".zstd")
PARQUET_SUFFIXES = (".parquet",)
ARROW_SUFFIXES = (".arrow",)  # a saved dataset's data file, when named by itself
PEEK_RECORDS = 100


class InputError(ValueError):
    """An input that cannot be used; raised before any work starts."""


@dataclass(frozen=True)
class InputFile:
    path: str  # absolute
    kind: str  # "jsonl", "parquet" or "arrow" (a data file of a saved Hugging Face dataset)
    # (or "dataset": a saved dataset's folder, only inside discover_inputs, which expands it)
    compression: str  # "", ".gz" or ".zst" (jsonl only)
    size: int  # bytes on disk, for progress


@dataclass
class LinesTask:
    """Raw JSONL lines; `first_line` is the 1-based number of the blob's first line."""

    source: int
    first_line: int
    blob: bytes
    lang: str | None = None  # the language of every record (--lang, --lang-from-path)


@dataclass
class RecordsTask:
    """Decoded records of a columnar input; `first_line` is the 1-based row number."""

    source: int
    first_line: int
    texts: list
    langs: list | None
    lang: str | None = None  # the language of every record (--lang, --lang-from-path)


Task = LinesTask | RecordsTask


def _jsonl_compression(name: str) -> str | None:
    for comp in COMPRESSIONS:
        for suffix in JSONL_SUFFIXES:
            if name.endswith(suffix + comp):
                return ".zst" if comp == ".zstd" else comp
    return None


def _is_hf_dataset_dir(path: Path) -> bool:
    return (path / "dataset_dict.json").is_file() or (
        (path / "state.json").is_file() and (path / "dataset_info.json").is_file()
    )


def _read_json(path: Path, what: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise InputError(f"input {what}: cannot load Hugging Face dataset ({path.name}: {e})") from None
    if not isinstance(data, dict):
        raise InputError(f"input {what}: cannot load Hugging Face dataset ({path.name}: not a JSON object)")
    return data


def _hf_arrow_files(path: Path) -> list[InputFile]:
    """The Arrow data files of a dataset saved with `save_to_disk` (a DatasetDict: of each of
    its splits, in sorted order), as `datasets` lists them in each split's state.json."""
    if (path / "dataset_dict.json").is_file():
        splits = _read_json(path / "dataset_dict.json", path).get("splits")
        if not isinstance(splits, list) or not splits:
            raise InputError(f"input {path}: cannot load Hugging Face dataset (dataset_dict.json lists no splits)")
        return [f for split in sorted(map(str, splits)) for f in _hf_arrow_files(path / split)]
    files = _read_json(path / "state.json", path).get("_data_files")
    if not isinstance(files, list) or not files:
        raise InputError(f"input {path}: cannot load Hugging Face dataset (state.json lists no data files)")
    found = []
    for entry in files:
        name = entry.get("filename") if isinstance(entry, dict) else None
        arrow = path / str(name)
        if not isinstance(name, str) or os.path.basename(name) != name or not arrow.is_file():
            raise InputError(f"input {path}: cannot load Hugging Face dataset (data file {name} is missing)")
        found.append(InputFile(str(arrow), "arrow", "", arrow.stat().st_size))
    return found


def _classify(path: Path, named: bool = True) -> InputFile | None:
    """The input at `path`, None when it is no input. A saved dataset is an input of kind
    "dataset" until `_expand_datasets`. A loose .arrow file counts only when `named` (given by
    the user): found in a directory walk it is more likely a cache file."""
    if path.is_dir() and _is_hf_dataset_dir(path):
        return InputFile(str(path), "dataset", "", 0)
    if not path.is_file():
        return None
    comp = _jsonl_compression(path.name)
    if comp is not None:
        return InputFile(str(path), "jsonl", comp, path.stat().st_size)
    if path.name.endswith(PARQUET_SUFFIXES):
        return InputFile(str(path), "parquet", "", path.stat().st_size)
    if named and path.name.endswith(ARROW_SUFFIXES):
        return InputFile(str(path), "arrow", "", path.stat().st_size)
    return None


def _walk(path: Path) -> list[InputFile]:
    """Every input under a directory, in sorted order; a saved dataset inside is one input,
    not descended into file by file."""
    found: list[InputFile] = []
    for root, dirs, files in os.walk(path):
        dirs.sort()
        rootp = Path(root)
        for d in list(dirs):
            if _is_hf_dataset_dir(rootp / d):
                dirs.remove(d)
                found.append(InputFile(str(rootp / d), "dataset", "", 0))
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in sorted(files):
            if not name.startswith("."):
                item = _classify(rootp / name, named=False)
                if item is not None:
                    found.append(item)
    return found


def _expand_datasets(found: list[InputFile]) -> list[InputFile]:
    return [f for item in found for f in (_hf_arrow_files(Path(item.path)) if item.kind == "dataset" else [item])]


def _expand(raw: str) -> list[Path]:
    """The paths a command-line input names: itself, or a glob's matches (sorted)."""
    path = Path(raw).absolute()
    if path.exists() or not glob.has_magic(raw):
        return [path]
    matches = sorted(glob.glob(os.path.expanduser(raw), recursive=True))
    if not matches:
        raise InputError(f"input {raw}: no file or directory matches this pattern")
    return [Path(m).absolute() for m in matches]


def discover_inputs(paths: list[str] | list[os.PathLike]) -> list[InputFile]:
    """Expand files, directories (recursively, sorted) and globs into inputs; error on
    anything unusable."""
    if not paths:
        raise InputError("no --input given")
    found: list[InputFile] = []
    for raw in map(os.fspath, paths):
        for path in _expand(raw):
            shown = str(path) if glob.has_magic(raw) else raw
            if not path.exists():
                raise InputError(f"input {shown}: no such file or directory")
            item = _classify(path)
            if item is not None:
                found.append(item)
            elif path.is_file():
                raise InputError(
                    f"input {shown}: unsupported format (expected .jsonl/.json/.ndjson, optionally .gz "
                    "or .zst, .parquet, or a Hugging Face dataset saved with save_to_disk)"
                )
            else:
                items = _walk(path)
                if not items:
                    raise InputError(f"input {shown}: directory holds no .jsonl(.gz/.zst), .parquet or HF dataset")
                found += items
    _check_readable_once(found)  # a file given twice is named before a dataset that does not load
    found = _expand_datasets(found)
    _check_readable_once(found)
    return found


def _check_readable_once(found: list[InputFile]) -> None:
    seen: set[str] = set()
    for item in found:
        if not os.access(item.path, os.R_OK):
            raise InputError(f"input {item.path}: not readable")
        real = os.path.realpath(item.path)
        if real in seen:  # e.g. `--input dir dir/a.jsonl`: its documents would count twice
            raise InputError(f"input {item.path}: given twice (directly and/or through a directory); list it once")
        seen.add(real)


# ---------------------------------------------------------------------------------------------
# JSONL


class _CountingReader:
    """Counts the compressed bytes consumed, for progress."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.consumed = 0

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.consumed += len(data)
        return data

    def readinto(self, b) -> int:
        n = self.raw.readinto(b)
        self.consumed += n or 0
        return n

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self.raw.close()


def _open_text_stream(item: InputFile) -> tuple[IO[bytes], _CountingReader]:
    raw = _CountingReader(open(item.path, "rb"))
    if item.compression == ".gz":
        return gzip.GzipFile(fileobj=raw, mode="rb"), raw  # type: ignore[arg-type]
    if item.compression == ".zst":
        import zstandard

        reader = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
        return reader, raw  # type: ignore[return-value]
    return raw, raw  # type: ignore[return-value]


def _decoder_errors(item: InputFile) -> tuple[type[Exception], ...]:
    if item.compression == ".zst":
        import zstandard

        return (zstandard.ZstdError,)
    return ()


def iter_jsonl_blobs(item: InputFile, chunk_bytes: int) -> Iterator[tuple[int, bytes, int]]:
    """Yield (first_line, blob of whole lines, compressed bytes consumed so far)."""
    stream, counter = _open_text_stream(item)
    line = 1
    buf = bytearray()
    try:
        while True:
            data = stream.read(chunk_bytes)
            if not data:
                break
            start = len(buf)
            buf += data
            cut = buf.rfind(b"\n", start)
            if cut < 0:
                continue  # one very long line: keep reading until it ends
            blob = bytes(buf[: cut + 1])
            del buf[: cut + 1]
            yield line, blob, counter.consumed
            line += blob.count(b"\n")
        if buf:
            yield line, bytes(buf), counter.consumed
    except (OSError, EOFError, *_decoder_errors(item)) as e:  # truncated gzip, corrupt zstd frame, ...
        raise InputError(f"input {item.path}: cannot decompress/read after line {line} ({e}); "
                         "check the file (truncated or corrupt?) or leave it out") from None
    finally:
        stream.close()
        counter.close()


def peek_jsonl_keys(item: InputFile, limit: int = PEEK_RECORDS) -> tuple[set[str], int]:
    """Keys seen in the first `limit` JSON objects, and how many objects were parsed."""
    keys: set[str] = set()
    parsed = 0
    blobs = iter_jsonl_blobs(item, 64 * 1024)
    try:
        for _, blob, _ in blobs:
            for raw in blob.split(b"\n"):
                if parsed >= limit:
                    return keys, parsed
                try:
                    obj = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(obj, dict):
                    keys.update(obj)
                    parsed += 1
    finally:
        blobs.close()
    return keys, parsed


# ---------------------------------------------------------------------------------------------
# Columnar inputs (Parquet, Hugging Face datasets)


def _arrow_stream(item: InputFile):
    """A reader of a saved dataset's Arrow file (the IPC stream format `datasets` writes),
    memory-mapped: batches are read in place."""
    import pyarrow as pa

    try:
        return pa.ipc.open_stream(pa.memory_map(item.path))
    except Exception as e:  # noqa: BLE001 - pyarrow raises ArrowInvalid, OSError, ...
        raise InputError(f"input {item.path}: cannot load Hugging Face dataset file ({e})") from None


def columnar_schema(item: InputFile) -> dict[str, str]:
    """Column name -> Arrow type string."""
    if item.kind == "parquet":
        import pyarrow.parquet as pq

        try:
            schema = pq.read_schema(item.path)
        except Exception as e:  # noqa: BLE001
            raise InputError(f"input {item.path}: not a readable Parquet file ({e})") from None
    else:
        schema = _arrow_stream(item).schema
    return {f.name: str(f.type) for f in schema}


def _arrow_batches(item: InputFile, columns: list[str]):
    """Record batches; a file that breaks while being read is an InputError naming it."""
    try:
        if item.kind == "parquet":
            import pyarrow.parquet as pq

            pf = pq.ParquetFile(item.path)
            yield from pf.iter_batches(batch_size=1024, columns=columns)
            return
        for batch in _arrow_stream(item):
            yield batch.select(columns)
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 - pyarrow raises ArrowInvalid, OSError, ...
        raise InputError(f"input {item.path}: cannot read its records ({e}); "
                         "check the file (truncated or corrupt?) or leave it out") from None


def iter_records(
    item: InputFile, text_key: str, lang_key: str | None, chunk_bytes: int
) -> Iterator[tuple[int, list, list | None, float]]:
    """Yield (first_row, texts, langs or None, fraction of the input done)."""
    columns = [text_key] + ([lang_key] if lang_key else [])
    total_rows = _count_rows(item)
    row = 1
    texts: list = []
    langs: list = []
    size = 0
    for batch in _arrow_batches(item, columns):
        bt = batch.column(text_key).to_pylist()
        bl = batch.column(lang_key).to_pylist() if lang_key else None
        for i, text in enumerate(bt):
            texts.append(text)
            if bl is not None:
                langs.append(bl[i])
            size += len(text) if isinstance(text, str) else 0
            if size >= chunk_bytes:
                yield row, texts, (langs if lang_key else None), (row + len(texts) - 1) / total_rows
                row += len(texts)
                texts, langs, size = [], [], 0
    if texts:
        yield row, texts, (langs if lang_key else None), 1.0


def _count_rows(item: InputFile) -> int:
    if item.kind == "parquet":
        import pyarrow.parquet as pq

        try:
            return max(1, pq.ParquetFile(item.path).metadata.num_rows)
        except Exception as e:  # noqa: BLE001
            raise InputError(f"input {item.path}: not a readable Parquet file ({e})") from None
    try:  # batches of a memory-mapped stream: their headers are read, not their data
        return max(1, sum(b.num_rows for b in _arrow_stream(item)))
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001
        raise InputError(f"input {item.path}: cannot read its records ({e}); "
                         "check the file (truncated or corrupt?) or leave it out") from None
