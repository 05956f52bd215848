"""Start-up of a process that trains: the steps every entry point takes, in one place.

    prepare_process()                  # first, before anything slow (alia-train's main)
    rt = start_runtime(cfg, launch)    # device, dtype and derived sizes, resolved once
                                       # (= resolve_runtime, then import_megatron)
    with process_groups(cfg, launch) as rt:   # a piece of a run, for tests and benchmarks

`training/run.py` calls the first two (the second in its two halves, with the launch checks
between them) before it starts the process groups, so the CLI, the benchmarks and the test workers, which all come through `open_run` /
`train` (or `process_groups` for a piece of a run), start the same way; none of them repeats
a step (tests/test_code_structure.py checks).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from alia_train.config.schema import Config
from alia_train.parallel.launch_env import LaunchEnv


def prepare_process() -> None:
    """Cheap and idempotent. A SIGUSR1/SIGTERM from Slurm during start-up is remembered (acted
    on at the first step), helper processes survive the job's signals, and library warnings
    that mean nothing to a user are off before megatron-core is imported (some fire then)."""
    from alia_train.parallel.child_processes import install as install_child_rules
    from alia_train.parallel.quiet import quiet_libraries
    from alia_train.training.signals import install_stop_handler

    install_stop_handler()
    install_child_rules()
    quiet_libraries()


def start_runtime(cfg: Config, launch: LaunchEnv):
    """The resolved Runtime (parallel/runtime.py) of this process, with megatron-core imported
    the way that suits the device (on CPU ~3 s faster: parallel/cpu_compat.py)."""
    rt = resolve_runtime(cfg, launch)
    import_megatron(rt)
    return rt


def resolve_runtime(cfg: Config, launch: LaunchEnv):
    """The resolved Runtime, before megatron-core is imported: what a launch is checked against
    (training/run.py checks it here, so that a refusal comes ~2 s sooner)."""
    prepare_process()
    from alia_train.parallel.runtime import resolve_runtime as resolve

    rt = resolve(cfg, launch)
    if not rt.cuda:
        from alia_train.parallel.quiet import quiet_cpu_run

        quiet_cpu_run()
    return rt


def import_megatron(rt) -> None:
    from alia_train.parallel.cpu_compat import import_megatron as import_for_device

    import_for_device(cuda=rt.cuda)


@contextmanager
def process_groups(cfg: Config, launch: LaunchEnv) -> Iterator:
    """The start-up and the process groups, without the run (no launch checks, lock, model or
    data), for a test or benchmark of one piece: a layer, a loss, the data pipeline. Yields the
    Runtime; shuts the groups down on exit (a process group that was already up is left up)."""
    import torch.distributed as dist

    from alia_train.parallel.runtime import shutdown, start_process_groups

    owned = not dist.is_initialized()
    rt = start_runtime(cfg, launch)
    start_process_groups(cfg, rt)
    try:
        yield rt
    finally:
        if owned:
            shutdown()
        else:
            from megatron.core import parallel_state

            parallel_state.destroy_model_parallel()
