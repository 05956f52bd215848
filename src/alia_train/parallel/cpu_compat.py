"""Run megatron-core's GPU-only training stack on CPU processes over gloo.

megatron-core has no CPU path, but its math is plain torch. What ties it to CUDA is a short
list of spots, all redirected here and nowhere else:

* tensors created on / moved to "cuda" (`device="cuda"`, `device=torch.cuda.current_device()`,
  `.cuda()`): a TorchFunctionMode rewrites any CUDA device argument to the CPU;
* pinned host memory (`pin_memory=True`, as in megatron's CP slice of the RoPE table) needs a
  CUDA driver: the same mode drops the argument;
* `torch.cuda.current_device()` returns 0 (so code that builds a device from it works, and the
  mode above maps that device to the CPU);
* the CUDA RNG state tracker (`get/set_rng_state`, `manual_seed`, the tracker's fork) runs on
  the CPU generator;
* `Tensor.type()` string checks for 'torch.cuda.FloatTensor' (grad clipping, distributed
  optimizer) see the CUDA names of CPU tensors;
* CUDA streams, events, `synchronize` and memory statistics become no-ops.

* checkpoint saves copy no tensor in the training loop. On a GPU the copy to host memory is
  the snapshot an async save needs; on a CPU run megatron's "preload" (`.to("cpu")`) returns
  the live tensor, and the writer runs in a child forked right after it (TemporalAsyncCaller),
  whose copy-on-write view of memory keeps the state of the save while training changes the
  parent's tensors (tests/checkpoint/test_resume.py::test_async_saves_hold_the_state_of_their_step).
  megatron still copies the tensors that are views (the halves of each SwiGLU weight and of
  their Adam moments, ~40% of a checkpoint) so that a view is not written with its whole
  storage; here that copy is made by the writer instead, off the training loop.

Start-up: megatron-core decorates its fusion functions with `torch.compile` at import, which
loads TorchDynamo and Inductor (~3 s of every process's start) for functions a CPU run never
calls. `import_megatron()` imports it with those decorations deferred to the first call, and
without the wandb import that megatron's timers make for a writer alia-train never uses (~0.8 s).

A run on a GPU never goes through this module: the runtime calls `install()` only for a run on
the CPU (no GPU, or train.device=cpu beside one), and `import_megatron()` changes nothing when
CUDA is available.
"""

from __future__ import annotations

import contextlib
import functools
import sys

import torch
from torch.overrides import TorchFunctionMode

_installed = False
_views_kept = False  # set while megatron prepares a checkpoint's write buckets (_patch_checkpoint_writer)


def _is_cuda_device(device) -> bool:
    if device is None:
        return False
    if isinstance(device, int):
        return True  # a bare ordinal means a CUDA device to torch
    if isinstance(device, torch.device):
        return device.type == "cuda"
    if isinstance(device, str):
        return device.startswith("cuda")
    return False


class _CudaToCpuMode(TorchFunctionMode):
    """Rewrites CUDA device arguments of every torch call to the CPU, and drops requests for
    pinned memory (a staging area for host-to-GPU copies, which a CPU run has no use for)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if "device" in kwargs and _is_cuda_device(kwargs["device"]):
            kwargs["device"] = "cpu"
        kwargs.pop("pin_memory", None)
        if func in (torch.Tensor.cuda,):
            return args[0]
        if func is torch.Tensor.clone and _views_kept:
            return args[0]  # the writer makes the copy (_compact_views)
        if func is torch.Tensor.to and len(args) > 1 and _is_cuda_device(args[1]):
            args = (args[0], "cpu", *args[2:])
        return func(*args, **kwargs)


_MODE = _CudaToCpuMode()


def _patch_autograd_function_backward() -> None:
    """Run the backward of megatron's autograd Functions under the mode too.

    A mode is switched off while its own handler runs, and `torch.autograd.backward` itself goes
    through the handler: the whole backward pass would run without the mode. Sequence
    parallelism's backward creates its reduce-scatter buffers with
    `device=torch.cuda.current_device()`, so the mode is pushed again around each Python
    Function's backward (only when it is not already active, or every op would be seen twice).
    """
    from torch.autograd.function import BackwardCFunction

    original = BackwardCFunction.apply

    @functools.wraps(original)
    def apply(self, *args):
        if torch._C._len_torch_function_stack() == 0:
            with _MODE:
                return original(self, *args)
        return original(self, *args)

    BackwardCFunction.apply = apply


_CUDA_TYPE_NAMES = {
    "torch.FloatTensor": "torch.cuda.FloatTensor",
    "torch.HalfTensor": "torch.cuda.HalfTensor",
    "torch.BFloat16Tensor": "torch.cuda.BFloat16Tensor",
    "torch.DoubleTensor": "torch.cuda.DoubleTensor",
}


def _patch_tensor_type() -> None:
    original = torch.Tensor.type

    @functools.wraps(original)
    def type_(self, *args, **kwargs):
        if args or kwargs:
            return original(self, *args, **kwargs)
        name = original(self)
        return _CUDA_TYPE_NAMES.get(name, name)

    torch.Tensor.type = type_


class _NullStream:
    def __init__(self, *args, **kwargs):
        pass

    def wait_stream(self, *args, **kwargs):
        pass

    def wait_event(self, *args, **kwargs):
        pass

    def record_event(self, *args, **kwargs):
        return _NullEvent()

    def synchronize(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class _NullEvent:
    def __init__(self, *args, **kwargs):
        pass

    def record(self, *args, **kwargs):
        pass

    def wait(self, *args, **kwargs):
        pass

    def synchronize(self):
        pass

    def query(self):
        return True

    def elapsed_time(self, other):
        return 0.0


def _no_device_properties(*args, **kwargs):
    # Raised as torch raises it without a GPU: callers that probe (inductor's compile cache
    # key, torch.compile on CPU) catch RuntimeError and carry on.
    raise RuntimeError("no CUDA device: this is a CPU run")


def _patch_torch_cuda() -> None:
    cuda = torch.cuda
    cuda.current_device = lambda: 0
    cuda.set_device = lambda *a, **k: None
    cuda.synchronize = lambda *a, **k: None
    cuda.Stream = _NullStream
    cuda.Event = _NullEvent
    cuda.current_stream = lambda *a, **k: _NullStream()
    cuda.default_stream = lambda *a, **k: _NullStream()
    cuda.stream = lambda *a, **k: contextlib.nullcontext()
    cuda.device = lambda *a, **k: contextlib.nullcontext()
    cuda.empty_cache = lambda: None
    cuda.max_memory_allocated = lambda *a, **k: 0
    cuda.memory_allocated = lambda *a, **k: 0
    cuda.reset_peak_memory_stats = lambda *a, **k: None
    cuda.get_rng_state = lambda *a, **k: torch.get_rng_state()
    cuda.set_rng_state = lambda state, *a, **k: torch.set_rng_state(state)
    cuda.manual_seed = lambda seed: None  # the CPU generator is seeded by torch.manual_seed
    cuda.manual_seed_all = lambda seed: None
    cuda.get_device_properties = _no_device_properties
    cuda.get_device_capability = lambda *a, **k: (0, 0)


def _patch_megatron_rng() -> None:
    from megatron.core.tensor_parallel import random as mrandom

    mrandom._get_cuda_rng_state = lambda *a, **k: torch.get_rng_state()
    mrandom._set_cuda_rng_state = lambda state, *a, **k: torch.set_rng_state(state)


_SAME_SIZE_INT = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _own_copy(t: torch.Tensor) -> torch.Tensor:
    """A copy of a tensor's elements in a storage of their size, made by numpy: the writer of an
    async save is a forked child, where torch's OpenMP pool (created by the parent's training)
    hangs on first use, and `clone` uses it."""
    as_int = t.detach().view(_SAME_SIZE_INT[t.element_size()])  # numpy has no bfloat16
    return torch.from_numpy(as_int.numpy().copy()).view(t.dtype)


def _compact_views(write_bucket):
    """The bucket with each tensor that is a view on a larger storage replaced by a copy of
    its own elements (torch.save writes a view's whole storage)."""
    file_name, storage_key, (bytes_data, tensor_data) = write_bucket
    compact = [
        (item, _own_copy(t) if t.untyped_storage().nbytes() != t.numel() * t.element_size() else t)
        for item, t in tensor_data
    ]
    return file_name, storage_key, (bytes_data, compact)


def _patch_checkpoint_writer() -> None:
    """Move megatron's copy of view tensors from the training loop into the shard writer.

    `prepare_write_data` runs in the training loop and copies every view; the copy is what
    made an async save stall for ~0.15 s per GB on CPU. Under `_views_kept` its clone returns the
    view itself, and `write_preloaded_data` (the writer's per-file worker: the forked child of
    an async save, or the saving process of a blocking one) makes the copy before writing. The
    state is the save's in both cases: nothing runs between the two in a blocking save, and
    the forked child sees memory as it was at the fork."""
    from megatron.core.dist_checkpointing.strategies.filesystem_async import FileSystemWriterAsync

    prepare, write = FileSystemWriterAsync.prepare_write_data, FileSystemWriterAsync.write_preloaded_data

    @functools.wraps(prepare)
    def prepare_write_data(self, plan, planner):
        global _views_kept
        _views_kept = True
        try:
            return prepare(self, plan, planner)
        finally:
            _views_kept = False

    @functools.wraps(write)
    def write_preloaded_data(transform_list, local_proc_idx, write_bucket, *args, **kwargs):
        return write(transform_list, local_proc_idx, _compact_views(write_bucket), *args, **kwargs)

    FileSystemWriterAsync.prepare_write_data = prepare_write_data
    FileSystemWriterAsync.write_preloaded_data = staticmethod(write_preloaded_data)


def _compile_on_first_call(real_compile):
    """torch.compile for functions that compiles at the first call instead of at decoration
    (modules and anything else go to torch.compile as they are)."""

    def defer(fn, options):
        compiled = None

        @functools.wraps(fn)
        def call(*args, **kwargs):
            nonlocal compiled
            if compiled is None:
                compiled = real_compile(fn, **options)
            return compiled(*args, **kwargs)

        return call

    def compile_(model=None, **options):
        if model is None:  # @torch.compile(...) with options
            return lambda fn: defer(fn, options)
        if isinstance(model, torch.nn.Module) or not callable(model):
            return real_compile(model, **options)
        return defer(model, options)

    return compile_


# megatron-core's modules that decorate functions with torch.compile when imported (its
# `jit_fuser`); everything alia-train imports from megatron is reached through these.
_MEGATRON_ROOTS = ("megatron.core", "megatron.core.models.gpt", "megatron.core.transformer.transformer_layer")


def import_megatron(cuda: bool) -> None:
    """Import megatron-core; for a run on the CPU (`cuda` False), with its import-time
    torch.compile decorations deferred to the first call (the same compile, if a CPU run ever
    calls one). Changes nothing for a GPU run, or once megatron-core is imported."""
    import importlib

    real = torch.compile
    hide_wandb = False
    if not cuda and "megatron.core" not in sys.modules:
        torch.compile = _compile_on_first_call(real)
        # megatron.core.timers imports wandb (~0.8 s) only to write timers to a W&B writer,
        # which alia-train never hands it (training/tracking.py imports wandb itself, where
        # enabled). A None entry makes that guarded import fail fast: timers.wandb is None.
        hide_wandb = "wandb" not in sys.modules
        if hide_wandb:
            sys.modules["wandb"] = None
    try:
        for name in _MEGATRON_ROOTS:
            importlib.import_module(name)
    finally:
        torch.compile = real
        if hide_wandb and sys.modules.get("wandb", 0) is None:
            del sys.modules["wandb"]


def install() -> bool:
    """Redirect megatron-core's CUDA-only calls to the CPU, for a run on the CPU (the runtime
    calls it for those only: no GPU, or train.device=cpu beside one). Returns True if it did
    anything. A run on a GPU never calls it."""
    global _installed
    if _installed:
        return True
    _patch_torch_cuda()
    _patch_tensor_type()
    _patch_megatron_rng()
    _patch_autograd_function_backward()
    _patch_checkpoint_writer()
    # Entered for the life of the process: every later torch call goes through the mode.
    _MODE.__enter__()
    _installed = True
    return True
