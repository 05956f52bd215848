"""`alia-convert`: Hugging Face LlamaForCausalLM <-> alia-train checkpoints, and a run's checkpoint
in the portable form (for another parallel layout)."""

from __future__ import annotations

import argparse
import importlib
import re
import sys
from pathlib import Path

from alia_train.cli.config_dirs import add_config_dir_option
from alia_train.cli.errors import report_error
from alia_train.parallel.quiet import quiet_libraries
from alia_train.exit_codes import EXIT_CONFIG, EXIT_INTERRUPTED, EXIT_OK

DESCRIPTION = """Convert between alia-train checkpoints and Hugging Face LlamaForCausalLM directories.

  alia-convert to-hf RUN_DIR_OR_CHECKPOINT OUT_DIR [--dtype bf16|fp32]
      Export a checkpoint of any TP/PP/DP layout (a run dir means its latest checkpoint):
      config.json, generation_config.json, sharded safetensors with their index, and the
      tokenizer (tokenizer.model, tokenizer.json, tokenizer_config.json).

  alia-convert from-hf HF_DIR OUT_DIR [--config-dir DIR] +model=NAME [key=value ...]
      Import Hugging Face weights (checked against the model config) as a checkpoint to
      train from:  alia-train +model=NAME checkpoint.load=OUT_DIR data.tokenizer=OUT_DIR/tokenizer.model

Both stream tensor by tensor and write OUT_DIR all at once or not at all.
See docs/huggingface.md.

  torchrun --nproc_per_node=N --no-python alia-convert portable RUN_DIR
      Rewrite RUN_DIR's newest checkpoint with the distributed optimizer's state in the
      portable form, which any TP / PP / DP / CP layout loads (routine checkpoints reshard over
      DP and CP only). Run it with a multiple of the checkpoint's TP x PP x CP processes;
      alia-train does it by itself where its own processes fit. See docs/cluster.md.
"""

_DTYPES = {"bf16": "bfloat16", "fp32": "float32", "fp16": "float16"}
# What each direction imports from the [hf] extra (transformers itself is for using the output).
_HF_EXTRA = {"to-hf": ("safetensors", "tokenizers", "google.protobuf"), "from-hf": ("safetensors", "google.protobuf")}


class _OneLineParser(argparse.ArgumentParser):
    """A mistake in the command line in one line and exit 2, like every other alia-convert error
    (argparse's own: a usage block, then `alia-convert to-hf: error: ...`)."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(EXIT_CONFIG, f"alia-convert: error: {message}; see `{self.prog} --help`\n")


def _size(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?B)?\s*", text, re.IGNORECASE)
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 5GB, 500MB, 1000000)")
    scale = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}[m.group(2).upper()]
    return int(float(m.group(1)) * scale)


def _parser() -> argparse.ArgumentParser:
    p = _OneLineParser(prog="alia-convert", description=DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="{to-hf,from-hf,portable}")
    sub.add_parser("portable", help="rewrite a run's newest checkpoint for another parallel layout").add_argument(
        "run_dir", metavar="RUN_DIR")

    t = sub.add_parser("to-hf", help="export a checkpoint as a Hugging Face LlamaForCausalLM directory")
    t.add_argument("source", metavar="RUN_DIR_OR_CHECKPOINT")
    t.add_argument("out_dir", metavar="OUT_DIR")
    t.add_argument("--dtype", choices=["bf16", "fp32", "fp16"], default="bf16", help="weights dtype (default bf16)")
    t.add_argument("--tokenizer", metavar="PATH",
                   help="the SentencePiece model, when it moved from the path recorded in the checkpoint "
                        "(its sha256 must match the recorded one)")
    t.add_argument("--max-shard-size", type=_size, default="5GB", metavar="SIZE",
                   help="largest safetensors file (default 5GB)")

    f = sub.add_parser("from-hf", help="import Hugging Face Llama weights as a checkpoint to train from")
    f.add_argument("hf_dir", metavar="HF_DIR")
    f.add_argument("out_dir", metavar="OUT_DIR")
    f.add_argument("overrides", nargs="*", metavar="+model=NAME [key=value ...]",
                   help="the model config (and parallel.tp, which sets the vocabulary padding)")
    f.add_argument("--dtype", choices=["auto", "bf16", "fp32"], default="auto",
                   help="checkpoint dtype (default: that of the Hugging Face weights)")
    f.add_argument("--tokenizer", metavar="PATH", help="SentencePiece model when HF_DIR has no tokenizer.model")
    add_config_dir_option(f)
    return p



def main(argv: list[str] | None = None) -> int:
    quiet_libraries()
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.command == "portable":
        return _portable(args.run_dir)
    from alia_train.convert.errors import ConversionError
    from alia_train.convert.staging import check_output_dir

    try:  # said at once, before torch's import
        _check_hf_extra(args.command)
        check_output_dir(args.out_dir)
    except ConversionError as e:
        return report_error("alia-convert", str(e))
    return _convert(args)


def _check_hf_extra(command: str) -> None:
    from alia_train.convert.errors import ConversionError

    for module in _HF_EXTRA[command]:
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise ConversionError(f"{module} cannot be imported ({e}): alia-convert {command} needs the [hf] extra; "
                                  "pip install 'alia-train[hf]'") from None


def _convert(args: argparse.Namespace) -> int:
    import torch

    from alia_train.config.load import ConfigError
    from alia_train.convert.errors import ConversionError

    log = lambda msg: print(f"[alia-convert] {msg}", flush=True)  # noqa: E731
    try:
        if args.command == "to-hf":
            from alia_train.convert.to_hf import export_to_hf

            export_to_hf(args.source, args.out_dir, dtype=getattr(torch, _DTYPES[args.dtype]),
                         tokenizer=args.tokenizer, max_shard_bytes=args.max_shard_size, log=log)
        else:
            from alia_train.convert.from_hf import import_from_hf

            dtype = None if args.dtype == "auto" else getattr(torch, _DTYPES[args.dtype])
            import_from_hf(args.hf_dir, args.out_dir, args.overrides, dtype=dtype, tokenizer=args.tokenizer, log=log,
                           config_dirs=args.config_dirs)
    except (ConversionError, ConfigError) as e:
        return report_error("alia-convert", str(e))
    except KeyboardInterrupt:  # the staging directory is already gone: all or nothing
        print(f"alia-convert: interrupted (Ctrl-C); nothing was written to {args.out_dir}", file=sys.stderr,
              flush=True)
        return EXIT_INTERRUPTED
    return EXIT_OK


def _portable(run_dir: str) -> int:
    """The run's newest checkpoint, loaded by the config that wrote it and saved again portable."""
    from alia_train.training.startup import prepare_process

    prepare_process()
    from alia_train.parallel.launch_env import detect_launch_env
    from alia_train.training.errors import RunError
    from alia_train.training.run import RunOptions, open_run

    launch = detect_launch_env()
    try:
        cfg = _newest_checkpoint_config(run_dir)
        with open_run(cfg, launch, RunOptions(trackers=False, with_data=False)) as trainer:
            trainer.checkpoints.save(trainer.progress, blocking=True, portable=True)
            step = trainer.progress.step
    except RunError as e:
        return report_error("alia-convert", str(e), e.exit_code) if launch.rank == 0 else e.exit_code
    if launch.rank == 0:
        print(f"[alia-convert] step {step} of {run_dir} is portable now: any parallel layout resumes it", flush=True)
    return EXIT_OK


def _newest_checkpoint_config(run_dir: str):
    from megatron.core import dist_checkpointing

    from alia_train.checkpoint import directory
    from alia_train.config.load import ConfigError, config_from_yaml_text
    from alia_train.training.errors import RunError

    found = directory.candidates(run_dir)
    if not found:
        raise RunError(f"{run_dir}: no checkpoint to rewrite (give a run directory with checkpoints)")
    try:
        text = dist_checkpointing.load_common_state_dict(str(found[0])).get("config_yaml")
        cfg = config_from_yaml_text(text or "", str(found[0]))
    except (OSError, ConfigError) as e:
        raise RunError(f"{found[0]}: cannot read the config that wrote it ({e})") from None
    cfg.run.dir, cfg.checkpoint.async_save, cfg.checkpoint.load = str(Path(run_dir).absolute()), False, None
    return cfg


if __name__ == "__main__":
    sys.exit(main())
