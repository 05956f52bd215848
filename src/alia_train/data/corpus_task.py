"""One task of a planned corpus (corpus_plan.py): `alia-data tokenize --output-dir DIR --task I`.

The task tokenizes its shard sets in order, each an ordinary `alia-data tokenize` run into its
own prefix (published atomically, under PREFIX.lock), with every core. When all are published
it writes its completion marker, DIR/shards/<plan>/taskIIIII.done.json: what the merge reads.

Reruns: a task whose marker is there and whose sets still match their manifests (sizes and
modification times, as training checks them) is skipped at once. Otherwise each set is done
unless it is up to date (tokenize's own rule: same request, files match their SHA-256), so a
task cut short (time limit, node failure, scancel) goes on from its last published set; the
set it was writing is redone from scratch.
"""

from __future__ import annotations

import glob
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress
from dataclasses import replace
from typing import TextIO

from alia_train.data.corpus_plan import Plan, PlanError, PlannedSet
from alia_train.data.manifest import manifest_problem, read_manifest, stats_path
from alia_train.data.tokenize import tokenize
from alia_train.fs import write_json_atomic
from alia_train.progress import ProgressLine, human

MARKER_VERSION = 1


def task_problem(plan: Plan, task: int) -> str | None:
    """Why task `task` is not finished, or None when it is."""
    problems = [_set_problem(plan.prefix(s)) for s in plan.tasks[task]]
    marker = read_manifest(plan.marker_path(task))
    if marker is None or marker.get("plan") != plan.id:
        done = sum(p is None for p in problems)
        return f"no completion marker; {done} of {len(problems)} shard set(s) published"
    return next((p for p in problems if p is not None), None)


def _set_problem(prefix: str) -> str | None:
    path = stats_path(prefix)
    manifest = read_manifest(path)
    if manifest is None:
        return f"{path} is missing"
    return manifest_problem(path, manifest, deep=False)


def unfinished_tasks(plan: Plan) -> dict[int, str]:
    return {t: why for t in range(len(plan.tasks)) if (why := task_problem(plan, t)) is not None}


def run_task(plan: Plan, task: int, workers: int | None, strict: bool, progress: bool, log=print,
             hold: Callable[[str], AbstractContextManager] | None = None) -> dict:
    """Tokenize task `task`'s sets (those not up to date), then write its marker; return it."""
    n = len(plan.tasks)
    if not 0 <= task < n:
        raise PlanError(f"--task {task}: the plan in {plan.root} has {n} task(s), 0 to {n - 1}")
    sets = plan.tasks[task]
    if task_problem(plan, task) is None:
        log(f"task {task} of {n}: finished before ({len(sets)} set(s), {plan.marker_path(task)}); nothing to do")
        marker = read_manifest(plan.marker_path(task))
        assert marker is not None
        return marker
    label = f"task {task} of {n}"
    log(f"{label}: {len(sets)} shard set(s), {human(sum(s.bytes for s in sets), 'B')} of input, "
        f"plan {plan.id}, on {socket.gethostname()}")
    shown = TaskProgress(label, sets, enabled=progress)
    opts = plan.options(workers=workers, strict=strict, progress=False)
    t0 = time.perf_counter()
    records = []
    for j, s in enumerate(sets):
        meter = shown.start_set(j)
        stats = tokenize(replace(opts, inputs=list(s.inputs), output_prefix=plan.prefix(s)), log,
                         _cleaning(hold, log), meter)
        records.append(_set_record(plan, s, stats, reused=not meter.encoded))
        log(shown.end_set(j, stats, meter.encoded))
    shown.close()
    marker = _marker(plan, task, records, time.perf_counter() - t0)
    write_json_atomic(plan.marker_path(task), marker)
    log(f"{label}: finished; {_summary(marker)}; marker {plan.marker_path(task)}")
    return marker


def _cleaning(hold: Callable[[str], AbstractContextManager] | None, log) -> Callable[[str], AbstractContextManager]:
    """`hold`, then the removal of the prefix's temporary files, whichever host wrote them.

    tokenize removes only those of dead processes on its own host; a task redone on another node
    after a node failure would leave the dead node's behind. Holding the prefix's lock, no other
    writer is alive: every temporary file of the prefix is stale."""

    @contextmanager
    def held(prefix: str) -> Iterator[object]:
        with hold(prefix) if hold is not None else nullcontext() as still_ours:
            stale = glob.glob(glob.escape(prefix) + "[._]*.tmp-*")
            for path in stale:
                with suppress(FileNotFoundError):
                    os.unlink(path)
            if stale:
                log(f"removed {len(stale)} temporary file(s) of {prefix} left by an earlier run")
            yield still_ours  # tokenize's check before publishing

    return held


def _set_record(plan: Plan, s: PlannedSet, stats: dict, reused: bool) -> dict:
    return {"name": s.name, "prefix": plan.prefix(s), "input_bytes": s.bytes, "reused": reused,
            "outputs": stats["outputs"], "totals": stats["totals"], "skipped": stats["skipped"],
            "elapsed_s": stats.get("elapsed_s"), "workers": stats.get("workers")}


def _marker(plan: Plan, task: int, sets: list[dict], elapsed: float) -> dict:
    encoded = [s for s in sets if not s["reused"]]
    text = sum(s["totals"]["bytes"] for s in encoded)
    return {
        "version": MARKER_VERSION, "plan": plan.id, "task": task, "tasks": len(plan.tasks),
        "host": socket.gethostname(), "slurm_job": _slurm_job(),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        "elapsed_s": round(elapsed, 3), "sets_encoded": len(encoded),
        "input_bytes_encoded": sum(s["input_bytes"] for s in encoded), "text_bytes_encoded": text,
        "text_bytes_per_s": round(text / elapsed, 1) if encoded and elapsed > 0 else None,
        "sets": sets,
    }


def _summary(marker: dict) -> str:
    docs = sum(s["totals"]["documents"] for s in marker["sets"])
    tokens = sum(s["totals"]["tokens"] for s in marker["sets"])
    text = f"{docs:,} documents, {tokens:,} tokens in {len(marker['sets'])} set(s)"
    if marker["sets_encoded"]:
        rate = marker["text_bytes_per_s"]
        text += (f"; {marker['sets_encoded']} encoded in {marker['elapsed_s']:.1f} s"
                 + (f" ({human(rate, 'B/s')} of text)" if rate else ""))
    return text


def _slurm_job() -> str | None:
    job, index = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if job and index:
        return f"{job}_{index}"
    return os.environ.get("SLURM_JOB_ID")


class _SetMeter:
    """The progress sink of one set's tokenize run: forwards to the task's line."""

    def __init__(self, task: TaskProgress, index: int, total: int) -> None:
        self.task, self.index, self.total = task, index, max(1, total)
        self.encoded = False  # tokenize reports only when it encodes (not for an up-to-date set)

    def update(self, done_bytes: float, docs: int, tokens: int, text_bytes: int, force: bool = False) -> None:
        self.encoded = True
        # tokenize forces a last line at the end of its run: here the task logs the set instead.
        self.task.show(self.index, done_bytes, docs, tokens, text_bytes)

    def close(self) -> None:
        pass


class TaskProgress:
    """One progress line for a task's sets: documents and text rate of the sets encoded in this
    run, and the time left from the input bytes still to do at that run's input rate (sets
    found up to date count as done, not as speed)."""

    def __init__(self, label: str, sets: tuple[PlannedSet, ...], enabled: bool = True,
                 stream: TextIO | None = None, log_interval: float = 30.0) -> None:
        self.label, self.sets, self.enabled = label, sets, enabled
        self.line = ProgressLine(stream or sys.stderr)
        self.line.every_s = 0.5 if self.line.live else log_interval
        self.line.due()  # the first line after one interval
        self.total = max(1, sum(s.bytes for s in sets))
        self.done = 0  # input bytes of the sets finished (encoded or up to date)
        self.worked = 0  # input bytes encoded in this run, of finished sets
        self.docs = self.tokens = self.text = 0
        self.started: float | None = None
        self.set_started = 0.0

    def start_set(self, index: int) -> _SetMeter:
        self.set_started = time.monotonic()
        return _SetMeter(self, index, self.sets[index].bytes)

    def show(self, index: int, done: float, docs: int, tokens: int, text: int, force: bool = False) -> None:
        if self.started is None:
            self.started = self.set_started
        if not self.enabled or not self.line.due(force):
            return
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = (self.worked + done) / elapsed
        left = self.total - self.done - done
        eta = f", ~{left / rate:.0f}s left" if rate > 0 and left > 0 else ""
        self.line.show(
            f"{self.label} set {index + 1}/{len(self.sets)} {100 * min(1.0, (self.done + done) / self.total):5.1f}% | "
            f"{human(self.docs + docs)} docs | {human(self.tokens + tokens)} tokens | "
            f"{human((self.text + text) / elapsed, 'B/s')} | {elapsed:.0f}s elapsed{eta}"
        )

    def end_set(self, index: int, stats: dict, encoded: bool) -> str:
        """Account a finished set; the line to log about it."""
        s = self.sets[index]
        self.done += s.bytes
        head = f"{self.label} set {index + 1}/{len(self.sets)} {s.name}"
        t = stats["totals"]
        if not encoded:
            return f"{head}: up to date ({t['documents']:,} documents, finished before)"
        self.worked += s.bytes
        self.docs += t["documents"]
        self.tokens += t["tokens"]
        self.text += t["bytes"]
        took = time.monotonic() - self.set_started
        return (f"{head}: {t['documents']:,} documents, {t['tokens']:,} tokens, {human(t['bytes'], 'B')} of text "
                f"in {took:.1f} s ({human(t['bytes'] / max(took, 1e-9), 'B/s')})")

    def close(self) -> None:
        if self.enabled:
            self.line.close()
