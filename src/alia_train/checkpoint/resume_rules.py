"""What a checkpoint's saved position means, and which settings may change on resume.

A checkpoint saves the data position as one integer, `consumed_samples`: global step k reads
samples [k*GBS, (k+1)*GBS) of the blended training dataset. That integer only points at the
same data if the dataset is the same sample sequence, which depends on the settings below. A
resume that changes one of them is refused (one line: the setting, both values, the fix).

Refused (they change the sample sequence):
  train.seq_length     samples are seq_length-token windows: another length, other samples
  train.seed           seeds the document and sample shuffles of every dataset
  data.sources         the blend's members and weights (path, language, multiplier)
  data.valid_sources   decides whether validation is carved out of the sources (data.split)
  data.split           the documents that form the training part of each source
  data.multipliers, data.default_multiplier   the blend weights
  data.tokenizer       checked separately, by the tokenizer file's sha256 (manager.py)
  model architecture   checked separately (ARCHITECTURE_FIELDS in manager.py)

Allowed, handled exactly:
  train.global_batch_size / micro_batch_size   the next step starts at sample consumed_samples
                       whatever the batch size (as megatron's batch-size ramp-up does); a new
                       global batch size changes the sample order as train.steps does (below)
  parallel.*           checkpoints are resharded on load (tp, pp, vpp, dp, distributed optimizer)
  train.steps          the run is extended or shortened; the LR schedule continues as saved
                       (megatron's use_checkpoint_opt_param_scheduler). Not exact for the
                       data: the training set is indexed for train.steps x GBS samples, and
                       megatron's shuffle depends on that count, so the steps after the resume
                       read another sample order (known gap, warned on the resume line;
                       the position itself is kept)
  optim.lr, min_lr, warmup_steps, decay_steps, decay_style, weight_decay
                       the schedule continues as saved, and the resume line names each
                       setting that differs; optim.override_schedule=true applies the new
                       values from the resumed step on
  data.cache_dir, checkpoint.*, logging.*, run.name   where things go, not what they are

The fix offered for a refused change: keep the old value, or start a new run.dir from this
checkpoint with `checkpoint.load=... checkpoint.reset_data=true` (weights and, unless
checkpoint.reset_optimizer, optimizer state carried over; data from sample 0).
"""

from __future__ import annotations

import os
from dataclasses import asdict

from alia_train.config.load import config_tree
from alia_train.config.schema import Config

POSITION_SETTINGS = (
    "train.seq_length",
    "train.seed",
    "data.sources",
    "data.valid_sources",
    "data.split",
    "data.multipliers",
    "data.default_multiplier",
)

# Settings that size the training set's index (train.steps x global batch size samples):
# megatron's shuffle depends on that count, so a resume that changes one keeps the position but
# reads another sample order from there on (a known gap, said on the resume line).
ORDER_SETTINGS = ("train.steps", "train.global_batch_size")


def _get(tree: dict, dotted: str):
    node = tree
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _normalise(key: str, value):
    """Source paths compare by absolute path (a run may be resumed from another directory)."""
    if key in ("data.sources", "data.valid_sources") and isinstance(value, list):
        return [
            {**s, "path": os.path.abspath(os.path.expanduser(str(s.get("path"))))} if isinstance(s, dict) else s
            for s in value
        ]
    if key == "data.multipliers" and isinstance(value, dict):
        return {k: float(v) for k, v in value.items()}
    if isinstance(value, int) and key == "data.default_multiplier":
        return float(value)
    return value


# The LR schedule as megatron's OptimizerParamScheduler saves it, and the settings it comes from.
SCHEDULE_SETTINGS = {
    "max_lr": "optim.lr",
    "min_lr": "optim.min_lr",
    "lr_warmup_steps": "optim.warmup_steps",
    "lr_decay_steps": "optim.decay_steps (train.steps when unset)",
    "lr_decay_style": "optim.decay_style",
    "start_wd": "optim.weight_decay",
}


def _arrows(changes: list[tuple[str, object, object]]) -> str:
    return ", ".join(f"{key} {old} -> {new}" for key, old, new in changes)


def schedule_changes(saved: dict, scheduler) -> list[tuple[str, object, object]]:
    """(setting, saved value, this run's value) for each schedule value that differs; call
    before the scheduler loads `saved` (which replaces its values)."""
    return [
        (key, saved[name], getattr(scheduler, name))
        for name, key in SCHEDULE_SETTINGS.items()
        if name in saved and saved[name] != getattr(scheduler, name)
    ]


def schedule_change_note(changes: list, override: bool) -> str:
    """The part of the resume line that says what became of a changed LR schedule."""
    if not changes:
        return ""
    what = _arrows(changes)
    if override:
        return f"; LR schedule from this run's settings (optim.override_schedule): {what}"
    return (f"; LR schedule continues as saved, not as this run's settings ({what}): set "
            "optim.override_schedule=true to apply them from this step on")


def _short(value) -> str:
    text = str(value)
    return text if len(text) <= 120 else text[:117] + "..."


def position_changes(saved_config_yaml: str | None, cfg: Config,
                     keys: tuple[str, ...] = POSITION_SETTINGS) -> list[tuple[str, object, object]]:
    """(setting, saved value, current value) for every entry of `keys` that differs."""
    if not saved_config_yaml:
        return []  # e.g. a from-hf checkpoint: no data position to protect
    saved = config_tree(saved_config_yaml)
    current = asdict(cfg)
    changes = []
    for key in keys:
        old, new = _get(saved, key), _get(current, key)
        if old is None:
            continue  # written before this key existed
        if _normalise(key, old) != _normalise(key, new):
            changes.append((key, old, new))
    return changes


def order_change_note(saved_config_yaml: str | None, cfg: Config) -> str:
    """The part of the resume line that warns of a new sample order (see ORDER_SETTINGS)."""
    changes = position_changes(saved_config_yaml, cfg, ORDER_SETTINGS)
    if not changes:
        return ""
    what = _arrows(changes)
    return (f"; WARNING: {what} re-indexes the training set: the position is kept, but the steps "
            "from here read another sample order than before (some samples twice, some never)")


def position_change_message(checkpoint: str, source_run: str, changes: list, own: bool) -> str:
    what = "; ".join(f"{k} was {_short(old)} in the checkpoint, this run has {_short(new)}" for k, old, new in changes)
    keys = ", ".join(k for k, _, _ in changes)
    if own:
        fix = (f"set {keys} back to the checkpoint's value, or start a new run.dir with "
               f"checkpoint.load={source_run} checkpoint.reset_data=true")
    else:
        fix = f"set {keys} back to the checkpoint's value, or add checkpoint.reset_data=true"
    return (f"checkpoint {checkpoint}: {what}: its saved data position (consumed samples) would "
            f"point at other data; {fix}")
