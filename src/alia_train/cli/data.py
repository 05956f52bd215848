"""`alia-data`: tokenizer training, corpus tokenization and mixture planning.

    alia-data tokenizer train --input DIR... --output tok.model [--vocab-size 256000]
    alia-data tokenize --input FILE_OR_DIR... --tokenizer tok.model --output-prefix out/corpus
    alia-data tokenize --input ... --tokenizer tok.model --output-dir DIR --tasks N {--plan | --task I}
    alia-data merge DIR
    alia-data mixture CONFIG_OR_STATS... [key=value ...] [--tokens 12.875e12]
    alia-data verify PREFIX...

Defaults are the data modules' own (their options dataclasses and signatures), read here, not
repeated. Imports stay light: `tokenize` must start fast and never load torch or megatron-core.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from alia_train.cli.errors import report_error
from alia_train.exit_codes import EXIT_CONFIG, EXIT_INTERRUPTED, EXIT_LOCK_LOST, EXIT_OK
from alia_train.parallel.run_lock import RunLockLostError
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


def _defaults(cls) -> dict[str, object]:
    """A dataclass's field defaults: argparse takes them from here, so each is written once."""
    return {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}


def _e(n: float) -> str:
    """1e+09 -> 1e9, as the number options accept it."""
    return f"{n:g}".replace("e+0", "e").replace("e+", "e")


def _add_tokenizer_train(sub) -> None:
    from alia_train.data.tokenizer_train import TokenizerTrainOptions

    d = _defaults(TokenizerTrainOptions)
    p = sub.add_parser("train", help="train a SentencePiece BPE tokenizer with Salamandra's settings",
                       description="Train a SentencePiece BPE tokenizer (byte fallback, split digits, "
                       "NFC, whitespace-run pieces, control and reserved tokens) on text sampled per "
                       "language with a temperature; writes MODEL and its settings record "
                       "MODEL_STEM.settings.json.")
    p.add_argument("--input", nargs="+", required=True, metavar="FILE_OR_DIR")
    p.add_argument("--output", required=True, metavar="MODEL", help="path of the .model to write")
    p.add_argument("--vocab-size", type=_float_int, default=d["vocab_size"], help=f"(default {d['vocab_size']:,})")
    p.add_argument("--temperature", type=float, default=d["temperature"],
                   help="language sampling temperature: share ~ natural_share^(1/T); 1 = natural "
                   f"(default {d['temperature']:g})")
    p.add_argument("--sample-bytes", type=_float_int, default=d["sample_bytes"],
                   help=f"bytes of text handed to SentencePiece (default {_e(d['sample_bytes'])})")
    p.add_argument("--text-key", default=d["text_key"])
    p.add_argument("--lang-key", default=d["lang_key"])
    p.add_argument("--lang", default=d["lang"], help="language of every document (instead of --lang-key)")
    p.add_argument("--reserved-tokens", dest="num_reserved", type=int, default=d["num_reserved"],
                   help=f"number of <|reserved_token_N|> (default {d['num_reserved']})")
    p.add_argument("--character-coverage", type=float, default=d["character_coverage"])
    p.add_argument("--no-dummy-prefix", dest="add_dummy_prefix", action="store_false",
                   default=d["add_dummy_prefix"], help="do not prepend a space to each text")
    p.add_argument("--threads", type=int, default=d["threads"], help="default: every core")
    p.add_argument("--seed", type=int, default=d["seed"])


def _add_tokenize(sub) -> None:
    from alia_train.data.corpus_plan import DEFAULT_SET_BYTES
    from alia_train.data.tokenize import TokenizeOptions

    d = _defaults(TokenizeOptions)
    p = sub.add_parser("tokenize", help="tokenize a corpus into Megatron indexed datasets, one per language",
                       description="Tokenize JSONL (plain, .gz, .zst), Parquet or saved Hugging Face datasets "
                       "into PREFIX_<lang>.bin/.idx (EOD after each document), PREFIX.stats.json and "
                       "PREFIX.data.yaml (the shards as a data config). With --output-dir DIR --tasks N the "
                       "inputs are split by size into N tasks (DIR/plan.json): --plan writes the plan and "
                       "prints the unfinished tasks, --task I tokenizes task I's shard sets; then "
                       "`alia-data merge DIR`. scripts/slurm/tokenize.sh does all three on Slurm.")
    p.add_argument("--input", nargs="+", required=True, metavar="FILE_DIR_OR_GLOB")
    p.add_argument("--tokenizer", required=True, metavar="MODEL")
    out = p.add_mutually_exclusive_group(required=True)
    out.add_argument("--output-prefix", metavar="PREFIX", help="one shard set: PREFIX_<lang>.bin/.idx ...")
    out.add_argument("--output-dir", metavar="DIR", help="a corpus split into --tasks N tasks of shard sets")
    p.add_argument("--lang", default=d["lang"], help="language of every document (default: the --lang-key field)")
    p.add_argument("--text-key", default=d["text_key"])
    p.add_argument("--lang-key", default=d["lang_key"])
    p.add_argument("--lang-from-path", default=d["lang_from_path"], metavar="RULE",
                   help="each input's language from its path: dir (its folder's name), name (its file name up "
                   "to the first '.', '_' or '-') or a regex whose first group is the language")
    p.add_argument("--workers", type=int, default=d["workers"], help="encoding processes (default: every core)")
    p.add_argument("--strict", action="store_true", default=d["strict"], help="stop at the first bad record")
    p.add_argument("--max-chars", type=_float_int, default=d["max_chars"],
                   help=f"skip documents longer than this many characters (default {_e(d['max_chars'])})")
    p.add_argument("--force", action="store_true", default=d["force"],
                   help="redo a finished run / overwrite another run's outputs; with --output-dir and --plan: "
                   "replace a plan of other inputs or options")
    p.add_argument("--no-progress", dest="progress", action="store_false", default=d["progress"])
    g = p.add_argument_group("a corpus in tasks (with --output-dir)")
    g.add_argument("--tasks", type=int, default=None, metavar="N", help="number of tasks the inputs are split into")
    what = g.add_mutually_exclusive_group()
    what.add_argument("--plan", action="store_true",
                      help="write (or check) DIR/plan.json and print the unfinished tasks' numbers on stdout")
    what.add_argument("--task", type=int, default=None, metavar="I", help="tokenize task I (0 to N-1)")
    g.add_argument("--set-bytes", type=_float_int, default=DEFAULT_SET_BYTES, metavar="BYTES",
                   help="input bytes per shard set: what a task cut short redoes at most "
                   f"(default {_e(DEFAULT_SET_BYTES)})")


def _add_merge(sub) -> None:
    p = sub.add_parser("merge", help="merge the tasks of alia-data tokenize --output-dir DIR into a data config",
                       description="Check that every task of DIR/plan.json finished, then write DIR/data.yaml "
                       "(every shard set with its language; also DIR/data/NAME.yaml for --config-dir DIR "
                       "data=NAME) and DIR/stats.json (per language documents, tokens, bytes; skipped "
                       "records by reason), and print the mixture table.")
    p.add_argument("dir", metavar="DIR", help="the --output-dir of alia-data tokenize")
    _add_mixture_table_options(p)


def _add_mixture_table_options(p) -> None:
    """--tokens and --max-epochs of the mixture table (merge and mixture print it)."""
    from alia_train.data.mixture import format_mixture_plan

    max_epochs = inspect.signature(format_mixture_plan).parameters["max_epochs"].default
    p.add_argument("--tokens", type=float, default=None,
                   help="tokens the training run will see (default: the corpus size)")
    p.add_argument("--max-epochs", type=float, default=max_epochs,
                   help=f"warn above this many repetitions (default {max_epochs:g})")


def _add_mixture(sub) -> None:
    p = sub.add_parser("mixture", help="show the language mixture a data config gives",
                       description="CONFIG: a YAML file of data config fields (configs/data/*.yaml style, "
                       "or a run config with a data: section) and/or PREFIX.stats.json files from "
                       "`alia-data tokenize`; key=value overrides (Hydra style) follow, e.g. multipliers.eu=3. "
                       "data=NAME reads the data group file NAME (packaged, or DIR/data/NAME.yaml with --config-dir DIR).")
    p.add_argument("config", nargs="+", metavar="CONFIG_OR_OVERRIDE")
    from alia_train.cli.config_dirs import add_config_dir_option

    add_config_dir_option(p)
    _add_mixture_table_options(p)


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
    _add_merge(sub)
    _add_mixture(sub)
    _add_verify(sub)
    return parser


def _options(cls, a: argparse.Namespace, **given):
    """`cls` (an options dataclass) from the parsed arguments of the same names."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{**{k: v for k, v in vars(a).items() if k in names}, **given})


def _err(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _cmd_tokenizer_train(a) -> int:
    from alia_train.data.tokenizer_train import TokenizerTrainOptions, settings_path, train_tokenizer

    opts = _options(TokenizerTrainOptions, a, inputs=a.input)
    record = train_tokenizer(opts, log=_err)
    print(f"wrote {a.output} (vocab {a.vocab_size:,}, sha256 {record['sha256'][:12]}) and {settings_path(a.output)}")
    return EXIT_OK


def _cmd_tokenize(a) -> int:
    from alia_train.data.tokenize import TokenizeOptions, stats_path, tokenize

    if a.output_dir is not None:
        return _cmd_tokenize_tasks(a)
    extra = [o for o, v in (("--tasks", a.tasks), ("--task", a.task), ("--plan", a.plan or None)) if v is not None]
    if extra:
        raise ValueError(f"{extra[0]} needs --output-dir DIR (a corpus in tasks), not --output-prefix")
    opts = _options(TokenizeOptions, a, inputs=a.input)
    stats = tokenize(opts, log=_err, hold=prefix_lock)
    print(format_stats(stats))
    print(f"stats: {stats_path(opts.output_prefix)}")
    return EXIT_OK


def _cmd_tokenize_tasks(a) -> int:
    """--output-dir: plan the split (--plan) or tokenize one task of it (--task I)."""
    from alia_train.data.corpus_plan import corpus_request, ensure_plan
    from alia_train.data.corpus_task import run_task
    from alia_train.data.tokenize import TokenizeOptions

    if a.tasks is None:
        raise ValueError("--output-dir needs --tasks N (the number of tasks the inputs are split into)")
    if not a.plan and a.task is None:
        raise ValueError("--output-dir: give --plan (write the plan, list unfinished tasks) or --task I")
    if a.force and not a.plan:
        raise ValueError("--force with --output-dir replaces the plan: give it with --plan, not to a task")
    if a.task is not None and not 0 <= a.task < a.tasks:
        raise ValueError(f"--task {a.task}: --tasks {a.tasks} has tasks 0 to {a.tasks - 1}")
    opts = _options(TokenizeOptions, a, inputs=a.input, output_prefix="")
    request = corpus_request(opts, a.tasks, a.set_bytes, check_fields=a.plan)
    plan = ensure_plan(a.output_dir, request, replace=a.force, log=_err)
    if a.plan:
        return _print_plan(plan)
    run_task(plan, a.task, a.workers, a.strict, a.progress, log=_err, hold=prefix_lock)
    return EXIT_OK


def _print_plan(plan) -> int:
    from alia_train.data.corpus_plan import array_ranges
    from alia_train.data.corpus_task import unfinished_tasks

    sizes = [sum(s.bytes for s in sets) for sets in plan.tasks]
    mean = sum(sizes) / len(sizes)
    _err(f"plan {plan.id} in {plan.root}: {len(plan.request['inputs'])} inputs, {human(sum(sizes), 'B')}, "
         f"in {len(sizes)} task(s) of {human(min(sizes), 'B')} to {human(max(sizes), 'B')} "
         f"(largest {max(sizes) / mean - 1:+.1%} over the mean), {sum(map(len, plan.tasks))} shard set(s)")
    todo = sorted(unfinished_tasks(plan))
    _err(f"finished: {len(sizes) - len(todo)} of {len(sizes)}" + (f"; to do: {array_ranges(todo)}" if todo else ""))
    print(array_ranges(todo))  # the --array list of scripts/slurm/tokenize.sh
    return EXIT_OK


def _cmd_merge(a) -> int:
    from alia_train.data.config_io import load_data_config
    from alia_train.data.corpus_merge import format_summary, merge
    from alia_train.data.mixture import format_mixture_plan, plan_mixture

    m = merge(a.dir)
    print(format_summary(m))
    data = load_data_config([m.paths[0]])
    plan = plan_mixture(data.sources, data.multipliers, data.default_multiplier, a.tokens, counts=m.counts)
    print()
    print(format_mixture_plan(plan, a.max_epochs))
    print(f"\nwrote {', '.join(m.paths)}\ntrain on it: alia-train --config-dir {m.plan.root} data={m.name} ...")
    return EXIT_OK


@contextmanager
def prefix_lock(prefix: str) -> Iterator[Callable[[], None]]:
    """PREFIX.lock, taken like a run directory's lock (parallel/run_lock.py: a live holder
    refuses, a dead one's lock is broken): the second of two runs writing one shard set is
    refused in one line, instead of both succeeding and one set replacing the other. Yields
    tokenize's check before publishing; a lock taken over stops the run (data/lost_lock.py)."""
    from alia_train.data.lost_lock import stop_at_once
    from alia_train.parallel.run_lock import RunLock, RunLockedError

    lock = RunLock(os.path.dirname(prefix), path=f"{prefix}.lock", subject=f"output prefix {prefix}")
    try:
        lock.acquire()
    except RunLockedError as e:
        raise ValueError(str(e)) from None
    lock.start_heartbeat(on_lost=lambda e: stop_at_once(prefix, f"alia-data: error: {lost_lock_line(e)}"))
    try:
        yield lambda: lock.heartbeat(force=True)
    finally:
        lock.release()  # only if still ours: the new holder's lock is left alone


def lost_lock_line(e: Exception) -> str:
    return f"{e}; nothing more was published into it: run the same command again once the other has finished"


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
        if args.command == "merge":
            return _cmd_merge(args)
        return _cmd_mixture(args)
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM (scancel, a time limit) during a tokenize run
        print(f"alia-data: {_interrupted(e, args.command)}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except RunLockLostError as e:  # found just before publishing: nothing was
        return report_error("alia-data", lost_lock_line(e), EXIT_LOCK_LOST)
    except (ValueError, OSError) as e:  # our errors derive from ValueError
        return report_error("alia-data", error_line(e), EXIT_CONFIG)


def _interrupted(e: KeyboardInterrupt, command: str) -> str:
    from alia_train.data.publish import InterruptedAfterPublishing

    if command != "tokenize":
        return "interrupted; nothing partly written was published"
    if isinstance(e, InterruptedAfterPublishing):
        return (f"interrupted while publishing: the set was completed first ({e.args[0]} vouches for it), "
                "then stopped; run the same command again for anything left (it finds that set up to date)")
    return ("interrupted; the set being written was not published: what was already there is untouched "
            "(run the same command again to redo it)")


def error_line(e: Exception) -> str:
    """One line for a user's mistake: our messages as they are, OS errors with their file."""
    if isinstance(e, OSError) and e.strerror:
        text = f"{e.filename}: {e.strerror}" if e.filename else e.strerror
    else:
        text = str(e)
    return " ".join(text.split())


if __name__ == "__main__":
    sys.exit(main())
