"""Step intervals: when something periodic is due (logging, evaluation, checkpoints: one type,
`Every`), and what the steps since the last report added up to."""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

from alia_train.training.step import StepResult


@dataclass(frozen=True)
class Every:
    """Due every `interval` steps and, with `at_last`, at the `last` step; never when
    `interval` is 0. Without `at_last` it is not due at the last step either (checkpoints:
    the last step has a save of its own, made whatever the interval)."""

    interval: int
    last: int
    at_last: bool = True

    def due(self, step: int) -> bool:
        if not self.interval:
            return False
        if step == self.last:
            return self.at_last
        return step % self.interval == 0


@dataclass(frozen=True)
class Interval:
    """The steps since the last report, summed."""

    steps: int
    tokens: int
    loss_sum: float  # token-weighted: Σ step loss × step tokens
    lang_loss_sums: list[float]
    lang_tokens: list[int]
    elapsed: float  # seconds of training (evaluation excluded)

    @property
    def loss(self) -> float:
        """Token-weighted mean loss over the interval."""
        return self.loss_sum / max(self.tokens, 1)

    @property
    def tokens_per_sec(self) -> float:
        return self.tokens / max(self.elapsed, 1e-9)

    @property
    def step_time(self) -> float:
        return self.elapsed / max(1, self.steps)


class IntervalMeter:
    """Adds up step results until `take()` hands the interval over and starts the next one."""

    def __init__(self, num_langs: int, clock: Callable[[], float] = time.perf_counter):
        self.num_langs = num_langs
        self._clock = clock
        self._reset()

    def _reset(self) -> None:
        self._start = self._clock()
        self._steps = self._tokens = 0
        self._loss_sum = 0.0
        self._lang_sums = [0.0] * self.num_langs
        self._lang_tokens = [0] * self.num_langs

    def add(self, result: StepResult) -> None:
        self._steps += 1
        self._tokens += result.tokens
        self._loss_sum += result.loss * result.tokens
        for i in range(self.num_langs):
            self._lang_sums[i] += result.lang_loss_sum[i]
            self._lang_tokens[i] += result.lang_tokens[i]

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Time spent inside (evaluation) is not training time."""
        start = self._clock()
        try:
            yield
        finally:
            self._start += self._clock() - start

    def take(self) -> Interval:
        interval = Interval(self._steps, self._tokens, self._loss_sum, self._lang_sums, self._lang_tokens,
                            self._clock() - self._start)
        self._reset()
        return interval
