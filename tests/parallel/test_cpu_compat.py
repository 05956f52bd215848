"""The CPU-compat module's checkpoint-writer change, on real dist_checkpointing files in one gloo
process: tensors that are views (as megatron's SwiGLU halves are) are not copied in the training
loop, and are still written with their own elements only."""

from __future__ import annotations

import torch


def _view_state_dict(base: torch.Tensor) -> dict:
    from megatron.core.dist_checkpointing.mapping import ShardedTensor

    gate, up = torch.chunk(base, 2, dim=0)  # views on base's storage, like megatron's SwiGLU factory makes
    return {
        "gate": ShardedTensor.from_rank_offsets("gate", gate, replica_id=0),
        "up": ShardedTensor.from_rank_offsets("up", up, replica_id=0),
    }


def _bucket_tensors(request) -> list[torch.Tensor]:
    write_buckets = request.async_fn_args[1]
    return [t for _, _, (_, tensors) in write_buckets for _, t in tensors]


def test_views_are_not_copied_in_the_loop_and_written_compact(runtime, tmp_path):
    from megatron.core import dist_checkpointing

    base = torch.arange(2 * 512 * 256, dtype=torch.float32).reshape(1024, 256)
    expected = {"gate": base[:512].clone(), "up": base[512:].clone()}
    target = tmp_path / "ckpt"
    target.mkdir()

    request = dist_checkpointing.save(
        _view_state_dict(base), str(target), async_sharded_save=True, async_strategy="mcore"
    )

    # what the training loop holds for the writer: the live storage, no copy
    tensors = _bucket_tensors(request)
    assert len(tensors) == 2
    assert all(t.untyped_storage().data_ptr() == base.untyped_storage().data_ptr() for t in tensors)

    request.execute_sync()

    # each half written with its own elements, not base's whole storage twice
    written = sum(p.stat().st_size for p in target.glob("*.distcp"))
    assert written < 1.2 * base.numel() * base.element_size(), written

    loaded = dist_checkpointing.load(_view_state_dict(torch.zeros_like(base)), str(target))
    for key, value in expected.items():
        assert torch.equal(loaded[key], value), key


def test_compile_is_deferred_to_the_first_call():
    from alia_train.parallel.cpu_compat import _compile_on_first_call

    calls = []

    def real_compile(model, **options):
        calls.append((model, options))
        return lambda *args: ("compiled", model(*args))

    compile_ = _compile_on_first_call(real_compile)

    def double(x):
        return 2 * x

    deferred = compile_(double)
    decorated = compile_(dynamic=False)(double)
    assert calls == [] and deferred.__name__ == "double"  # nothing compiled at decoration
    assert deferred(3) == deferred(3) == ("compiled", 6)
    assert decorated(1) == ("compiled", 2)
    assert calls == [(double, {}), (double, {"dynamic": False})]  # once each, with its options
    module = torch.nn.Linear(2, 2)
    compile_(module)
    assert calls[-1] == (module, {})  # modules are compiled as torch.compile does


def test_the_start_up_imports_megatron_without_the_compiler_or_wandb_and_both_stay_usable():
    import subprocess
    import sys

    from conftest import subprocess_env

    code = (
        "import sys, torch\n"
        "real = torch.compile\n"
        "from alia_train.config import load_config\n"
        "from alia_train.parallel.launch_env import detect_launch_env\n"
        "from alia_train.training.startup import start_runtime\n"
        "start_runtime(load_config(['+model=tiny']), detect_launch_env({}))  # imports megatron-core\n"
        "import alia_train.training.run\n"
        "from megatron.core.fusions import fused_bias_swiglu\n"
        "assert torch.compile is real\n"
        "import megatron.core.timers as timers\n"
        "assert timers.wandb is None  # its writer-only import skipped\n"
        "print(sorted(m for m in ('torch._inductor.compile_fx', 'torch._dynamo', 'wandb') if m in sys.modules))\n"
        "import wandb  # alia-train's own W&B tracking still imports it\n"
        "assert wandb.init\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=subprocess_env(CUDA_VISIBLE_DEVICES=""), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]", proc.stdout
