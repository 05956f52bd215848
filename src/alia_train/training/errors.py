"""Errors that end a run with one message for the user and a defined exit code (alia-train
prints `alia-train: error: <message>` and exits with `exit_code`)."""

from __future__ import annotations

from alia_train.exit_codes import EXIT_CONFIG, EXIT_NONFINITE


class RunError(RuntimeError):
    """A launch refused (config, paths, data, lock, resume) or a run that cannot go on."""

    exit_code = EXIT_CONFIG

    def __init__(self, message: str, exit_code: int | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class NonFiniteError(RunError):
    """A non-finite loss or gradient with train.on_nonfinite=stop."""

    exit_code = EXIT_NONFINITE
