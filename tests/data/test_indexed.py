"""Our .bin/.idx writer is byte-compatible with megatron-core's IndexedDataset."""

from __future__ import annotations

import numpy as np
import pytest

from alia_train.data.indexed import read_documents, read_index_info, token_dtype, write_index


def _write(prefix, docs, dtype) -> None:
    np.concatenate(docs).astype(dtype).tofile(f"{prefix}.bin")
    write_index(f"{prefix}.idx", np.array([len(d) for d in docs]), dtype)


@pytest.mark.parametrize("vocab", [32_000, 256_000])
def test_megatron_reads_what_we_write(tmp_path, vocab):
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    rng = np.random.default_rng(0)
    dtype = token_dtype(vocab)
    docs = [rng.integers(3, vocab, size=int(n)) for n in rng.integers(1, 400, size=57)]
    prefix = tmp_path / "shard"
    _write(prefix, docs, dtype)

    ds = IndexedDataset(str(prefix))
    assert len(ds) == len(docs)
    assert ds.index.dtype == dtype
    assert list(ds.sequence_lengths) == [len(d) for d in docs]
    assert list(ds.document_indices) == list(range(len(docs) + 1))
    for i in (0, 1, 30, len(docs) - 1):
        np.testing.assert_array_equal(ds[i], docs[i])
        np.testing.assert_array_equal(ds.get(i, offset=1, length=1), docs[i][1:2])

    info = read_index_info(prefix)
    assert (info.documents, info.tokens, info.dtype) == (len(docs), sum(map(len, docs)), dtype)
    assert all(np.array_equal(a, b) for a, b in zip(read_documents(prefix), docs))


def test_megatron_writer_and_ours_agree_byte_for_byte(tmp_path):
    import torch
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    docs = [np.array([5, 6, 7, 2]), np.array([9, 2]), np.array([11, 12, 13, 14, 15, 2])]
    builder = IndexedDatasetBuilder(str(tmp_path / "theirs.bin"), dtype=np.uint16)
    for d in docs:
        builder.add_document(torch.tensor(d), [len(d)])
    builder.finalize(str(tmp_path / "theirs.idx"))
    _write(tmp_path / "ours", docs, np.uint16)
    for ext in ("bin", "idx"):
        assert (tmp_path / f"ours.{ext}").read_bytes() == (tmp_path / f"theirs.{ext}").read_bytes()


def test_empty_dataset(tmp_path):
    write_index(tmp_path / "e.idx", np.zeros(0, np.int32), np.uint16)
    (tmp_path / "e.bin").write_bytes(b"")
    info = read_index_info(tmp_path / "e")
    assert (info.documents, info.tokens) == (0, 0)


def test_bad_index_is_a_clear_error(tmp_path):
    (tmp_path / "x.idx").write_bytes(b"not an index at all, no no no")
    with pytest.raises(ValueError, match="bad header"):
        read_index_info(tmp_path / "x")
