"""Non-finite gradients under a finite loss, and runs of skipped steps.

A real one-process run of the tiny model (gloo, world size 1) where a tensor hook writes NaN into
one element of one weight's gradient at steps 2 and 4 (the last), the loss staying finite: `skip`
leaves the weights as they were and trains on; the save due at step 2 is made after step 3, the
final one not at all. `stop` raises at step 2 before saving anything. The run-length limit
of `skip` (train.max_skipped_steps) is checked on its own here, and as a user meets it in
tests/cli/test_train.py."""

from __future__ import annotations

import math

import pytest
import torch

from alia_train.config import load_config
from alia_train.exit_codes import EXIT_NONFINITE, EXIT_OK
from alia_train.parallel.launch_env import detect_launch_env
from alia_train.training.errors import NonFiniteError
from alia_train.training.nonfinite import NonfiniteSteps
from alia_train.training.run import RunOptions, open_run
from alia_train.training.step import StepResult

SMALL = ["+model=tiny", "train.steps=4", "checkpoint.interval=2", "train.global_batch_size=2", "train.micro_batch_size=1",
         "train.seq_length=32", "optim.warmup_steps=0", "checkpoint.save_on_signal=false", "logging.console=plain",
         "logging.interval=1"]


@pytest.fixture(scope="module")
def data_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("data_cache")  # the sample corpus, tokenized once for the module


def _weights(trainer) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in trainer.model[0].parameters()]).clone()


def _run_with_nan_gradients(run_dir, data_cache, policy: str):
    """Train; returns (the trainer, the exit code, the weights after each step)."""
    cfg = load_config([*SMALL, f"run.dir={run_dir}", f"data.cache_dir={data_cache}", f"train.on_nonfinite={policy}"])
    with open_run(cfg, detect_launch_env(), RunOptions(trackers=False)) as trainer:
        def poison_steps_2_and_4(grad: torch.Tensor) -> torch.Tensor:
            if trainer.progress.step not in (1, 3):
                return grad
            grad = grad.clone()
            grad.view(-1)[0] = math.nan  # one element of one weight: the check must see it
            return grad

        trainer.model[0].module.decoder.layers[0].mlp.linear_fc1.weight.register_hook(poison_steps_2_and_4)
        weights = [_weights(trainer)]
        step = trainer.step

        def step_and_keep_weights(iterators):
            result = step(iterators)
            weights.append(_weights(trainer))
            return result

        trainer.step = step_and_keep_weights
        return trainer, trainer.train(), weights


def test_skip_leaves_the_weights_of_a_nan_gradient_step_and_trains_on(tmp_path, data_cache, capsys):
    trainer, code, weights = _run_with_nan_gradients(tmp_path, data_cache, "skip")
    assert code == EXIT_OK
    out = capsys.readouterr().out
    warnings = [line for line in out.splitlines() if "WARNING" in line]
    assert len(warnings) == 3, warnings
    for line, step in zip(warnings, (2, 4)):
        assert f"non-finite gradients at step {step} (loss " in line, line
        assert math.isfinite(float(line.split("(loss ")[1].split(")")[0]))  # only the gradient was bad
    assert "not saving the weights of step 4" in warnings[2] and "training finished at step 4" in out
    assert not torch.equal(weights[0], weights[1])  # step 1 trained
    assert torch.equal(weights[1], weights[2])  # step 2 skipped
    assert not torch.equal(weights[2], weights[3]) and torch.isfinite(weights[3]).all()  # step 3 trained
    assert torch.equal(weights[3], weights[4])  # step 4 skipped
    assert trainer.scheduler.num_steps == 2
    # The save due at the skipped step 2 waited for step 3; the last step's was not made.
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("step_*")) == ["step_00000003"]


def test_stop_on_a_nan_gradient_raises_one_line_and_saves_nothing(tmp_path, data_cache):
    with pytest.raises(NonFiniteError) as e:
        _run_with_nan_gradients(tmp_path, data_cache, "stop")
    assert e.value.exit_code == EXIT_NONFINITE
    assert str(e.value).startswith("non-finite gradients at step 2 (loss ") and "\n" not in str(e.value)
    assert not list((tmp_path / "checkpoints").glob("step_*"))


def _result(nonfinite: str | None) -> StepResult:
    return StepResult(loss=math.nan if nonfinite == "loss" else 2.0, tokens=10, lang_loss_sum=[0.0], lang_tokens=[10],
                      grad_norm=None if nonfinite else 1.0, skipped=nonfinite is not None, nonfinite=nonfinite)


def test_skip_stops_after_max_skipped_steps_in_a_row():
    steps = NonfiniteSteps("skip", max_skipped=2)
    # A finite step ends a run of skips: only the non-finite steps in a row count.
    for step, bad in enumerate(["loss", "gradients", None, "loss", "loss"], start=1):
        assert (steps.check(_result(bad), step) is not None) == (bad is not None)
        assert steps.weights_suspect == (bad is not None)
    with pytest.raises(NonFiniteError) as e:
        steps.check(_result("gradients"), 6)
    assert str(e.value).startswith("non-finite gradients at step 6 (loss 2.0), 3 non-finite steps in a row "
                                   "(steps 4-6), more than train.max_skipped_steps=2; stopping without saving")
    assert "lower optim.lr" in str(e.value) and "\n" not in str(e.value)
    assert e.value.exit_code == EXIT_NONFINITE


def test_max_skipped_steps_must_be_positive():
    from alia_train.config.validate import config_problems

    cfg = load_config(["+model=tiny", "train.max_skipped_steps=0"])
    assert config_problems(cfg, 1, cuda=False, te_available=False) == [
        "train.max_skipped_steps: must be a positive integer, got 0"]
