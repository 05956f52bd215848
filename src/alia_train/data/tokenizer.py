"""The SentencePiece tokenizer as the rest of alia-train (and megatron-core's GPTDataset) sees it.

Megatron's datasets need `vocab_size`, `eod`, `pad` (and tolerate `eos`, `bos`,
`special_tokens_dict`), and they serialise the tokenizer into their cache keys through
`unique_identifiers`. The identifiers hold the model's content hash, not its path, so moving
a tokenizer file does not invalidate dataset caches and swapping it does.
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from functools import cached_property
from pathlib import Path

import sentencepiece as spm

from alia_train.data.sample_corpus import sample_tokenizer_path


class TokenizerError(ValueError):
    """A tokenizer file that cannot be used. The message names the file."""


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class Tokenizer:
    """A SentencePiece model with Megatron-style special-token accessors."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.path.abspath(os.fspath(path))
        try:
            self._model_bytes = Path(self.path).read_bytes()
        except OSError as e:
            raise TokenizerError(f"tokenizer {self.path}: cannot read ({e.strerror})") from None
        self._sp = self._load(self._model_bytes, self.path)
        self.sha256 = hashlib.sha256(self._model_bytes).hexdigest()
        sp = self._sp
        self.vocab_size: int = sp.get_piece_size()
        self.unk: int = sp.unk_id()
        self.bos: int = sp.bos_id()
        self.eos: int = sp.eos_id()
        self.pad: int = sp.pad_id()
        if self.eos < 0:
            raise TokenizerError(f"tokenizer {self.path}: has no end-of-sequence token (eos_id)")
        # Documents end with EOS in the shards: Megatron calls it EOD.
        self.eod: int = self.eos
        self.unique_identifiers = OrderedDict(
            [("class", "SentencePieceTokenizer"), ("sha256", self.sha256),
             ("vocab_size", self.vocab_size), ("eod", self.eod)]
        )

    @staticmethod
    def _load(model: bytes, path: str) -> spm.SentencePieceProcessor:
        sp = spm.SentencePieceProcessor()
        try:
            sp.LoadFromSerializedProto(model)
        except Exception as e:  # sentencepiece raises RuntimeError/OSError with C++ text
            raise TokenizerError(f"tokenizer {path}: not a SentencePiece model ({e})") from None
        return sp

    @property
    def model_proto(self) -> bytes:
        """The serialized model (what `SentencePieceProcessor.LoadFromSerializedProto` takes)."""
        return self._model_bytes

    @property
    def sp(self) -> spm.SentencePieceProcessor:
        return self._sp

    @cached_property
    def special_tokens_dict(self) -> dict[str, int]:
        named = {"unk_token": self.unk, "bos_token": self.bos, "eos_token": self.eos,
                 "pad_token": self.pad}
        return {k: v for k, v in named.items() if v >= 0}

    def encode(self, text: str) -> list[int]:
        return self._sp.encode(text)

    def encode_batch(self, texts: list[str], num_threads: int = 1) -> list[list[int]]:
        return self._sp.encode(texts, num_threads=num_threads)

    def decode(self, ids) -> str:
        return self._sp.decode([int(i) for i in ids])

    def id_to_piece(self, i: int) -> str:
        return self._sp.id_to_piece(int(i))

    # Datasets are pickled into DataLoader workers: ship the model bytes, rebuild the processor.
    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state.pop("_sp", None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._sp = self._load(self._model_bytes, self.path)

    def __repr__(self) -> str:
        return f"Tokenizer({self.path!r}, vocab_size={self.vocab_size}, eod={self.eod})"


def load_tokenizer(path: str | os.PathLike | None) -> Tokenizer:
    """Load a SentencePiece model; None = the tokenizer shipped with the sample corpus."""
    if path is None:
        path = sample_tokenizer_path()
    if Path(path).is_dir():
        raise TokenizerError(f"tokenizer {os.path.abspath(path)}: is a directory; give the SentencePiece "
                             ".model file in it")
    if not Path(path).is_file():
        raise TokenizerError(f"tokenizer {os.path.abspath(path)}: no such file")
    return Tokenizer(path)
