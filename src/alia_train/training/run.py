"""The one way into training: alia-train, the test runners and the benchmarks all start here.

    exit_code = train(cfg, launch)              # everything below, then the loop with trackers
    with open_run(cfg, launch) as trainer:      # a ready Trainer, for callers that drive steps
        trainer.step(trainer.batches())

In order: the start-up (startup.py: device, dtype and sizes resolved once, megatron-core
imported), the launch checks (config, paths, tokenizer, vocabulary, data sources, memory), the
process groups and seeds, the run-directory lock (rank 0 takes it, every rank learns the
outcome), one line saying what runs where, a ready Trainer (model, optimizer, resume, data),
and only then, when nothing can refuse the launch any more, config.yaml and the launch record.
On the way out the lock is released and the runtime shut down. A refusal is a RunError that
carries its exit code; alia-train prints it as one line.
"""

from __future__ import annotations

import importlib.util
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator


from alia_train.config.derived import lr_schedule_steps
from alia_train.config.schema import Config
from alia_train.parallel.launch_env import LaunchEnv
from alia_train.training.errors import RunError
from alia_train.training.launch_checks import check_launch
from alia_train.training.startup import import_megatron, resolve_runtime

if TYPE_CHECKING:  # imported at run time only after the start-up has imported megatron-core
    from alia_train.training.trainer import Trainer


@dataclass(frozen=True)
class RunOptions:
    """What callers other than alia-train may change. The checks, the lock, resume and the
    launch record are not optional."""

    trackers: bool = True  # W&B / TensorBoard as configured (`train` hands them to the loop)
    with_data: bool = True  # False: no datasets; the caller feeds micro-batches or only reads the model
    tokenizer: Any = None  # a stand-in for data.tokenizer (the benchmark's random tokens)
    keep_process_group: bool = False  # leave torch.distributed up for another run in this process


def train(cfg: Config, launch: LaunchEnv, options: RunOptions = RunOptions()) -> int:
    """Start (or resume) the run and train it; the exit code (alia_train.exit_codes). Raises
    RunError when the launch is refused or the run cannot go on."""
    from alia_train.checkpoint.write_errors import CheckpointWriteError
    from alia_train.data.checks import DataSourceError

    with open_run(cfg, launch, options) as trainer:
        from alia_train.training.tracking import make_trackers

        trackers = make_trackers(cfg) if options.trackers and launch.rank == 0 else []
        try:
            return trainer.train(trackers)
        except CheckpointWriteError as e:  # disk full etc.: one line, earlier checkpoints intact
            raise RunError(str(e)) from e
        except DataSourceError as e:  # a shard found bad while reading it (data/datasets.py)
            raise RunError(str(e)) from e


@contextmanager
def open_run(cfg: Config, launch: LaunchEnv, options: RunOptions = RunOptions()) -> Iterator[Trainer]:
    """A Trainer ready to train, on an accepted launch that holds the run directory's lock."""
    try:
        rt = resolve_runtime(cfg, launch)
    except ValueError as e:  # a local rank without its GPU (parallel/launch_env.py): this rank's own
        raise RunError(str(e)) from e
    try:
        tokenizer = check_launch(cfg, rt, options.tokenizer)
    except RunError as e:
        e.every_rank = True  # each rank checks the same launch: rank 0 says it
        raise
    import_megatron(rt)  # after the checks: a refused launch is said without its ~2 s import
    from alia_train.parallel.runtime import start_process_groups
    from alia_train.training.relayout import build_trainer

    start_process_groups(cfg, rt)
    lock = None
    try:
        lock = _take_lock(cfg, launch)
        _announce(cfg, launch, rt)
        trainer = build_trainer(cfg, rt, tokenizer, options.with_data)
        try:
            _accept(cfg, launch, trainer)
            yield trainer
        finally:
            trainer.close()
    finally:
        if lock is not None:
            lock.release()
        _teardown(options.keep_process_group)


def _take_lock(cfg: Config, launch: LaunchEnv):
    """Rank 0 takes the run directory's lock (and keeps it fresh): two jobs must never write
    one run directory. Every rank learns the outcome; the lock on rank 0, else None."""
    import torch.distributed as dist

    from alia_train.parallel.run_lock import RunLock, RunLockedError

    lock, error = None, [None]
    if launch.rank == 0:
        lock = RunLock(cfg.run.dir)
        try:
            lock.acquire()
            lock.start_heartbeat()
        except RunLockedError as e:
            lock, error[0] = None, str(e)
    dist.broadcast_object_list(error, src=0)
    if error[0]:
        raise RunError(error[0], every_rank=True)
    return lock


def _announce(cfg: Config, launch: LaunchEnv, rt) -> None:
    if launch.rank != 0:
        return
    par = cfg.parallel
    print(f"[alia-train] run dir {cfg.run.dir}; {launch.world_size} process(es) "
          f"({launch.source}), tp={par.tp} pp={par.pp} {f'cp={par.cp} ' if par.cp > 1 else ''}"
          f"dp={rt.derived.dp}, "
          f"{rt.device.type} {str(rt.dtype).removeprefix('torch.')}", flush=True)
    for note in (accelerator_note(rt.cuda), warmup_note(cfg)):
        if note:
            print(f"[alia-train] {note}", flush=True)


def warmup_note(cfg: Config) -> str | None:
    """Said when a short run (optim.decay_steps null: train.steps) cannot hold the warmup: it is
    shortened (config/derived.py), which a quick `train.steps=20` try should not refuse."""
    warmup, steps = lr_schedule_steps(cfg)
    if warmup < cfg.optim.warmup_steps:
        return (f"note: optim.warmup_steps {cfg.optim.warmup_steps} >= train.steps {steps}: warming up over "
                f"{warmup} steps (set optim.warmup_steps or optim.decay_steps to choose)")
    return None


def accelerator_note(cuda: bool) -> str | None:
    """One line saying which optional GPU packages are missing, or None. Apex alone missing is
    not worth a line: with Transformer Engine, megatron-core takes its fused kernels from TE."""
    if importlib.util.find_spec("transformer_engine") is not None:
        return None
    missing = ["Transformer Engine"] + (["Apex"] if importlib.util.find_spec("apex") is None else [])
    what = " and ".join(missing)
    if cuda:
        return (f"{what} not installed: using megatron-core's local layers, PyTorch norms and "
                "optimizers (slower on GPU; `pip install 'alia-train[te]'` for Transformer Engine)")
    return f"{what} not installed: using megatron-core's local layers, PyTorch norms and optimizers"


def _accept(cfg: Config, launch: LaunchEnv, trainer: Trainer) -> None:
    """Rank 0 writes config.yaml and the launch record; every rank learns whether it could."""
    import torch.distributed as dist

    from alia_train.training.launch_record import accept_launch

    refused = [None]
    if launch.rank == 0:
        p = trainer.progress
        refused[0] = accept_launch(cfg, launch.world_size, p.step, p.consumed_samples, trainer.rt.device.type)
    dist.broadcast_object_list(refused, src=0)
    if refused[0]:
        raise RunError(refused[0], every_rank=True)


def _teardown(keep_process_group: bool) -> None:
    import torch.distributed as dist

    from alia_train.parallel.runtime import shutdown

    if not dist.is_initialized():
        return
    if keep_process_group:
        from megatron.core import parallel_state

        parallel_state.destroy_model_parallel()
    else:
        shutdown()
