"""The reference runs the resume tests compare against: uninterrupted tiny runs, built once per
test module (each module is one unit of work for the parallel test runner)."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import STEPS, command, finish, train_losses


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data_cache")


@pytest.fixture(scope="module")
def reference_dir(tmp_path_factory, cache) -> Path:
    """An uninterrupted run (checkpoints at steps 10 and 12); tests copy it, never change it."""
    run_dir = tmp_path_factory.mktemp("reference")
    finish(command(run_dir, cache), run_dir / "log.txt")
    return run_dir


@pytest.fixture(scope="module")
def reference(reference_dir) -> dict[int, float]:
    losses = train_losses(reference_dir)
    assert sorted(losses) == list(range(1, STEPS + 1))
    return losses


@pytest.fixture(scope="module")
def reference_2proc(tmp_path_factory, cache) -> dict[int, float]:
    run_dir = tmp_path_factory.mktemp("reference_2proc")
    finish(command(run_dir, cache, "parallel.tp=2", nproc=2), run_dir / "log.txt")
    return train_losses(run_dir)
