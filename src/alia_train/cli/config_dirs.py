"""Hydra's `--config-dir DIR` (also `-cd DIR`, `--config-dir=DIR`) for the CLIs that compose
configs: DIR's config groups (DIR/data/my_mix.yaml, DIR/model/my_model.yaml, ...) become
selectable as `data=my_mix`, `+model=my_model`, next to the packaged ones."""

from __future__ import annotations

import argparse

HELP = ("a directory of your own config groups (DIR/data/NAME.yaml -> data=NAME); "
        "repeatable, searched after the packaged configs")


def split_config_dirs(argv: list[str]) -> tuple[list[str], list[str]]:
    """(config dirs, the other arguments). Raises ValueError when a DIR is missing."""
    dirs, rest = [], []
    it = iter(argv)
    for arg in it:
        if arg in ("--config-dir", "-cd"):
            value = next(it, None)
            if value is None or value.startswith("-"):
                raise ValueError(f"{arg}: needs a directory, e.g. {arg} ~/my_configs")
            dirs.append(value)
        elif arg.startswith("--config-dir="):
            value = arg.partition("=")[2]
            if not value:
                raise ValueError("--config-dir: needs a directory, e.g. --config-dir=~/my_configs")
            dirs.append(value)
        else:
            rest.append(arg)
    return dirs, rest


def add_config_dir_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config-dir", "-cd", dest="config_dirs", action="append", default=[],
                        metavar="DIR", help=HELP)
