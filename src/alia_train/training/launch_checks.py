"""Checks of a launch made before any process group starts (config values, paths, tokenizer,
vocabulary, data sources, memory on GPU or CPU), so a mistake is one line and exit 2 rather than a
traceback from deep inside the first step or write. `check_launch` runs them all, in order."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from alia_train.config.schema import Config
from alia_train.parallel.launch_env import LaunchEnv
from alia_train.training.errors import RunError


def _first_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def writable_dir_problem(key: str, directory: str) -> str | None:
    """Why `directory` (the value of config `key`) cannot be used or created as a directory
    to write in, or None."""
    path = Path(directory)
    if path.exists() and not path.is_dir():
        return f"{key}: {path} is a file, not a directory; choose another {key}"
    base = _first_existing(path)
    if not base.is_dir():
        return f"{key}: {path} is under {base}, which is a file; choose another {key}"
    try:
        # A real write, not os.access: root passes every permission check, and a full or
        # read-only file system only shows when writing.
        os.rmdir(tempfile.mkdtemp(prefix=".alia-train-write-test-", dir=base))
    except OSError as e:
        return f"{key}: cannot write in {base} ({e.strerror}); choose a {key} you may write"
    return None


def paths_problem(cfg: Config) -> str | None:
    """The first problem with the run's output directories or its checkpoint.load, or None."""
    return (writable_dir_problem("run.dir", cfg.run.dir)
            or writable_dir_problem("data.cache_dir", cfg.data.cache_dir)
            or checkpoint_load_problem(cfg))


def checkpoint_load_problem(cfg: Config) -> str | None:
    """Why `checkpoint.load` cannot be used, or None. Only asked when the run has no checkpoint
    of its own: a run that already saved resumes from those, whatever checkpoint.load says."""
    from alia_train.checkpoint.directory import complete_checkpoints, load_candidates

    source = cfg.checkpoint.load
    if not source or complete_checkpoints(cfg.run.dir):
        return None
    if not os.path.exists(source):
        return (f"checkpoint.load: {source} does not exist; give a checkpoint directory or a run "
                "directory with checkpoints, or checkpoint.load=null")
    try:
        load_candidates(source)
    except FileNotFoundError as e:
        return f"{e}; give a checkpoint directory (step_*) or a run directory with checkpoints"
    return None


def check_launch(cfg: Config, rt, tokenizer=None):
    """Raise RunError for the first problem of this launch (`rt`: the resolved Runtime); return
    the tokenizer it trains with. A stand-in `tokenizer` (benchmarks' random tokens) replaces
    data.tokenizer, and the checks that concern data.tokenizer (vocabulary, data sources) are
    not made."""
    from alia_train.config.validate import config_problems
    from alia_train.model.te_available import transformer_engine_available

    launch, gpu = rt.launch, rt.gpu_visible
    problems = config_problems(cfg, launch.world_size, gpu, transformer_engine_available() if gpu else False)
    if problems:
        raise RunError("\n".join(problems))
    problem = paths_problem(cfg)
    if problem:
        raise RunError(problem)
    if tokenizer is None:
        tokenizer = _checked_tokenizer(cfg)
    if cfg.train.check_memory:
        problem = memory_problem(cfg, launch, tokenizer.vocab_size, rt.cuda)
        if problem:  # on every rank (none is left waiting for the others); rank 0 says it
            raise RunError(problem)
    return tokenizer


def _checked_tokenizer(cfg: Config):
    """data.tokenizer, once it loads, matches model.vocab_size and the data sources."""
    from alia_train.data.checks import DataSourceError, check_sources
    from alia_train.data.tokenizer import load_tokenizer

    try:
        tokenizer = load_tokenizer(cfg.data.tokenizer)
    except (OSError, ValueError) as e:
        raise RunError(f"data.tokenizer: {e}") from e
    if cfg.model.vocab_size is not None and cfg.model.vocab_size != tokenizer.vocab_size:
        raise RunError(
            f"model.vocab_size: {cfg.model.vocab_size} but the tokenizer {tokenizer.path} has "
            f"{tokenizer.vocab_size} pieces; set data.tokenizer to the model's tokenizer or "
            "model.vocab_size=null"
        )
    try:
        check_sources(cfg, tokenizer)  # missing / half-published / other-tokenizer shards
    except DataSourceError as e:
        raise RunError(str(e)) from e
    return tokenizer


def memory_problem(cfg: Config, launch: LaunchEnv, vocab_size: int, cuda: bool) -> str | None:
    """Why this run will not fit in this rank's memory (one line), or None: the planner's
    estimate against this GPU's memory, or on CPU against the host's available memory, cgroup
    limit and ulimit -v, which the job's ranks on this node share. On a GPU, rank 0 prints the
    plan's summary when it fits."""
    from alia_train.parallel.launch_env import ranks_on_this_node
    from alia_train.plan.host_memory import host_capacities
    from alia_train.plan.machine_fit import check_machine

    if cuda:
        capacities, ranks = [_gpu_capacity(launch)], 1
    else:
        ranks = ranks_on_this_node(launch.world_size)
        capacities = host_capacities(ranks)
    fit = check_machine(cfg, vocab_size, launch.world_size, "gpu" if cuda else "cpu", capacities, ranks)
    if fit is None or fit.fits:
        if fit is not None and cuda and launch.rank == 0:
            print(f"[alia-train] {fit.summary()}", flush=True)
        return None
    return fit.refusal()


def _gpu_capacity(launch: LaunchEnv):
    """This rank's GPU memory, as a bound for the planner (its own: shared with no other rank)."""
    import torch

    from alia_train.parallel.launch_env import cuda_device_index
    from alia_train.plan.host_memory import Capacity

    device = cuda_device_index(launch.local_rank, torch.cuda.device_count())
    props = torch.cuda.get_device_properties(device)
    return Capacity(f"GPU {device}, {props.name}", props.total_memory, per_process=True)
