"""A routine checkpoint onto another parallel layout.

Routine checkpoints keep the distributed optimizer's state as each rank holds it (no exchange
at save: checkpoint/state_dict.py), and that form reloads under another DP or CP size only.
When a run resumes its own checkpoint with another TP, PP, VPP or bucketing, the checkpoint is
first rewritten in the portable form on the layout that wrote it, in this job's processes
(their number must be a multiple of that layout's TP x PP x CP), and then loaded onto the new
layout. The rewrite is the same step and the same state, only the optimizer state's encoding
changes; the next saves are routine again. Where this job cannot do it (another run's
checkpoint, a process count that does not fit), `alia-convert portable RUN_DIR` does it, run
on that layout's process count.
"""

from __future__ import annotations

import gc
from pathlib import Path

import torch.distributed as dist

from alia_train.checkpoint.state_dict import NotReshardable
from alia_train.config.load import config_from_yaml_text
from alia_train.config.schema import Config
from alia_train.training.errors import RunError


def _log(msg: str) -> None:
    if dist.get_rank() == 0:
        print(f"[alia-train] {msg}", flush=True)


def build_trainer(cfg: Config, rt, tokenizer, with_data: bool):
    """A ready Trainer; its newest checkpoint rewritten first where it does not fit the layout."""
    from alia_train.training.trainer import Trainer

    try:
        return Trainer(cfg, rt, tokenizer, with_data=with_data)
    except NotReshardable as e:
        gc.collect()  # the half-built model and optimizer
        rewrite_portable(e, cfg, rt, tokenizer)
        return Trainer(cfg, rt, tokenizer, with_data=with_data)


def describe(layout: dict) -> str:
    parts = [f"{k.upper()}{layout[k]}" for k in ("tp", "pp", "cp", "dp") if k in layout]
    return " ".join(parts) + f" ({layout.get('world_size', '?')} processes)"


def model_parallel_of(cfg: Config) -> int:
    return cfg.parallel.tp * cfg.parallel.pp * cfg.parallel.cp


def portable_command(run_dir, processes: int) -> str:
    launcher = f"torchrun --nproc_per_node={processes} --no-python " if processes > 1 else ""
    return f"{launcher}alia-convert portable {run_dir}"


def rewrite_portable(e: NotReshardable, cfg: Config, rt, tokenizer) -> None:
    """Rewrite checkpoint `e.path` in the portable form, on its own layout, in this job's
    processes; the process groups of `cfg`'s layout are back up afterwards. Raises RunError
    (one line, with the command that does it) where this job cannot."""
    old = _writer_config(e, cfg)
    needed = model_parallel_of(old)
    source = Path(e.path).parent.parent
    if not e.own or rt.launch.world_size % needed:
        where = "another run's checkpoint (checkpoint.load)" if not e.own else f"{rt.launch.world_size} processes"
        reset = "; or load its weights only: checkpoint.reset_optimizer=true" if not e.own else ""
        raise RunError(
            f"checkpoint {e.path} was written on {describe(e.saved_layout)} with the distributed optimizer's "
            f"per-rank state, which reshards over DP and CP only, and it cannot be rewritten here ({where}): "
            f"run `{portable_command(source, needed)}` once (any multiple of {needed} processes), "
            f"then start this job again{reset}", every_rank=True)
    _log(f"checkpoint {Path(e.path).name} was written on {describe(e.saved_layout)}: rewriting its optimizer "
         "state in the portable form on that layout, then loading it on this one")
    _in_layout(old, rt, tokenizer)
    from alia_train.parallel.runtime import start_process_groups

    start_process_groups(cfg, rt)


def _writer_config(e: NotReshardable, cfg: Config) -> Config:
    """The config that wrote the checkpoint (it is stored in it), with this run's directory."""
    if not e.saved_config_yaml:
        raise RunError(f"checkpoint {e.path}: its optimizer state fits another layout and it does not record "
                       "the config that wrote it; resume it on its own layout", every_rank=True)
    old = config_from_yaml_text(e.saved_config_yaml)
    old.run.dir, old.checkpoint.async_save, old.checkpoint.load = cfg.run.dir, False, None
    return old


def _in_layout(old: Config, rt, tokenizer) -> None:
    """The newest checkpoint saved again, portable, by a Trainer of `old`'s layout (no data);
    that layout's groups torn down afterwards."""
    from megatron.core import parallel_state

    from alia_train.parallel.runtime import resolve_runtime, start_process_groups
    from alia_train.training.trainer import Trainer

    parallel_state.destroy_model_parallel()
    old_rt = resolve_runtime(old, rt.launch)
    start_process_groups(old, old_rt)
    try:
        try:
            trainer = Trainer(old, old_rt, tokenizer, with_data=False)
        except NotReshardable as e:  # the buckets depend on the DP size too (past DP 40)
            raise RunError(f"{e}, and not onto {old_rt.derived.dp}-way data parallelism either: rewrite it with "
                           f"`{portable_command(Path(e.path).parent.parent, e.saved_layout.get('world_size', 1))}`",
                           every_rank=True) from None
        try:
            trainer.checkpoints.save(trainer.progress, blocking=True, portable=True)
        finally:
            trainer.close()
        del trainer
        gc.collect()
    finally:
        parallel_state.destroy_model_parallel()
