"""How long a step and a token budget take at an assumed MFU.

Model FLOPs per token come from alia_train.model.flops (the definition the training logs
use for MFU), so a run that reaches the assumed MFU takes the estimated time. Recomputation
costs extra hardware FLOPs that MFU does not count: its price shows up as a lower MFU.
"""

from __future__ import annotations

from dataclasses import dataclass

from alia_train.config.schema import ModelConfig
from alia_train.plan.parallel_layout import Layout
from alia_train.model.flops import training_flops_per_token


@dataclass(frozen=True)
class Duration:
    flops_per_token: float
    tokens_per_step: int
    world_size: int
    peak_tflops: float
    mfu: float
    tokens: float  # the token budget
    budget_source: str  # where the budget came from, for the report

    @property
    def tokens_per_second(self) -> float:
        return self.world_size * self.peak_tflops * 1e12 * self.mfu / self.flops_per_token

    @property
    def step_seconds(self) -> float:
        return self.tokens_per_step / self.tokens_per_second

    @property
    def steps(self) -> int:
        return -(-int(self.tokens) // self.tokens_per_step)

    @property
    def days(self) -> float:
        return self.tokens / self.tokens_per_second / 86400


def estimate_duration(
    m: ModelConfig,
    lay: Layout,
    vocab_size: int,
    peak_tflops: float,
    mfu: float,
    steps: int,
    tokens: float | None = None,
) -> Duration:
    """Time for `tokens` tokens, or for `steps` steps of the configured global batch."""
    if tokens is None:
        tokens, source = float(steps * lay.tokens_per_step), f"train.steps {steps:,} x {lay.tokens_per_step:,} tokens"
    else:
        source = "--tokens"
    return Duration(
        flops_per_token=training_flops_per_token(m, lay.seq_length, vocab_size),
        tokens_per_step=lay.tokens_per_step,
        world_size=lay.world_size,
        peak_tflops=peak_tflops,
        mfu=mfu,
        tokens=tokens,
        budget_source=source,
    )
