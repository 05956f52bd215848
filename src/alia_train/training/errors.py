"""Errors that end a run with one message for the user and a defined exit code (alia-train
prints `alia-train: error: <message>` and exits with `exit_code`)."""

from __future__ import annotations

from alia_train.exit_codes import EXIT_CONFIG, EXIT_NONFINITE


class RunError(RuntimeError):
    """A launch refused (config, paths, data, lock, resume) or a run that cannot go on.

    `every_rank`: every rank of the job raises this same error (a launch refusal, a decision
    taken on all-reduced values), so the first rank of each node alone prints it: one line at 8
    processes on a node, not one per rank (a launch check can depend on the node: its memory, its
    GPUs). An error only some ranks see (a disk full on one node) keeps the default and is
    printed by each rank that has it."""

    exit_code = EXIT_CONFIG
    every_rank = False

    def __init__(self, message: str, exit_code: int | None = None, *, every_rank: bool | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code
        if every_rank is not None:
            self.every_rank = every_rank


class NonFiniteError(RunError):
    """A non-finite loss or gradient with train.on_nonfinite=stop (or too many skipped): every
    rank sees the same all-reduced flag."""

    exit_code = EXIT_NONFINITE
    every_rank = True
