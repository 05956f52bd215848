"""`alia-train +model=NAME [key=value ...]`: train (or resume) a run."""

from __future__ import annotations

import os
import sys

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


def _fail(message: str, code: int = 2) -> int:
    for line in message.splitlines():
        print(f"alia-train: error: {line}", file=sys.stderr)
    return code


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

    from alia_train.config.validate import config_problems
    from alia_train.model.build import transformer_engine_available
    from alia_train.parallel.launch_env import detect_launch_env

    launch = detect_launch_env()
    cuda = torch.cuda.is_available()
    if not cuda:
        from alia_train.cli.quiet import quiet_cpu_run

        quiet_cpu_run()
    problems = config_problems(cfg, launch.world_size, cuda, transformer_engine_available() if cuda else False)
    if problems:
        return _fail("\n".join(problems))
    from alia_train.cli.launch_checks import paths_problem

    problem = paths_problem(cfg)
    if problem:
        return _fail(problem)

    from alia_train.data.tokenizer import load_tokenizer

    try:
        tokenizer = load_tokenizer(cfg.data.tokenizer)
    except (OSError, ValueError) as e:
        return _fail(f"data.tokenizer: {e}")
    if cfg.model.vocab_size is not None and cfg.model.vocab_size != tokenizer.vocab_size:
        return _fail(
            f"model.vocab_size: {cfg.model.vocab_size} but the tokenizer {tokenizer.path} has "
            f"{tokenizer.vocab_size} pieces; set data.tokenizer to the model's tokenizer or "
            "model.vocab_size=null"
        )
    from alia_train.data.checks import DataSourceError, check_sources

    try:
        check_sources(cfg, tokenizer)  # missing / half-published / other-tokenizer shards
    except DataSourceError as e:
        return _fail(str(e))
    if cuda and cfg.train.check_memory and not _fits_in_memory(cfg, launch, tokenizer.vocab_size):
        return _fail("memory: this run does not fit in GPU memory (report above); "
                     "use a suggested layout, or train.check_memory=false to start anyway")
    return run(cfg, launch, tokenizer)


def _load_config(argv: list[str]):
    """The composed Config, or an exit code (help printed, or the error said)."""
    from alia_train.cli.config_dirs import split_config_dirs
    from alia_train.config.load import ConfigError, available_models, load_config, use_config_dirs

    try:
        config_dirs, argv = split_config_dirs(argv)
        if any(a in ("-h", "--help") for a in argv):
            use_config_dirs(config_dirs)
            print(USAGE.format(models=", ".join(available_models())))
            return 0
        return load_config(argv, config_dirs)
    except (ConfigError, ValueError) as e:
        return _fail(str(e))


def _fits_in_memory(cfg, launch, vocab_size: int) -> bool:
    """The planner's estimate against this GPU's memory; rank 0 prints the plan (the whole
    report with suggested layouts when it does not fit)."""
    import torch

    from alia_train.plan import plan_run

    gib = torch.cuda.get_device_properties(launch.local_rank).total_memory / 2**30
    plan = plan_run(cfg, launch.world_size, vocab_size, gpu_memory_gib=gib)
    if launch.rank == 0:
        print(plan.format() if not plan.fits else f"[alia-train] {plan.summary()}",
              file=sys.stderr if not plan.fits else sys.stdout, flush=True)
    return plan.fits


def run(cfg, launch, tokenizer) -> int:
    import torch.distributed as dist

    from alia_train.checkpoint.manager import CheckpointMismatchError, CheckpointWriteError
    from alia_train.cli.quiet import accelerator_note
    from alia_train.parallel.runtime import init_runtime, shutdown
    from alia_train.training.trainer import EXIT_NONFINITE, NonFiniteError, Trainer

    rt = init_runtime(cfg, launch)
    lock, lock_error = None, [None]
    if launch.rank == 0:
        # Two jobs must never write one run directory; every rank learns the outcome.
        from alia_train.parallel.run_lock import RunLock, RunLockedError

        lock = RunLock(cfg.run.dir)
        try:
            lock.acquire()
            lock.start_heartbeat()
        except RunLockedError as e:
            lock = None
            lock_error[0] = str(e)
    dist.broadcast_object_list(lock_error, src=0)
    if lock_error[0]:
        shutdown()
        return _fail(lock_error[0])
    try:
        if launch.rank == 0:
            print(f"[alia-train] run dir {cfg.run.dir}; {launch.world_size} process(es) "
                  f"({launch.source}), tp={cfg.parallel.tp} pp={cfg.parallel.pp} "
                  f"dp={launch.world_size // (cfg.parallel.tp * cfg.parallel.pp * cfg.parallel.cp)}, "
                  f"{rt.device.type} {str(rt.dtype).removeprefix('torch.')}", flush=True)
            note = accelerator_note(rt.cuda)
            if note:
                print(f"[alia-train] {note}", flush=True)
        trainer = Trainer(cfg, rt, tokenizer)
        try:
            trainer.resume()
        except (CheckpointMismatchError, FileNotFoundError) as e:
            return _fail(str(e))
        trainer.build_data()
        refused = [_accept_launch(cfg, launch, trainer) if launch.rank == 0 else None]
        dist.broadcast_object_list(refused, src=0)
        if refused[0]:
            return _fail(refused[0])
        if launch.rank == 0:
            from alia_train.training.tracking import make_trackers

            rt.trackers.extend(make_trackers(cfg))
        try:
            return trainer.train()
        except NonFiniteError as e:
            return _fail(str(e), EXIT_NONFINITE)
        except CheckpointWriteError as e:  # disk full etc.: one line, earlier checkpoints intact
            return _fail(str(e))
    finally:
        if lock is not None:
            lock.release()
        if dist.is_initialized():
            shutdown()


def _accept_launch(cfg, launch, trainer) -> str | None:
    """Rank 0, once nothing can refuse the launch any more (config, tokenizer, data, lock,
    memory, resume): write config.yaml and the launch record. A refused launch leaves the run
    directory's config.yaml as the last accepted launch wrote it. Returns an error or None."""
    from alia_train.cli.launch_record import append_launch_record, launch_record
    from alia_train.training.trainer import save_run_config

    progress = trainer.progress
    record = launch_record(cfg, launch.world_size, progress.step, progress.consumed_samples, trainer.rt.device.type)
    for name, write in (("config.yaml", lambda: save_run_config(cfg)),
                        ("metrics.jsonl", lambda: append_launch_record(cfg.run.dir, record))):
        try:
            write()
        except OSError as e:
            return (f"run.dir: cannot write {os.path.join(cfg.run.dir, name)} ({e.strerror}); "
                    "free space or choose another run.dir")
    return None


if __name__ == "__main__":
    sys.exit(main())
