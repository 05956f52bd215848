"""torch.compile of the transformer layers (`train.compile`).

Each megatron TransformerLayer is compiled in place (`nn.Module.compile`), so parameter names,
state dicts and checkpoints are those of the eager model. Dynamo inlines nn modules and guards
on their structure rather than their identity, so all layers of a model share one compiled
graph instead of one compile each. Inside a layer, inductor fuses what has no fused kernel
without Transformer Engine: the RMSNorms, RoPE, SwiGLU and the residual adds around the
matmuls and the attention kernel.

One megatron-core detail would split every layer into pieces: RowParallelLinear passes
`tp_group=None` on each forward, and `get_tensor_model_parallel_group_if_none` then warns on
rank 0 (a deprecation warning), which dynamo cannot trace (a graph break in the middle of the
attention and the MLP block). With compile on, the name that megatron's linear layers call
resolves the default group the same way, without the warning.
"""

from __future__ import annotations

import torch
from megatron.core import parallel_state
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


def compile_layers(chunks: list[torch.nn.Module]) -> int:
    """Compile every transformer layer of the model chunks in place; returns how many."""
    tp_layers.get_tensor_model_parallel_group_if_none = _tp_group_or_default
    layers = [m for chunk in chunks for m in chunk.modules() if isinstance(m, TransformerLayer)]
    for layer in layers:
        layer.compile()
    return len(layers)
