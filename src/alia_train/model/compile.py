"""torch.compile of the transformer layers (`train.compile`).

Each megatron TransformerLayer's `forward` is compiled in place, so parameter names, state
dicts and checkpoints are those of the eager model. Dynamo inlines nn modules and guards
on their structure rather than their identity, so all layers of a model share one compiled
graph instead of one compile each. Inside a layer, inductor fuses what has no fused kernel
without Transformer Engine: the RMSNorms, RoPE, SwiGLU and the residual adds around the
matmuls and the attention kernel.

One megatron-core detail would split every layer into pieces: RowParallelLinear passes
`tp_group=None` on each forward, and `get_tensor_model_parallel_group_if_none` then warns on
rank 0 (a deprecation warning), which dynamo cannot trace (a graph break in the middle of the
attention and the MLP block). With compile on, the name that megatron's linear layers call
resolves the default group the same way, without the warning.

The overlapped parameter all-gather (`parallel.overlap_param_gather`) would split them too:
megatron's DDP gives every submodule a forward pre-hook that waits on its bucket's all-gather
(`Work.wait`, which dynamo cannot trace: a graph break wherever a bucket starts, a recompile
per bucket state). So only the layer's `forward` is compiled, and the layer's own hook, eager,
runs its submodules' waits in registration order (the order megatron chains the all-gathers
in); inside the compiled forward they do nothing. A save takes the hooks off and puts them
back (checkpoint/writer.py): dynamo does not guard on hooks, so no recompile.
"""

from __future__ import annotations

import functools
import weakref

import torch
from megatron.core import parallel_state
from megatron.core.distributed import DistributedDataParallel
from megatron.core.tensor_parallel import layers as tp_layers
from megatron.core.transformer.transformer_layer import TransformerLayer

_original_group_if_none = tp_layers.get_tensor_model_parallel_group_if_none


def _tp_group_or_default(tp_group, is_expert: bool = False, check_initialized: bool = True):
    """megatron's `get_tensor_model_parallel_group_if_none`, less its warning for None."""
    if tp_group is None and torch.distributed.is_initialized() and parallel_state.is_initialized():
        get = (parallel_state.get_expert_tensor_parallel_group if is_expert
               else parallel_state.get_tensor_model_parallel_group)
        tp_group = get(check_initialized=check_initialized)
    return _original_group_if_none(tp_group, is_expert, check_initialized)


_compiled_layers: weakref.WeakSet[torch.nn.Module] = weakref.WeakSet()
_original_make_pre_hook = DistributedDataParallel._make_forward_pre_hook


@functools.wraps(_original_make_pre_hook)
def _make_pre_hook_outside_compiled_layers(self):
    wait_for_params = _original_make_pre_hook(self)

    def hook(module, *args):
        if torch.compiler.is_compiling():
            return  # the compiled layer's own hook has waited for these parameters
        if module in _compiled_layers:
            for submodule in module.modules():
                wait_for_params(submodule)
        else:
            wait_for_params(module)

    return hook


def compile_layers(chunks: list[torch.nn.Module], backend: str = "inductor") -> int:
    """Compile every transformer layer of the model chunks in place (torch.compile's `backend`);
    returns how many."""
    tp_layers.get_tensor_model_parallel_group_if_none = _tp_group_or_default
    DistributedDataParallel._make_forward_pre_hook = _make_pre_hook_outside_compiled_layers
    layers = [m for chunk in chunks for m in chunk.modules() if isinstance(m, TransformerLayer)]
    for layer in layers:
        layer.forward = torch.compile(layer.forward, backend=backend)
        _compiled_layers.add(layer)
    return len(layers)
