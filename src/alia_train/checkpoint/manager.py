"""Save and load training state with megatron-core dist_checkpointing (torch_dist format).

What a checkpoint holds:
* sharded (every rank writes its part; reloadable under another TP / PP / DP layout): the model,
  the optimizer state (the distributed optimizer in the reshardable "fully_reshardable"
  form), and the RNG states of every rank;
* common (rank 0): step, consumed samples, LR scheduler, the resolved config, the tokenizer's
  identity, the layout it was written with and the layer implementation ("local" or "te").
Publishing (atomic rename, checksums, `latest`, retention) is in `layout.py`; which settings
may change on resume is in `resume_rules.py`.

Resuming: the run's own checkpoints always resume exactly (weights, optimizer, LR schedule,
step, data position, RNG). `checkpoint.load` (another run's checkpoint) is used only while the
run has none of its own, and only then do `checkpoint.reset_optimizer` / `reset_data` apply.
"""

from __future__ import annotations

import json
import os
import queue
import random
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
from megatron.core import dist_checkpointing, parallel_state
from megatron.core.dist_checkpointing.mapping import ShardedObject
from megatron.core.dist_checkpointing.validation import StrictHandling
from torch.distributed.checkpoint.api import CheckpointException  # a BaseException, not an Exception
from megatron.core.dist_checkpointing.serialization import (
    get_default_load_sharded_strategy,
    get_default_save_sharded_strategy,
)
from megatron.core.dist_checkpointing.strategies.async_utils import AsyncCallsQueue
from megatron.core.dist_checkpointing.strategies.fully_parallel import (
    FullyParallelLoadStrategyWrapper,
    FullyParallelSaveStrategyWrapper,
)

from alia_train.checkpoint import layout
from alia_train.checkpoint.optimizer_state import load_optimizer_state
from alia_train.checkpoint.resume_rules import (
    order_change_note,
    position_change_message,
    position_changes,
    schedule_change_note,
    schedule_changes,
)
from alia_train.checkpoint.write_errors import CheckpointWriteError, explain, writer_logs_held
from alia_train.config.schema import Config, ModelConfig

__all__ = ["CheckpointManager", "CheckpointMismatchError", "CheckpointWriteError", "TrainingProgress"]

# Fields that define the network; a checkpoint whose values differ cannot be loaded.
ARCHITECTURE_FIELDS = (
    "num_layers",
    "hidden_size",
    "ffn_hidden_size",
    "num_attention_heads",
    "num_query_groups",
    "norm_eps",
    "rope_theta",
)

_DISTOPT_SHARDING = "fully_reshardable"  # reloadable under any TP / PP / DP
_CRC_SIDE_FILE = ".crc32.rank{}.json"  # per-rank checksums, merged into COMPLETE at publish

# Test-only hook, None in every product code path: called on every rank after a checkpoint's
# files are written and before it is published. tests/checkpoint/fault_entry.py installs it
# (from outside, before calling the CLI) to hold a save in that window and kill the run there.
before_publish_hook: Callable[[Path], None] | None = None


class CheckpointMismatchError(RuntimeError):
    """The checkpoint cannot be loaded into this run's model."""


@dataclass
class TrainingProgress:
    step: int = 0
    consumed_samples: int = 0
    consumed_tokens: int = 0


@dataclass
class LoadedCheckpoint:
    path: Path
    progress: TrainingProgress
    skipped: list[tuple[Path, str]]  # (checkpoint, why) passed over before this one
    note: str = ""  # how it was used, when not as an exact resume


@contextmanager
def _params_gathered(model):
    """Model parameters all-gathered across data-parallel ranks while a save reads them.

    With `parallel.overlap_param_gather` the all-gather of the parameters updated by
    optimizer.step() is deferred to the next forward's pre-hooks, so a save right after a step
    would write stale shards. As Megatron-LM does around its save: disable the hooks, which
    forces a synchronous all-gather, and re-enable them afterwards.
    """
    hooked = [m for m in model if getattr(m, "use_forward_hook", False)]
    for m in hooked:
        m.disable_forward_pre_hook(param_sync=True)
    try:
        yield
    finally:
        for m in hooked:
            m.enable_forward_pre_hook()


def _rank() -> int:
    return dist.get_rank()


def _metadata() -> dict:
    return {"distrib_optim_sharding_type": _DISTOPT_SHARDING, "singleton_local_shards": False}


def _rng_state(cuda: bool) -> dict:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if cuda:
        state["cuda"] = torch.cuda.get_rng_state()
        from megatron.core.tensor_parallel import get_cuda_rng_tracker

        state["megatron_tracker"] = get_cuda_rng_tracker().get_states()
    return state


def _set_rng_state(state: dict, cuda: bool) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if cuda and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"])
        from megatron.core.tensor_parallel import get_cuda_rng_tracker

        get_cuda_rng_tracker().set_states(state["megatron_tracker"])


def _layout() -> dict:
    return {
        "world_size": dist.get_world_size(),
        "tp": parallel_state.get_tensor_model_parallel_world_size(),
        "pp": parallel_state.get_pipeline_model_parallel_world_size(),
        "dp": parallel_state.get_data_parallel_world_size(),
    }


def architecture_differences(saved: dict, current: ModelConfig) -> list[str]:
    return [
        f"model.{f}: checkpoint has {saved.get(f)}, config has {getattr(current, f)}"
        for f in ARCHITECTURE_FIELDS
        if saved.get(f) != getattr(current, f)
    ]


def resolved_layer_impl(cfg: Config, cuda: bool) -> str:
    from alia_train.model.spec import resolve_layer_impl

    return resolve_layer_impl(cfg.model.layer_impl, cuda)


class _WriteThenChecksum:
    """The shard writer (megatron's async_fn), followed by the CRC-32 of the files it wrote,
    left next to them. Runs where the writer runs: inline for a blocking save, in the background
    process of an async save (so checksums add nothing to the training stall)."""

    def __init__(self, write_fn: Callable, target: Path, rank: int):
        self.write_fn, self.target, self.rank = write_fn, target, rank

    def __call__(self, *args, **kwargs):
        self.write_fn(*args, **kwargs)
        buckets = args[1] if len(args) > 1 else []
        files = [Path(b[0]) for b in buckets if os.path.exists(b[0])]
        # One thread per file: reading and zlib.crc32 release the GIL.
        with ThreadPoolExecutor(max(1, len(files))) as pool:
            sums = dict(zip((f.name for f in files), pool.map(layout.file_crc32, files)))
        (self.target / _CRC_SIDE_FILE.format(self.rank)).write_text(json.dumps(sums))


def _collect_checksums(target: Path) -> dict[str, str]:
    sums: dict[str, str] = {}
    for side in target.glob(_CRC_SIDE_FILE.format("*")):
        sums.update(json.loads(side.read_text()))
        side.unlink()
    return sums


def _host_only(write_buckets) -> bool:
    return all(t.device.type == "cpu" for _, _, (_, tensors) in write_buckets for _, t in tensors)


class _ForkResultsQueue:
    """Where megatron's shard writer reports its results, for runs with async saves.

    megatron-core creates a multiprocessing Manager for this (a server process started with
    "spawn": ~3 s of start-up, one more process for Slurm's signals to hit). Its async writer
    is a child *forked* per save (TemporalAsyncCaller), so a queue created before the fork
    reaches it: the child puts into a multiprocessing queue, blocking saves (in this process)
    into a plain one, and the reader takes from whichever has the result. The child flushes its
    queue before it exits, and megatron reads only after the child has exited."""

    _CHILD_RESULT_WAIT_S = 10.0  # the result is already in the pipe; only a crashed child lacks one

    def __init__(self) -> None:
        import multiprocessing as mp

        self._owner = os.getpid()
        self._local: queue.Queue = queue.Queue()
        self._from_child = mp.get_context("fork").Queue()

    def put(self, item) -> None:
        (self._local if os.getpid() == self._owner else self._from_child).put(item)

    def get_nowait(self):
        try:
            return self._local.get_nowait()
        except queue.Empty:
            return self._from_child.get(timeout=self._CHILD_RESULT_WAIT_S)

    get = get_nowait


def _prepare_results_queue(async_save: bool) -> None:
    """Give megatron's shard writer its results queue before the first save (else it starts a
    Manager server process then): in-process without async saves, fork-aware with them."""
    from megatron.core.dist_checkpointing.strategies import filesystem_async

    current = filesystem_async._results_queue
    if async_save and not isinstance(current, _ForkResultsQueue):
        filesystem_async._results_queue = _ForkResultsQueue()
    elif current is None:
        filesystem_async._results_queue = queue.Queue()


class CheckpointManager:
    def __init__(self, cfg: Config, model: list, optimizer, scheduler, tokenizer_identity: dict, config_yaml: str,
                 cuda: bool):
        self.cfg = cfg
        self.cuda = cuda  # the run is on the GPU (train.device resolved by the runtime)
        self.run_dir = cfg.run.dir
        self.model = model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.tokenizer_identity = tokenizer_identity
        self.config_yaml = config_yaml
        self.layer_impl = resolved_layer_impl(cfg, cuda)
        self.async_queue = AsyncCallsQueue() if cfg.checkpoint.async_save else None
        self.last_saved_step: int | None = None
        self.last_save_seconds: float = 0.0  # time the training loop was blocked by the last save
        _prepare_results_queue(cfg.checkpoint.async_save)

    # ---------------------------------------------------------------- state dicts
    def _model_modules(self) -> list:
        # The unwrapped model (not the DDP wrapper), so keys carry no "module." prefix and
        # match Megatron-LM's checkpoints.
        return [chunk.module for chunk in self.model]

    def _model_key(self, i: int) -> str:
        return "model" if len(self.model) == 1 else f"model{i}"

    def _sharded_state_dict(self, is_loading: bool, include_optimizer: bool, include_rng: bool) -> dict:
        sd: dict = {}
        for i, module in enumerate(self._model_modules()):
            sd[self._model_key(i)] = module.sharded_state_dict(metadata=_metadata())
        if include_optimizer:
            sd["optimizer"] = self.optimizer.sharded_state_dict(sd, is_loading=is_loading, metadata=_metadata())
        if include_rng:
            sd["rng_state"] = ShardedObject(
                "rng_state", _rng_state(self.cuda), (dist.get_world_size(),), (_rank(),), replica_id=0
            )
        return sd

    def _dp_group(self):
        return parallel_state.get_data_parallel_group(with_context_parallel=True)

    # ---------------------------------------------------------------- saving
    def save(self, progress: TrainingProgress, *, blocking: bool = False) -> None:
        """Write a checkpoint of `progress.step`. With async_save (and not `blocking`), files are
        written in the background and published once every rank has finished. A storage failure
        (disk full, quota, file-size limit) raises CheckpointWriteError after removing the
        unfinished checkpoint; published checkpoints are never touched by a failed save."""
        start = time.perf_counter()
        self.finalize_pending(blocking=True)  # one save in flight at a time
        step = progress.step
        target = layout.partial_dir(self.run_dir, step)
        use_async = self.async_queue is not None and not blocking
        with writer_logs_held() as held:
            try:
                with _params_gathered(self.model):
                    request = self._start_save(progress, target)
                    request.add_finalize_fn(lambda: self._publish(step, target))
                    if use_async:
                        self.async_queue.schedule_async_request(request)  # copies the tensors
                    else:
                        self._execute_blocking(request)
            except (Exception, CheckpointException) as e:
                explained = self._write_failure(e, target)
                if explained is None:
                    raise
                held.records.clear()  # the one line below says it all
                raise explained from e
        self.last_saved_step = step
        self.last_save_seconds = time.perf_counter() - start

    def _start_save(self, progress: TrainingProgress, target: Path):
        if _rank() == 0:
            layout.checkpoints_dir(self.run_dir).mkdir(parents=True, exist_ok=True)
            if target.exists():
                shutil.rmtree(target)
            target.mkdir()
        dist.barrier()
        sd = self._sharded_state_dict(is_loading=False, include_optimizer=True, include_rng=True)
        sd.update(self._common_state(progress))
        strategy = FullyParallelSaveStrategyWrapper(get_default_save_sharded_strategy(), self._dp_group())
        # Always megatron's async request, so that the checksum step can follow the writer
        # wherever it runs; a blocking save executes it inline (_execute_blocking).
        request = dist_checkpointing.save(sd, str(target), strategy, async_sharded_save=True, async_strategy="mcore")
        if request.async_fn is None:  # nothing for this rank to write
            return request
        return request._replace(async_fn=_WriteThenChecksum(request.async_fn, target, _rank()))

    @staticmethod
    def _execute_blocking(request) -> None:
        """AsyncRequest.execute_sync, without the staging copy when every tensor already lives in
        host memory: nothing changes them while a blocking save runs, so they are written as
        they are (the copy cost ~10-40% of a CPU save)."""
        args = list(request.async_fn_args)
        if request.preload_fn is not None and len(args) == 3 and _host_only(args[1]):
            request = request._replace(preload_fn=None)
        request.execute_sync()

    def _publish(self, step: int, target: Path) -> None:
        # Runs on every rank once all ranks' files are written.
        if before_publish_hook is not None:
            before_publish_hook(target)
        if _rank() == 0:
            layout.publish(self.run_dir, step, {"layout": _layout(), "layer_impl": self.layer_impl},
                           crc32=_collect_checksums(target))
            layout.apply_retention(self.run_dir, self.cfg.checkpoint.keep)
        dist.barrier()

    def _write_failure(self, e: BaseException, target: Path) -> CheckpointWriteError | None:
        """The one-line error for a storage failure (the unfinished checkpoint removed), or None."""
        previous = layout.candidates(self.run_dir)
        explained = explain(e, target, previous[0].name if previous else None)
        if explained is None:
            return None
        if _rank() == 0:
            shutil.rmtree(target, ignore_errors=True)  # frees the space the failed save took
        return explained

    def finalize_pending(self, blocking: bool = False) -> None:
        if self.async_queue is None:
            return
        try:
            self.async_queue.maybe_finalize_async_calls(blocking=blocking)
        except (Exception, CheckpointException) as e:
            partials = sorted(layout.checkpoints_dir(self.run_dir).glob("*" + layout.PARTIAL_SUFFIX))
            explained = self._write_failure(e, partials[-1]) if partials else None
            if explained is None:
                raise
            raise explained from e

    def close(self) -> None:
        if self.async_queue is not None:
            try:
                self.finalize_pending(blocking=True)
            finally:
                self.async_queue.close()

    def _common_state(self, progress: TrainingProgress) -> dict:
        return {
            "progress": {
                "step": progress.step,
                "consumed_samples": progress.consumed_samples,
                "consumed_tokens": progress.consumed_tokens,
            },
            "scheduler": self.scheduler.state_dict(),
            "config_yaml": self.config_yaml,
            "model_config": {f: getattr(self.cfg.model, f) for f in ARCHITECTURE_FIELDS},
            "tokenizer": self.tokenizer_identity,
            "layout": _layout(),
            "layer_impl": self.layer_impl,
            "optimizer_form": self._optimizer_form(),
        }

    def _optimizer_form(self) -> dict:
        """What shapes the optimizer state: bf16 keeps fp32 main weights beside the model's."""
        from alia_train.config.derived import uses_bf16

        return {"precision": "bf16" if uses_bf16(self.cfg.train.precision, self.cuda) else "fp32",
                "distributed": bool(self.cfg.parallel.distributed_optimizer)}

    def _optimizer_form_problem(self, saved: dict | None, path: Path) -> str | None:
        """Optimizer states megatron-core cannot load into this run's optimizer, said before it
        tries (it fails deep in dist_checkpointing, on every rank): the distributed optimizer's
        state and the local one's are keyed differently ("Different dict keys encountered in
        apply_factory_merges", "Could not find parameter group"), and the local one's differs
        between fp32 and bf16 runs (fp32 main weights); the distributed one's does not."""
        now = self._optimizer_form()
        if not saved:
            return None
        source_run = path.parent.parent if path.parent.name == "checkpoints" else path
        fresh = (f"start a new run.dir with checkpoint.load={source_run} checkpoint.reset_optimizer=true "
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

    # ---------------------------------------------------------------- loading
    def find_resume_candidates(self) -> tuple[list[Path], bool]:
        """(checkpoints to try, whether they belong to this run). The run's own checkpoints win
        over `checkpoint.load`, so a restarted job continues where it stopped."""
        own = layout.candidates(self.run_dir)
        if own:
            return own, True
        if self.cfg.checkpoint.load:
            return layout.load_candidates(self.cfg.checkpoint.load), False
        return [], True

    def load_latest(self) -> LoadedCheckpoint | None:
        candidates, own = self.find_resume_candidates()
        skipped: list[tuple[Path, str]] = []
        for path in candidates:
            problem = self._damage(path, own)
            if problem is None:
                self._check_compatible(path, own)
                progress, schedule_note = self._load(path, own)
                return LoadedCheckpoint(path, progress, skipped, self._load_note(own) + schedule_note)
            if own and _rank() == 0:
                aside = layout.set_aside(path)
                problem += f"; moved it to {aside.name}"
            dist.barrier()
            skipped.append((path, problem))
        if skipped and not own:
            raise FileNotFoundError(f"checkpoint.load: {skipped[0][0]}: {skipped[0][1]}")
        if skipped:
            raise FileNotFoundError(
                "no usable checkpoint in run.dir: "
                + "; ".join(f"{p.name}: {why}" for p, why in skipped)
                + " (move the checkpoints away or choose another run.dir)"
            )
        return None

    def _load_note(self, own: bool) -> str:
        ck = self.cfg.checkpoint
        resets = [k for k in ("reset_optimizer", "reset_data") if getattr(ck, k)]
        if own:
            return (f"; checkpoint.{' / checkpoint.'.join(resets)} not applied: they apply once, when "
                    "a run starts from checkpoint.load, and this run has its own checkpoints") if resets else ""
        done = ", ".join(f"checkpoint.{k}" for k in resets)
        return f"; another run's checkpoint (checkpoint.load){', with ' + done if done else ''}"

    def _damage(self, path: Path, own: bool) -> str | None:
        """What is wrong with `path`'s files, the same answer on every rank: sizes checked by
        all, checksums split between the ranks (each reads 1/world of the files)."""
        problem = None
        if (path / layout.COMPLETE).exists() or own:
            problem = layout.verify(path, deep=(_rank(), dist.get_world_size()))
        if problem is None:
            try:
                dist_checkpointing.load_common_state_dict(str(path))
            except (Exception, CheckpointException) as e:  # unreadable metadata: damaged, fall back
                problem = f"unreadable ({type(e).__name__}: {e})"
        found = [None] * dist.get_world_size()
        dist.all_gather_object(found, problem)
        return next((p for p in found if p), None)

    def _check_compatible(self, path: Path, own: bool) -> None:
        common = dist_checkpointing.load_common_state_dict(str(path))
        diffs = architecture_differences(common.get("model_config", {}), self.cfg.model)
        saved_tok = common.get("tokenizer") or {}
        if saved_tok and saved_tok.get("sha256") != self.tokenizer_identity["sha256"]:
            diffs.append(
                f"data.tokenizer: checkpoint was trained with {saved_tok.get('path')} "
                f"(vocab {saved_tok.get('vocab_size')}, sha256 {str(saved_tok.get('sha256'))[:12]}), this run uses "
                f"{self.tokenizer_identity['path']} (vocab {self.tokenizer_identity['vocab_size']}); "
                "set data.tokenizer to the checkpoint's tokenizer"
            )
        if diffs:
            raise CheckpointMismatchError(
                f"checkpoint {path} has another model architecture: " + "; ".join(diffs)
            )
        if "scheduler" in common and (own or not self.cfg.checkpoint.reset_optimizer):
            problem = self._optimizer_form_problem(common.get("optimizer_form"), path)
            if problem:
                raise CheckpointMismatchError(problem)
        has_position = (common.get("progress") or {}).get("consumed_samples", 0) > 0
        if has_position and (own or not self.cfg.checkpoint.reset_data):
            changes = position_changes(common.get("config_yaml"), self.cfg)
            if changes:
                source_run = path.parent.parent if path.parent.name == "checkpoints" else path
                raise CheckpointMismatchError(position_change_message(str(path), str(source_run), changes, own))

    def _load(self, path: Path, own: bool) -> tuple[TrainingProgress, str]:
        """Load `path`. Own checkpoint: everything, exactly. Another run's (checkpoint.load):
        weights always; optimizer, LR schedule and step unless checkpoint.reset_optimizer; the
        data position unless checkpoint.reset_data. Also returns what the resume line adds: what
        became of a changed LR schedule, and where the run stands in the data."""
        ck = self.cfg.checkpoint
        common = dist_checkpointing.load_common_state_dict(str(path))
        has_optimizer = "scheduler" in common
        load_optimizer = has_optimizer and (own or not ck.reset_optimizer)
        same_layout = common.get("layout", {}) == _layout()
        sd = self._sharded_state_dict(is_loading=True, include_optimizer=load_optimizer,
                                      include_rng=same_layout and load_optimizer)
        state = self._load_sharded(sd, path, common.get("layer_impl", "local"))
        for i, module in enumerate(self._model_modules()):
            load_model_state(module, state[self._model_key(i)])
        saved = common.get("progress") or {}
        progress = TrainingProgress()
        schedule_note = ""
        if load_optimizer:
            override = self.cfg.optim.override_schedule
            load_optimizer_state(self.optimizer, state["optimizer"], keep_saved_schedule=not override)
            changes = schedule_changes(common["scheduler"], self.scheduler)
            schedule_note = schedule_change_note(changes, override)
            self.scheduler.load_state_dict(common["scheduler"])
            progress = TrainingProgress(saved["step"], saved["consumed_samples"], saved.get("consumed_tokens", 0))
            if "rng_state" in state:
                _set_rng_state(state["rng_state"], self.cuda)
        if not own and has_optimizer and not ck.reset_data:
            progress.consumed_samples = saved.get("consumed_samples", 0)
        if not own and ck.reset_data:
            progress.consumed_samples = 0
        order_note = order_change_note(common.get("config_yaml"), self.cfg) if progress.consumed_samples else ""
        return progress, schedule_note + order_note

    def _load_sharded(self, sd: dict, path: Path, saved_impl: str) -> dict:
        strategy = FullyParallelLoadStrategyWrapper(get_default_load_sharded_strategy(str(path)), self._dp_group())
        return load_sharded(sd, path, strategy, saved_impl, self.layer_impl)


def load_sharded(sd: dict, path: Path, strategy, saved_impl: str, current_impl: str) -> dict:
    """dist_checkpointing.load that tolerates absent `_extra_state` entries (local <-> TE) and
    refuses, in one line, a checkpoint that lacks any real tensor of the model."""
    state, _not_requested, absent = dist_checkpointing.load(
        sd, str(path), strategy, strict=StrictHandling.RETURN_UNEXPECTED
    )
    problem = absent_keys_problem(absent, saved_impl, current_impl)
    if problem:
        raise CheckpointMismatchError(f"checkpoint {path}: {problem}")
    return state


def absent_keys_problem(absent: set[str], saved_impl: str, current_impl: str) -> str | None:
    """Keys this model asked for that the checkpoint lacks. Transformer Engine layers keep an
    `_extra_state` (FP8 metadata) that megatron's local layers do not have: those are left at the
    model's fresh value, which is what TE holds before its first FP8 step. Anything else absent
    means the checkpoint does not hold this model."""
    real = sorted(k for k in absent if not k.endswith("_extra_state"))
    if not real:
        return None
    impl = (f"it was written with model.layer_impl={saved_impl}, this run uses {current_impl}; "
            if saved_impl != current_impl else "")
    return (f"{len(real)} tensor(s) of this model are not in it (e.g. {real[0]}); {impl}"
            f"load it with the model.* settings and model.layer_impl={saved_impl} it was written with")


def load_model_state(module, state: dict) -> None:
    """load_state_dict that tolerates absent `_extra_state` entries only (see absent_keys_problem)."""
    from megatron.core.transformer.module import Float16Module

    if isinstance(module, Float16Module):  # its load_state_dict returns nothing
        module = module.module
    result = module.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("_extra_state")]
    if missing or result.unexpected_keys:
        raise CheckpointMismatchError(
            f"checkpoint does not match the model: missing {missing[:3]}, unexpected {result.unexpected_keys[:3]}"
        )
