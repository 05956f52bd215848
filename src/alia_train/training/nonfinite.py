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


class NonfiniteSteps:
    """train.on_nonfinite over the run: `skip` tolerates at most `max_skipped` non-finite steps
    in a row (train.max_skipped_steps). Skipped steps leave the weights as they are, so a run of
    them means these weights themselves give non-finite steps: past the limit the run stops as with `stop`, and
    while one lasts no checkpoint is written (the last one before it stays `latest`)."""

    def __init__(self, policy: str, max_skipped: int):
        self.policy, self.max_skipped = policy, max_skipped
        self.in_a_row = 0

    @property
    def weights_suspect(self) -> bool:
        """The last step was non-finite: its weights are not to be saved."""
        return self.in_a_row > 0

    def check(self, result: StepResult, step: int) -> str | None:
        """nonfinite_warning, counting; raises NonFiniteError once the run of skips is too long."""
        warning = nonfinite_warning(result, step, self.policy)
        self.in_a_row = self.in_a_row + 1 if warning else 0
        if self.in_a_row > self.max_skipped:
            raise NonFiniteError(
                f"non-finite {result.nonfinite} at step {step} (loss {result.loss}), {self.in_a_row} "
                f"non-finite steps in a row (steps {step - self.in_a_row + 1}-{step}), more than "
                f"train.max_skipped_steps={self.max_skipped}; stopping without saving these weights. "
                "Resume from the last checkpoint (an earlier one if it diverges again) with a lower optim.lr"
            )
        return warning

    def unsaved_note(self, step: int) -> str:
        """The line when the run ends on non-finite steps: its final weights are not saved."""
        return (f"WARNING: not saving the weights of step {step}, the last of {self.in_a_row} non-finite "
                "step(s) in a row; a restart resumes from the last checkpoint")
