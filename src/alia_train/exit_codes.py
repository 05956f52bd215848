"""Every exit code of alia-train's commands, in one place.

The Slurm scripts (scripts/slurm/common.sh) and docs/cluster.md rely on EXIT_RESUME and
EXIT_STOPPED; keep them in step when changing one.
"""

from __future__ import annotations

import signal

EXIT_OK = 0
# alia-plan: the run does not fit in memory (suggestions printed).
EXIT_DOES_NOT_FIT = 1
# alia-report: an output it could not write (not the user's input).
EXIT_FAILED = 1
# A mistake in the command or config (or a launch refused before training): one line, before
# anything starts.
EXIT_CONFIG = 2
# alia-train: a non-finite loss or gradient with train.on_nonfinite=stop.
EXIT_NONFINITE = 3
# alia-train: another job took the run directory's lock; this one stopped writing.
EXIT_LOCK_LOST = 4
# "Checkpoint written, start me again": EX_TEMPFAIL from sysexits.h. The Slurm scripts requeue
# the job on this code (SIGUSR1).
EXIT_RESUME = 75
# Interrupted (Ctrl-C): 128 + SIGINT, what a shell reports.
EXIT_INTERRUPTED = 128 + signal.SIGINT
# "Checkpoint written, stopped as asked": 128 + SIGTERM, what a shell reports for a process
# ended by SIGTERM, so launchers that do not know alia-train read it as "terminated". Distinct
# from 75: nothing requeues it.
EXIT_STOPPED = 128 + signal.SIGTERM
