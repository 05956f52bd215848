"""`train.compile` and `train.fused_swiglu` on CPU (inductor's C++ backend): the compiled layers
train to the same losses as the eager ones, compile once and never again across steps, keep
the eager parameter names, and megatron's compiled SwiGLU matches the plain activation in
values and gradients. Kept tiny: inductor compiles are slow on a couple of busy cores."""

from __future__ import annotations

import dataclasses

import torch

from alia_train.config import load_config

TINY = ["+model=tiny", "model.num_layers=2", "train.seq_length=32", "train.micro_batch_size=2"]


def _train(overrides: list[str], steps: int = 3):
    """Losses of `steps` SGD steps on fixed random batches, the model, and whether any step
    after the first recompiled (dynamo raises on a recompile while the patch is on)."""
    from alia_train.model.build import build_model

    cfg = load_config([*TINY, *overrides])
    model = build_model(cfg, vocab_size=4096, dtype=torch.float32, device=torch.device("cpu"))[0]
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    gen = torch.Generator().manual_seed(0)
    positions = torch.arange(32).expand(2, 32)
    losses = []
    for step in range(steps):
        tokens = torch.randint(0, 4096, (2, 32), generator=gen)
        with torch._dynamo.config.patch(error_on_recompile=step > 0):
            loss = model(tokens, positions, None, labels=tokens).mean()
            loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    return losses, model


def test_compiled_layers_train_like_eager_and_compile_once(runtime):
    from megatron.core.transformer.transformer_layer import TransformerLayer
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    eager, eager_model = _train([])
    compiled, model = _train(["train.compile=true"])
    layers = [m for m in model.modules() if isinstance(m, TransformerLayer)]
    assert len(layers) == 2 and all(m._compiled_call_impl is not None for m in layers)
    assert not any(getattr(m, "_compiled_call_impl", None) for m in eager_model.modules())
    # Same parameter names as eager: checkpoints do not depend on the setting.
    assert list(model.state_dict()) == list(eager_model.state_dict())
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-4)
    assert compiled[-1] != compiled[0]  # the steps did train
    # Whole layers, no graph breaks (megatron's tp_group warning would split each layer), and
    # the second layer reuses the first one's graph rather than compiling again.
    assert not counters["graph_break"], list(counters["graph_break"])
    assert counters["stats"]["unique_graphs"] == 1


def test_compiled_swiglu_matches_the_plain_one(runtime):
    """megatron's bias_activation_fusion path (torch.compile'd SwiGLU, its own backward) against
    the plain chunk-silu-multiply, forward and backward, on the MLP of our layer spec."""
    from megatron.core.transformer.mlp import MLP

    from alia_train.model.build import transformer_config
    from alia_train.model.spec import local_layer_spec

    plain_cfg = transformer_config(load_config(TINY), torch.float32, cuda=False)
    assert not plain_cfg.bias_activation_fusion
    fused_cfg = dataclasses.replace(plain_cfg, bias_activation_fusion=True)
    submodules = local_layer_spec().submodules.mlp.keywords["submodules"]
    plain, fused = MLP(plain_cfg, submodules), MLP(fused_cfg, submodules)
    with torch.no_grad():
        for p in plain.parameters():
            p.normal_(0.0, 0.2)
    fused.load_state_dict(plain.state_dict())
    x = torch.randn(16, 2, plain_cfg.hidden_size, generator=torch.Generator().manual_seed(0))
    outputs, grads = [], []
    for mlp in (plain, fused):
        xi = x.clone().requires_grad_()
        out, _ = mlp(xi)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        outputs.append(out)
        grads.append([xi.grad, *(p.grad for p in mlp.parameters())])
    torch.testing.assert_close(outputs[1], outputs[0])
    for g_fused, g_plain in zip(grads[1], grads[0]):
        torch.testing.assert_close(g_fused, g_plain)


def test_fused_swiglu_is_on_for_gpu_runs_unless_turned_off():
    from alia_train.model.build import transformer_config

    cfg = load_config(TINY)
    assert transformer_config(cfg, torch.bfloat16, cuda=True).bias_activation_fusion
    assert not transformer_config(cfg, torch.bfloat16, cuda=False).bias_activation_fusion
    off = load_config([*TINY, "train.fused_swiglu=false"])
    assert not transformer_config(off, torch.bfloat16, cuda=True).bias_activation_fusion
