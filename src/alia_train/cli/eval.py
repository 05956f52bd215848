"""`alia-eval RUN_DIR --tasks LIST`: lm-evaluation-harness on a run's checkpoints, scores
appended to RUN_DIR/evals.jsonl (alia_train.eval has the loop; this module parses, reads the
checkpoints through alia_train.convert and reports)."""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
from pathlib import Path

from alia_train.cli.config_dirs import add_config_dir_option
from alia_train.cli.errors import report_error
from alia_train.exit_codes import EXIT_CONFIG, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK
from alia_train.parallel.quiet import quiet_libraries

PROG = "alia-eval"
DESCRIPTION = """Score a run's checkpoints with lm-evaluation-harness (the [eval] extra) and append
one row per step, task and metric to RUN_DIR/evals.jsonl; checkpoints already scored with the
same tasks and settings are skipped, so it is safe to run after every save. `alia-report RUN_DIR`
then draws each task over steps. See docs/evaluation.md."""

EPILOG = """examples:
  alia-eval runs/tiny --tasks local                       # the shipped es/ca/eu/gl task, offline
  alia-eval runs/alia_40b --tasks iberian --checkpoints latest --device cuda
  alia-eval runs/x --tasks arc_easy,piqa --checkpoints 1000,2000 --num-fewshot 5 --limit 200
  HF_DATASETS_OFFLINE=0 alia-eval --download --tasks iberian   # on a login node: fill the cache
task sets (--tasks NAME): configs/eval/NAME.yaml, or DIR/eval/NAME.yaml with --config-dir DIR
"""


def _limit(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r} (a count of examples per task, or a fraction < 1)")
    if value <= 0:
        raise argparse.ArgumentTypeError("must be positive")
    return value


def _batch_size(text: str) -> int | str:
    if text == "auto" or text.startswith("auto:"):
        return text
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a positive number, or auto")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a number >= 0")
    return value


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", metavar="RUN_DIR", nargs="?", help="a run directory (holds checkpoints/)")
    p.add_argument("--tasks", required=True, metavar="LIST",
                   help="comma-separated task sets (configs/eval: local, iberian, iberian_mc) and lm-eval tasks/groups")
    p.add_argument("--include-path", action="append", default=[], metavar="DIR",
                   help="a directory of your own lm-eval task YAMLs (repeatable)")
    p.add_argument("--checkpoints", default="all", metavar="all|latest|S1,S2,...", help="which (default all)")
    p.add_argument("--num-fewshot", type=_count, default=None, metavar="N", help="few-shot examples (default: each task's)")
    p.add_argument("--limit", type=_limit, default=None, metavar="N",
                   help="at most N examples per task (a fraction if < 1): for quick looks, not for reporting")
    p.add_argument("--device", default="auto", metavar="auto|cpu|cuda",
                   help="cuda: the visible GPUs, one model split over them if it needs more than one (default auto)")
    p.add_argument("--batch-size", type=_batch_size, default=None, metavar="N|auto",
                   help="requests per forward pass (default: 16 on CPU, auto on GPU)")
    p.add_argument("--dtype", choices=["auto", "bf16", "fp32", "fp16"], default="auto",
                   help="weights dtype (default: bf16 on GPU, fp32 on CPU)")
    p.add_argument("--via", choices=["memory", "export"], default="memory",
                   help="memory: build the model in this process (default); export: alia-convert to-hf into a "
                        "temporary directory and load that (slower; for comparison)")
    p.add_argument("--wandb", choices=["online", "offline", "disabled"], default=None,
                   help="W&B for the scores (default: the run's logging.wandb.mode)")
    p.add_argument("--tokenizer", metavar="PATH", help="the SentencePiece model, if it moved since training")
    p.add_argument("--download", action="store_true",
                   help="only download the tasks' datasets into the Hugging Face cache (no RUN_DIR)")
    p.add_argument("-v", "--verbose", action="store_true", help="lm-eval's own logging and progress bars")
    add_config_dir_option(p)
    return p


def _open_checkpoint(tokenizer: str | None):
    """path -> ModelSource: the checkpoint's HF config, tensors and tokenizer, via convert/."""
    from alia_train.convert.dist_reader import DistCheckpointReader
    from alia_train.convert.errors import ConversionError
    from alia_train.convert.hf_config import arch_of, llama_config, model_config_from_yaml
    from alia_train.convert.to_hf import check_checkpoint_tensors, hf_tensors
    from alia_train.convert.tokenizer import check_tokenizer_file, load_proto, special_tokens, write_hf_tokenizer
    from alia_train.eval.errors import CheckpointError
    from alia_train.eval.hf_model import ModelSource

    def open_checkpoint(path: Path) -> ModelSource:
        try:
            return _read(path)
        except ConversionError as e:
            raise CheckpointError(str(e)) from None

    def _read(path: Path) -> ModelSource:
        import torch

        reader = DistCheckpointReader(path)
        common = reader.common_state()
        if any(k not in common for k in ("config_yaml", "tokenizer")):
            raise ConversionError(f"{path}: the checkpoint's common state is not alia-train's (no config_yaml/tokenizer)")
        m = model_config_from_yaml(common["config_yaml"])
        tok = common["tokenizer"]
        a = arch_of(m, tok.get("vocab_size"))
        check_checkpoint_tensors(reader, a)
        tok_bytes = check_tokenizer_file(tokenizer or tok.get("path") or "", tok.get("sha256"), a.vocab_size)
        special = special_tokens(load_proto(tok_bytes))
        return ModelSource(
            step=int(common.get("progress", {}).get("step", 0)),
            config=llama_config(m, a.vocab_size, special, torch.float32),
            tensors=lambda: _tensors(reader, a),
            tokenizer_sha=tok.get("sha256") or str(len(tok_bytes)),
            write_tokenizer=lambda out: write_hf_tokenizer(tok_bytes, out, m.max_position_embeddings),
        )

    def _tensors(reader, a):
        try:
            yield from hf_tensors(reader, a)
        except ConversionError as e:  # read lazily, as the model is built
            raise CheckpointError(str(e)) from None

    return open_checkpoint


def _export(tokenizer: str | None):
    def export(path: Path, out: Path, dtype) -> None:
        from alia_train.convert.errors import ConversionError
        from alia_train.convert.to_hf import export_to_hf
        from alia_train.eval.errors import CheckpointError

        try:
            export_to_hf(path, out, dtype=dtype, tokenizer=tokenizer, log=lambda _: None)
        except ConversionError as e:
            raise CheckpointError(str(e)) from None

    return export


def _download(names: list[str], sets: list[str], include_paths: list[Path], log) -> int:
    from alia_train.eval import harness

    harness.quiet(verbose=False)
    tm = harness.task_manager(names, include_paths)
    harness.check_names(tm, names, sets)
    for name in names:
        loaded = harness.load_tasks(tm, name, ",".join(names))
        log(f"{name}: {len(loaded['tasks'])} task(s) ready in the Hugging Face cache")
    return EXIT_OK


def _report(summary, log) -> None:
    if not summary.scored:
        return
    per = statistics.median(summary.seconds)
    load = statistics.median(summary.load_seconds)
    log(f"scored {summary.scored} checkpoint(s) ({summary.rows} rows) in {sum(summary.seconds):.1f} s: "
        f"{per:.1f} s per checkpoint (median; building the model {load:.1f} s); "
        f"{summary.skipped} already scored")


def main(argv: list[str] | None = None) -> int:
    quiet_libraries()
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    log = lambda msg: print(f"[{PROG}] {msg}", flush=True)  # noqa: E731
    if not args.verbose:
        # tqdm reads TQDM_* once, when imported: lm-eval's per-task bars have no switch of their own.
        os.environ.setdefault("TQDM_DISABLE", "1")
    missing = [m for m in ("lm_eval", "transformers") if importlib.util.find_spec(m) is None]
    if missing:
        return report_error(PROG, f"{missing[0]} is not installed: alia-eval needs the [eval] extra "
                                  "(pip install 'alia-train[eval]')")
    from alia_train.eval import EvalError, EvalOptions, run_eval, task_sets
    from alia_train.eval.checkpoints import parse_selection

    import torch

    open_checkpoint = _open_checkpoint(args.tokenizer)
    includes = [Path(p) for p in args.include_path]
    try:
        for p in includes:
            if not p.is_dir():
                raise EvalError(f"--include-path {p}: no such directory")
        names = task_sets.expand(args.tasks, args.config_dirs)
        if args.download:
            return _download(names, task_sets.set_names(args.config_dirs), includes, log)
        if args.run_dir is None:
            raise EvalError("RUN_DIR is missing: alia-eval RUN_DIR --tasks LIST (or --download to fill the cache)")
        opts = EvalOptions(names=names, spec=args.tasks, sets=task_sets.set_names(args.config_dirs), include_paths=includes,
                           checkpoints=parse_selection(args.checkpoints), num_fewshot=args.num_fewshot,
                           limit=args.limit, device=args.device, dtype=args.dtype, batch_size=args.batch_size,
                           via=args.via, wandb=args.wandb, verbose=args.verbose)
        summary = run_eval(Path(args.run_dir), opts, open_checkpoint, _export(args.tokenizer), log)
    except EvalError as e:
        return report_error(PROG, str(e), EXIT_CONFIG)
    except torch.OutOfMemoryError:
        return report_error(PROG, "out of GPU memory: give a smaller --batch-size (the rows written so far are "
                                  "kept; the same command goes on)", EXIT_FAILED)
    except KeyboardInterrupt:
        return report_error(PROG, "interrupted: the rows written so far are kept; run it again to go on",
                            EXIT_INTERRUPTED)
    _report(summary, log)
    if summary.failed:
        return report_error(PROG, f"{len(summary.failed)} checkpoint(s) could not be read: "
                                  + "; ".join(summary.failed), EXIT_FAILED)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
