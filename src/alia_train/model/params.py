"""Parameter counts from the config alone (no model is allocated).

Layout of one Salamandra-family layer: RMSNorm, QKV projection (GQA), output projection,
RMSNorm, SwiGLU MLP (fused gate+up, down). No biases. Untied input and output embeddings.
"""

from __future__ import annotations

from dataclasses import dataclass

from alia_train.config.schema import ModelConfig


def padded_vocab_size(vocab_size: int, divisible_by: int, tp: int) -> int:
    """Megatron pads the embedding to a multiple of `divisible_by * tp` rows."""
    multiple = divisible_by * tp
    return -(-vocab_size // multiple) * multiple


@dataclass(frozen=True)
class ParamCounts:
    embedding: int  # input embedding
    output: int  # output layer (untied)
    per_layer: int
    final_norm: int
    num_layers: int

    @property
    def transformer(self) -> int:
        return self.per_layer * self.num_layers + self.final_norm

    @property
    def non_embedding(self) -> int:
        return self.transformer

    @property
    def total(self) -> int:
        return self.embedding + self.output + self.transformer


def layer_params(m: ModelConfig) -> int:
    head_dim = m.hidden_size // m.num_attention_heads
    q = m.hidden_size * m.hidden_size
    kv = 2 * m.hidden_size * m.num_query_groups * head_dim
    out = m.hidden_size * m.hidden_size
    mlp = 3 * m.hidden_size * m.ffn_hidden_size
    norms = 2 * m.hidden_size
    return q + kv + out + mlp + norms


def count_params(m: ModelConfig, vocab_size: int | None = None) -> ParamCounts:
    """Counts with the tokenizer's vocabulary (unpadded), as model cards report them."""
    vocab = vocab_size if vocab_size is not None else m.vocab_size
    if vocab is None:
        raise ValueError("model.vocab_size is unknown: pass the tokenizer's vocabulary size")
    return ParamCounts(
        embedding=vocab * m.hidden_size,
        output=vocab * m.hidden_size,
        per_layer=layer_params(m),
        final_norm=m.hidden_size,
        num_layers=m.num_layers,
    )
