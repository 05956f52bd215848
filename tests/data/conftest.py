"""Fixtures of the data-pipeline tests: a real (small) SentencePiece tokenizer trained with
alia-data's Salamandra settings, a generated multilingual corpus, and one gloo process group
with megatron's parallel state for the whole session (megatron-core costs ~10 s to import)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

WORDS = {
    "es": "el la de que y en un una por con para como más pero sus le ya muy también hasta desde casa".split(),
    "ca": "el la de que i en un una per amb com més però els ja molt també fins des de casa perquè".split(),
    "eu": "eta da ez bat du dira zen baina ere hau behar izan dute etxea gizon emakume herri".split(),
    "en": "the of and to in is that for it as with was on be by this are from house people".split(),
}
CODE = ["def f(x):\n    return x + 1\n", "for i in range(10):\n\tprint(i)\n", "class A:\n    pass\n"]


def make_doc(rng: random.Random, lang: str, n_words: int) -> str:
    if lang == "code":
        return "".join(rng.choice(CODE) for _ in range(max(1, n_words // 6)))
    words = [rng.choice(WORDS[lang]) for _ in range(n_words)]
    # Digits, accents, whitespace runs and newlines: what the Salamandra settings care about.
    words.insert(rng.randrange(len(words) + 1), str(rng.randrange(10**6)))
    text = " ".join(words)
    if rng.random() < 0.3:
        text += "\n\n  café  naïve\tàèìòù ñ\n"
    return text.capitalize() + "."


def write_corpus(directory: Path, docs_per_lang: dict[str, int], seed: int = 0, n_words=(5, 60)) -> Path:
    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    for lang, n in docs_per_lang.items():
        with open(directory / f"{lang}.jsonl", "w", encoding="utf-8") as f:
            for _ in range(n):
                doc = {"text": make_doc(rng, lang, rng.randint(*n_words)), "lang": lang, "source": "test"}
                f.write(json.dumps(doc, ensure_ascii=False) + "\n")
    return directory


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus"), {"es": 300, "ca": 150, "eu": 40, "en": 200, "code": 30})


@pytest.fixture(scope="session")
def tokenizer_path(corpus_dir, tmp_path_factory) -> Path:
    from alia_train.data.tokenizer_train import TokenizerTrainOptions, train_tokenizer

    out = tmp_path_factory.mktemp("tok") / "test.model"
    train_tokenizer(
        TokenizerTrainOptions(inputs=[str(corpus_dir)], output=str(out), vocab_size=600,
                              num_reserved=4, sample_bytes=10**6, threads=2),
        log=lambda *_: None,
    )
    return out


@pytest.fixture(scope="module")
def megatron_dist():
    """A one-process gloo group and megatron's parallel state, as training sets them up; torn
    down after the module, so other test modules can set up their own."""
    from alia_train.config import load_config
    from alia_train.parallel.launch_env import detect_launch_env
    from alia_train.training.startup import process_groups

    with process_groups(load_config(["+model=tiny"]), detect_launch_env({})):
        yield
