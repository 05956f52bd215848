"""`alia-train +model=NAME [key=value ...]`: train (or resume) a run."""

from __future__ import annotations

import os
import sys

USAGE = """usage: alia-train +model=NAME [key=value ...]

Trains a Salamandra-family model; resumes from run.dir's latest checkpoint if there is one.
  models:     {models}
  examples:   alia-train +model=tiny
              alia-train +model=tiny train.steps=50 run.dir=runs/try1
              torchrun --nproc_per_node=2 --no-python alia-train +model=tiny parallel.tp=2
Config groups (configs/): model parallel optim train data checkpoint logging cluster.
See docs/configuration.md for every key.
"""


def _fail(message: str, code: int = 2) -> int:
    for line in message.splitlines():
        print(f"alia-train: error: {line}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    from alia_train.config.load import ConfigError, available_models, load_config

    if any(a in ("-h", "--help") for a in argv):
        print(USAGE.format(models=", ".join(available_models())))
        return 0
    try:
        cfg = load_config(argv)
    except ConfigError as e:
        return _fail(str(e))
    if cfg.train.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # must happen before torch touches CUDA

    import torch

    from alia_train.config.validate import config_problems
    from alia_train.model.build import transformer_engine_available
    from alia_train.parallel.launch_env import detect_launch_env

    launch = detect_launch_env()
    cuda = torch.cuda.is_available()
    problems = config_problems(cfg, launch.world_size, cuda, transformer_engine_available() if cuda else False)
    if problems:
        return _fail("\n".join(problems))

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
    if cuda and os.environ.get("ALIA_SKIP_PLAN") != "1":
        from alia_train.plan import plan_run

        gib = torch.cuda.get_device_properties(launch.local_rank).total_memory / 2**30
        plan = plan_run(cfg, launch.world_size, tokenizer.vocab_size, gpu_memory_gib=gib)
        if not plan.fits:
            if launch.rank == 0:
                print(plan.format(), file=sys.stderr)
            return _fail("memory: this run does not fit in GPU memory (report above); "
                         "use a suggested layout, or ALIA_SKIP_PLAN=1 to start anyway")
        if launch.rank == 0:
            print(f"[alia-train] {plan.summary()}", flush=True)
    return run(cfg, launch, tokenizer)


def run(cfg, launch, tokenizer) -> int:
    import torch.distributed as dist

    from alia_train.checkpoint.manager import CheckpointMismatchError
    from alia_train.parallel.runtime import init_runtime, shutdown
    from alia_train.training.trainer import EXIT_NONFINITE, NonFiniteError, Trainer, save_run_config

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
            save_run_config(cfg)
            print(f"[alia-train] run dir {cfg.run.dir}; {launch.world_size} process(es) "
                  f"({launch.source}), tp={cfg.parallel.tp} pp={cfg.parallel.pp} "
                  f"dp={launch.world_size // (cfg.parallel.tp * cfg.parallel.pp * cfg.parallel.cp)}, "
                  f"{rt.device.type} {str(rt.dtype).removeprefix('torch.')}", flush=True)
        trainer = Trainer(cfg, rt, tokenizer)
        try:
            trainer.resume()
        except (CheckpointMismatchError, FileNotFoundError) as e:
            return _fail(str(e))
        trainer.build_data()
        if launch.rank == 0:
            from alia_train.training.tracking import make_trackers

            rt.trackers.extend(make_trackers(cfg))
        try:
            return trainer.train()
        except NonFiniteError as e:
            return _fail(str(e), EXIT_NONFINITE)
    finally:
        if lock is not None:
            lock.release()
        if dist.is_initialized():
            shutdown()


if __name__ == "__main__":
    sys.exit(main())
