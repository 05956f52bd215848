"""What a non-finite loss or gradient means for the run (train.on_nonfinite). The step itself
has already skipped the optimizer update (training/step.py); this decides whether to go on."""

from __future__ import annotations

from alia_train.config.schema import OnNonfinite
from alia_train.training.errors import NonFiniteError
from alia_train.training.step import StepResult


def nonfinite_warning(result: StepResult, step: int, policy: str) -> str | None:
    """None for a finite step `step`. For a non-finite one: raise NonFiniteError (`stop`: these
    weights are not saved) or return the warning to log (`skip`: the run goes on)."""
    if not result.nonfinite:
        return None
    msg = f"non-finite {result.nonfinite} at step {step} (loss {result.loss})"
    if policy == OnNonfinite.stop:
        raise NonFiniteError(
            msg + "; stopping without saving these weights. Resume from the last "
            "checkpoint with a lower optim.lr, or set train.on_nonfinite=skip"
        )
    return f"WARNING: {msg}; step skipped (train.on_nonfinite=skip)"
