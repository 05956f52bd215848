"""Weight initialisation that does not depend on the parallel layout.

Each logical weight (a key of the model's sharded state dict, per layer) is drawn from its own
generator seeded by (seed, key, layer), in its full global shape, and every rank copies out the
shard it owns. The same seed therefore gives the same model under any TP / PP / VPP / DP, which
is what makes runs comparable across layouts and lets tests compare them step by step.
"""

from __future__ import annotations

import hashlib
import math

import torch
from megatron.core.dist_checkpointing.mapping import ShardedTensor, ShardedTensorFactory

from alia_train.config.schema import ModelConfig


def _stream_seed(seed: int, key: str, layer_offsets: tuple[int, ...]) -> int:
    digest = hashlib.sha256(f"{seed}|{key}|{layer_offsets}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def _std_for(key: str, m: ModelConfig) -> float | None:
    """None means 'ones' (norm weights). Output projections of each block get the
    depth-scaled std (GPT-2 / Megatron `scaled_init_method_normal`)."""
    if "layernorm" in key or key.endswith("layer_norm_weight"):
        return None
    if key.endswith("linear_proj.weight") or key.endswith("linear_fc2.weight"):
        return m.init_std / math.sqrt(2.0 * m.num_layers)
    return m.init_std


@torch.no_grad()
def _fill(sh: ShardedTensor, seed: int, m: ModelConfig) -> None:
    if sh.data is None or sh.flattened_range is not None:
        raise RuntimeError(f"cannot initialise {sh.key}: unexpected flattened shard")
    std = _std_for(sh.key, m)
    if std is None:
        sh.data.fill_(1.0)
        return
    n_pre = sh.prepend_axis_num
    layer_offsets = tuple(sh.global_offset[:n_pre])
    shape = sh.global_shape[n_pre:]
    gen = torch.Generator(device=sh.data.device)
    gen.manual_seed(_stream_seed(seed, sh.key, layer_offsets))
    full = torch.randn(shape, generator=gen, device=sh.data.device, dtype=torch.float32)
    index = tuple(
        slice(off, off + size) for off, size in zip(sh.global_offset[n_pre:], sh.local_shape)
    )
    sh.data.copy_(full[index].mul_(std).view(sh.data.shape).to(sh.data.dtype))


def _walk(obj):
    if isinstance(obj, dict):
        for v in obj.values():
            yield from _walk(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _walk(v)
    else:
        yield obj


@torch.no_grad()
def initialize_weights(model_chunks: list[torch.nn.Module], m: ModelConfig, seed: int) -> None:
    seen: set[int] = set()
    for chunk in model_chunks:
        for item in _walk(chunk.sharded_state_dict()):
            if isinstance(item, ShardedTensorFactory):
                shards = item.build_fn(item.key, item.data, item.replica_id, item.flattened_range)
                for sh in _walk(shards):
                    _fill(sh, seed, m)
                seen.add(id(item.data))
            elif isinstance(item, ShardedTensor) and isinstance(item.data, torch.nn.Parameter | torch.Tensor):
                if not item.key.endswith("._extra_state"):
                    _fill(item, seed, m)
                    seen.add(id(item.data))
    missing = [n for c in model_chunks for n, p in c.named_parameters() if id(p) not in seen]
    if missing:
        raise RuntimeError(f"initialize_weights: no sharded tensor for parameters {missing[:5]}")
