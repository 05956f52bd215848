"""Where the small multilingual corpus and tokenizer shipped with alia-train are.

Paths only, no imports of the rest of alia-train: the tokenizer loader (its default model)
and the sample shards (data/sample_shards.py) both use them.
"""

from __future__ import annotations

from pathlib import Path

_SAMPLE = Path(__file__).resolve().parent.parent / "sample_data"


def sample_corpus_dir() -> Path:
    return _SAMPLE / "corpus"


def sample_tokenizer_path() -> Path:
    return _SAMPLE / "tokenizer.model"


def sample_corpus_files() -> list[str]:
    files = sorted(str(p) for p in sample_corpus_dir().glob("*.jsonl"))
    if not files:
        raise FileNotFoundError(f"the sample corpus is missing: no *.jsonl in {sample_corpus_dir()}")
    return files
