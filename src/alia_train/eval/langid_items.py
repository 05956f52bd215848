"""The quads of the shipped `alia_langid` task, built from the shipped sample corpus.

A four-way language-consistency choice, in the form of Winogrande (lm-evaluation-harness's
"multiple inputs"): the next words of a passage in Spanish, Catalan, Basque or Galician, and
four candidate passages, one per language; the right one is the passage they continue. The
model scores the same words after each passage, so their own likelihood cancels out and only
what the passage changes counts. Items come in quads: four documents (one per language, in
LANGS order), each giving a passage and its next words; the four items of a quad share the
four passages. A model that ignores the passage scores the four alike, picks the same one for
all four items and is right exactly once: chance is 25 %, whatever its preference between
languages.

The items are taken from the training corpus, so a score measures what the model learned of
the languages on text it has seen: a check of the evaluation path and a learning curve, not a
benchmark. `python -m alia_train.eval.langid_items` rewrites tasks/alia_langid/quads.jsonl (the
task's langid.py makes the four items of each quad); tests/eval checks that the shipped file is
what this builds.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

LANGS = ("es", "ca", "eu", "gl")
QUADS = 30
CONTEXT_SENTENCES = 3
CONTINUATION_WORDS = 8
ITEMS_FILE = Path(__file__).resolve().parent / "tasks" / "alia_langid" / "quads.jsonl"
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def _split(text: str) -> tuple[str, str] | None:
    """(the first sentences, the next words) of a document, or None when it is too short."""
    sentences = [s.strip() for s in _SENTENCE_END.split(" ".join(text.split())) if s.strip()]
    if len(sentences) <= CONTEXT_SENTENCES:
        return None
    words = sentences[CONTEXT_SENTENCES].split()
    if len(words) < CONTINUATION_WORDS:
        return None
    return " ".join(sentences[:CONTEXT_SENTENCES]), " ".join(words[:CONTINUATION_WORDS])


def build_quads(corpus_dir: Path) -> list[dict]:
    """One record per quad: its four passages and the words that follow each, by language."""
    pairs = {}
    for lang in LANGS:
        docs = [json.loads(line)["text"] for line in (corpus_dir / f"{lang}.jsonl").read_text("utf-8").splitlines()]
        found = [p for p in map(_split, docs) if p is not None]
        if len(found) < QUADS:
            raise ValueError(f"{corpus_dir}/{lang}.jsonl: {len(found)} usable documents, {QUADS} needed")
        pairs[lang] = found[:QUADS]
    return [{"quad": q, "passages": {lang: pairs[lang][q][0] for lang in LANGS},
             "next_words": {lang: pairs[lang][q][1] for lang in LANGS}} for q in range(QUADS)]


def quads_text(quads: list[dict]) -> str:
    return "".join(json.dumps(quad, ensure_ascii=False) + "\n" for quad in quads)


def main() -> int:
    from alia_train.data.sample_corpus import sample_corpus_dir

    ITEMS_FILE.write_text(quads_text(build_quads(sample_corpus_dir())), encoding="utf-8")
    print(f"wrote {ITEMS_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
