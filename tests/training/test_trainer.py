"""A real one-process run of the tiny model through the entry point (gloo, world size 1), with
a non-finite loss injected at step 2 by a forward hook: `skip` goes on and records it, `stop`
raises before saving anything. Also: logging, evaluation and the final save happen at their
interval boundaries and at the last step, and the run lock is given back either way."""

from __future__ import annotations

import json
import math

import pytest

from alia_train.config import load_config
from alia_train.exit_codes import EXIT_NONFINITE, EXIT_OK
from alia_train.parallel.launch_env import detect_launch_env
from alia_train.training.errors import NonFiniteError
from alia_train.training.run import RunOptions, open_run

SMALL = ["+model=tiny", "train.steps=3", "train.global_batch_size=2", "train.micro_batch_size=1",
         "train.seq_length=32", "checkpoint.save_on_signal=false", "logging.console=plain"]


@pytest.fixture(scope="module")
def data_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("data_cache")  # the sample corpus, tokenized once for the module


def _run(run_dir, data_cache, overrides: list[str]):
    """Train with the loss made infinite at step 2 only; the trainer, the exit code."""
    cfg = load_config([*SMALL, f"run.dir={run_dir}", f"data.cache_dir={data_cache}", *overrides])
    with open_run(cfg, detect_launch_env(), RunOptions(trackers=False)) as trainer:
        def poison_step_2(module, inputs, output):
            return output * math.inf if trainer.progress.step == 1 else output

        trainer.model[0].register_forward_hook(poison_step_2)
        return trainer, trainer.train()


def _records(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_skip_records_the_step_and_trains_on(tmp_path, data_cache, capsys):
    trainer, code = _run(tmp_path, data_cache, ["train.on_nonfinite=skip", "logging.interval=2",
                                                "train.eval_interval=2"])
    assert code == EXIT_OK
    assert "WARNING: non-finite loss at step 2 (loss inf); step skipped" in capsys.readouterr().out
    records = _records(tmp_path)
    train = [r for r in records if r["kind"] == "train"]
    assert [r["step"] for r in train] == [2, 3]  # every 2 steps, and the last
    assert train[0]["skipped"] is True and train[0]["loss"] == "inf" and train[0]["grad_norm"] is None
    assert "skipped" not in train[1] and math.isfinite(train[1]["loss"])
    assert [r["step"] for r in records if r["kind"] == "valid"] == [2, 3]
    assert trainer.scheduler.num_steps == 2  # the skipped step changed no weights
    assert trainer.progress.step == 3 and trainer.progress.consumed_samples == 6  # its samples are not redone
    assert [p.name for p in (tmp_path / "checkpoints").glob("step_*")] == ["step_00000003"]
    assert not (tmp_path / "run.lock").exists()


def test_stop_raises_without_saving(tmp_path, data_cache):
    with pytest.raises(NonFiniteError, match=r"^non-finite loss at step 2 \(loss inf\); stopping") as e:
        _run(tmp_path, data_cache, ["train.on_nonfinite=stop", "logging.interval=1"])
    assert e.value.exit_code == EXIT_NONFINITE
    assert [r["step"] for r in _records(tmp_path) if r["kind"] == "train"] == [1]
    assert not list((tmp_path / "checkpoints").glob("step_*"))
    assert not (tmp_path / "run.lock").exists()
