"""`alia-plan +model=NAME [key=value ...]`: will this run fit in GPU memory, how long will its
token budget take, and what do its checkpoints cost (size, host memory, save and load time)?
Same Hydra config as alia-train; the world size is cluster.nodes x cluster.gpus_per_node. Then
the smallest machines for the model: one GPU, one CPU process, and how many GPUs of the
cluster's size.

Exit codes: 0 fits, 1 does not fit (suggestions printed), 2 configuration error.
"""

from __future__ import annotations

import argparse
import sys

from alia_train.cli.config_dirs import add_config_dir_option
from alia_train.cli.errors import report_error
from alia_train.parallel.quiet import quiet_libraries
from alia_train.exit_codes import EXIT_DOES_NOT_FIT, EXIT_OK

EPILOG = """examples:
  alia-plan +model=alia_40b cluster=marenostrum5 cluster.nodes=256
  alia-plan --config-dir ~/my_confs +model=alia_40b cluster=my_site
  alia-plan +model=alia_40b cluster=marenostrum5 cluster.nodes=256 --tokens 9.37e12
  alia-plan +model=salamandra_7b cluster=marenostrum5 cluster.nodes=128 train.micro_batch_size=4
  alia-plan +model=salamandra_2b --machines cluster.gpu_memory_gb=24
exit codes (without --machines): 0 fits, 1 does not fit, 2 configuration error. See docs/cluster.md."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="alia-plan",
        description="Per-GPU memory, time to a token budget and checkpoint costs for an alia-train configuration.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("overrides", nargs="*", help="Hydra overrides, as for alia-train (+model=NAME ...)")
    add_config_dir_option(p)
    p.add_argument("--tokens", type=float, default=None,
                   help="token budget (e.g. 9.37e12); default train.steps x global batch x seq length")
    p.add_argument("--mfu", type=float, default=None, help="assumed MFU (default cluster.assumed_mfu)")
    p.add_argument("--vocab-size", type=int, default=None,
                   help="tokenizer vocabulary when model.vocab_size is null (default: read the tokenizer)")
    p.add_argument("--machines", action="store_true",
                   help="only the smallest machines for the model: one GPU, one CPU process, GPUs of "
                        "cluster.gpu_memory_gb (planned for one model copy: no cluster size needed)")
    return p



def _tokenizer_vocab(cfg) -> int | None:
    try:
        from alia_train.data.tokenizer import load_tokenizer

        return load_tokenizer(cfg.data.tokenizer).vocab_size
    except Exception:  # a missing/unreadable tokenizer is reported as an unknown vocab below
        return None


def main(argv: list[str] | None = None) -> int:
    quiet_libraries()
    args = _parser().parse_intermixed_args(sys.argv[1:] if argv is None else argv)
    from alia_train.config.load import ConfigError, load_config
    from alia_train.plan import format_run_plan, plan_run
    from alia_train.plan.levers import smallest_machines
    from alia_train.plan.plan_text import format_smallest_machines

    if args.mfu is not None and not 0 < args.mfu <= 1:
        return report_error("alia-plan", f"--mfu: must be in (0, 1], got {args.mfu}")
    if args.tokens is not None and args.tokens <= 0:
        return report_error("alia-plan", f"--tokens: must be positive, got {args.tokens}")
    try:
        cfg = load_config(args.overrides, args.config_dirs)
    except ConfigError as e:
        return report_error("alia-plan", str(e))
    world_size = cfg.cluster.nodes * cfg.cluster.gpus_per_node
    if args.machines:  # one model copy: the smallest job the configured layout accepts
        world_size = cfg.parallel.tp * cfg.parallel.pp * cfg.parallel.cp
    if world_size <= 0:
        return report_error("alia-plan", f"cluster: nodes x gpus_per_node must be positive, got {cfg.cluster.nodes} x {cfg.cluster.gpus_per_node}")
    vocab = args.vocab_size or cfg.model.vocab_size or _tokenizer_vocab(cfg)
    plan = plan_run(cfg, world_size, vocab, tokens=args.tokens, mfu=args.mfu)
    if plan.layout is None:  # the config itself is wrong, memory was not estimated
        return report_error("alia-plan", "\n".join(plan.problems))
    machines = format_smallest_machines(cfg.model.name, cfg.train.seq_length,
                                        smallest_machines(cfg, vocab, plan.capacity_gib))
    if args.machines:
        print(machines)
        return EXIT_OK
    print(format_run_plan(plan) + "\n\n" + machines)
    return EXIT_OK if plan.fits else EXIT_DOES_NOT_FIT


if __name__ == "__main__":
    sys.exit(main())
