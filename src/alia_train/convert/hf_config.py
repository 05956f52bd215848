"""Hugging Face `config.json` / `generation_config.json` for LlamaForCausalLM, both ways.

Written in the long-standing Llama layout (`rope_theta`, `rope_scaling`, `torch_dtype`) that
transformers 4 reads as is and transformers 5 converts on load.
"""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import torch

from alia_train.config.schema import ModelConfig
from alia_train.convert.errors import ConversionError
from alia_train.convert.mapping import Arch
from alia_train.convert.tokenizer import SpecialTokens

_DTYPE_NAMES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}


def model_config_from_yaml(text: str) -> ModelConfig:
    """The `model:` section of a config.yaml written by alia-train (unknown keys ignored, so a
    checkpoint from an older or newer alia-train still converts)."""
    from alia_train.config.load import ConfigError, config_tree

    try:
        section = config_tree(text).get("model")
    except ConfigError:
        section = None
    if not isinstance(section, dict):
        raise ConversionError("the checkpoint's config_yaml has no model section")
    known = {f.name for f in fields(ModelConfig)}
    return ModelConfig(**{k: v for k, v in section.items() if k in known})


def arch_of(m: ModelConfig, vocab_size: int) -> Arch:
    return Arch(m.num_layers, m.hidden_size, m.ffn_hidden_size, m.num_attention_heads, m.num_query_groups, vocab_size)


def _none_if_negative(i: int) -> int | None:
    return i if i >= 0 else None


def llama_config(m: ModelConfig, vocab_size: int, special: SpecialTokens, dtype: torch.dtype) -> dict:
    rope_scaling = None
    if m.rope_scaling_factor != 1.0:
        # model/build.py passes the factor as megatron's seq_len_interpolation_factor, which
        # divides the positions (RotaryEmbedding.get_freqs_non_repeated): HF's "linear" scaling,
        # inv_freq / factor. Not megatron's rope_scaling (Llama 3.x per-frequency, HF "llama3"),
        # which build.py never enables; tests/convert checks the logits both ways.
        rope_scaling = {"type": "linear", "rope_type": "linear", "factor": float(m.rope_scaling_factor)}
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": vocab_size,
        "hidden_size": m.hidden_size,
        "intermediate_size": m.ffn_hidden_size,
        "num_hidden_layers": m.num_layers,
        "num_attention_heads": m.num_attention_heads,
        "num_key_value_heads": m.num_query_groups,
        "head_dim": m.hidden_size // m.num_attention_heads,
        "hidden_act": "silu",
        "max_position_embeddings": m.max_position_embeddings,
        "rms_norm_eps": m.norm_eps,
        "rope_theta": float(m.rope_theta),
        "rope_scaling": rope_scaling,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "tie_word_embeddings": False,
        "initializer_range": m.init_std,
        "pretraining_tp": 1,
        "use_cache": True,
        "bos_token_id": _none_if_negative(special.bos_id),
        "eos_token_id": _none_if_negative(special.eos_id),
        "pad_token_id": _none_if_negative(special.pad_id),
        "torch_dtype": _DTYPE_NAMES[dtype],
    }


def generation_config(special: SpecialTokens) -> dict:
    return {
        "bos_token_id": _none_if_negative(special.bos_id),
        "eos_token_id": _none_if_negative(special.eos_id),
        "pad_token_id": _none_if_negative(special.pad_id),
    }


def write_json(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n")


def read_hf_config(hf_dir: Path) -> dict:
    path = hf_dir / "config.json"
    if not path.is_file():
        raise ConversionError(f"{hf_dir}: no config.json (not a Hugging Face model directory)")
    try:
        return json.loads(path.read_text())
    except ValueError as e:
        raise ConversionError(f"{path}: not valid JSON ({e})") from None


def _rope(hf: dict) -> tuple[float | None, float, str | None]:
    """(theta, linear scaling factor, unsupported scaling type) from either config layout."""
    params = hf.get("rope_parameters") or {}
    scaling = hf.get("rope_scaling") or {}
    theta = hf.get("rope_theta", params.get("rope_theta"))
    kind = scaling.get("rope_type", scaling.get("type")) or params.get("rope_type", "default")
    factor = scaling.get("factor", params.get("factor", 1.0))
    if kind in ("default", None):
        return theta, 1.0, None
    if kind == "linear":
        return theta, float(factor), None
    return theta, 1.0, kind


def check_llama_config(hf: dict, m: ModelConfig) -> int:
    """Every difference between a Hugging Face config and the model config, at once.
    Returns the Hugging Face vocabulary size."""
    archs = hf.get("architectures") or []
    if hf.get("model_type") != "llama" or (archs and "LlamaForCausalLM" not in archs):
        got = ", ".join(archs) or hf.get("model_type", "unknown")
        raise ConversionError(f"config.json describes a {got} model; only LlamaForCausalLM checkpoints can be imported")

    heads = hf.get("num_attention_heads")
    theta, factor, unsupported = _rope(hf)
    problems: list[str] = []
    if unsupported:
        problems.append(f"rope scaling '{unsupported}' is not supported (only none or linear)")
    pairs = [
        ("hidden_size", "hidden_size", hf.get("hidden_size"), m.hidden_size),
        ("intermediate_size", "ffn_hidden_size", hf.get("intermediate_size"), m.ffn_hidden_size),
        ("num_hidden_layers", "num_layers", hf.get("num_hidden_layers"), m.num_layers),
        ("num_attention_heads", "num_attention_heads", heads, m.num_attention_heads),
        ("num_key_value_heads", "num_query_groups", hf.get("num_key_value_heads", heads), m.num_query_groups),
        ("rms_norm_eps", "norm_eps", hf.get("rms_norm_eps"), m.norm_eps),
        ("rope_theta", "rope_theta", theta, m.rope_theta),
        ("rope_scaling.factor", "rope_scaling_factor", factor, m.rope_scaling_factor),
        ("max_position_embeddings", "max_position_embeddings", hf.get("max_position_embeddings"),
         m.max_position_embeddings),
    ]
    if m.vocab_size is not None:
        pairs.append(("vocab_size", "vocab_size", hf.get("vocab_size"), m.vocab_size))
    for hf_key, key, got, want in pairs:
        if got is None or (float(got) != float(want)):
            problems.append(f"{hf_key} is {got} but model.{key} is {want}")
    hidden = hf.get("hidden_size")
    if isinstance(hidden, int) and heads and hf.get("head_dim", hidden // heads) != hidden // heads:
        # megatron's kv_channels is hidden_size / heads in alia-train's models.
        problems.append(f"head_dim is {hf.get('head_dim')}, not hidden_size / num_attention_heads = {hidden // heads}")
    fixed = (("hidden_act", "silu"), ("attention_bias", False), ("mlp_bias", False), ("tie_word_embeddings", False))
    for key, want in fixed:
        got = hf.get(key, want)  # LlamaConfig's defaults are what alia-train needs
        if got != want:
            problems.append(f"{key} is {got}; alia-train models need {want}")
    if problems:
        raise ConversionError(
            "the Hugging Face model does not match the model config: " + "; ".join(problems)
            + " (choose the matching +model=NAME or override model.* keys)"
        )
    vocab = hf.get("vocab_size")
    if not isinstance(vocab, int) or vocab <= 0:
        raise ConversionError(f"config.json has no valid vocab_size ({vocab})")
    return vocab
