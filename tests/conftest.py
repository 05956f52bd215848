"""Shared fixtures. Tests run real megatron-core on CPU; processes are expensive to start
(~10 s of imports each), so multi-process checks share launches through module fixtures."""

from __future__ import annotations

import os
import shutil
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
    from alia_train.training.startup import process_groups

    with process_groups(load_config(["+model=tiny"]), detect_launch_env({})) as rt:
        yield rt


def scratch(request, tmp_path_factory, name: str) -> Path:
    """A directory for a module or session fixture. Like tmp_path under the suite's
    tmp_path_retention_policy="failed": removed when the fixture is torn down, unless a test of
    this session failed (then kept, to debug). Layout runs leave hundreds of MB of checkpoints,
    and the suite shares its disk with a 6 GB venv."""
    path = tmp_path_factory.mktemp(name)

    def remove() -> None:
        if request.session.testsfailed == 0:
            shutil.rmtree(path, ignore_errors=True)

    request.addfinalizer(remove)
    return path


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


# Units of work for parallel runs (scripts/test.sh runs pytest-xdist): a test file, so that its
# module fixtures are built once, or a whole directory whose conftest builds session fixtures
# that its files share (convert: one torchrun launch of layouts).
SHARED_SESSION_DIRS = {"convert"}
# The longest units (pytest --durations on a 2-core machine), handed out first so that none of
# them starts last and runs alone. Order only: a name missing here changes nothing else.
LONGEST_FIRST = [
    "gpu/test_rehearsal.py",
    "checkpoint/test_restart_changes.py",
    "checkpoint/test_resume.py",
    "recipes/test_recipes.py",
    "parallel/test_layouts.py",
    "slurm/test_real_slurm.py",
    "cli/test_doc_promises.py",
    "checkpoint/test_relayout.py",
    "slurm/test_tokenize_slurm.py",
    "eval/test_alia_eval.py",
    "slurm/test_eval_slurm.py",
    "benchmarks/test_checkpoint_memory.py",
    "parallel/test_context_parallel_layouts.py",
    "convert",
    "report/test_report_demo.py",
    "model/test_chunked_loss.py",
    "model/test_context_parallel.py",
    "cli/test_train.py",
    "training/test_run_growth.py",
    "model/test_compile.py",
]


def unit_of(nodeid: str) -> str:
    """'tests/convert/test_to_hf.py::test_x[tp1]' -> 'convert'; other files -> 'dir/test_file.py'."""
    path = nodeid.split("::", 1)[0].removeprefix("tests/")
    top = path.split("/", 1)[0]
    return top if top in SHARED_SESSION_DIRS else path


@pytest.hookimpl(optionalhook=True)  # an xdist hook: unknown (and unused) without xdist
def pytest_xdist_make_scheduler(config, log):
    """Hand out whole units (see `unit_of`) to the workers, in collection order."""
    from xdist.scheduler import LoadScopeScheduling

    class UnitScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return unit_of(nodeid)

    config.option.loadscopereorder = False  # keep the collection's order (longest units first), not biggest first
    return UnitScheduling(config, log)


def _longest_units_first(config, items) -> None:
    if not hasattr(config, "workerinput"):  # only in xdist workers: the scheduler follows their order
        return
    rank = {unit: i for i, unit in enumerate(LONGEST_FIRST)}
    # stable: each unit's tests keep their order and stay together
    items.sort(key=lambda item: rank.get(unit_of(item.nodeid), len(rank)))


def gpu_rehearsal() -> bool:
    """scripts/gpu_check.sh --rehearse: the tests marked `gpu` run on the CPU, those that need a
    GPU's kernels or NCCL skip themselves (tests/gpu/test_gpu.py)."""
    return os.environ.get("ALIA_GPU_REHEARSAL") == "1"


def pytest_collection_modifyitems(config, items):
    """Tests marked `gpu` are skipped, with the reason, where torch sees no CUDA GPU (unless
    this is the GPU check's rehearsal). In xdist workers, the longest units of work go first."""
    _longest_units_first(config, items)
    try:
        import torch

        cuda = torch.cuda.is_available()
    except ImportError:
        cuda = False
    if cuda or gpu_rehearsal():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (run scripts/gpu_check.sh on one)")
    for item in items:
        if item.get_closest_marker("gpu"):  # not `"gpu" in keywords`: that is true of tests/gpu/'s every file
            item.add_marker(skip)

