"""Which layer implementation builds the model, and its megatron-core module specs.

Two implementations of the same Llama-style layer:

* "local": megatron-core's own linear layers, our SDPA core attention (model/attention.py) and
  our RMSNorm (model/norm.py). Runs anywhere torch runs, sequence parallelism included.
* "te": Transformer Engine's fused layers (norm fused into the QKV / FC1 GEMMs, TE attention).

Every norm is named explicitly (the layers' and the block's final norm): left to itself,
megatron picks the final norm from whatever is importable (apex -> FusedLayerNorm, which only
does LayerNorm; TE -> TENorm even for a "local" model).

`model.layer_impl=auto` resolves to "te" only on a GPU with TE importable. The resolved value
is recorded in every checkpoint (checkpoint/state_dict.py), because the two implementations name
their state slightly differently (TE adds `_extra_state` entries).
"""

from __future__ import annotations

from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
from megatron.core.transformer.spec_utils import ModuleSpec
from megatron.core.transformer.transformer_block import TransformerBlockSubmodules, get_num_layers_to_build

from alia_train.config.schema import LayerImpl
from alia_train.model.te_available import transformer_engine_available
from alia_train.model.attention import SDPAttention
from alia_train.model.norm import RMSNorm

LOCAL = LayerImpl.local.value
TE = LayerImpl.te.value


def resolve_layer_impl(layer_impl: str, cuda: bool) -> str:
    """'local' or 'te' for the configured `model.layer_impl` on this machine: a plain str,
    as it is recorded in checkpoints."""
    if layer_impl == LayerImpl.auto:
        return TE if cuda and transformer_engine_available() else LOCAL
    return TE if layer_impl == LayerImpl.te else LOCAL


def local_layer_spec() -> ModuleSpec:
    spec = get_gpt_layer_local_spec(normalization="RMSNorm")
    spec.submodules.input_layernorm = RMSNorm
    spec.submodules.pre_mlp_layernorm = RMSNorm
    spec.submodules.self_attention.submodules.core_attention = SDPAttention
    return spec


# What we pass to megatron's TE layer spec (tests bind it to the installed signature).
# megatron-core 0.19's TE spec takes no `normalization` argument: TE's fused norm + linear
# layers read `config.normalization` ("RMSNorm") themselves.
TE_SPEC_KWARGS: dict = {}


def te_layer_spec() -> ModuleSpec:
    if not transformer_engine_available():
        raise RuntimeError("model.layer_impl=te: Transformer Engine is not importable; install the [te] extra")
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_with_transformer_engine_spec

    return get_gpt_layer_with_transformer_engine_spec(**TE_SPEC_KWARGS)


def final_norm(impl: str):
    if impl == TE:
        from megatron.core.extensions.transformer_engine import TENorm

        return TENorm
    return RMSNorm


def block_spec(impl: str, config, vp_stage: int | None) -> TransformerBlockSubmodules:
    """The layers this pipeline (virtual) stage builds, and the block's final norm."""
    layer = te_layer_spec() if impl == TE else local_layer_spec()
    num_layers = get_num_layers_to_build(config, vp_stage=vp_stage)
    return TransformerBlockSubmodules(layer_specs=[layer] * num_layers, layer_norm=final_norm(impl))
