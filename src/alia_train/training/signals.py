"""Stop requests from the scheduler: SIGTERM and SIGUSR1 (what Slurm sends before a time limit
or a preemption).

The first signal only sets a flag; the loop checks it at each step boundary (all ranks agree
through an all-reduce), saves a checkpoint and exits with EXIT_RESUME. A second signal exits at
once with 128 + the signal number, the shell's convention.
"""

from __future__ import annotations

import os
import signal

import torch
import torch.distributed as dist

# "Checkpoint written, start me again": EX_TEMPFAIL from sysexits.h. The Slurm scripts requeue
# the job on this code.
EXIT_RESUME = 75
HANDLED = (signal.SIGTERM, signal.SIGUSR1)


class StopRequest:
    def __init__(self) -> None:
        self.signum: int | None = None
        for sig in HANDLED:
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:
            os._exit(128 + signum)
        self.signum = signum

    def agreed(self) -> bool:
        """True on every rank if any rank got a signal."""
        flag = torch.tensor([1.0 if self.signum is not None else 0.0])
        if dist.is_initialized() and dist.get_world_size() > 1:
            if dist.get_backend() == "nccl":
                flag = flag.cuda()
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return flag.item() > 0
