"""`alia-data tokenizer train`: Salamandra's SentencePiece settings and temperature sampling."""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import pytest
import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2 as pb

from alia_train.data.sample_corpus import sample_tokenizer_path
from alia_train.data.tokenizer import load_tokenizer
from alia_train.data.tokenizer_train import SPACE, language_quotas, read_settings, settings_path, split_pieces

USER_DEFINED, CONTROL, BYTE = pb.ModelProto.SentencePiece.USER_DEFINED, pb.ModelProto.SentencePiece.CONTROL, \
    pb.ModelProto.SentencePiece.BYTE


@pytest.fixture(scope="module")
def model(tokenizer_path):
    proto = pb.ModelProto()
    proto.ParseFromString(tokenizer_path.read_bytes())
    return proto


def test_trainer_spec_is_salamandras(model):
    t = model.trainer_spec
    assert t.model_type == pb.TrainerSpec.BPE and t.vocab_size == 600
    assert t.byte_fallback and t.split_digits and t.allow_whitespace_only_pieces
    assert not model.normalizer_spec.remove_extra_whitespaces
    assert model.normalizer_spec.name == "nfc" and model.normalizer_spec.precompiled_charsmap
    assert (t.unk_id, t.bos_id, t.eos_id, t.pad_id) == (0, 1, 2, 3)
    assert [p.piece for p in model.pieces[:4]] == ["<unk>", "<s>", "</s>", "<pad>"]


def test_special_whitespace_and_byte_pieces(model):
    kinds: dict[int, list[str]] = {}
    for p in model.pieces:
        kinds.setdefault(p.type, []).append(p.piece)
    assert kinds[CONTROL][:4] == ["<s>", "</s>", "<pad>", "<|im_start|>"] or "<|im_start|>" in kinds[CONTROL]
    assert {"<|im_start|>", "<|im_end|>", "<|reserved_token_0|>", "<|reserved_token_3|>"} <= set(kinds[CONTROL])
    expected_ws = [SPACE * n for n in range(2, 25)] + ["\t" * n for n in range(1, 7)] + ["\n" * n for n in range(1, 4)]
    assert kinds[USER_DEFINED] == expected_ws
    assert len(kinds[BYTE]) == 256


def test_encoding_behaviour(tokenizer_path):
    sp = spm.SentencePieceProcessor(model_file=str(tokenizer_path))
    # Split digits.
    assert [p for p in sp.encode("año 20245", out_type=str) if p.strip(SPACE).isdigit()] == list("20245")
    # Whitespace runs are single pieces, kept exactly (no extra-whitespace removal).
    text = "a    b\t\t\tc\n\n\nd  "
    assert SPACE * 4 in sp.encode(text, out_type=str) and "\t\t\t" in sp.encode(text, out_type=str)
    assert sp.decode(sp.encode(text)) == text
    # NFC: a decomposed accent comes back composed; compatibility characters are kept (no NFKC).
    assert sp.decode(sp.encode("cafe\u0301 A\u030a")) == "café Å"
    assert sp.decode(sp.encode("ﬁ ² ｆ")) == "ﬁ ² ｆ"
    # Byte fallback: unseen characters survive the round trip.
    for s in ("ĳ 漢字 🙂", unicodedata.normalize("NFC", "Ω ∑ ⟨x⟩")):
        assert sp.decode(sp.encode(s)) == s
    # Control tokens are not produced from text.
    assert sp.piece_to_id("<|im_start|>") not in sp.encode("<|im_start|>")


def test_settings_record(tokenizer_path):
    record = json.loads(open(settings_path(str(tokenizer_path)), encoding="utf-8").read())
    assert record["trainer"]["vocab_size"] == 600 and record["trainer"]["byte_fallback"] is True
    assert record["normalization"].startswith("nfc")
    langs = record["sampling"]["languages"]
    assert set(langs) == {"es", "ca", "eu", "en", "code"}
    # Temperature 3 flattens the mixture: the smallest language gains, the largest loses.
    assert langs["eu"]["sampled_share"] > 1.5 * langs["eu"]["natural_share"]
    assert langs["es"]["sampled_share"] < langs["es"]["natural_share"]


def test_settings_file_is_not_named_like_a_hugging_face_tokenizer(tokenizer_path, tmp_path):
    assert settings_path(str(tokenizer_path)) == str(tokenizer_path.with_suffix("")) + ".settings.json"
    assert not tokenizer_path.with_suffix(".json").exists()  # `tokenizer.json` means HF's format
    assert read_settings(str(tokenizer_path))["sha256"] == load_tokenizer(tokenizer_path).sha256
    # The shipped sample tokenizer carries its record under the new name.
    sample = sample_tokenizer_path()
    assert read_settings(str(sample))["sha256"] == load_tokenizer(sample).sha256
    assert not sample.with_suffix(".json").exists()
    # Records written before the rename (`tok.json`) are still read; an HF tokenizer.json is not one.
    legacy = tmp_path / "tok.model"
    legacy.write_bytes(tokenizer_path.read_bytes())
    legacy.with_suffix(".json").write_text(Path(settings_path(str(tokenizer_path))).read_text())
    assert read_settings(str(legacy))["trainer"]["vocab_size"] == 600
    legacy.with_suffix(".json").write_text(json.dumps({"version": "1.0", "model": {"type": "BPE"}}))
    assert read_settings(str(legacy)) is None


def test_language_quotas_temperature():
    avail = {"big": 900, "small": 100}
    assert language_quotas(avail, 1.0, 10**9) == {"big": 900, "small": 100}
    # Nearly uniform: the big language is kept whole, the small one repeated up to it ...
    assert language_quotas(avail, 1e9, 10**9) == {"big": 900, "small": 900}
    # ... unless the byte cap says otherwise.
    assert language_quotas(avail, 1e9, 1000) == {"big": 500, "small": 500}
    assert language_quotas(avail, 2.0, 1000) == {"big": 750, "small": 250}  # sqrt(.9) : sqrt(.1) = 3 : 1
    with pytest.raises(ValueError):
        language_quotas(avail, 0.0, 1000)


def test_split_pieces_respects_the_byte_limit():
    doc = "línea uno\n" * 50 + "x" * 300 + "\nfin"
    pieces = split_pieces(doc, 64)
    assert "".join(pieces) == doc
    assert all(len(p.encode()) <= 64 for p in pieces)
    assert split_pieces("short", 64) == ["short"]


def test_a_full_disk_or_a_too_small_vocabulary_is_one_line(tmp_path, corpus_dir):
    """Real processes: the model written to a full 16 KiB tmpfs (root only; else the check is
    skipped) and a vocabulary too small for the text's characters."""
    import os
    import subprocess
    import sys

    def train(out, vocab):
        return subprocess.run([sys.executable, "-m", "alia_train.cli.data", "tokenizer", "train", "--input",
                               str(corpus_dir / "eu.jsonl"), "--output", str(out), "--vocab-size", str(vocab),
                               "--threads", "1"], capture_output=True, text=True, timeout=120)

    small = train(tmp_path / "s.model", 300)
    assert small.returncode == 2 and "raise --vocab-size" in small.stderr.splitlines()[-1], small.stderr
    full = tmp_path / "full"
    full.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(full)],
                                           capture_output=True).returncode != 0:
        pytest.skip("mounting a tmpfs needs root")
    try:
        (full / "filler").write_bytes(bytes(8192))
        proc = train(full / "t.model", 600)
        left = sorted(p.name for p in full.iterdir())
    finally:
        subprocess.run(["umount", str(full)], check=True)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines()[-1].startswith(f"alia-data: error: cannot write {full / 't.model'}: No space")
    assert left == ["filler"]  # no model, no temporary
