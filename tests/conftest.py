"""Shared fixtures. Tests run real megatron-core on CPU; processes are expensive to start
(~10 s of imports each), so multi-process checks share launches through module fixtures."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
BIN = Path(sys.executable).parent


@pytest.fixture(scope="session")
def shared_corpus() -> Path:
    path = SHARED / "corpus"
    if not (path / "bench").is_dir():
        pytest.skip(f"../shared/corpus is absent ({path}): benchmark corpus not available here")
    return path


@pytest.fixture(scope="module")
def runtime():
    """One single-process CPU runtime (gloo, megatron's groups, seeds) for the tests of a module
    that build models in-process; shut down after the module."""
    from alia_train.config import load_config
    from alia_train.parallel.launch_env import detect_launch_env
    from alia_train.parallel.runtime import init_runtime, shutdown

    rt = init_runtime(load_config(["+model=tiny"]), detect_launch_env({}))
    yield rt
    shutdown()


def cli(name: str) -> str:
    """Path of an installed console script of this environment."""
    return str(BIN / name)


def subprocess_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("RANK", None)
    env.pop("WORLD_SIZE", None)
    env.update({"PYTHONUNBUFFERED": "1", "WANDB_MODE": "disabled"})
    env.update(extra)
    return env


def pytest_collection_modifyitems(config, items):
    """Tests marked `gpu` are skipped, with the reason, where torch sees no CUDA GPU."""
    try:
        import torch

        cuda = torch.cuda.is_available()
    except ImportError:
        cuda = False
    if cuda:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (run scripts/gpu_check.sh on one)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
