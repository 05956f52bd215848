"""What a resume says about a changed LR schedule, a new train.steps or batch size, and a changed
mixture (checkpoint/resume_rules.py); the real resumes are in test_restart_changes.py and
tests/training/test_run_growth.py."""

from __future__ import annotations

from types import SimpleNamespace

from alia_train.checkpoint.resume_rules import (
    order_change_note,
    position_change_message,
    position_changes,
    schedule_change_note,
    schedule_changes,
)
from alia_train.config import load_config
from alia_train.config.load import to_yaml

SAVED = {"max_lr": 3e-4, "min_lr": 3e-5, "lr_warmup_steps": 100, "lr_decay_steps": 1000, "lr_decay_style": "cosine",
         "start_wd": 0.1, "num_steps": 500, "wd_incr_steps": 1000}


def _scheduler(**changed):
    return SimpleNamespace(**{**SAVED, "wsd_decay_steps": None, "lr_wsd_decay_style": None, **changed})


def test_an_unchanged_schedule_says_nothing():
    # The position and the weight-decay steps are not settings.
    changes = schedule_changes(SAVED, _scheduler(num_steps=0, wd_incr_steps=5))
    assert changes.changed == [] and schedule_change_note(changes, override=False) == ""


def test_each_changed_setting_is_named_with_both_values():
    changes = schedule_changes(SAVED, _scheduler(max_lr=1e-4, lr_decay_steps=2000, lr_decay_style="linear"))
    assert changes.changed == [("optim.lr", 3e-4, 1e-4), ("optim.decay_steps (train.steps when unset)", 1000, 2000),
                               ("optim.decay_style", "cosine", "linear")]
    kept = schedule_change_note(changes, override=False)
    assert "continues as saved" in kept and "optim.lr 0.0003 -> 0.0001" in kept
    assert "optim.override_schedule=true" in kept
    applied = schedule_change_note(changes, override=True)
    assert applied.startswith("; LR schedule from this run's settings (optim.override_schedule): optim.lr 0.0003 -> 0.0001")


def test_a_wsd_decay_follows_only_while_both_schedules_are_stable():
    wsd = {**SAVED, "lr_decay_style": "WSD", "wsd_decay_steps": 200, "lr_wsd_decay_style": "linear"}  # decay from 800
    longer = dict(lr_decay_style="WSD", lr_decay_steps=2000, wsd_decay_steps=200, lr_wsd_decay_style="linear")
    assert schedule_changes(wsd, _scheduler(**longer)).decay_follows
    assert not schedule_changes({**wsd, "num_steps": 801}, _scheduler(**longer)).decay_follows  # saved one decaying
    assert not schedule_changes(wsd, _scheduler(**{**longer, "lr_decay_steps": 600})).decay_follows  # new one would be
    assert not schedule_changes(wsd, _scheduler(lr_decay_steps=2000)).decay_follows  # cosine now
    note = schedule_change_note(schedule_changes(wsd, _scheduler(**{**longer, "max_lr": 1e-4})), override=False)
    assert note == ("; wsd decay moved, the LR still constant at this step (optim.decay_steps (train.steps when unset) "
                    "1000 -> 2000); LR schedule continues as saved, not as this run's settings (optim.lr 0.0003 -> "
                    "0.0001): set optim.override_schedule=true to apply them from this step on")


def test_a_new_step_count_or_batch_size_keeps_the_sample_order():
    saved = to_yaml(load_config(["+model=tiny", "train.steps=100"]))
    assert order_change_note(saved, load_config(["+model=tiny", "train.steps=100", "train.micro_batch_size=2"])) == ""
    note = order_change_note(saved, load_config(["+model=tiny", "train.steps=200", "train.global_batch_size=16"]))
    assert note == ("; train.steps 100 -> 200, train.global_batch_size 8 -> 16: the same sample order, read on "
                    "from the consumed samples")
    assert "WARNING" not in note
    assert order_change_note(None, load_config(["+model=tiny"])) == ""  # a from-hf checkpoint: no position


def test_a_changed_mixture_is_refused_naming_reset_data():
    saved = to_yaml(load_config(["+model=tiny"]))
    for change in ("data.multipliers.eu=3", "data.default_multiplier=0.5", "data.split='90,10,0'",
                   "data.sources=[{path: /data/x, lang: es}]"):
        changes = position_changes(saved, load_config(["+model=tiny", change]))
        assert len(changes) == 1, change
        message = position_change_message("runs/a/checkpoints/step_00000010", "runs/a", changes, own=True)
        assert "\n" not in message and "checkpoint.load=runs/a checkpoint.reset_data=true" in message, message
        assert "add checkpoint.reset_data=true" in position_change_message("x", "y", changes, own=False)
