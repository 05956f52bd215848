"""`alia-data`: tokenizer training, corpus tokenization and mixture planning.

    alia-data tokenizer train --input DIR... --output tok.model [--vocab-size 256000]
    alia-data tokenize --input FILE_OR_DIR... --tokenizer tok.model --output-prefix out/corpus
    alia-data mixture CONFIG_OR_STATS... [key=value ...] [--tokens 12.875e12]
    alia-data verify PREFIX...

Imports stay lazy: `tokenize` must start fast and never load torch or megatron-core.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from alia_train.cli.errors import report_error
from alia_train.exit_codes import EXIT_CONFIG, EXIT_INTERRUPTED, EXIT_LOCK_LOST, EXIT_OK
from alia_train.progress import human


def _float_int(text: str) -> int:
    try:
        return int(float(text))  # accepts 1e9
    except (ValueError, OverflowError):
        raise argparse.ArgumentTypeError(f"expected a number like 1e9, got {text!r}") from None


class _OneLineParser(argparse.ArgumentParser):
    """Usage mistakes in one line and exit 2, like every other alia-data error."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(EXIT_CONFIG, f"alia-data: error: {message}; see `{self.prog} --help`\n")


def _add_tokenizer_train(sub) -> None:
    p = sub.add_parser("train", help="train a SentencePiece BPE tokenizer with Salamandra's settings",
                       description="Train a SentencePiece BPE tokenizer (byte fallback, split digits, "
                       "NFC, whitespace-run pieces, control and reserved tokens) on text sampled per "
                       "language with a temperature; writes MODEL and its settings record "
                       "MODEL_STEM.settings.json.")
    p.add_argument("--input", nargs="+", required=True, metavar="FILE_OR_DIR")
    p.add_argument("--output", required=True, metavar="MODEL", help="path of the .model to write")
    p.add_argument("--vocab-size", type=_float_int, default=256_000)
    p.add_argument("--temperature", type=float, default=3.0,
                   help="language sampling temperature: share ~ natural_share^(1/T); 1 = natural (default 3)")
    p.add_argument("--sample-bytes", type=_float_int, default=1_000_000_000,
                   help="bytes of text handed to SentencePiece (default 1e9)")
    p.add_argument("--text-key", default="text")
    p.add_argument("--lang-key", default="lang")
    p.add_argument("--lang", default=None, help="language of every document (instead of --lang-key)")
    p.add_argument("--reserved-tokens", type=int, default=100, help="number of <|reserved_token_N|> (default 100)")
    p.add_argument("--character-coverage", type=float, default=0.9999)
    p.add_argument("--no-dummy-prefix", action="store_true", help="do not prepend a space to each text")
    p.add_argument("--threads", type=int, default=None, help="default: every core")
    p.add_argument("--seed", type=int, default=1234)


def _add_tokenize(sub) -> None:
    p = sub.add_parser("tokenize", help="tokenize a corpus into Megatron indexed datasets, one per language",
                       description="Tokenize JSONL (plain, .gz, .zst), Parquet or saved Hugging Face datasets "
                       "into PREFIX_<lang>.bin/.idx (EOD after each document), PREFIX.stats.json and "
                       "PREFIX.data.yaml (the shards as a data config).")
    p.add_argument("--input", nargs="+", required=True, metavar="FILE_OR_DIR")
    p.add_argument("--tokenizer", required=True, metavar="MODEL")
    p.add_argument("--output-prefix", required=True, metavar="PREFIX")
    p.add_argument("--lang", default=None, help="language of every document (default: the --lang-key field)")
    p.add_argument("--text-key", default="text")
    p.add_argument("--lang-key", default="lang")
    p.add_argument("--workers", type=int, default=None, help="encoding processes (default: every core)")
    p.add_argument("--strict", action="store_true", help="stop at the first bad record")
    p.add_argument("--max-chars", type=_float_int, default=10_000_000,
                   help="skip documents longer than this many characters (default 1e7)")
    p.add_argument("--force", action="store_true", help="redo a finished run / overwrite another run's outputs")
    p.add_argument("--no-progress", action="store_true")


def _add_mixture(sub) -> None:
    p = sub.add_parser("mixture", help="show the language mixture a data config gives",
                       description="CONFIG: a YAML file of data config fields (configs/data/*.yaml style, "
                       "or a run config with a data: section) and/or PREFIX.stats.json files from "
                       "`alia-data tokenize`; key=value overrides (Hydra style) follow, e.g. multipliers.eu=3. "
                       "data=NAME reads the data group file NAME (packaged, or DIR/data/NAME.yaml with --config-dir DIR).")
    p.add_argument("config", nargs="+", metavar="CONFIG_OR_OVERRIDE")
    from alia_train.cli.config_dirs import add_config_dir_option

    add_config_dir_option(p)
    p.add_argument("--tokens", type=float, default=None,
                   help="tokens the training run will see (default: the corpus size)")
    p.add_argument("--max-epochs", type=float, default=4.0, help="warn above this many repetitions (default 4)")


def _add_verify(sub) -> None:
    p = sub.add_parser("verify", help="check shard sets against their manifests (SHA-256 of every file)",
                       description="Read every file of each shard set and compare its size and SHA-256 with "
                       "PREFIX.stats.json. When all match, record the files' current modification times, which "
                       "alia-train's start-up check compares (a copy without -p changes them).")
    p.add_argument("prefix", nargs="+", metavar="PREFIX", help="an --output-prefix of alia-data tokenize")


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog="alia-data", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    tok = sub.add_parser("tokenizer", help="tokenizer commands")
    _add_tokenizer_train(tok.add_subparsers(dest="action", required=True))
    _add_tokenize(sub)
    _add_mixture(sub)
    _add_verify(sub)
    return parser


def _cmd_tokenizer_train(a) -> int:
    from alia_train.data.tokenizer_train import TokenizerTrainOptions, settings_path, train_tokenizer

    opts = TokenizerTrainOptions(
        inputs=a.input, output=a.output, vocab_size=a.vocab_size, temperature=a.temperature,
        sample_bytes=a.sample_bytes, text_key=a.text_key, lang_key=a.lang_key, lang=a.lang,
        num_reserved=a.reserved_tokens, character_coverage=a.character_coverage,
        add_dummy_prefix=not a.no_dummy_prefix, threads=a.threads, seed=a.seed,
    )
    record = train_tokenizer(opts, log=lambda m: print(m, file=sys.stderr))
    print(f"wrote {a.output} (vocab {a.vocab_size:,}, sha256 {record['sha256'][:12]}) and {settings_path(a.output)}")
    return EXIT_OK


def _cmd_tokenize(a) -> int:
    from alia_train.data.tokenize import TokenizeOptions, stats_path, tokenize

    opts = TokenizeOptions(
        inputs=a.input, tokenizer=a.tokenizer, output_prefix=a.output_prefix, lang=a.lang,
        text_key=a.text_key, lang_key=a.lang_key, workers=a.workers, strict=a.strict,
        max_chars=a.max_chars, force=a.force, progress=not a.no_progress,
    )
    stats = tokenize(opts, log=lambda m: print(m, file=sys.stderr), hold=prefix_lock)
    print(format_stats(stats))
    print(f"stats: {stats_path(opts.output_prefix)}")
    return EXIT_OK


@contextmanager
def prefix_lock(prefix: str) -> Iterator[None]:
    """PREFIX.lock, taken like a run directory's lock (parallel/run_lock.py: a live holder
    refuses, a dead one's lock is broken): the second of two runs writing one shard set is
    refused in one line, instead of both succeeding and one set replacing the other."""
    from alia_train.parallel.run_lock import RunLock, RunLockedError

    lock = RunLock(os.path.dirname(prefix), path=f"{prefix}.lock", subject=f"output prefix {prefix}")
    try:
        lock.acquire()
    except RunLockedError as e:
        raise ValueError(str(e)) from None
    lock.start_heartbeat(on_lost=_lost_lock)
    try:
        yield
    finally:
        lock.release()


def _lost_lock(e: Exception) -> None:
    report_error("alia-data", str(e))
    os._exit(EXIT_LOCK_LOST)  # from the heartbeat thread: stop before publishing over the other set


def format_stats(stats: dict) -> str:
    lines = [f"{'lang':<8}{'documents':>12}{'tokens':>16}{'bytes':>16}  output"]
    for lang, o in stats["outputs"].items():
        lines.append(f"{lang:<8}{o['documents']:>12,}{o['tokens']:>16,}{o['bytes']:>16,}  {o['path']}.bin/.idx")
    t = stats["totals"]
    lines.append(f"{'total':<8}{t['documents']:>12,}{t['tokens']:>16,}{t['bytes']:>16,}")
    if stats.get("bytes_per_s"):
        lines.append(f"{human(stats['bytes_per_s'], 'B/s')} with {stats['workers']} workers "
                     f"in {stats['elapsed_s']:.1f} s")
    for reason, s in stats["skipped"].items():
        first = ", ".join(s["first"][:3])
        lines.append(f"skipped {s['count']:,} ({reason.replace('_', ' ')}), first at {first}")
    return "\n".join(lines)


def _cmd_verify(a) -> int:
    from alia_train.data.manifest import manifest_problem, read_manifest, record_times, stats_path

    for raw in a.prefix:
        prefix = os.path.abspath(raw.removesuffix(".stats.json"))
        path = stats_path(prefix)
        with prefix_lock(prefix):  # not while a tokenize run publishes into it
            manifest = read_manifest(path)
            if manifest is None:
                raise ValueError(f"{path}: no shard-set manifest; give the --output-prefix of an alia-data "
                                 "tokenize run")
            problem = manifest_problem(path, manifest, deep=True)
            if problem is not None:
                raise ValueError(f"{problem}; re-tokenize it (alia-data tokenize --force)")
            changed = record_times(path, manifest)
        print(f"{prefix}: {len(manifest['files'])} files match their SHA-256 in {path}"
              + ("; their new modification times are recorded" if changed else ""))
    return EXIT_OK


def _cmd_mixture(a) -> int:
    from alia_train.data.config_io import load_data_config
    from alia_train.data.indexed import resolve_path
    from alia_train.data.mixture import format_mixture_plan, plan_mixture

    from alia_train.config.load import group_file

    groups = [c for c in a.config if c.startswith("data=")]  # a data group, as alia-train's data=NAME
    files = [c for c in a.config if "=" not in c] + [str(group_file("data", g[5:], a.config_dirs)) for g in groups]
    overrides = [c for c in a.config if "=" in c and c not in groups]
    if not files:
        raise ValueError("mixture: give a data config (YAML) or PREFIX.stats.json files")
    data = load_data_config(files, overrides)
    for s in data.sources:
        s.path = resolve_path(s.path)
    plan = plan_mixture(data.sources, data.multipliers, data.default_multiplier, a.tokens)
    print(format_mixture_plan(plan, a.max_epochs))
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # Overrides may follow options (`mixture cfg.yaml --tokens 1e12 multipliers.eu=3`), which
    # argparse's positionals cannot express: collect them from what it leaves over.
    args, extra = parser.parse_known_args(argv)
    if extra:
        if args.command != "mixture" or any(e.startswith("-") or "=" not in e for e in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.config += extra
    try:
        if args.command == "tokenizer":
            return _cmd_tokenizer_train(args)
        if args.command == "tokenize":
            return _cmd_tokenize(args)
        if args.command == "verify":
            return _cmd_verify(args)
        return _cmd_mixture(args)
    except KeyboardInterrupt:
        print("alia-data: interrupted; no partly written set was published", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (ValueError, OSError) as e:  # our errors derive from ValueError
        return report_error("alia-data", error_line(e), EXIT_CONFIG)


def error_line(e: Exception) -> str:
    """One line for a user's mistake: our messages as they are, OS errors with their file."""
    if isinstance(e, OSError) and e.strerror:
        text = f"{e.filename}: {e.strerror}" if e.filename else e.strerror
    else:
        text = str(e)
    return " ".join(text.split())


if __name__ == "__main__":
    sys.exit(main())
