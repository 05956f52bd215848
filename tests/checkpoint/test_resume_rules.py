"""What a resume says about a changed LR schedule or sample order (checkpoint/resume_rules.py);
the real resume is in test_restart_changes.py::test_resets_apply_only_when_starting_from_another_run."""

from __future__ import annotations

from types import SimpleNamespace

from alia_train.checkpoint.resume_rules import order_change_note, schedule_change_note, schedule_changes
from alia_train.config import load_config
from alia_train.config.load import to_yaml

SAVED = {"max_lr": 3e-4, "min_lr": 3e-5, "lr_warmup_steps": 100, "lr_decay_steps": 1000, "lr_decay_style": "cosine",
         "start_wd": 0.1, "num_steps": 500, "wd_incr_steps": 1000}


def _scheduler(**changed):
    return SimpleNamespace(**{**SAVED, **changed})


def test_an_unchanged_schedule_says_nothing():
    assert schedule_changes(SAVED, _scheduler(num_steps=0, wd_incr_steps=5)) == []  # position and wd steps are not settings
    assert schedule_change_note([], override=False) == ""


def test_each_changed_setting_is_named_with_both_values():
    changes = schedule_changes(SAVED, _scheduler(max_lr=1e-4, lr_decay_steps=2000, lr_decay_style="linear"))
    assert changes == [("optim.lr", 3e-4, 1e-4), ("optim.decay_steps (train.steps when unset)", 1000, 2000),
                       ("optim.decay_style", "cosine", "linear")]
    kept = schedule_change_note(changes, override=False)
    assert "continues as saved" in kept and "optim.lr 0.0003 -> 0.0001" in kept
    assert "optim.override_schedule=true" in kept
    applied = schedule_change_note(changes, override=True)
    assert applied.startswith("; LR schedule from this run's settings (optim.override_schedule): optim.lr 0.0003 -> 0.0001")


def test_a_new_step_count_or_batch_size_warns_of_another_sample_order():
    saved = to_yaml(load_config(["+model=tiny", "train.steps=100"]))
    assert order_change_note(saved, load_config(["+model=tiny", "train.steps=100", "train.micro_batch_size=2"])) == ""
    note = order_change_note(saved, load_config(["+model=tiny", "train.steps=200", "train.global_batch_size=16"]))
    assert note.startswith("; WARNING: train.steps 100 -> 200, train.global_batch_size 8 -> 16 re-indexes the training set")
    assert order_change_note(None, load_config(["+model=tiny"])) == ""  # a from-hf checkpoint: no position
