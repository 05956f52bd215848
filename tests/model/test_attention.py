"""SDPAttention under context parallelism: it is built where megatron's local attention refuses
CP > 1, keeps the real config, and the arguments megatron hands a core attention bind to it and
(with TE) to TE's; TE's own CP needs nothing from our spec. Parity of CP training with CP1 is
tests/parallel/test_context_parallel_layouts.py."""

from __future__ import annotations

import copy
import inspect

import pytest
import torch
import torch.nn.functional as F

from alia_train.config import load_config

TINY = ["+model=tiny", "train.seq_length=32", "parallel.cp=2"]


def _cp2_config():
    from alia_train.model.build import transformer_config

    return transformer_config(load_config(TINY), torch.float32, cuda=False)


def _core_attention_kwargs(config) -> dict:
    """What megatron's Attention passes its core attention (transformer/attention.py)."""
    from megatron.core.transformer.enums import AttnMaskType

    return dict(config=config, layer_number=1, attn_mask_type=AttnMaskType.causal, attention_type="self",
                cp_comm_type=config.cp_comm_type, softmax_scale=config.softmax_scale, pg_collection=None)


def test_megatrons_local_attention_refuses_cp_and_ours_is_built(runtime):
    from megatron.core.transformer.dot_product_attention import DotProductAttention

    from alia_train.model.attention import SDPAttention

    config = _cp2_config()
    with pytest.raises(AssertionError, match="Context parallelism"):
        DotProductAttention(**_core_attention_kwargs(config))
    attention = SDPAttention(**_core_attention_kwargs(config))
    assert attention.config is config and config.context_parallel_size == 2  # not the CP-1 copy
    assert attention.cp_group is not None


def test_a_cp_group_of_one_is_plain_causal_attention(runtime):
    from alia_train.model.attention import SDPAttention

    attention = SDPAttention(**_core_attention_kwargs(_cp2_config()))
    assert attention.cp_group.size() == 1
    s, b, heads, groups, d = 8, 2, 4, 2, 32
    q, k, v = torch.randn(s, b, heads, d), torch.randn(s, b, groups, d), torch.randn(s, b, groups, d)
    expected = F.scaled_dot_product_attention(
        *(t.permute(1, 2, 0, 3) for t in (q, k.repeat_interleave(2, 2), v.repeat_interleave(2, 2))), is_causal=True
    ).permute(2, 0, 1, 3).reshape(s, b, heads * d)
    torch.testing.assert_close(attention(q, k, v, None), expected)


def test_core_attention_arguments_bind_to_ours_and_to_transformer_engines():
    from megatron.core.extensions import transformer_engine as te_ext

    from alia_train.model.attention import SDPAttention

    kwargs = _core_attention_kwargs(copy.copy(_cp2_config()))
    inspect.signature(SDPAttention.__init__).bind(None, **kwargs)
    # Without TE installed megatron defines a placeholder class; bind to the real one where it is.
    if te_ext.HAVE_TE:
        inspect.signature(te_ext.TEDotProductAttention.__init__).bind(None, **kwargs)


def test_te_context_parallelism_needs_nothing_from_our_spec():
    """TE's CP reads the CP size from the config and the group from megatron's state; with
    cp_comm_type unset megatron asks TE for "p2p" (ring), as NeMo ran the published 32k stage."""
    from megatron.core.models.gpt import gpt_layer_specs

    from alia_train.model import spec

    config = _cp2_config()
    assert config.context_parallel_size == 2 and config.cp_comm_type is None
    te_spec = inspect.signature(gpt_layer_specs.get_gpt_layer_with_transformer_engine_submodules)
    assert not [name for name in te_spec.parameters if "cp" in name or "context" in name]
    assert not [key for key in spec.TE_SPEC_KWARGS if "cp" in key or "context" in key]
