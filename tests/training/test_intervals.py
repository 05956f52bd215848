"""The loop's decisions, each on its own: when logging, evaluation and checkpoints are due (at
interval boundaries and at the last step), what an interval of steps adds up to, what a
non-finite step means under each train.on_nonfinite, and the train record built from them."""

from __future__ import annotations

import math

import pytest

from alia_train.checkpoint.state_dict import TrainingProgress
from alia_train.exit_codes import EXIT_NONFINITE
from alia_train.training.errors import NonFiniteError
from alia_train.training.intervals import Every, IntervalMeter
from alia_train.training.nonfinite import nonfinite_warning
from alia_train.training.step import StepResult
from alia_train.training.train_log import train_record


def _result(loss: float, tokens: int, lang_sums=(0.0, 0.0), lang_tokens=(0, 0), nonfinite=None) -> StepResult:
    return StepResult(loss=loss, tokens=tokens, lang_loss_sum=list(lang_sums), lang_tokens=list(lang_tokens),
                      grad_norm=None if nonfinite else 1.5, skipped=nonfinite is not None, nonfinite=nonfinite)


def test_logging_and_evaluation_are_due_at_each_interval_and_at_the_last_step():
    every = Every(interval=4, last=10)
    assert [s for s in range(1, 11) if every.due(s)] == [4, 8, 10]
    assert [s for s in range(1, 9) if Every(4, last=8).due(s)] == [4, 8]
    assert not any(Every(0, last=10).due(s) for s in range(1, 11))  # eval_interval=0: never


def test_interval_saves_leave_the_last_step_to_the_final_save():
    saves = Every(interval=3, last=9, at_last=False)
    assert [s for s in range(1, 10) if saves.due(s)] == [3, 6]
    assert [s for s in range(1, 11) if Every(3, last=10, at_last=False).due(s)] == [3, 6, 9]
    assert not any(Every(0, last=9, at_last=False).due(s) for s in range(1, 10))


class _Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_meter_sums_an_interval_token_weighted_and_starts_afresh_when_taken():
    clock = _Clock()
    meter = IntervalMeter(num_langs=2, clock=clock)
    meter.add(_result(2.0, 100, lang_sums=(150.0, 50.0), lang_tokens=(60, 40)))
    clock.now += 3.0
    meter.add(_result(4.0, 300, lang_sums=(1200.0, 0.0), lang_tokens=(300, 0)))
    with meter.paused():  # evaluation: not training time
        clock.now += 50.0
    clock.now += 1.0
    got = meter.take()
    assert (got.steps, got.tokens) == (2, 400)
    assert got.loss == pytest.approx((2.0 * 100 + 4.0 * 300) / 400)
    assert got.lang_loss_sums == [1350.0, 50.0] and got.lang_tokens == [360, 40]
    assert got.elapsed == pytest.approx(4.0) and got.tokens_per_sec == pytest.approx(100.0)
    assert got.step_time == pytest.approx(2.0)

    clock.now += 2.0
    meter.add(_result(1.0, 10))
    after = meter.take()
    assert (after.steps, after.tokens, after.loss, after.lang_tokens) == (1, 10, 1.0, [0, 0])
    assert after.elapsed == pytest.approx(2.0)


def test_a_finite_step_has_nothing_to_say():
    assert nonfinite_warning(_result(2.0, 10), step=5, policy="stop") is None


def test_stop_raises_with_what_and_where_and_exit_code_3():
    with pytest.raises(NonFiniteError) as e:
        nonfinite_warning(_result(math.nan, 10, nonfinite="loss"), step=7, policy="stop")
    assert str(e.value).startswith("non-finite loss at step 7 (loss nan); stopping without saving")
    assert "train.on_nonfinite=skip" in str(e.value)
    assert e.value.exit_code == EXIT_NONFINITE == 3


def test_skip_goes_on_with_a_warning():
    warning = nonfinite_warning(_result(3.0, 10, nonfinite="gradients"), step=7, policy="skip")
    assert warning == "WARNING: non-finite gradients at step 7 (loss 3.0); step skipped (train.on_nonfinite=skip)"


def test_the_train_record_marks_a_skipped_step_and_lists_languages_that_had_tokens():
    meter = IntervalMeter(num_langs=2)
    last = _result(math.inf, 100, lang_sums=(math.inf, 0.0), lang_tokens=(100, 0), nonfinite="loss")
    meter.add(last)
    rec = train_record(meter.take(), last, TrainingProgress(step=4, consumed_samples=32, consumed_tokens=4096),
                       lr=1e-3, languages=["es", "eu"])
    assert rec["kind"] == "train" and rec["step"] == 4 and rec["skipped"] is True
    assert rec["loss"] == math.inf and rec["grad_norm"] is None and rec["lr"] == 1e-3
    assert (rec["consumed_samples"], rec["consumed_tokens"]) == (32, 4096)
    assert rec["tokens/es"] == 100 and "loss/eu" not in rec and "tokens/eu" not in rec

    ok = _result(2.0, 10, lang_sums=(4.0, 16.0), lang_tokens=(2, 8))
    meter.add(ok)
    rec = train_record(meter.take(), ok, TrainingProgress(step=5), lr=1e-3, languages=["es", "eu"])
    assert "skipped" not in rec and rec["loss/es"] == 2.0 and rec["loss/eu"] == 2.0
