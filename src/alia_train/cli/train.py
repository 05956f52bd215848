"""`alia-train +model=NAME [key=value ...]`: train (or resume) a run."""

from __future__ import annotations

import os
import sys

from alia_train.cli.errors import report_error
from alia_train.exit_codes import EXIT_CONFIG, EXIT_OK

USAGE = """usage: alia-train [--config-dir DIR] +model=NAME [key=value ...]

Trains a Salamandra-family model; resumes from run.dir's latest checkpoint if there is one.
  models:     {models}
  examples:   alia-train +model=tiny
              alia-train +model=tiny train.steps=50 run.dir=runs/try1
              torchrun --nproc_per_node=2 --no-python alia-train +model=tiny parallel.tp=2
Config groups (configs/): model parallel optim train data checkpoint logging cluster.
  --config-dir DIR  your own groups too: DIR/data/my_mix.yaml -> data=my_mix (repeatable)
See docs/configuration.md for every key.
"""



def _first_rank() -> bool:
    """Rank 0 of the job (torchrun's RANK, Slurm's SLURM_PROCID), or a single process. Config
    errors and launch refusals are the same on every rank: only this one prints them."""
    from alia_train.parallel.launch_env import detect_launch_env

    return detect_launch_env().rank == 0


def main(argv: list[str] | None = None) -> int:
    # First, before any slow import: a SIGUSR1/SIGTERM from Slurm during start-up is remembered
    # (acted on at the first step), and helper processes survive the job's signals.
    from alia_train.parallel.child_processes import install as install_child_rules
    from alia_train.training.signals import install_stop_handler

    install_stop_handler()
    install_child_rules()
    from alia_train.cli.quiet import quiet_libraries

    quiet_libraries()  # before megatron-core is imported: some of its warnings fire at import
    cfg = _load_config(list(sys.argv[1:] if argv is None else argv))
    if isinstance(cfg, int):
        return cfg
    if cfg.train.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # must happen before torch touches CUDA

    import torch

    from alia_train.parallel.cpu_compat import import_megatron
    from alia_train.parallel.launch_env import detect_launch_env

    launch = detect_launch_env()
    if not torch.cuda.is_available():
        from alia_train.cli.quiet import quiet_cpu_run

        quiet_cpu_run()
    import_megatron()  # on CPU ~3 s faster than a plain import (see cpu_compat)
    from alia_train.training.errors import RunError
    from alia_train.training.run import train

    try:
        return train(cfg, launch)
    except RunError as e:
        # Said once per node: a refusal can depend on the node (its memory, its GPUs, a path).
        if e.every_rank and launch.local_rank != 0:
            return e.exit_code
        return report_error("alia-train", str(e), e.exit_code)


def _load_config(argv: list[str]):
    """The composed Config, or an exit code (help printed, or the error said)."""
    from alia_train.cli.config_dirs import split_config_dirs
    from alia_train.config.load import ConfigError, available_models, load_config, use_config_dirs

    try:
        config_dirs, argv = split_config_dirs(argv)
        if any(a in ("-h", "--help") for a in argv):
            use_config_dirs(config_dirs)
            print(USAGE.format(models=", ".join(available_models())))
            return EXIT_OK
        return load_config(argv, config_dirs)
    except (ConfigError, ValueError) as e:
        return report_error("alia-train", str(e)) if _first_rank() else EXIT_CONFIG


if __name__ == "__main__":
    sys.exit(main())
