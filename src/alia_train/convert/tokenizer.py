"""The SentencePiece tokenizer as a Hugging Face fast tokenizer (`tokenizer.json`).

transformers' own Llama conversion does not reproduce SentencePiece for Salamandra-style
models: it drops the normalization rules (NFC / NFKC), knows nothing of
`remove_extra_whitespaces`, and (in transformers 5) rebuilds a `LlamaTokenizer` from vocab and
merges, discarding whatever pipeline tokenizer.json holds. So the pipeline is built here from
the model proto, one SentencePiece step per `tokenizers` component:

* normalizer: the proto's precompiled charsmap (the same bytes SentencePiece runs), the
  whitespace clean-up when `remove_extra_whitespaces`, the dummy prefix, then " " -> "▁";
* pre-tokenizer: user-defined symbols (runs of spaces, tabs, newlines) split off, longest first,
  as SentencePiece's prefix matcher does; they never merge with their neighbours;
* model: BPE over the same vocabulary, merges ranked by the merged piece's score (SentencePiece
  merges the best-scoring adjacent pair first), byte fallback as in the proto;
* decoder: "▁" -> " ", byte pieces -> bytes, minus the dummy prefix.

The tokenizer_config names `PreTrainedTokenizerFast`, the class that loads tokenizer.json as is
in transformers 4 and 5 alike. Text containing control tokens literally ("<|im_start|>") differs
from SentencePiece, which never matches them: Hugging Face recognises them as special tokens.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from alia_train.convert.errors import ConversionError

SPACE = "\u2581"
# sentencepiece_model.proto ModelProto.SentencePiece.Type
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
BPE_MODEL = 2


@dataclass(frozen=True)
class SpecialTokens:
    unk: str | None
    bos: str | None
    eos: str | None
    pad: str | None
    unk_id: int
    bos_id: int
    eos_id: int
    pad_id: int


def load_proto(model_bytes: bytes):
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()
    try:
        proto.ParseFromString(model_bytes)
    except Exception as e:  # protobuf's DecodeError and friends
        raise ConversionError(f"not a SentencePiece model ({e})") from None
    if not proto.pieces:
        raise ConversionError("not a SentencePiece model (no pieces)")
    return proto


def special_tokens(proto) -> SpecialTokens:
    ts = proto.trainer_spec
    n = len(proto.pieces)

    def piece(i: int) -> str | None:
        return proto.pieces[i].piece if 0 <= i < n else None

    return SpecialTokens(
        unk=piece(ts.unk_id), bos=piece(ts.bos_id), eos=piece(ts.eos_id), pad=piece(ts.pad_id),
        unk_id=ts.unk_id, bos_id=ts.bos_id if ts.bos_id < n else -1,
        eos_id=ts.eos_id if ts.eos_id < n else -1, pad_id=ts.pad_id if ts.pad_id < n else -1,
    )


def _merges(proto, vocab: dict[str, int]) -> list[tuple[str, str]]:
    pieces = proto.pieces
    # User-defined symbols arrive whole from the pre-tokenizer, as single characters: chain
    # merges rebuild them, longest prefix first so a run always grows from its left end.
    chains: list[tuple[int, str, str]] = []
    for p in pieces:
        if p.type != USER_DEFINED or len(p.piece) < 2:
            continue
        s = p.piece
        for k in range(2, len(s) + 1):
            if s[: k - 1] not in vocab or s[k - 1] not in vocab:
                raise ConversionError(
                    f"user-defined symbol {s!r} cannot be rebuilt from pieces of the vocabulary; "
                    "only runs of one character (spaces, tabs, newlines) are supported"
                )
            chains.append((k, s[: k - 1], s[k - 1]))
    chains.sort(key=lambda c: -c[0])
    seen = {(a, b) for _, a, b in chains}

    # Ordinary merges: a normal piece from two normal pieces, best score first.
    normal = {p.piece for p in pieces if p.type == NORMAL}
    ranked: list[tuple[float, int, int, str, str]] = []
    for p in pieces:
        if p.type != NORMAL or len(p.piece) < 2:
            continue
        s = p.piece
        for k in range(1, len(s)):
            left, right = s[:k], s[k:]
            if left in normal and right in normal:
                ranked.append((-p.score, vocab[left], vocab[right], left, right))
    ranked.sort()
    merges = [(a, b) for _, a, b in chains]
    merges += [(a, b) for *_, a, b in ranked if (a, b) not in seen]
    return merges


def _onig_literal(text: str) -> str:
    # \x{HHHH} for every character: nothing in a symbol can be read as regex syntax.
    return "".join(f"\\x{{{ord(c):X}}}" for c in text)


def fast_tokenizer(model_bytes: bytes):
    """A `tokenizers.Tokenizer` that encodes and decodes as the SentencePiece model does."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    proto = load_proto(model_bytes)
    ts, ns = proto.trainer_spec, proto.normalizer_spec
    if ts.model_type != BPE_MODEL:
        raise ConversionError("only BPE SentencePiece models can be converted (this one is not BPE)")
    if ts.treat_whitespace_as_suffix or not ns.escape_whitespaces:
        raise ConversionError("SentencePiece models with treat_whitespace_as_suffix or without "
                              "escape_whitespaces are not supported")
    vocab = {p.piece: i for i, p in enumerate(proto.pieces)}
    if len(vocab) != len(proto.pieces):
        raise ConversionError("the SentencePiece model has duplicate pieces")
    sp = special_tokens(proto)
    model = models.BPE(
        vocab=vocab, merges=_merges(proto, vocab), unk_token=sp.unk, fuse_unk=True,
        byte_fallback=ts.byte_fallback, dropout=None,
    )
    tok = Tokenizer(model)

    steps = []
    if ns.precompiled_charsmap:
        steps.append(normalizers.Precompiled(ns.precompiled_charsmap))
    if ns.remove_extra_whitespaces:
        # SentencePiece's rule, after the charsmap: no leading/trailing spaces, runs -> one.
        steps += [
            normalizers.Replace(Regex(r"\A +| +\z"), ""),
            normalizers.Replace(Regex(" {2,}"), " "),
        ]
    if ns.add_dummy_prefix:
        steps.append(normalizers.Prepend(SPACE))
    steps.append(normalizers.Replace(" ", SPACE))
    tok.normalizer = normalizers.Sequence(steps)

    user = sorted((p.piece for p in proto.pieces if p.type == USER_DEFINED), key=lambda s: (-len(s), s))
    if user:
        pattern = "|".join(_onig_literal(s) for s in user)
        tok.pre_tokenizer = pre_tokenizers.Split(Regex(pattern), behavior="isolated")

    dec = [decoders.Replace(SPACE, " ")]
    if ts.byte_fallback:
        dec += [decoders.ByteFallback(), decoders.Fuse()]
    if ns.add_dummy_prefix:
        dec.append(decoders.Strip(content=" ", left=1, right=0))
    tok.decoder = decoders.Sequence(dec)

    specials = [p.piece for p in proto.pieces if p.type in (UNKNOWN, CONTROL)]
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    if sp.bos is not None:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{sp.bos}:0 $A:0", pair=f"{sp.bos}:0 $A:0 {sp.bos}:1 $B:1",
            special_tokens=[(sp.bos, sp.bos_id)],
        )
    return tok


def check_tokenizer_file(path: str | os.PathLike, sha256: str | None, vocab_size: int | None) -> bytes:
    """The bytes of the SentencePiece model at `path`, after checking that it is the one the
    checkpoint was trained with (same hash, same vocabulary size)."""
    p = Path(path)
    if not p.is_file():
        raise ConversionError(
            f"tokenizer {p}: no such file (the checkpoint records this path); pass --tokenizer PATH"
        )
    data = p.read_bytes()
    if sha256 and hashlib.sha256(data).hexdigest() != sha256:
        raise ConversionError(
            f"tokenizer {p}: sha256 differs from the one recorded in the checkpoint ({sha256[:12]}...); "
            "it is not the tokenizer this model was trained with. Pass the right one with --tokenizer PATH"
        )
    n = len(load_proto(data).pieces)
    if vocab_size is not None and n != vocab_size:
        raise ConversionError(f"tokenizer {p}: {n} pieces, but the checkpoint's vocabulary has {vocab_size}")
    return data


def write_hf_tokenizer(model_bytes: bytes, out_dir: str | os.PathLike, model_max_length: int) -> SpecialTokens:
    """tokenizer.model (a copy), tokenizer.json, tokenizer_config.json, special_tokens_map.json."""
    out = Path(out_dir)
    proto = load_proto(model_bytes)
    sp = special_tokens(proto)
    (out / "tokenizer.model").write_bytes(model_bytes)
    fast_tokenizer(model_bytes).save(str(out / "tokenizer.json"))

    named = {"bos_token": sp.bos, "eos_token": sp.eos, "unk_token": sp.unk, "pad_token": sp.pad}
    named = {k: v for k, v in named.items() if v is not None}
    added = {
        str(i): {"content": p.piece, "lstrip": False, "normalized": False, "rstrip": False,
                 "single_word": False, "special": True}
        for i, p in enumerate(proto.pieces) if p.type in (UNKNOWN, CONTROL)
    }
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        **named,
        "add_bos_token": sp.bos is not None,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": model_max_length,
        "added_tokens_decoder": added,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    (out / "special_tokens_map.json").write_text(json.dumps(named, indent=2, ensure_ascii=False) + "\n")
    return sp
