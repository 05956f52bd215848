"""When the training loop writes a checkpoint (the writing itself is checkpoint/manager.py's).

* every `checkpoint.interval` steps (0: never on the way), in the background with async_save;
* at the last step, unless that step was just saved, waiting for it to be published;
* on a stop request (SIGUSR1 / SIGTERM), at once and waiting: the loop asks `stop_requested`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SavePolicy:
    interval: int  # checkpoint.interval; 0 = only at the end and on a signal
    last: int  # train.steps

    def due(self, step: int) -> bool:
        """An interval save after `step`. The last step has its own, blocking save."""
        return bool(self.interval) and step % self.interval == 0 and step < self.last

    @staticmethod
    def final_due(step: int, last_saved_step: int | None) -> bool:
        """The save when the loop ends at `step`: unless that step is already saved."""
        return last_saved_step != step
