"""Per-language output shards of one tokenize run: `PREFIX_<lang>.bin` / `PREFIX_<lang>.idx`.

Tokens stream into temporary files, hashed as they are written; `stage` completes them (the
.idx files too) without renaming anything, and `publish.publish_set` puts the whole set in
place under its manifest.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from typing import BinaryIO

import numpy as np

from alia_train.data.encode_worker import LangPart
from alia_train.data.indexed import bin_path, idx_path, write_index
from alia_train.data.manifest import FileEntry, describe
from alia_train.data.publish import StagedFile
from alia_train.fs import tmp_name


def shard_prefix(prefix: str, lang: str) -> str:
    return f"{prefix}_{lang}"


@dataclass
class _Shard:
    prefix: str
    bin_tmp: str
    file: BinaryIO
    lengths: list[np.ndarray] = field(default_factory=list)
    sha256: "hashlib._Hash" = field(default_factory=hashlib.sha256)
    documents: int = 0
    tokens: int = 0
    nbytes: int = 0


class ShardSet:
    def __init__(self, prefix: str, dtype: type) -> None:
        self.prefix = prefix
        self.dtype = np.dtype(dtype)
        self._shards: dict[str, _Shard] = {}
        self._tmps: list[str] = []

    def append(self, lang: str, part: LangPart) -> None:
        shard = self._shards.get(lang)
        if shard is None:
            prefix = shard_prefix(self.prefix, lang)
            tmp = tmp_name(bin_path(prefix))
            self._tmps.append(tmp)
            shard = self._shards[lang] = _Shard(prefix, tmp, open(tmp, "wb"))
        assert part.tokens.dtype == self.dtype
        view = memoryview(part.tokens).cast("B")
        shard.file.write(view)
        shard.sha256.update(view)
        shard.lengths.append(part.lengths)
        shard.documents += len(part.lengths)
        shard.tokens += len(part.tokens)
        shard.nbytes += part.nbytes

    def summary(self) -> dict[str, dict]:
        return {
            lang: {"path": s.prefix, "documents": s.documents, "tokens": s.tokens, "bytes": s.nbytes}
            for lang, s in sorted(self._shards.items())
        }

    def stage(self) -> tuple[list[StagedFile], dict[str, FileEntry]]:
        """Complete every .bin and .idx under its temporary name (fsynced); rename nothing.

        Returns the staged files and, by final file name, their sizes and SHA-256."""
        staged: list[StagedFile] = []
        entries: dict[str, FileEntry] = {}
        for s in self._shards.values():
            s.file.flush()
            os.fsync(s.file.fileno())
            s.file.close()
            lengths = np.concatenate(s.lengths) if s.lengths else np.zeros(0, np.int32)
            idx_tmp = tmp_name(idx_path(s.prefix))
            self._tmps.append(idx_tmp)
            write_index(idx_tmp, lengths, self.dtype.type)
            for tmp, final, digest in ((s.bin_tmp, bin_path(s.prefix), s.sha256.hexdigest()),
                                       (idx_tmp, idx_path(s.prefix), None)):
                staged.append(StagedFile(tmp, final))
                entries[os.path.basename(final)] = describe(tmp, digest)
        return staged, entries

    def abort(self) -> None:
        for s in self._shards.values():
            if not s.file.closed:
                try:
                    s.file.close()
                except OSError:  # a full disk fails the flush of its tail; the file is closed all the same
                    pass
        for tmp in self._tmps:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
        self._tmps.clear()
