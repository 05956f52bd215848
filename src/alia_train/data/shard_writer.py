"""Per-language output shards of one tokenize run: `PREFIX_<lang>.bin` / `PREFIX_<lang>.idx`.

Tokens stream into temporary files; `finalize` renames every .bin into place first and every
.idx last, so an .idx under its final name always has its complete .bin beside it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import BinaryIO

import numpy as np

from alia_train.data.atomic import fsync_replace, tmp_name
from alia_train.data.encode_worker import LangPart
from alia_train.data.indexed import bin_path, idx_path, write_index


def shard_prefix(prefix: str, lang: str) -> str:
    return f"{prefix}_{lang}"


@dataclass
class _Shard:
    prefix: str
    bin_tmp: str
    file: BinaryIO
    lengths: list[np.ndarray] = field(default_factory=list)
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
        shard.file.write(memoryview(part.tokens))
        shard.lengths.append(part.lengths)
        shard.documents += len(part.lengths)
        shard.tokens += len(part.tokens)
        shard.nbytes += part.nbytes

    def summary(self) -> dict[str, dict]:
        return {
            lang: {"path": s.prefix, "documents": s.documents, "tokens": s.tokens, "bytes": s.nbytes}
            for lang, s in sorted(self._shards.items())
        }

    def finalize(self) -> dict[str, dict]:
        idx_tmps = {}
        for lang, s in self._shards.items():
            s.file.close()
            lengths = np.concatenate(s.lengths) if s.lengths else np.zeros(0, np.int32)
            tmp = tmp_name(idx_path(s.prefix))
            self._tmps.append(tmp)
            write_index(tmp, lengths, self.dtype.type)
            idx_tmps[lang] = tmp
        for s in self._shards.values():
            fsync_replace(s.bin_tmp, bin_path(s.prefix))
        for lang, tmp in idx_tmps.items():
            os.replace(tmp, idx_path(self._shards[lang].prefix))
        self._tmps.clear()
        return self.summary()

    def abort(self) -> None:
        for s in self._shards.values():
            if not s.file.closed:
                s.file.close()
        for tmp in self._tmps:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
        self._tmps.clear()
