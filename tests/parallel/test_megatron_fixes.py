"""megatron_fixes' grad norm without apex / Transformer Engine: megatron's value, with one host
read per step instead of one per gradient tensor, and only where megatron took its slow
fallback. (The distributed-optimizer resume fixes are covered by tests/checkpoint.)"""

from __future__ import annotations

import pytest
import torch
from torch.overrides import TorchFunctionMode


class _HostReads(TorchFunctionMode):
    """Records what makes the host wait for a GPU: reading a tensor's value, and building a
    tensor from a list (torch.tensor reads each element)."""

    def __init__(self):
        super().__init__()
        self.reads: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in (torch.Tensor.item, torch.Tensor.__float__, torch.Tensor.tolist):
            self.reads.append(func.__name__)
        elif func is torch.tensor and isinstance(args[0], (list, tuple)):
            self.reads.append("torch.tensor(list)")
        return func(*args, **(kwargs or {}))


def _megatron_fell_back() -> bool:
    """megatron's clip_grads runs without apex / TE kernels (as on every CPU machine)."""
    from megatron.core import utils
    from megatron.core.optimizer import clip_grads

    return clip_grads.multi_tensor_applier is utils.local_multi_tensor_applier


def _grads() -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    shapes = [(3,), (64, 17), (1000,), (8, 8, 8), (1,), (257, 3)]
    dtypes = [torch.float32, torch.float32, torch.bfloat16, torch.float16, torch.float32, torch.bfloat16]
    return [torch.randn(s, generator=gen).mul(10.0**i).to(d) for i, (s, d) in enumerate(zip(shapes, dtypes))]


def test_grad_norm_equals_megatrons_fallback(runtime):
    from megatron.core.utils import local_multi_tensor_l2_norm

    from alia_train.parallel.megatron_fixes import _foreach_l2_norm

    grads = _grads()
    flag = torch.zeros(1, dtype=torch.int)
    expected, _ = local_multi_tensor_l2_norm(2048 * 32, flag, [grads], False)
    got, per_tensor = _foreach_l2_norm(2048 * 32, flag, [grads], False)
    assert per_tensor is None and got.shape == (1,) and got.dtype == torch.float32
    torch.testing.assert_close(got, expected, rtol=2e-7, atol=0.0)
    # The fp32 tensors alone: their float64 norm, to fp32 rounding.
    fp32 = [g for g in grads if g.dtype == torch.float32]
    exact = torch.linalg.vector_norm(torch.cat([g.double().flatten() for g in fp32])).reshape(1)
    got = _foreach_l2_norm(2048 * 32, flag, [fp32], False)[0].double()
    torch.testing.assert_close(got, exact, rtol=2e-7, atol=0.0)


def test_megatron_grad_norm_reads_the_device_once_per_step(runtime):
    from megatron.core.optimizer import clip_grads

    if not _megatron_fell_back():
        pytest.skip("apex / TE grad norm: megatron's own kernel, not the fallback")
    grads = _grads()
    norms = torch.stack([torch.linalg.vector_norm(g).float() for g in grads])
    expected = torch.linalg.vector_norm(norms).item()
    with _HostReads() as reads:
        norm = clip_grads.get_grad_norm_fp32(grads)
    # The one read is megatron's own `.item()` of the result, after its all-reduce.
    assert reads.reads == ["item"], reads.reads
    assert abs(norm - expected) <= 2e-7 * expected


def test_grad_norm_fix_replaces_only_megatrons_fallback(runtime, monkeypatch):
    from megatron.core.optimizer import clip_grads

    from alia_train.parallel import megatron_fixes

    # start_process_groups installed the fix where megatron fell back, and only there.
    assert (clip_grads.l2_norm_impl is megatron_fixes._foreach_l2_norm) == _megatron_fell_back()
    apex_or_te_kernel = object()
    monkeypatch.setattr(clip_grads, "l2_norm_impl", apex_or_te_kernel)
    megatron_fixes._fix_grad_norm_fallback()
    assert clip_grads.l2_norm_impl is apex_or_te_kernel
