"""optim.fused_adam: torch's fused AdamW inside megatron's optimizer (no apex / TE here), the
same weights as megatron's default torch AdamW after a few steps of the tiny model (fp32 and
bf16 with fp32 main weights), and still fused after a state-dict round trip (a resume). A state
saved under another optim.lr loads (the resume of a run whose LR settings changed)."""

from __future__ import annotations

import copy

import pytest
import torch

from alia_train.config import load_config

TINY = ["+model=tiny", "train.seq_length=32", "train.micro_batch_size=2", "optim.warmup_steps=0"]


def _train(fused: bool, dtype: torch.dtype, steps: int = 3, extra: tuple[str, ...] = ()):
    from alia_train.model.build import build_model
    from alia_train.training.optimizer import build_optimizer, wrap_ddp

    cfg = load_config([*TINY, f"optim.fused_adam={str(fused).lower()}", *extra])
    model = wrap_ddp(cfg, build_model(cfg, vocab_size=4096, dtype=dtype, device=torch.device("cpu")), dtype)
    optimizer, _ = build_optimizer(cfg, model, dtype)
    g = torch.Generator().manual_seed(5)
    for _ in range(steps):
        model[0].zero_grad_buffer()
        optimizer.zero_grad()
        tokens, labels = torch.randint(0, 4096, (2, 2, 32), generator=g)
        model[0](tokens, torch.arange(32).expand(2, 32), None, labels=labels).float().mean().backward()
        model[0].finish_grad_sync()
        ok, _, _ = optimizer.step()
        assert ok
    return optimizer, {n: p.detach().float().clone() for n, p in model[0].named_parameters()}


def _torch_adams(optimizer):
    from alia_train.training.optimizer import _torch_adams

    return _torch_adams(optimizer)


# Three steps at the tiny model's lr 3e-3 move a weight by up to ~9e-3; the kernels differ by
# rounding, largest where a gradient is near Adam's eps (fp32: ~3e-6 seen). bf16: one bf16 ulp
# of a weight near 1.
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 2e-5), (torch.bfloat16, 1e-2)])
def test_fused_adam_trains_to_the_same_weights(runtime, dtype, tol):
    plain_opt, plain = _train(False, dtype)
    fused_opt, fused = _train(True, dtype)
    assert {g["fused"] for a in _torch_adams(fused_opt) for g in a.param_groups} == {True}
    assert {g["fused"] for a in _torch_adams(plain_opt) for g in a.param_groups} == {None}
    assert fused.keys() == plain.keys()
    for name, p in fused.items():
        torch.testing.assert_close(p, plain[name], rtol=0, atol=tol, msg=name)


def test_a_loaded_state_stays_fused(runtime):
    """A checkpoint's param groups (here an unfused optimizer's) replace the groups on load; the
    load hook makes them fused again, with `step` where the fused kernel reads it."""
    plain_opt, _ = _train(False, torch.float32, steps=1)
    fused_opt, _ = _train(True, torch.float32, steps=1)
    (plain_adam,), (fused_adam,) = _torch_adams(plain_opt), _torch_adams(fused_opt)
    assert all(s["step"].dtype == torch.float32 for s in fused_adam.state.values())
    fused_adam.load_state_dict(plain_adam.state_dict())
    assert {g["fused"] for g in fused_adam.param_groups} == {True}
    assert {g["foreach"] for g in fused_adam.param_groups} == {False}
    assert all(s["step"].item() == 1.0 for s in fused_adam.state.values())


@pytest.mark.parametrize("keep_saved_schedule", [True, False])
def test_a_state_saved_under_another_lr_loads(runtime, keep_saved_schedule):
    """megatron-core pairs saved and current param groups by a key that holds max_lr / min_lr:
    its own load fails once optim.lr changed. load_optimizer_state pairs them on the rest."""
    from alia_train.checkpoint.optimizer_state import load_optimizer_state

    saved, _ = _train(True, torch.float32, steps=2)  # the tiny model's lr 3e-3, min_lr 3e-4
    state = saved.state_dict()
    current, _ = _train(True, torch.float32, steps=1, extra=("optim.lr=1e-3", "optim.min_lr=1e-4"))
    with pytest.raises(ValueError, match="Could not find parameter group"):
        current.load_state_dict(copy.deepcopy(state))
    load_optimizer_state(current, copy.deepcopy(state), keep_saved_schedule=keep_saved_schedule)
    want = (3e-3, 3e-4) if keep_saved_schedule else (1e-3, 1e-4)
    assert {(g["max_lr"], g["min_lr"]) for g in current.param_groups} == {want}
    assert sorted(g["wd_mult"] for g in current.param_groups) == [0.0, 1.0]  # each group found its own
    (a,), (b,) = _torch_adams(saved), _torch_adams(current)
    moments = [(a.state[p], b.state[q]) for ga, gb in zip(a.param_groups, b.param_groups)
               for p, q in zip(ga["params"], gb["params"], strict=True)]
    assert all(sb["step"].item() == 2.0 and torch.equal(sa["exp_avg"], sb["exp_avg"]) for sa, sb in moments)


# ---- optim.decay_style=wsd: megatron-core's WSD schedule, counted in optimizer steps


def _schedule(*overrides: str):
    from types import SimpleNamespace

    from alia_train.training.optimizer import build_scheduler

    cfg = load_config(["+model=tiny", "optim.decay_style=wsd", *overrides])  # lr 3e-3 -> 3e-4, warmup 20
    return build_scheduler(cfg, SimpleNamespace(param_groups=[{}]))


def _lrs(schedule, until: int) -> dict[int, float]:
    """The LR after each step up to `until`, as the training log reports it."""
    out = {}
    while schedule.num_steps < until:
        schedule.step(increment=1)
        out[schedule.num_steps] = schedule.optimizer.param_groups[0]["lr"]
    return out


@pytest.mark.parametrize("style", ["linear", "cosine", "exponential", "minus_sqrt"])
def test_wsd_warms_up_holds_then_decays_to_min_lr_at_the_last_step(style):
    lrs = _lrs(_schedule("train.steps=60", "optim.wsd_decay_steps=20", f"optim.wsd_decay_style={style}"), 60)
    assert lrs[10] == pytest.approx(1.5e-3)  # warmup
    assert all(lrs[s] == 3e-3 for s in range(20, 41))  # stable
    decay = [lrs[s] for s in range(40, 61)]
    assert all(a > b for a, b in zip(decay, decay[1:])) and lrs[60] == pytest.approx(3e-4)


def test_more_steps_in_the_stable_phase_move_the_decay_to_the_new_end():
    """Saved at step 25 of a 60-step run (decay from 40); resumed with train.steps=120 and no
    override: constant to 100, min_lr at 120. Resumed after the decay began: the saved decay."""
    from alia_train.checkpoint.resume_rules import schedule_change_note, schedule_changes

    first = _schedule("train.steps=60", "optim.wsd_decay_steps=20")
    _lrs(first, 25)
    longer = _schedule("train.steps=120", "optim.wsd_decay_steps=20")
    changes = schedule_changes(first.state_dict(), longer)
    assert schedule_change_note(changes, override=False) == (
        "; wsd decay moved, the LR still constant at this step (optim.decay_steps (train.steps when unset) 60 -> 120)")
    longer.load_state_dict(first.state_dict())
    lrs = _lrs(longer, 120)
    assert all(lrs[s] == 3e-3 for s in range(26, 101)) and lrs[120] == pytest.approx(3e-4)
    assert longer.state_dict()["lr_decay_steps"] == 120  # and saved so: the next resume continues it

    _lrs(first, 45)  # decaying
    late = _schedule("train.steps=120", "optim.wsd_decay_steps=20")
    note = schedule_change_note(schedule_changes(first.state_dict(), late), override=False)
    assert note.startswith("; LR schedule continues as saved") and "60 -> 120" in note
    late.load_state_dict(first.state_dict())
    lrs = _lrs(late, 70)
    assert lrs[50] == pytest.approx(3e-4 + 0.5 * 2.7e-3)  # halfway through the saved 40..60 decay
    assert lrs[60] == lrs[70] == pytest.approx(3e-4) and late.wsd_decay_steps == 20


def test_a_wsd_checkpoint_resumed_by_a_cosine_run_keeps_its_decay():
    """Without override_schedule the saved style stays, and with it the saved wsd decay (which
    megatron's own state dict would have lost)."""
    from types import SimpleNamespace

    from alia_train.training.optimizer import build_scheduler

    first = _schedule("train.steps=60", "optim.wsd_decay_steps=20")
    _lrs(first, 45)
    cosine = build_scheduler(load_config(["+model=tiny", "train.steps=60"]), SimpleNamespace(param_groups=[{}]))
    cosine.load_state_dict(first.state_dict())
    assert (cosine.lr_decay_style, cosine.wsd_decay_steps) == ("WSD", 20)
    assert _lrs(cosine, 60)[60] == pytest.approx(3e-4)


@pytest.mark.parametrize("overrides, problem", [
    (["optim.decay_style=wsd"], "optim.wsd_decay_steps: needed with optim.decay_style=wsd"),
    (["optim.decay_style=wsd", "optim.wsd_decay_steps=81", "train.steps=100"], "must be in 1..80"),
    (["optim.wsd_decay_steps=10"], "used only with optim.decay_style=wsd, and decay_style is cosine"),
    (["optim=anneal", "optim.wsd_decay_steps=10", "optim.decay_style=cosine"], "used only with optim.decay_style=wsd"),
])
def test_wsd_settings_that_cannot_work_are_one_line_each(overrides, problem):
    from alia_train.config.validate import config_problems

    problems = config_problems(load_config(["+model=tiny", *overrides]), 1, cuda=False, te_available=False)
    assert len(problems) == 1 and problem in problems[0], problems


def test_the_anneal_group_chooses_wsd_over_a_recipe():
    cfg = load_config(["+model=salamandra_2b", "optim=anneal", "optim.wsd_decay_steps=2000", "train.steps=12000"])
    assert (cfg.optim.decay_style, cfg.optim.override_schedule, cfg.optim.lr) == ("wsd", True, 2e-4)
