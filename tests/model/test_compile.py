"""`train.compile` and `train.fused_swiglu` on CPU (inductor's C++ backend): the compiled layers
train to the same losses as the eager ones, compile once and never again across steps, keep
the eager parameter names, also under megatron's DDP with both overlaps and the distributed
optimizer over 2 processes; megatron's compiled SwiGLU matches the plain activation in values
and gradients. Kept tiny: inductor compiles are slow on a couple of busy cores.

`torchrun --nproc_per_node=2 test_compile.py OUT_DIR` runs this file as the DDP test's worker."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from alia_train.config import load_config

TINY = ["+model=tiny", "model.num_layers=2", "train.seq_length=32", "train.micro_batch_size=2"]
# DP 2, distributed optimizer, both overlaps; a save after step 2 takes the param all-gather
# hooks off and puts them back (checkpoint/writer.py), as every save does.
DDP_STEPS = 3
DDP = [
    *TINY, f"train.steps={DDP_STEPS}",
    "train.global_batch_size=4", "logging.interval=1", "optim.warmup_steps=1",
    "checkpoint.interval=2", "parallel.distributed_optimizer=true",
    "parallel.overlap_grad_reduce=true", "parallel.overlap_param_gather=true",
]
# Parameters per DDP bucket: every layer spans several buckets, as a salamandra_2b layer (~50M)
# spans megatron's 40M ones, so compiled layers are where the all-gathers are waited on.
BUCKET = 20_000


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


def _is_compiled(module: torch.nn.Module) -> bool:
    return hasattr(module.forward, "_torchdynamo_orig_callable")


def test_compiled_layers_train_like_eager_and_compile_once(runtime):
    from megatron.core.transformer.transformer_layer import TransformerLayer
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    eager, eager_model = _train([])
    compiled, model = _train(["train.compile=true"])
    layers = [m for m in model.modules() if isinstance(m, TransformerLayer)]
    assert len(layers) == 2 and all(_is_compiled(m) for m in layers)
    assert not any(_is_compiled(m) for m in eager_model.modules())
    # Same parameter names as eager: checkpoints do not depend on the setting.
    assert list(model.state_dict()) == list(eager_model.state_dict())
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-4)
    assert compiled[-1] != compiled[0]  # the steps did train
    # Whole layers, no graph breaks (megatron's tp_group warning would split each layer), and
    # the second layer reuses the first one's graph rather than compiling again.
    assert not counters["graph_break"], list(counters["graph_break"])
    assert counters["stats"]["unique_graphs"] == 1


def _ddp_worker(out: Path) -> None:
    """Eager then compiled training in one torchrun launch; rank 0 writes dynamo's counters."""
    from torch._dynamo.utils import counters

    from alia_train.parallel.launch_env import detect_launch_env
    from alia_train.parallel.runtime import shutdown
    from alia_train.training import optimizer
    from alia_train.training.run import RunOptions, train

    ddp_config = optimizer.DistributedDataParallelConfig
    optimizer.DistributedDataParallelConfig = lambda **kw: ddp_config(**{**kw, "bucket_size": BUCKET})
    launch = detect_launch_env()
    for name, extra in {"eager": [], "compiled": ["train.compile=true"]}.items():
        cfg = load_config([*DDP, *extra, f"run.dir={out / name}", f"data.cache_dir={out / 'cache'}"])
        train(cfg, launch, RunOptions(trackers=False, keep_process_group=True))
    if torch.distributed.get_rank() == 0:
        dynamo = {"graph_breaks": list(counters["graph_break"]), "graphs": counters["stats"]["unique_graphs"]}
        (out / "dynamo.json").write_text(json.dumps(dynamo))
    shutdown()


@pytest.mark.multiproc
@pytest.mark.slow
def test_compiled_layers_under_ddp_with_overlapped_param_gather(tmp_path):
    """megatron's DDP hooks every submodule with a forward pre-hook that waits on its bucket's
    param all-gather: inside a compiled layer that wait was a graph break at every bucket."""
    from conftest import BIN, subprocess_env

    from alia_train.metrics_file import read_records

    cmd = [str(BIN / "torchrun"), "--standalone", "--nproc_per_node=2", __file__, str(tmp_path)]
    proc = subprocess.run(cmd, env=subprocess_env(), capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    losses = {
        name: [r["loss"] for r in read_records(tmp_path / name / "metrics.jsonl").train]
        for name in ("eager", "compiled")
    }
    assert len(losses["compiled"]) == DDP_STEPS and all(map(math.isfinite, losses["compiled"]))
    # Shards updated by the distributed optimizer come back only through the all-gathers.
    torch.testing.assert_close(losses["compiled"], losses["eager"], rtol=1e-5, atol=0.0)
    dynamo = json.loads((tmp_path / "dynamo.json").read_text())
    # Whole layers, one graph for both layers and all steps (the save re-registered the hooks),
    # and the all-gathers waited on in the order megatron chains them.
    assert dynamo == {"graph_breaks": [], "graphs": 1}, dynamo
    assert "already been dispatched" not in proc.stderr


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


if __name__ == "__main__":
    _ddp_worker(Path(sys.argv[1]))
