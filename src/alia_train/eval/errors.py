"""The one exception alia-eval reports as a one-line mistake (bad input, missing data)."""

from __future__ import annotations


class EvalError(Exception):
    """A problem the user can fix: the message is the whole story, no traceback."""


class CheckpointError(EvalError):
    """One checkpoint could not be read (removed by retention meanwhile, damaged): skipped, the
    others are scored, and the command ends with a failure."""
