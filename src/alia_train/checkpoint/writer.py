"""Writing checkpoints: every rank's shards (fully parallel), async when configured, published
atomically once all ranks are done (directory.py: `.partial`, COMPLETE with checksums, rename,
`latest`, retention). What is written is state_dict.py's; storage failures are write_errors.py's.
"""

from __future__ import annotations

import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import torch.distributed as dist
from megatron.core import dist_checkpointing, parallel_state
from megatron.core.dist_checkpointing.serialization import get_default_save_sharded_strategy
from megatron.core.dist_checkpointing.strategies.async_utils import AsyncCallsQueue
from megatron.core.dist_checkpointing.strategies.fully_parallel import FullyParallelSaveStrategyWrapper
from torch.distributed.checkpoint.api import CheckpointException  # a BaseException, not an Exception

from alia_train.checkpoint import directory
from alia_train.checkpoint.async_write import (
    WriteThenChecksum,
    collect_checksums,
    execute_blocking,
    files_written_at,
    prepare_results_queue,
)
from alia_train.checkpoint.state_dict import PORTABLE, ROUTINE, TrainingProgress, TrainingState, parallel_layout
from alia_train.checkpoint.write_errors import CheckpointWriteError, explain, writer_logs_held

__all__ = ["CheckpointWriter", "CheckpointWriteError"]

# Test-only hook, None in every product code path: called on every rank after a checkpoint's
# files are written and before it is published. tests/checkpoint/fault_entry.py installs it
# (from outside, before calling the CLI) to hold a save in that window and kill the run there.
before_publish_hook: Callable[[Path], None] | None = None


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


class CheckpointWriter:
    def __init__(self, state: TrainingState):
        self.state = state
        self.run_dir = state.cfg.run.dir
        self.keep = state.cfg.checkpoint.keep
        async_save = state.cfg.checkpoint.async_save
        self.async_queue = AsyncCallsQueue() if async_save else None
        self.last_saved_step: int | None = None
        # How long the last save took: the training's wait for a blocking one; for an async one,
        # from its start until every rank's files were written (rank 0 learns it at publish):
        # about what the blocking save on SIGTERM will take (KillWait warning, signals.py).
        self.last_save_seconds: float = 0.0
        prepare_results_queue(async_save)

    def save(self, progress: TrainingProgress, *, blocking: bool = False, portable: bool = False) -> None:
        """Write a checkpoint of `progress.step`. With async_save (and not `blocking`), files are
        written in the background and published once every rank has finished. `portable`: the
        distributed optimizer's state in the form any layout can load (state_dict.py; gathers
        each stage's state over DP: for a layout change, not routine saves). A storage failure
        (disk full, quota, file-size limit) raises CheckpointWriteError after removing the
        unfinished checkpoint; published checkpoints are never touched by a failed save."""
        start = time.perf_counter()
        self.finalize_pending(blocking=True)  # one save in flight at a time
        started_at = time.time()
        step = progress.step
        target = directory.partial_dir(self.run_dir, step)
        use_async = self.async_queue is not None and not blocking
        with writer_logs_held() as held:
            try:
                with _params_gathered(self.state.model):
                    request = self._start_save(progress, target, PORTABLE if portable else ROUTINE)
                    request.add_finalize_fn(lambda: self._publish(step, target, started_at if use_async else None))
                    if use_async:
                        self.async_queue.schedule_async_request(request)  # copies the tensors
                    else:
                        execute_blocking(request)
            except (Exception, CheckpointException) as e:
                explained = self._write_failure(e, target)
                if explained is None:
                    raise
                held.records.clear()  # the one line below says it all
                raise explained from e
        self.last_saved_step = step
        if not use_async:  # an async one's is known when its files are all written (_publish)
            self.last_save_seconds = time.perf_counter() - start

    def _start_save(self, progress: TrainingProgress, target: Path, sharding: str):
        if dist.get_rank() == 0:
            directory.checkpoints_dir(self.run_dir).mkdir(parents=True, exist_ok=True)
            if target.exists():
                shutil.rmtree(target)
            target.mkdir()
        dist.barrier()
        sd = self.state.sharded(is_loading=False, include_optimizer=True, include_rng=True, sharding=sharding)
        sd.update(self.state.common(progress, sharding))
        dp_group = parallel_state.get_data_parallel_group(with_context_parallel=True)
        strategy = FullyParallelSaveStrategyWrapper(get_default_save_sharded_strategy(), dp_group)
        # Always megatron's async request, so that the checksum step can follow the writer
        # wherever it runs; a blocking save executes it inline (execute_blocking).
        request = dist_checkpointing.save(sd, str(target), strategy, async_sharded_save=True, async_strategy="mcore")
        if request.async_fn is None:  # nothing for this rank to write
            return request
        return request._replace(async_fn=WriteThenChecksum(request.async_fn, target, dist.get_rank()))

    def _publish(self, step: int, target: Path, async_started_at: float | None) -> None:
        # Runs on every rank once all ranks' files are written.
        if before_publish_hook is not None:
            before_publish_hook(target)
        if dist.get_rank() == 0:
            written_at = files_written_at(target)
            if async_started_at is not None and written_at is not None:
                self.last_save_seconds = written_at - async_started_at
            directory.publish(self.run_dir, step, {"layout": parallel_layout(), "layer_impl": self.state.layer_impl},
                           crc32=collect_checksums(target))
            directory.apply_retention(self.run_dir, self.keep)
        dist.barrier()

    def _write_failure(self, e: BaseException, target: Path) -> CheckpointWriteError | None:
        """The one-line error for a storage failure (the unfinished checkpoint removed), or None."""
        previous = directory.candidates(self.run_dir)
        explained = explain(e, target, previous[0].name if previous else None)
        if explained is None:
            return None
        if dist.get_rank() == 0:
            shutil.rmtree(target, ignore_errors=True)  # frees the space the failed save took
        return explained

    def finalize_pending(self, blocking: bool = False) -> None:
        if self.async_queue is None:
            return
        try:
            self.async_queue.maybe_finalize_async_calls(blocking=blocking)
        except (Exception, CheckpointException) as e:
            partials = sorted(directory.checkpoints_dir(self.run_dir).glob("*" + directory.PARTIAL_SUFFIX))
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
