"""`alia-train +model=NAME [key=value ...]`: train (or resume) a run."""

from __future__ import annotations

import sys

from alia_train.cli.errors import report_error
from alia_train.exit_codes import EXIT_CONFIG, EXIT_INTERRUPTED, EXIT_OK

USAGE = """usage: alia-train [--config-dir DIR] +model=NAME [key=value ...]

Trains a Salamandra-family model; resumes from run.dir's latest checkpoint if there is one.
  models:     {models}
  examples:   alia-train +model=tiny
              alia-train +model=tiny train.steps=50 run.dir=runs/try1
              torchrun --nproc_per_node=2 --no-python alia-train +model=tiny parallel.tp=2
  config groups (configs/GROUP/NAME.yaml, chosen with GROUP=NAME): {groups}
  --config-dir DIR  your own groups too: DIR/data/my_mix.yaml -> data=my_mix (repeatable)
Any key of the schema is set with section.key=value, sections: {sections};
docs/configuration.md lists every key.
"""



def _first_rank() -> bool:
    """Rank 0 of the job (torchrun's RANK, Slurm's SLURM_PROCID), or a single process. Config
    errors and launch refusals are the same on every rank: only this one prints them."""
    from alia_train.parallel.launch_env import detect_launch_env

    return detect_launch_env().rank == 0


def main(argv: list[str] | None = None) -> int:
    from alia_train.training.signals import ctrl_c_received

    try:
        return _main(argv)
    except KeyboardInterrupt:  # Ctrl-C: at once, without a save (SIGTERM / SIGUSR1 save first)
        return _interrupted()
    except BaseException:
        if ctrl_c_received():  # the interrupt surfaced as a library's error (e.g. a checkpoint writer's)
            return _interrupted()
        raise


def _interrupted() -> int:
    if _first_rank():
        print("alia-train: interrupted (Ctrl-C); the same command resumes from the latest complete checkpoint",
              file=sys.stderr, flush=True)
    return EXIT_INTERRUPTED


def _main(argv: list[str] | None) -> int:
    from alia_train.training.startup import prepare_process

    prepare_process()  # first, before anything slow: a stop signal during start-up is kept
    cfg = _load_config(list(sys.argv[1:] if argv is None else argv))
    if isinstance(cfg, int):
        return cfg
    from alia_train.parallel.launch_env import detect_launch_env
    from alia_train.training.errors import RunError
    from alia_train.training.run import train

    launch = detect_launch_env()
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
    from dataclasses import fields

    from alia_train.config.load import ConfigError, available_models, config_groups, load_config, use_config_dirs
    from alia_train.config.schema import Config

    try:
        config_dirs, argv = split_config_dirs(argv)
        if any(a in ("-h", "--help") for a in argv):
            use_config_dirs(config_dirs)
            sections = ", ".join(f.name for f in fields(Config))
            print(USAGE.format(models=", ".join(available_models()), groups=", ".join(config_groups()),
                               sections=sections))
            return EXIT_OK
        return load_config(argv, config_dirs)
    except (ConfigError, ValueError) as e:
        return report_error("alia-train", str(e)) if _first_rank() else EXIT_CONFIG


if __name__ == "__main__":
    sys.exit(main())
