"""Signal hygiene for the helper processes that alia-train and megatron-core start.

Slurm delivers a job's signals (USR1 from `--signal`, TERM from `scancel`, the time limit or a
preemption, CONT) to every process of the step, not only to alia-train. multiprocessing starts
a resource tracker, megatron-core starts a Manager for its write results unless given a queue
(checkpoint/async_write.py gives it one), async saves fork a writer per save, and data loaders start
workers. With the default actions these helpers die
on USR1/TERM, and the save that the signal asked for fails (BrokenPipeError / EOFError). And
when alia-train itself is killed hard (OOM killer, SIGKILL), helpers that outlive it keep the
step's output open and the step hangs.

`install()` (called first thing by `alia-train`) makes every helper started through
`multiprocessing` (any start method, torch.multiprocessing included):

* keep the scheduler's signals (HELPER_BLOCKED) blocked, so they stay pending and harmless.
  The signal mask is inherited through fork and exec, so blocking it around `Process.start`
  covers the child from its first instruction. A SIGTERM from its own parent (how
  `Process.terminate()` and multiprocessing's exit handler stop a helper) still ends it;
* die with its parent: `prctl(PR_SET_PDEATHSIG, SIGKILL)` (Linux) when it was started from the
  main thread (PDEATHSIG fires when the *thread* that started the child exits, much too early
  for a short-lived thread; megatron-core starts its Manager from a worker thread), and in any
  case a watcher thread that exits the helper within POLL_SECONDS of its parent's death.

The resource tracker gets the blocked mask too; it needs no PDEATHSIG (it exits when the last
process holding its pipe does).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
from multiprocessing import process, resource_tracker, spawn

# What a scheduler or a terminal sends to a whole job or process group.
HELPER_BLOCKED = frozenset(
    {signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2, signal.SIGCONT, signal.SIGHUP}
)
_PR_SET_PDEATHSIG = 1
POLL_SECONDS = 1.0

_installed = False
_starting = threading.local()  # set while this thread is inside Process.start()


def set_parent_death_signal(sig: int = signal.SIGKILL) -> bool:
    """Have the kernel send `sig` to this process when the thread that started it exits."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch_parent(parent_pid: int) -> None:
    """Consume the blocked signals; end on a SIGTERM sent by the parent (terminate()) and when
    the parent is gone (this process was handed to another parent)."""
    while True:
        info = signal.sigtimedwait(HELPER_BLOCKED, POLL_SECONDS)
        if info is not None and info.si_signo == signal.SIGTERM and info.si_pid == parent_pid:
            os._exit(128 + signal.SIGTERM)  # what the default action would report
        if os.getppid() != parent_pid:
            os._exit(1)


def become_helper(parent_pid: int, die_with_parent: bool) -> None:
    """Runs first in a new helper process (its signal mask already blocks HELPER_BLOCKED)."""
    signal.pthread_sigmask(signal.SIG_BLOCK, HELPER_BLOCKED)
    if die_with_parent and set_parent_death_signal() and os.getppid() != parent_pid:
        os._exit(1)  # the parent died before PDEATHSIG was armed
    threading.Thread(target=_watch_parent, args=(parent_pid,), name="alia-watch-parent", daemon=True).start()


class blocked_signals:
    """Block HELPER_BLOCKED in this thread for the duration (children inherit the mask)."""

    def __enter__(self):
        self._previous = signal.pthread_sigmask(signal.SIG_BLOCK, HELPER_BLOCKED)
        return self

    def __exit__(self, *exc) -> None:
        signal.pthread_sigmask(signal.SIG_SETMASK, self._previous)


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _wrap_start(original):
    def start(self):
        _starting.parent = (os.getpid(), _in_main_thread())
        try:
            with blocked_signals():
                return original(self)
        finally:
            _starting.parent = None

    start.__wrapped__ = original
    return start


def _after_fork_in_child() -> None:
    # A fork-started helper: the child continues as the thread that was inside start().
    parent = getattr(_starting, "parent", None)
    if parent is not None:
        _starting.parent = None
        become_helper(*parent)


def _wrap_get_command_line(original):
    # A spawn-started helper is a new interpreter: prefix its `-c` program with become_helper.
    def get_command_line(**kwds):
        cmd = original(**kwds)
        parent = getattr(_starting, "parent", None)
        if parent is None or "-c" not in cmd:
            return cmd
        i = cmd.index("-c") + 1
        prefix = (
            "try:\n from alia_train.parallel.child_processes import become_helper\n"
            "except ImportError:\n pass\n"
            f"else:\n become_helper({parent[0]}, {parent[1]})\n"
        )
        return [*cmd[:i], prefix + cmd[i], *cmd[i + 1:]]

    get_command_line.__wrapped__ = original
    return get_command_line


def _wrap_ensure_running(original):
    def ensure_running(self):
        with blocked_signals():
            return original(self)

    ensure_running.__wrapped__ = original
    return ensure_running


def install() -> None:
    """Apply the helper-process rules to every later multiprocessing start. Idempotent."""
    global _installed
    if _installed or not hasattr(signal, "pthread_sigmask"):
        return
    _installed = True
    process.BaseProcess.start = _wrap_start(process.BaseProcess.start)
    spawn.get_command_line = _wrap_get_command_line(spawn.get_command_line)
    tracker = resource_tracker.ResourceTracker
    tracker.ensure_running = _wrap_ensure_running(tracker.ensure_running)
    # The module-level alias is a method bound at import time: rebind it to the wrapped one.
    resource_tracker.ensure_running = resource_tracker._resource_tracker.ensure_running
    os.register_at_fork(after_in_child=_after_fork_in_child)
