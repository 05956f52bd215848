"""A saved optimizer state loaded into this run's megatron optimizer, also after the LR
settings changed (see `load_optimizer_state`)."""

from __future__ import annotations

# LR-schedule values that megatron-core keeps in every param group (set from optim.* when the
# optimizer is built) and that its scheduler reads before its own.
SCHEDULE_GROUP_KEYS = ("max_lr", "min_lr", "start_wd", "end_wd")


def _saved_param_groups(state) -> list[dict]:
    """Every param group in a loaded optimizer state (its nesting differs between megatron's
    optimizers: plain, mixed precision, distributed, chained)."""
    if isinstance(state, dict):
        groups = state.get("param_groups")
        if isinstance(groups, list) and all(isinstance(g, dict) for g in groups):
            return list(groups)
        return [g for v in state.values() for g in _saved_param_groups(v)]
    if isinstance(state, (list, tuple)):
        return [g for v in state for g in _saved_param_groups(v)]
    return []


def load_optimizer_state(optimizer, state: dict, keep_saved_schedule: bool) -> None:
    """`optimizer.load_state_dict(state)`, also after optim.lr / min_lr / weight_decay changed.

    megatron-core pairs saved and current param groups by a key that includes the schedule
    values above, so a resume with another optim.lr fails ("Could not find parameter group").
    Here groups pair on the rest of that key (weight-decay multiplier, LR multiplier, ...);
    their schedule values are then the checkpoint's (keep_saved_schedule) or this run's."""
    from megatron.core.optimizer.optimizer import param_group_identifier_keys

    structural = [k for k in param_group_identifier_keys if k not in SCHEDULE_GROUP_KEYS]

    def kind(group: dict) -> tuple:
        return tuple(group.get(k) for k in structural)

    current: dict[tuple, list[dict]] = {}
    for group in optimizer.param_groups:
        current.setdefault(kind(group), []).append(group)
    saved_values: dict[tuple, dict] = {}
    for group in _saved_param_groups(state):
        match = current.get(kind(group), [])
        if len(match) != 1:
            continue  # not one counterpart: left to megatron's own pairing
        saved_values[kind(group)] = {k: group[k] for k in SCHEDULE_GROUP_KEYS if k in group}
        group.update({k: match[0][k] for k in SCHEDULE_GROUP_KEYS if k in match[0]})
    import torch

    # No autograd: the per-rank ("dp_reshardable") form copies into the main parameters, which in
    # an fp32 run are the model's own leaf tensors (megatron-core 0.19 decorates its other load
    # paths with no_grad, not this one).
    with torch.no_grad():
        optimizer.load_state_dict(state)
    if keep_saved_schedule:
        for group in optimizer.param_groups:
            group.update(saved_values.get(kind(group), {}))
