"""Dataset of the alia_langid tasks: quads.jsonl next to this file, no download (works offline,
from a wheel too). lm-evaluation-harness calls `load` (the tasks' `custom_dataset`) and the
doc_to_* functions (Winogrande's form: the choices are the passages, the target the words).

Each quad (four documents, one per language) makes four items, one per language: the words that
follow that language's passage, and the quad's four passages, in LANGS order, to choose from.
"""

from __future__ import annotations

import json
from pathlib import Path

QUADS = Path(__file__).resolve().parent / "quads.jsonl"
LANGS = ("es", "ca", "eu", "gl")


def items(quads: list[dict]) -> list[dict]:
    out = []
    for quad in quads:
        passages = [quad["passages"][lang] for lang in LANGS]
        for gold, lang in enumerate(LANGS):
            out.append({"id": f"{quad['quad']:02d}-{lang}", "quad": quad["quad"], "lang": lang,
                        "contexts": passages, "continuation": quad["next_words"][lang], "gold": gold})
    return out


def load(lang: str | None = None, **_metadata):
    import datasets

    quads = [json.loads(line) for line in QUADS.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = [r for r in items(quads) if lang is None or r["lang"] == lang]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


def gold(doc) -> int:
    return doc["gold"]


def passages(doc) -> list[str]:
    return list(doc["contexts"])


def continuation(doc) -> str:
    return doc["continuation"]
