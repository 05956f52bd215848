"""Which megatron-core tensor is which Hugging Face Llama tensor, and how they are cut.

Names and shapes on the megatron side are the *global* tensors of a dist_checkpointing
checkpoint: layers stacked on a leading axis, tensor-parallel shards already put back
together, so one mapping serves every TP / PP / VPP / DP layout:

* linear_qkv (L, (heads + 2 * groups) * d, hidden): per query group g, the group's query heads
  then its key head then its value head ([q_g; k_g; v_g]), groups in order;
* linear_fc1 (L, 2 * ffn, hidden): [gate; up] (the SwiGLU factory stores the TP shards of gate
  and of up as two halves of the global tensor);
* embedding / output_layer (padded vocab, hidden): rows past the tokenizer's vocabulary are
  padding and are dropped.

RoPE needs no permutation: megatron's default (rotary_interleaved=False) rotates halves, which
is Hugging Face Llama's convention (the logits parity test holds it to that).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

EMBEDDING = "embedding.word_embeddings.weight"
OUTPUT = "output_layer.weight"
FINAL_NORM = "decoder.final_layernorm.weight"
QKV = "decoder.layers.self_attention.linear_qkv.weight"
QKV_NORM = "decoder.layers.self_attention.linear_qkv.layer_norm_weight"
PROJ = "decoder.layers.self_attention.linear_proj.weight"
FC1 = "decoder.layers.mlp.linear_fc1.weight"
FC1_NORM = "decoder.layers.mlp.linear_fc1.layer_norm_weight"
FC2 = "decoder.layers.mlp.linear_fc2.weight"

LAYER_KEYS = (QKV_NORM, QKV, PROJ, FC1_NORM, FC1, FC2)

# Modules whose (empty) `_extra_state` a model asks for when it loads a checkpoint: the local
# layer spec's linears, plus Transformer Engine's core attention, so that checkpoints written
# here load into CPU (local) and GPU (TE) runs alike. Unrequested objects are ignored on load.
EXTRA_STATE_MODULES = (
    "decoder.layers.self_attention.linear_qkv",
    "decoder.layers.self_attention.linear_proj",
    "decoder.layers.self_attention.core_attention",
    "decoder.layers.mlp.linear_fc1",
    "decoder.layers.mlp.linear_fc2",
)


@dataclass(frozen=True)
class Arch:
    """The shapes that conversion needs (no padding: `vocab_size` is the tokenizer's)."""

    num_layers: int
    hidden_size: int
    ffn_hidden_size: int
    num_attention_heads: int
    num_query_groups: int
    vocab_size: int

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def heads_per_group(self) -> int:
        return self.num_attention_heads // self.num_query_groups

    @property
    def qkv_rows(self) -> int:
        return (self.num_attention_heads + 2 * self.num_query_groups) * self.head_dim

    def megatron_layer_shapes(self) -> dict[str, tuple[int, ...]]:
        """Per-layer shape (without the stacked layer axis) of each layer tensor."""
        h, f = self.hidden_size, self.ffn_hidden_size
        return {
            QKV_NORM: (h,),
            QKV: (self.qkv_rows, h),
            PROJ: (h, self.num_attention_heads * self.head_dim),
            FC1_NORM: (h,),
            FC1: (2 * f, h),
            FC2: (h, f),
        }


def hf_layer_names(layer: int) -> dict[str, str]:
    p = f"model.layers.{layer}."
    return {
        "input_layernorm": p + "input_layernorm.weight",
        "q": p + "self_attn.q_proj.weight",
        "k": p + "self_attn.k_proj.weight",
        "v": p + "self_attn.v_proj.weight",
        "o": p + "self_attn.o_proj.weight",
        "post_attention_layernorm": p + "post_attention_layernorm.weight",
        "gate": p + "mlp.gate_proj.weight",
        "up": p + "mlp.up_proj.weight",
        "down": p + "mlp.down_proj.weight",
    }


HF_EMBED = "model.embed_tokens.weight"
HF_NORM = "model.norm.weight"
HF_LM_HEAD = "lm_head.weight"


def hf_shapes(a: Arch) -> dict[str, tuple[int, ...]]:
    """Every tensor of the Hugging Face model, in the order they are written."""
    h, f, d = a.hidden_size, a.ffn_hidden_size, a.head_dim
    shapes: dict[str, tuple[int, ...]] = {HF_EMBED: (a.vocab_size, h)}
    for layer in range(a.num_layers):
        n = hf_layer_names(layer)
        shapes.update({
            n["input_layernorm"]: (h,),
            n["q"]: (a.num_attention_heads * d, h),
            n["k"]: (a.num_query_groups * d, h),
            n["v"]: (a.num_query_groups * d, h),
            n["o"]: (h, a.num_attention_heads * d),
            n["post_attention_layernorm"]: (h,),
            n["gate"]: (f, h),
            n["up"]: (f, h),
            n["down"]: (h, f),
        })
    shapes[HF_NORM] = (h,)
    shapes[HF_LM_HEAD] = (a.vocab_size, h)
    return shapes


def split_qkv(qkv: torch.Tensor, a: Arch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Megatron's grouped [q_g; k_g; v_g] rows -> q_proj, k_proj, v_proj."""
    d, hpg, g = a.head_dim, a.heads_per_group, a.num_query_groups
    grouped = qkv.reshape(g, (hpg + 2) * d, qkv.shape[-1])
    q, k, v = torch.split(grouped, [hpg * d, d, d], dim=1)
    cols = qkv.shape[-1]
    return q.reshape(g * hpg * d, cols), k.reshape(g * d, cols), v.reshape(g * d, cols)


def fuse_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, a: Arch) -> torch.Tensor:
    d, hpg, g = a.head_dim, a.heads_per_group, a.num_query_groups
    cols = q.shape[-1]
    grouped = torch.cat(
        [q.reshape(g, hpg * d, cols), k.reshape(g, d, cols), v.reshape(g, d, cols)], dim=1
    )
    return grouped.reshape(a.qkv_rows, cols)


def split_fc1(fc1: torch.Tensor, a: Arch) -> tuple[torch.Tensor, torch.Tensor]:
    """[gate; up] -> gate_proj, up_proj."""
    return fc1[: a.ffn_hidden_size], fc1[a.ffn_hidden_size :]
