"""`alia-data tokenizer train`: a SentencePiece BPE tokenizer with Salamandra's settings.

Salamandra (see docs/data.md): BPE, byte fallback, split digits, no extra-whitespace removal,
whitespace-only pieces, NFC, user-defined pieces for runs of spaces (up to 24), tabs (up to
6) and newlines (up to 3), control tokens <|im_start|> / <|im_end|> plus reserved tokens,
unk 0 / bos 1 / eos 2 / pad 3.

Training text is sampled per language with a temperature so that small languages are
represented: language l with natural byte share p_l gets a share q_l ~ p_l^(1/T) of the
sample (T = 1: natural shares; larger T: flatter; T -> inf: uniform). Languages whose quota
exceeds their text are repeated. Documents are cut at line ends into pieces of at most
`max_sentence_bytes`, SentencePiece's unit of training text.
"""

from __future__ import annotations

import io
import json
import math
import os
import random
import re
import tempfile
from dataclasses import asdict, dataclass, field

from alia_train.data.documents import iter_documents
from alia_train.data.readers import discover_inputs
from alia_train.fs import make_writable_parent, write_bytes_atomic, write_json_atomic

SPACE = "\u2581"  # SentencePiece's escaped space: whitespace-run pieces must be spelled with it


@dataclass
class TokenizerTrainOptions:
    inputs: list[str]
    output: str  # the .model path; the settings record goes next to it as .settings.json
    vocab_size: int = 256_000
    temperature: float = 3.0
    # At most this many bytes of text are handed to SentencePiece (after temperature
    # sampling; small corpora are used whole, small languages repeated).
    sample_bytes: int = 1_000_000_000
    max_sentence_bytes: int = 4096
    text_key: str = "text"
    lang_key: str = "lang"
    lang: str | None = None
    character_coverage: float = 0.9999
    num_reserved: int = 100
    max_space_run: int = 24
    max_tab_run: int = 6
    max_newline_run: int = 3
    add_dummy_prefix: bool = True
    unk_id: int = 0
    bos_id: int = 1
    eos_id: int = 2
    pad_id: int = 3
    seed: int = 1234
    threads: int | None = None
    extra_control_symbols: list[str] = field(default_factory=list)


class TokenizerTrainError(ValueError):
    pass


def language_shares(bytes_per_lang: dict[str, int], temperature: float) -> dict[str, float]:
    """Sampled share of each language: p_l^(1/T) / sum_k p_k^(1/T)."""
    if temperature <= 0:
        raise TokenizerTrainError(f"temperature must be > 0 (got {temperature})")
    total = sum(bytes_per_lang.values())
    weights = {lang: (b / total) ** (1.0 / temperature) for lang, b in bytes_per_lang.items() if b > 0}
    norm = sum(weights.values())
    return {lang: w / norm for lang, w in weights.items()}


def language_quotas(bytes_per_lang: dict[str, int], temperature: float, max_bytes: int) -> dict[str, int]:
    """Bytes of training text per language, at most `max_bytes` in all.

    The budget is the smallest that keeps every byte of the language that needs the least
    repetition (no text is dropped from a corpus that fits), capped at `max_bytes`.
    """
    shares = language_shares(bytes_per_lang, temperature)
    budget = min(max_bytes, max(bytes_per_lang[lang] / q for lang, q in shares.items()))
    return {lang: int(round(budget * q)) for lang, q in shares.items()}


def split_pieces(text: str, max_bytes: int) -> list[str]:
    """Cut a document at line ends into pieces of at most `max_bytes` UTF-8 bytes."""
    if len(text) * 4 <= max_bytes or len(text.encode("utf-8")) <= max_bytes:
        return [text]
    pieces: list[str] = []
    cur: list[str] = []
    cur_bytes = 0
    for line in text.splitlines(keepends=True):
        n = len(line.encode("utf-8"))
        if n > max_bytes:  # one huge line: hard cut (4 bytes per character at most)
            if cur:
                pieces.append("".join(cur))
                cur, cur_bytes = [], 0
            step = max(1, max_bytes // 4)
            pieces.extend(line[i : i + step] for i in range(0, len(line), step))
            continue
        if cur_bytes + n > max_bytes:
            pieces.append("".join(cur))
            cur, cur_bytes = [], 0
        cur.append(line)
        cur_bytes += n
    if cur:
        pieces.append("".join(cur))
    return pieces


def _sample(opts: TokenizerTrainOptions, inputs) -> tuple[list[str], dict]:
    docs = lambda: iter_documents(inputs, opts.text_key, opts.lang_key, opts.lang)  # noqa: E731
    available: dict[str, int] = {}
    for text, lang in docs():
        available[lang] = available.get(lang, 0) + len(text.encode("utf-8"))
    if not available:
        raise TokenizerTrainError("the inputs hold no usable documents (text and lang fields)")
    quotas = language_quotas(available, opts.temperature, opts.sample_bytes)
    keep = {lang: min(1.0, quotas[lang] / available[lang]) for lang in available}
    rng = random.Random(opts.seed)
    kept: dict[str, list[str]] = {lang: [] for lang in available}
    kept_bytes = dict.fromkeys(available, 0)
    for text, lang in docs():
        for piece in split_pieces(text, opts.max_sentence_bytes):
            if keep[lang] >= 1.0 or rng.random() < keep[lang]:
                kept[lang].append(piece)
                kept_bytes[lang] += len(piece.encode("utf-8"))
    sentences: list[str] = []
    sampled: dict[str, int] = {}
    for lang in sorted(kept):
        pieces = kept[lang]
        if not pieces:
            continue
        # Languages whose quota exceeds their text are repeated (whole copies, then a subset).
        reps = quotas[lang] / max(1, kept_bytes[lang])
        copies = max(1, math.floor(reps))
        extra = rng.sample(pieces, int(round((reps - copies) * len(pieces)))) if reps > copies else []
        sentences.extend(pieces * copies)
        sentences.extend(extra)
        sampled[lang] = kept_bytes[lang] * copies + sum(len(p.encode("utf-8")) for p in extra)
    rng.shuffle(sentences)
    total_av = sum(available.values())
    total_sa = sum(sampled.values()) or 1
    langs = {
        lang: {
            "available_bytes": available[lang],
            "natural_share": round(available[lang] / total_av, 6),
            "sampled_bytes": sampled.get(lang, 0),
            "sampled_share": round(sampled.get(lang, 0) / total_sa, 6),
        }
        for lang in sorted(available)
    }
    return sentences, langs


def trainer_settings(opts: TokenizerTrainOptions, threads: int) -> dict:
    """SentencePieceTrainer arguments (without input and normalisation TSV)."""
    reserved = [f"<|reserved_token_{i}|>" for i in range(opts.num_reserved)]
    whitespace = (
        [SPACE * n for n in range(2, opts.max_space_run + 1)]
        + ["\t" * n for n in range(1, opts.max_tab_run + 1)]
        + ["\n" * n for n in range(1, opts.max_newline_run + 1)]
    )
    return dict(
        model_type="bpe",
        vocab_size=opts.vocab_size,
        byte_fallback=True,
        split_digits=True,
        remove_extra_whitespaces=False,
        allow_whitespace_only_pieces=True,
        add_dummy_prefix=opts.add_dummy_prefix,
        character_coverage=opts.character_coverage,
        user_defined_symbols=whitespace,
        control_symbols=["<|im_start|>", "<|im_end|>", *opts.extra_control_symbols, *reserved],
        unk_id=opts.unk_id, bos_id=opts.bos_id, eos_id=opts.eos_id, pad_id=opts.pad_id,
        unk_piece="<unk>", bos_piece="<s>", eos_piece="</s>", pad_piece="<pad>",
        max_sentence_length=opts.max_sentence_bytes,
        input_sentence_size=0,
        shuffle_input_sentence=False,
        num_threads=threads,
        minloglevel=1,
    )


def train_tokenizer(opts: TokenizerTrainOptions, log=print) -> dict:
    """Train, write `opts.output` and its settings record; return the record."""
    import sentencepiece as spm

    from alia_train.data.nfc import write_nfc_tsv
    from alia_train.data.tokenize import available_cores
    from alia_train.data.tokenizer import load_tokenizer

    if not opts.output.endswith(".model"):
        raise TokenizerTrainError(f"--output {opts.output}: must end with .model")
    if opts.vocab_size < 300:
        raise TokenizerTrainError("--vocab-size must be at least 300 (256 byte pieces + specials)")
    inputs = discover_inputs(opts.inputs)
    make_writable_parent(opts.output, "--output")
    threads = opts.threads or available_cores()
    sentences, langs = _sample(opts, inputs)
    log(f"training on {len(sentences):,} pieces of text: "
        + ", ".join(f"{k} {v['sampled_share']:.1%}" for k, v in langs.items()))
    settings = trainer_settings(opts, threads)
    model = io.BytesIO()
    with tempfile.TemporaryDirectory() as tmp:
        tsv = os.path.join(tmp, "nfc.tsv")
        _write(tsv, lambda: write_nfc_tsv(tsv), "set TMPDIR to a directory with room")
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=iter(sentences), model_writer=model, normalization_rule_tsv=tsv, **settings
            )
        except RuntimeError as e:
            raise TokenizerTrainError(_sentencepiece_error(str(e))) from None
    _write(opts.output, lambda: write_bytes_atomic(opts.output, _name_normalizer(model.getvalue())))
    tok = load_tokenizer(opts.output)
    record = {
        "model": os.path.basename(opts.output),
        "sha256": tok.sha256,
        "sentencepiece_version": spm.__version__,
        "normalization": "nfc (custom rule TSV, see alia_train.data.nfc)",
        "trainer": {k: v for k, v in settings.items() if k not in ("num_threads", "minloglevel")},
        "sampling": {
            "temperature": opts.temperature,
            "sample_bytes": opts.sample_bytes,
            "max_sentence_bytes": opts.max_sentence_bytes,
            "seed": opts.seed,
            "languages": langs,
        },
        # Relative to the model's folder: the record travels with the model.
        "inputs": [os.path.relpath(i.path, os.path.dirname(os.path.abspath(opts.output))) for i in inputs],
        "options": {k: v for k, v in asdict(opts).items() if k not in ("inputs", "output")},
    }
    _write(settings_path(opts.output), lambda: write_json_atomic(settings_path(opts.output), record))
    return record


def _write(path: str, write, fix: str = "choose another --output (nothing was left under that name)") -> None:
    """Run `write` (a write of `path`); a disk error becomes one line naming the file."""
    try:
        write()
    except OSError as e:
        raise TokenizerTrainError(f"cannot write {path}: {e.strerror or e}; free some space or {fix}") from None


def _sentencepiece_error(text: str) -> str:
    """SentencePiece's C++ check failures, said in terms of our options."""
    too_big = re.search(r"Vocabulary size too high \((\d+)\).*<= (\d+)", text)
    if too_big:
        return (f"--vocab-size {too_big[1]}: too large for this text (at most {too_big[2]}); "
                "lower --vocab-size or give more text")
    too_small = re.search(r"smaller than required_chars\. (\d+) vs (\d+)", text)
    if too_small:
        return (f"--vocab-size {too_small[1]}: smaller than the {too_small[2]} characters and special "
                "pieces this text needs; raise --vocab-size or lower --character-coverage")
    return f"SentencePiece: {' '.join(text.split())}"


def _name_normalizer(model: bytes) -> bytes:
    """Call the rules "nfc" and drop the temporary TSV path SentencePiece records."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    proto = pb.ModelProto()
    proto.ParseFromString(model)
    proto.normalizer_spec.name = "nfc"
    proto.normalizer_spec.normalization_rule_tsv = ""
    return proto.SerializeToString()


SETTINGS_SUFFIX = ".settings.json"


def _stem(model_path: str) -> str:
    return model_path[: -len(".model")] if model_path.endswith(".model") else model_path


def settings_path(model_path: str) -> str:
    """`tok.model` -> `tok.settings.json` (not `tok.json`: `tokenizer.json` is what Hugging
    Face tools take for their own tokenizer format)."""
    return _stem(model_path) + SETTINGS_SUFFIX


def legacy_settings_path(model_path: str) -> str:
    """Where releases before the rename wrote the record: `tok.model` -> `tok.json`."""
    return _stem(model_path) + ".json"


def read_settings(model_path: str) -> dict | None:
    """The settings record beside a model, under its name or the legacy one; None if neither."""
    for path in (settings_path(model_path), legacy_settings_path(model_path)):
        try:
            with open(path, encoding="utf-8") as f:
                record = json.load(f)
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and "trainer" in record:
            return record
    return None
