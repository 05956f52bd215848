"""Which checkpoint a run resumes from, and how: the resume rules on one page.

1. Checkpoints left unfinished by an interrupted save are removed (the run lock guarantees that
   no save is running).
2. The run's own checkpoints, newest first, win over `checkpoint.load` (another run's), so a
   restarted job continues where it stopped; `checkpoint.load` is used only while the run has
   none of its own.
3. A damaged checkpoint (files missing, truncated or changed: directory.verify's checksums, or
   unreadable metadata) is set aside as `.damaged` and the one before it is tried.
4. A checkpoint of another architecture or tokenizer, or whose optimizer state megatron-core
   cannot load into this run's optimizer, is refused in one line with the fix; so is a change
   of a setting that decides which sample comes next (resume_rules.py), unless the data
   position is reset. A routine checkpoint of the distributed optimizer whose shards do not fit
   this run's TP / PP / VPP or buckets raises NotReshardable: training/relayout.py rewrites it
   in the portable form on its own layout, or says how.
5. The run's own checkpoint resumes exactly: weights, optimizer, LR schedule, step, data
   position and, on the same layout, RNG states. Another run's checkpoint gives its weights,
   plus its optimizer, schedule and step unless `checkpoint.reset_optimizer`, plus its data
   position unless `checkpoint.reset_data`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch.distributed as dist
from megatron.core import dist_checkpointing, parallel_state
from megatron.core.dist_checkpointing.serialization import get_default_load_sharded_strategy
from megatron.core.dist_checkpointing.strategies.fully_parallel import FullyParallelLoadStrategyWrapper
from torch.distributed.checkpoint.api import CheckpointException  # a BaseException, not an Exception

from alia_train.checkpoint import directory
from alia_train.checkpoint.optimizer_state import load_optimizer_state
from alia_train.checkpoint.resume_rules import (
    order_change_note,
    position_change_message,
    position_changes,
    schedule_change_note,
    schedule_changes,
)
from alia_train.checkpoint.state_dict import (
    OLDER_CHECKPOINTS,
    ROUTINE,
    CheckpointMismatchError,
    NotReshardable,
    TrainingProgress,
    TrainingState,
    architecture_differences,
    load_model_state,
    load_sharded,
    parallel_layout,
    set_rng_state,
)


@dataclass
class Resumed:
    path: Path | None  # the checkpoint loaded; None: nothing to resume from, step 0
    progress: TrainingProgress
    skipped: list[tuple[Path, str]]  # (checkpoint, why) passed over before this one
    removed_partials: list[Path]  # unfinished checkpoints removed first
    note: str = ""  # how it was used, when not as an exact resume


def resume_candidates(cfg) -> tuple[list[Path], bool]:
    """(checkpoints to try, newest first; whether they belong to this run)."""
    own = directory.candidates(cfg.run.dir)
    if own:
        return own, True
    if cfg.checkpoint.load:
        return directory.load_candidates(cfg.checkpoint.load), False
    return [], True


def load_latest(state: TrainingState) -> Resumed:
    """Load the checkpoint the rules above choose into `state` (path None: none). Raises
    CheckpointMismatchError or FileNotFoundError (nothing usable) with a one-line message."""
    removed = directory.remove_partials(state.cfg.run.dir) if dist.get_rank() == 0 else []
    dist.barrier()
    candidates, own = resume_candidates(state.cfg)
    skipped: list[tuple[Path, str]] = []
    for path in candidates:
        problem = _damage(path, own)
        if problem is None:
            _check_compatible(state, path, own)
            progress, note = _load(state, path, own)
            return Resumed(path, progress, skipped, removed, _load_note(state.cfg, own) + note)
        if own and dist.get_rank() == 0:
            problem += f"; moved it to {directory.set_aside(path).name}"
        dist.barrier()
        skipped.append((path, problem))
    if skipped and not own:
        raise FileNotFoundError(f"checkpoint.load: {skipped[0][0]}: {skipped[0][1]}")
    if skipped:
        raise FileNotFoundError(
            "no usable checkpoint in run.dir: " + "; ".join(f"{p.name}: {why}" for p, why in skipped)
            + " (move the checkpoints away or choose another run.dir)"
        )
    return Resumed(None, TrainingProgress(), [], removed)


def _load_note(cfg, own: bool) -> str:
    resets = [k for k in ("reset_optimizer", "reset_data") if getattr(cfg.checkpoint, k)]
    if own:
        return (f"; checkpoint.{' / checkpoint.'.join(resets)} not applied: they apply once, when "
                "a run starts from checkpoint.load, and this run has its own checkpoints") if resets else ""
    done = ", ".join(f"checkpoint.{k}" for k in resets)
    return f"; another run's checkpoint (checkpoint.load){', with ' + done if done else ''}"


def _damage(path: Path, own: bool) -> str | None:
    """What is wrong with `path`'s files, the same answer on every rank: sizes checked by all,
    checksums split between the ranks (each reads 1/world of the files)."""
    problem = None
    if (path / directory.COMPLETE).exists() or own:
        problem = directory.verify(path, deep=(dist.get_rank(), dist.get_world_size()))
    if problem is None:
        try:
            dist_checkpointing.load_common_state_dict(str(path))
        except (Exception, CheckpointException) as e:  # unreadable metadata: damaged, fall back
            problem = f"unreadable ({type(e).__name__}: {e})"
    found = [None] * dist.get_world_size()
    dist.all_gather_object(found, problem)
    return next((p for p in found if p), None)


def _source_run(path: Path) -> Path:
    return path.parent.parent if path.parent.name == "checkpoints" else path


def _check_compatible(state: TrainingState, path: Path, own: bool) -> None:
    cfg = state.cfg
    common = dist_checkpointing.load_common_state_dict(str(path))
    diffs = architecture_differences(common.get("model_config", {}), cfg.model)
    saved_tok, ours = common.get("tokenizer") or {}, state.tokenizer_identity
    if saved_tok and saved_tok.get("sha256") != ours["sha256"]:
        diffs.append(
            f"data.tokenizer: checkpoint was trained with {saved_tok.get('path')} "
            f"(vocab {saved_tok.get('vocab_size')}, sha256 {str(saved_tok.get('sha256'))[:12]}), this run uses "
            f"{ours['path']} (vocab {ours['vocab_size']}); set data.tokenizer to the checkpoint's tokenizer"
        )
    if diffs:
        raise CheckpointMismatchError(f"checkpoint {path} has another model architecture: " + "; ".join(diffs))
    if "scheduler" in common and (own or not cfg.checkpoint.reset_optimizer):
        saved_form, now = common.get("optimizer_form") or {}, state.optimizer_form()
        problem = optimizer_form_problem(saved_form, now, path)
        if problem:
            raise CheckpointMismatchError(problem)
        if saved_form.get("sharding") == ROUTINE and saved_form.get("buckets") != now["buckets"]:
            raise NotReshardable(path, common.get("config_yaml"), common.get("layout", {}), own)
    has_position = (common.get("progress") or {}).get("consumed_samples", 0) > 0
    if has_position and (own or not cfg.checkpoint.reset_data):
        changes = position_changes(common.get("config_yaml"), cfg)
        if changes:
            raise CheckpointMismatchError(position_change_message(str(path), str(_source_run(path)), changes, own))


def optimizer_form_problem(saved: dict | None, now: dict, path: Path) -> str | None:
    """Optimizer states megatron-core cannot load into this run's optimizer, said before it
    tries (it fails deep in dist_checkpointing, on every rank): the distributed optimizer's
    state and the local one's are keyed differently ("Different dict keys encountered in
    apply_factory_merges", "Could not find parameter group"), and the local one's differs
    between fp32 and bf16 runs (fp32 main weights); the distributed one's does not."""
    if not saved:
        return None
    fresh = (f"start a new run.dir with checkpoint.load={_source_run(path)} checkpoint.reset_optimizer=true "
             "(weights only)")
    if "distributed" in saved and bool(saved["distributed"]) != now["distributed"]:
        was = str(bool(saved["distributed"])).lower()
        return (f"checkpoint {path}: its optimizer state was written with parallel.distributed_optimizer={was} "
                f"and this run has {str(now['distributed']).lower()} (megatron stores the two differently): "
                f"set parallel.distributed_optimizer={was}, or {fresh}")
    if saved.get("precision") == now["precision"] or (saved.get("distributed") and now["distributed"]):
        return None
    return (f"checkpoint {path}: its optimizer state was written by a {saved.get('precision')} run and this "
            f"run trains in {now['precision']}: set train.precision={saved.get('precision')}, or {fresh}")


def _load(state: TrainingState, path: Path, own: bool) -> tuple[TrainingProgress, str]:
    """Load `path` into `state` by rule 5; the progress, and what the resume line adds (what
    became of a changed LR schedule, where the run stands in the data)."""
    cfg = state.cfg
    common = dist_checkpointing.load_common_state_dict(str(path))
    has_optimizer = "scheduler" in common
    load_optimizer = has_optimizer and (own or not cfg.checkpoint.reset_optimizer)
    same_layout = {"cp": 1, **common.get("layout", {})} == parallel_layout()  # older ones: no "cp"
    sharding = (common.get("optimizer_form") or {}).get("sharding") or OLDER_CHECKPOINTS
    sd = state.sharded(is_loading=True, include_optimizer=load_optimizer, include_rng=same_layout and load_optimizer,
                       sharding=sharding)
    dp_group = parallel_state.get_data_parallel_group(with_context_parallel=True)
    strategy = FullyParallelLoadStrategyWrapper(get_default_load_sharded_strategy(str(path)), dp_group)
    loaded = load_sharded(sd, path, strategy, common.get("layer_impl", "local"), state.layer_impl)
    for i, module in enumerate(state.modules()):
        load_model_state(module, loaded[state.model_key(i)])
    saved = common.get("progress") or {}
    progress, schedule_note = TrainingProgress(), ""
    if load_optimizer:
        override = cfg.optim.override_schedule
        load_optimizer_state(state.optimizer, loaded["optimizer"], keep_saved_schedule=not override)
        schedule_note = schedule_change_note(schedule_changes(common["scheduler"], state.scheduler), override)
        state.scheduler.load_state_dict(common["scheduler"])
        progress = TrainingProgress(saved["step"], saved["consumed_samples"], saved.get("consumed_tokens", 0))
        if "rng_state" in loaded:
            set_rng_state(loaded["rng_state"], state.cuda)
    if not own and has_optimizer and not cfg.checkpoint.reset_data:
        progress.consumed_samples = saved.get("consumed_samples", 0)
    if not own and cfg.checkpoint.reset_data:
        progress.consumed_samples = 0
    order_note = order_change_note(common.get("config_yaml"), cfg) if progress.consumed_samples else ""
    return progress, schedule_note + order_note
