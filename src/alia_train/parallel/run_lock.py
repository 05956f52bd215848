"""One writer per run directory: a lock file that two jobs (a requeued job and a stray
resubmission, two chained jobs that overlap) cannot both hold.

RUN_DIR/run.lock is created with O_CREAT | O_EXCL (atomic on local disks, NFS and GPFS) and holds
who took it: host, pid, Slurm job id and restart count, and a random token. The holder touches
it (heartbeat) while it trains. A lock is stale, and may be broken, when
  * its holder ran on this host and its pid is gone, or
  * its holder is an earlier incarnation of this very Slurm job (same job id, lower
    SLURM_RESTART_COUNT: Slurm only restarts a job once the previous run ended), or
  * its heartbeat is older than `stale_after_s` (the holder died on another host).
Breaking is serialised by a second lock (run.lock.break) and re-checks the token just before
removing, so two contenders never both break and both take it.

The same lock keeps other outputs to one writer: `alia-data tokenize` holds `PREFIX.lock`
(`path=`, `subject=`) while it writes a shard set.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from alia_train.exit_codes import EXIT_LOCK_LOST
from alia_train.fs import pid_alive

LOCK_NAME = "run.lock"
BREAK_SUFFIX = ".break"
# With the heartbeat thread beating every HEARTBEAT_EVERY_S, 15 missed beats: survives a slow
# shared file system, and a different job waits at most this long after a holder died elsewhere.
DEFAULT_STALE_AFTER_S = 15 * 60
HEARTBEAT_EVERY_S = 60.0
_BREAKER_STALE_S = 60.0  # a breaker that crashed mid-break


class RunLockedError(RuntimeError):
    """The run directory is held by a live job."""


class RunLockLostError(RunLockedError):
    """Our lock was broken or replaced by someone else: stop writing."""


@dataclass(frozen=True)
class LockHolder:
    host: str
    pid: int
    job_id: str | None
    restart_count: int
    started: float
    token: str
    heartbeat: float  # the lock file's mtime

    def describe(self) -> str:
        job = f" (Slurm job {self.job_id}, restart {self.restart_count})" if self.job_id else ""
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started))
        return f"pid {self.pid} on host {self.host}{job}, started {started}"


class RunLock:
    def __init__(
        self,
        run_dir: str | os.PathLike,
        *,
        stale_after_s: float = DEFAULT_STALE_AFTER_S,
        environ: dict[str, str] | None = None,
        path: str | os.PathLike | None = None,
        subject: str | None = None,
    ) -> None:
        env = os.environ if environ is None else environ
        self.run_dir = Path(run_dir)
        self.path = Path(path) if path is not None else self.run_dir / LOCK_NAME
        # What the lock keeps to one writer, as the messages name it, and the rule they state.
        self.subject = subject or f"run dir {self.run_dir}"
        self.rule = "Two jobs must not write one run." if subject is None else "Two jobs must not write it at once."
        self.stale_after_s = stale_after_s
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.job_id = env.get("SLURM_JOB_ID") or None
        self.restart_count = int(env.get("SLURM_RESTART_COUNT") or 0)
        self.token: str | None = None
        self._last_beat = 0.0
        self._beater: threading.Thread | None = None
        self._stop_beating = threading.Event()

    # ------------------------------------------------------------------ reading
    def holder(self) -> LockHolder | None:
        """Who holds the lock now; None if nobody (or the file vanished while reading)."""
        try:
            text = self.path.read_text()
            mtime = self.path.stat().st_mtime
        except FileNotFoundError:
            return None
        try:
            d = json.loads(text)
            return LockHolder(
                host=str(d["host"]), pid=int(d["pid"]), job_id=d.get("job_id"),
                restart_count=int(d.get("restart_count", 0)), started=float(d["started"]),
                token=str(d["token"]), heartbeat=mtime,
            )
        except (ValueError, KeyError, TypeError):
            # Half-written by a holder that died between create and write: stale once old.
            return LockHolder("?", -1, None, 0, mtime, "", mtime)

    def stale_reason(self, h: LockHolder, now: float | None = None) -> str | None:
        """Why `h`'s lock may be broken, or None if it belongs to a live holder."""
        now = time.time() if now is None else now
        if h.host == self.host and h.pid > 0 and not pid_alive(h.pid):
            return f"its process {h.pid} on this host ({h.host}) is gone"
        if self.job_id and h.job_id == self.job_id and h.restart_count < self.restart_count:
            return f"it was taken by an earlier run of this job ({h.job_id}, restart {h.restart_count})"
        age = now - h.heartbeat
        if age > self.stale_after_s:
            return f"no heartbeat for {age / 60:.0f} min (stale after {self.stale_after_s / 60:.0f} min)"
        return None

    # ------------------------------------------------------------------ taking and giving back
    def acquire(self, wait_s: float = 0.0, poll_s: float = 5.0) -> None:
        """Take the lock, breaking a stale one; wait up to `wait_s` for a live holder to go.
        Raises RunLockedError naming the holder and how to break the lock."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + wait_s
        while True:
            if self._try_create():
                return
            h = self.holder()
            if h is None:
                continue  # released between our create and read: try again at once
            reason = self.stale_reason(h)
            if reason is not None:
                self._break(h)
                continue
            if time.monotonic() >= deadline:
                raise RunLockedError(self._locked_message(h))
            time.sleep(poll_s)

    def _try_create(self) -> bool:
        token = uuid.uuid4().hex
        record = {
            "host": self.host, "pid": self.pid, "job_id": self.job_id,
            "restart_count": self.restart_count, "started": time.time(), "token": token,
        }
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            json.dump(record, f)
            f.flush()
            os.fsync(f.fileno())
        self.token = token
        self._last_beat = time.monotonic()
        return True

    def _break(self, seen: LockHolder) -> None:
        breaker = self.path.with_name(self.path.name + BREAK_SUFFIX)
        try:
            fd = os.open(breaker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                if time.time() - breaker.stat().st_mtime > _BREAKER_STALE_S:
                    breaker.unlink(missing_ok=True)
            except FileNotFoundError:
                pass
            time.sleep(0.1)  # someone else is breaking it; look again
            return
        os.close(fd)
        try:
            now = self.holder()
            # Only remove the lock we judged stale, not one taken since.
            if now is not None and now.token == seen.token and now.started == seen.started:
                self.path.unlink(missing_ok=True)
        finally:
            breaker.unlink(missing_ok=True)

    def heartbeat(self, force: bool = False) -> None:
        """Show we are alive (at most every HEARTBEAT_EVERY_S unless forced); raises
        RunLockLostError if the lock is no longer ours."""
        if self.token is None:
            raise RunLockLostError(f"heartbeat on {self.path} without holding it")
        if not force and time.monotonic() - self._last_beat < HEARTBEAT_EVERY_S:
            return
        h = self.holder()
        for _ in range(20):  # a new holder between creating its lock and writing it: wait up to 2 s
            if h is None or h.pid != -1:
                break
            time.sleep(0.1)
            h = self.holder()
        if h is None or h.token != self.token:
            other = f"now held by {h.describe()}" if h else "the lock file is gone"
            raise RunLockLostError(
                f"lost the lock {self.path} of {self.subject} ({other}); stopping so that two jobs "
                "do not write it at once"
            )
        os.utime(self.path)
        self._last_beat = time.monotonic()

    def start_heartbeat(
        self, every_s: float = HEARTBEAT_EVERY_S, on_lost: Callable[[RunLockLostError], None] | None = None
    ) -> None:
        """Beat from a daemon thread, so that long steps and blocking checkpoint saves need no
        calls from the training loop. `on_lost` (default: print and exit the process with
        EXIT_LOCK_LOST) runs if the lock was taken from us."""

        def lost(e: RunLockLostError) -> None:
            print(f"alia-train: error: {e}", file=sys.stderr, flush=True)
            os._exit(EXIT_LOCK_LOST)

        def beat() -> None:
            while not self._stop_beating.wait(every_s):
                try:
                    self.heartbeat(force=True)
                except RunLockLostError as e:
                    (on_lost or lost)(e)
                    return
                except OSError:
                    pass  # a file-system hiccup: the next beat tries again

        self._stop_beating.clear()
        self._beater = threading.Thread(target=beat, name="run-lock-heartbeat", daemon=True)
        self._beater.start()

    def release(self) -> None:
        """Give the lock back if it is still ours (idempotent)."""
        self._stop_beating.set()
        if self._beater is not None and self._beater is not threading.current_thread():
            self._beater.join(timeout=5)
        self._beater = None
        if self.token is None:
            return
        h = self.holder()
        if h is not None and h.token == self.token:
            self.path.unlink(missing_ok=True)
        self.token = None

    @property
    def held(self) -> bool:
        return self.token is not None

    def __enter__(self) -> RunLock:
        self.acquire()
        self.start_heartbeat()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def _locked_message(self, h: LockHolder) -> str:
        age = time.time() - h.heartbeat
        gone = (f"`squeue -j {h.job_id}` shows whether it still runs; if that job is gone" if h.job_id
                else "If it is gone")
        return (
            f"{self.subject} is in use by {h.describe()}; last heartbeat {age:.0f} s ago. "
            f"{self.rule} {gone}, the lock is taken over "
            f"automatically once it has had no heartbeat for {self.stale_after_s / 60:.0f} min, or remove "
            f"{self.path} by hand (rm {self.path}) after making sure nothing writes to {self.subject}"
        )
