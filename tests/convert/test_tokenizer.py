"""tokenizer.json encodes and decodes exactly as the SentencePiece model it comes from."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import sentencepiece as spm

from alia_train.convert.tokenizer import fast_tokenizer, write_hf_tokenizer

CODE = '''def mean(xs: list[float]) -> float:
\t"""Average; 0.0 when empty."""
\tif not xs:
\t\treturn 0.0
    return  sum(xs) / len(xs)   # trailing spaces   \n\n\n\n
class  Tokenizer:\r\n    pass
'''
EDGE = [
    "", " ", "   ", "hello ", " hello", "  hello", "\n\nhello", "a" + " " * 30 + "b", "\t\t\t\t\t\t\t\tx",
    "12345 678,9 año 2024", "e\u0301 é Å ﬁ ½ ＡＢＣ", "日本語 🤗 Ελληνικά Русский",
    "x\r\ny",
]


def _sample_texts() -> list[str]:
    """The shipped corpus: es, ca, eu, gl, en (the first 60 documents of each)."""
    from alia_train.data.sample_corpus import sample_corpus_files

    texts = []
    for f in sample_corpus_files():
        lines = Path(f).read_text(encoding="utf-8").splitlines()[:60]
        texts += [json.loads(line)["text"] for line in lines]
    return texts


def _bench_texts(corpus: Path, per_lang: int = 25) -> list[str]:
    texts = []
    for f in sorted((corpus / "bench").glob("*.jsonl.gz")):  # includes Python code
        with gzip.open(f, "rt", encoding="utf-8") as fh:
            for i, line in enumerate(fh):
                if i >= per_lang:
                    break
                texts.append(json.loads(line)["text"][:4000])
    return texts


def _assert_same(model_path: Path, texts: list[str]) -> None:
    data = model_path.read_bytes()
    sp = spm.SentencePieceProcessor(model_proto=data)
    tok = fast_tokenizer(data)
    for text in texts:
        ids = sp.encode(text)
        assert tok.encode(text, add_special_tokens=False).ids == ids, repr(text[:200])
        assert tok.decode(ids, skip_special_tokens=False) == sp.decode(ids), repr(text[:200])


def test_salamandra_style_tokenizer(sample_tokenizer):
    """NFC rules, no extra-whitespace removal, whitespace runs as user-defined symbols."""
    from alia_train.data.sample_corpus import sample_corpus_files

    langs = {json.loads(Path(f).read_text().splitlines()[0])["lang"] for f in sample_corpus_files()}
    assert {"es", "ca", "eu", "gl", "en"} <= langs
    _assert_same(sample_tokenizer, [*EDGE, CODE, *_sample_texts()])


def test_bench_tokenizer_nfkc(shared_corpus):
    """nmt_nfkc rules and remove_extra_whitespaces (SentencePiece's defaults), on real text."""
    _assert_same(shared_corpus / "bench32k.model", [*EDGE, CODE, *_bench_texts(shared_corpus)])


def test_auto_tokenizer_agrees(sample_tokenizer, tmp_path):
    from transformers import AutoTokenizer

    write_hf_tokenizer(sample_tokenizer.read_bytes(), tmp_path, 1024)
    hf = AutoTokenizer.from_pretrained(tmp_path)
    sp = spm.SentencePieceProcessor(model_file=str(sample_tokenizer))
    assert (hf.bos_token_id, hf.eos_token_id, hf.pad_token_id, hf.unk_token_id) == (1, 2, 3, 0)
    for text in [CODE, "Bon dia, com estàs?", "Kaixo, zer moduz?", "Bos días, como estás?"]:
        assert hf(text)["input_ids"] == [sp.bos_id(), *sp.encode(text)]
        assert hf.decode(hf(text)["input_ids"], skip_special_tokens=True) == text
    assert hf.model_max_length == 1024


def test_control_tokens_in_text_are_special(sample_tokenizer):
    """The one documented difference: SentencePiece spells "<|im_start|>" out character by
    character, Hugging Face matches it as the control token (what chat templates rely on)."""
    tok = fast_tokenizer(sample_tokenizer.read_bytes())
    sp = spm.SentencePieceProcessor(model_file=str(sample_tokenizer))
    assert tok.encode("<|im_start|>", add_special_tokens=False).ids == [sp.piece_to_id("<|im_start|>")]


def test_unsupported_models_are_refused():
    from alia_train.convert.errors import ConversionError

    with pytest.raises(ConversionError, match="not a SentencePiece model"):
        fast_tokenizer(b"\x00garbage")
