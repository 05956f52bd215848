"""What a checkpoint's saved position means, and which settings may change on resume.

A checkpoint saves the data position as one integer, `consumed_samples`: the next step reads
samples [consumed_samples, consumed_samples + GBS) of the blended training dataset. That
integer points at the same data as long as the sample order is the same, and the order is a
function of the settings below only (data/sample_order.py): not of train.steps, not of the
batch sizes. A resume that changes one of them is refused (one line: the setting, both values,
the fix).

Refused (they change the sample order):
  train.seq_length     samples are seq_length-token windows: another length, other samples
  train.seed           seeds the document and sample shuffles of every source and epoch
  data.sources         the blend's members and weights (path, language, multiplier)
  data.valid_sources   decides whether validation is carved out of the sources (data.split)
  data.split           the documents that form the training part of each source
  data.multipliers, data.default_multiplier   the blend weights
  data.tokenizer       checked separately, by the tokenizer file's sha256 (resume.py)
  model architecture   checked separately (ARCHITECTURE_FIELDS in state_dict.py)

Allowed, handled exactly:
  train.global_batch_size / micro_batch_size   the next step reads on from consumed_samples
                       in the same order, whatever the batch size: no sample skipped or read
                       twice. The LR schedule counts optimizer steps, not samples, so it goes
                       on from the saved step (each remaining step now holds more or fewer
                       samples)
  parallel.*           checkpoints are resharded on load (tp, pp, vpp, dp, distributed optimizer)
  train.steps          the run is extended or shortened, reading on in the same order; the LR
                       schedule continues as saved (megatron's
                       use_checkpoint_opt_param_scheduler), except that a wsd schedule still in
                       its stable phase moves its decay to this run's end (wsd_decay_follows)
  optim.lr, min_lr, warmup_steps, decay_steps, decay_style, weight_decay, wsd_*
                       the schedule continues as saved, and the resume line names each
                       setting that differs; optim.override_schedule=true applies the new
                       values from the resumed step on
  data.cache_dir, checkpoint.*, logging.*, run.name   where things go, not what they are

The fix offered for a refused change: keep the old value, or start a new run.dir from this
checkpoint with `checkpoint.load=... checkpoint.reset_data=true` (weights and, unless
checkpoint.reset_optimizer, optimizer state carried over; data from sample 0 of the new order).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

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

# Settings that do not change the sample order, said on the resume line when they changed
# (the run reads on from its consumed samples).
ORDER_FREE_SETTINGS = ("train.steps", "train.global_batch_size")


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


# The LR schedule as megatron's OptimizerParamScheduler saves it (the wsd_* entries saved by
# training/optimizer.py's LRSchedule, which megatron leaves out), and the settings it comes from.
SCHEDULE_SETTINGS = {
    "max_lr": "optim.lr",
    "min_lr": "optim.min_lr",
    "lr_warmup_steps": "optim.warmup_steps",
    "lr_decay_steps": "optim.decay_steps (train.steps when unset)",
    "lr_decay_style": "optim.decay_style",
    "wsd_decay_steps": "optim.wsd_decay_steps",
    "lr_wsd_decay_style": "optim.wsd_decay_style",
    "start_wd": "optim.weight_decay",
}
# What places a wsd decay: these follow this run while the run is still in its stable phase.
WSD_DECAY = ("lr_decay_steps", "wsd_decay_steps", "lr_wsd_decay_style")
WSD = "WSD"  # megatron's name of the style


def _arrows(changes: list[tuple[str, object, object]]) -> str:
    return ", ".join(f"{key} {old} -> {new}" for key, old, new in changes)


def _wsd_decay_start(schedule) -> int:
    get = schedule.get if isinstance(schedule, dict) else lambda k: getattr(schedule, k)
    return get("lr_decay_steps") - get("wsd_decay_steps")


def wsd_decay_follows(saved: dict, scheduler) -> bool:
    """A wsd run resumed before its decay began, with a wsd schedule whose decay has not begun
    either: both give optim.lr up to here, so this run's decay (e.g. at a new train.steps) takes
    over with no jump in the LR. `scheduler` is this run's, before it loads `saved`."""
    if saved.get("lr_decay_style") != WSD or scheduler.lr_decay_style != WSD or not saved.get("wsd_decay_steps"):
        return False
    step = saved["num_steps"]
    return step <= _wsd_decay_start(saved) and step <= _wsd_decay_start(scheduler)


@dataclass(frozen=True)
class ScheduleChanges:
    """The schedule settings whose saved value differs from this run's: (setting, saved, this
    run's) each; `decay_follows`: those of WSD_DECAY apply now (wsd_decay_follows)."""

    changed: list[tuple[str, object, object]] = field(default_factory=list)
    decay_follows: bool = False


def schedule_changes(saved: dict, scheduler) -> ScheduleChanges:
    """What differs between the saved schedule and this run's; call before the scheduler loads
    `saved` (which replaces its values)."""
    changed = [
        (key, saved[name], getattr(scheduler, name))
        for name, key in SCHEDULE_SETTINGS.items()
        if name in saved and saved[name] != getattr(scheduler, name)
    ]
    return ScheduleChanges(changed, wsd_decay_follows(saved, scheduler))


def schedule_change_note(changes: ScheduleChanges, override: bool) -> str:
    """The part of the resume line that says what became of a changed LR schedule."""
    if not changes.changed:
        return ""
    if override:
        return f"; LR schedule from this run's settings (optim.override_schedule): {_arrows(changes.changed)}"
    moved_keys = {SCHEDULE_SETTINGS[k] for k in WSD_DECAY} if changes.decay_follows else set()
    moved = [c for c in changes.changed if c[0] in moved_keys]
    kept = [c for c in changes.changed if c[0] not in moved_keys]
    note = ""
    if moved:
        note += f"; wsd decay moved, the LR still constant at this step ({_arrows(moved)})"
    if kept:
        note += (f"; LR schedule continues as saved, not as this run's settings ({_arrows(kept)}): set "
                 "optim.override_schedule=true to apply them from this step on")
    return note


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
    """The part of the resume line that says a new train.steps or batch size keeps the order."""
    changes = position_changes(saved_config_yaml, cfg, ORDER_FREE_SETTINGS)
    if not changes:
        return ""
    return f"; {_arrows(changes)}: the same sample order, read on from the consumed samples"


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
