"""Stop requests from the scheduler: what SIGUSR1 and SIGTERM mean to alia-train.

* SIGUSR1 (Slurm's `--signal=B:USR1@N` warning before the time limit, or `scancel --batch
  --signal=USR1`): save a checkpoint at the next step boundary and exit with EXIT_RESUME (75);
  the batch script requeues the job and it resumes from that checkpoint.
* SIGTERM (`scancel`, the time limit itself, preemption): save a checkpoint at the next step
  boundary if there is time (Slurm sends SIGKILL KillWait seconds later) and exit with
  EXIT_STOPPED (143): nothing requeues it, so a cancelled job stays cancelled.

A handler only records the signal; the training loop acts at the next step boundary, where all
ranks agree through an all-reduce (TERM wins over USR1). Signals are never fatal: repeats (at
the time limit Slurm sends TERM, CONT, TERM within milliseconds; scancel twice) are the same
request, and a save in progress is never cut short by a second signal. To stop at once, use
SIGINT (Ctrl-C) or SIGKILL.

`install_stop_handler()` runs first in every process that trains (training/startup.py's
`prepare_process`, the first call of `alia-train`'s main), before the heavy imports, so a
signal that arrives during start-up is remembered and acted on at the first step boundary. A
signal that reached the batch script before the training started is passed in the environment
(ALIA_STOP_SIGNAL=USR1 or TERM) and counts as received.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from dataclasses import dataclass, field

from alia_train.exit_codes import EXIT_RESUME, EXIT_STOPPED

HANDLED = (signal.SIGTERM, signal.SIGUSR1)
PENDING_ENV = "ALIA_STOP_SIGNAL"  # set by scripts/slurm/common.sh
KILL_WAIT_ENV = "ALIA_KILL_WAIT_S"  # Slurm's KillWait, exported by scripts/slurm/common.sh

# Agreed across ranks with a MAX all-reduce: a larger code wins.
_CODES = {signal.SIGUSR1: 1, signal.SIGTERM: 2}


@dataclass(frozen=True)
class StopDecision:
    """What every rank does at the step boundary after a stop request."""

    signum: int
    signals_received: int  # on this rank; repeats of one request

    @property
    def requeue(self) -> bool:
        return self.signum == signal.SIGUSR1

    @property
    def exit_code(self) -> int:
        return EXIT_RESUME if self.requeue else EXIT_STOPPED

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    def announce(self, step: int) -> str:
        repeats = f", {self.signals_received} signals: one request" if self.signals_received > 1 else ""
        then = "requeue" if self.requeue else "stop without requeueing"
        return f"stop requested ({self.name}{repeats}; then {then}): saving a checkpoint at step {step}"

    def kill_wait_warning(self, last_save_seconds: float) -> str | None:
        """A warning when the last save took longer than Slurm waits between SIGTERM and SIGKILL."""
        kill_wait = _kill_wait_seconds()
        if self.requeue or kill_wait is None or last_save_seconds <= kill_wait:
            return None
        return (f"WARNING: the last save took {last_save_seconds:.0f} s but Slurm kills the job "
                f"{kill_wait:.0f} s (KillWait) after SIGTERM: this save may be cut off; the next "
                "start then resumes from the previous checkpoint")

    def farewell(self, save_seconds: float) -> str:
        saved = f"checkpoint saved in {save_seconds:.1f} s"
        if self.requeue:
            return f"{saved}; exiting with code {EXIT_RESUME} (resume me)"
        return f"{saved}; exiting with code {EXIT_STOPPED} (stopped on {self.name}, not to be requeued)"


def _kill_wait_seconds() -> float | None:
    try:
        return float(os.environ[KILL_WAIT_ENV])
    except (KeyError, ValueError):
        return None


@dataclass
class StopRequest:
    """Signals received so far; the handlers of HANDLED write here and nowhere else."""

    first_seen: dict[int, float] = field(default_factory=dict)  # signum -> monotonic time
    count: int = 0

    def _handle(self, signum, frame) -> None:
        self.first_seen.setdefault(signum, time.monotonic())
        self.count += 1

    def note(self, signum: int) -> None:
        self._handle(signum, None)

    @property
    def signum(self) -> int | None:
        """The signal that decides (TERM over USR1), or None."""
        if not self.first_seen:
            return None
        return max(self.first_seen, key=lambda s: _CODES[s])

    def agreed(self) -> StopDecision | None:
        """The same decision on every rank: stop if any rank got a signal, TERM if any got one."""
        mine = self.signum
        agreed = _CODES[mine] if mine is not None else 0
        dist = sys.modules.get("torch.distributed")  # no process group without it: decide alone
        if dist is not None and dist.is_initialized() and dist.get_world_size() > 1:
            import torch

            code = torch.tensor([float(agreed)])
            if dist.get_backend() == "nccl":
                code = code.cuda()
            dist.all_reduce(code, op=dist.ReduceOp.MAX)
            agreed = int(code.item())
        if agreed == 0:
            return None
        signum = next(s for s, c in _CODES.items() if c == agreed)
        return StopDecision(signum, self.count)


_request: StopRequest | None = None
_ctrl_c = False


def _on_ctrl_c(signum, frame):
    """Python's own SIGINT action (KeyboardInterrupt), remembered: inside a library (a checkpoint
    writer) the interrupt can surface as another exception, which alia-train must still report
    as Ctrl-C (one line, exit 130), not as a failure."""
    global _ctrl_c
    _ctrl_c = True
    raise KeyboardInterrupt


def ctrl_c_received() -> bool:
    return _ctrl_c


def install_stop_handler() -> StopRequest:
    """Install the handlers (once per process) and take over a signal passed by the batch
    script. Cheap: call it before anything slow."""
    global _request
    if _request is None:
        _request = StopRequest()
        for sig in HANDLED:
            signal.signal(sig, _request._handle)
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not where it is ignored
            signal.signal(signal.SIGINT, _on_ctrl_c)
        pending = os.environ.pop(PENDING_ENV, "").strip().upper()
        if pending:
            try:
                _request.note(signal.Signals[pending if pending.startswith("SIG") else "SIG" + pending])
            except KeyError:
                pass
    return _request


def stop_request() -> StopRequest | None:
    """The installed handler's request (install_stop_handler), or None when there is none."""
    return _request


def release_stop_handler() -> None:
    """Give the signals their default action back (checkpoint.save_on_signal=false); one that
    was already received takes effect now."""
    global _request
    if _request is None:
        return
    received, _request = _request.signum, None
    for sig in HANDLED:
        signal.signal(sig, signal.SIG_DFL)
    if received is not None:
        signal.raise_signal(received)
