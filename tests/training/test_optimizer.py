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
