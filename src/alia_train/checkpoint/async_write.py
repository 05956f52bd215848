"""The pieces of megatron-core's shard writer that alia-train adapts: checksums written where
the writer runs, the queue it reports its results on, and blocking saves without a staging copy."""

from __future__ import annotations

import json
import os
import queue
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

from alia_train.checkpoint import directory

_CRC_SIDE_FILE = ".crc32.rank{}.json"  # per-rank checksums, merged into COMPLETE at publish


class WriteThenChecksum:
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
            sums = dict(zip((f.name for f in files), pool.map(directory.file_crc32, files)))
        (self.target / _CRC_SIDE_FILE.format(self.rank)).write_text(json.dumps(sums))


def files_written_at(target: Path) -> float | None:
    """Wall-clock time the last rank finished writing `target` (its checksum file is the last
    thing it writes), or None before any has; read before collect_checksums removes them."""
    times = [side.stat().st_mtime for side in target.glob(_CRC_SIDE_FILE.format("*"))]
    return max(times, default=None)


def collect_checksums(target: Path) -> dict[str, str]:
    """Every rank's checksums of `target`'s files (their side files removed)."""
    sums: dict[str, str] = {}
    for side in target.glob(_CRC_SIDE_FILE.format("*")):
        sums.update(json.loads(side.read_text()))
        side.unlink()
    return sums


def _host_only(write_buckets) -> bool:
    return all(t.device.type == "cpu" for _, _, (_, tensors) in write_buckets for _, t in tensors)


def execute_blocking(request) -> None:
    """AsyncRequest.execute_sync, without the staging copy when every tensor already lives in
    host memory: nothing changes them while a blocking save runs, so they are written as they
    are (the copy cost ~10-40% of a CPU save)."""
    args = list(request.async_fn_args)
    if request.preload_fn is not None and len(args) == 3 and _host_only(args[1]):
        request = request._replace(preload_fn=None)
    request.execute_sync()


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


def prepare_results_queue(async_save: bool) -> None:
    """Give megatron's shard writer its results queue before the first save (else it starts a
    Manager server process then): in-process without async saves, fork-aware with them."""
    from megatron.core.dist_checkpointing.strategies import filesystem_async

    current = filesystem_async._results_queue
    if async_save and not isinstance(current, _ForkResultsQueue):
        filesystem_async._results_queue = _ForkResultsQueue()
    elif current is None:
        filesystem_async._results_queue = queue.Queue()
