"""From a ModelConfig to megatron-core GPTModel chunks (one per virtual pipeline stage)."""

from __future__ import annotations

import torch
from megatron.core import parallel_state
from megatron.core.models.gpt import GPTModel
from megatron.core.transformer import TransformerConfig
from megatron.core.transformer.module import Float16Module

from alia_train.config.derived import virtual_pipeline_size
from alia_train.config.schema import Config, LossImpl, Recompute
from alia_train.model.chunked_loss import ChunkedLossGPTModel
from alia_train.model.compile import compile_layers
from alia_train.model.init import initialize_weights
from alia_train.model.params import padded_vocab_size
from alia_train.model.spec import TE, block_spec, resolve_layer_impl, transformer_engine_available

__all__ = ["build_model", "transformer_config", "transformer_engine_available", "uses_te"]


def uses_te(cfg: Config, cuda: bool) -> bool:
    return resolve_layer_impl(cfg.model.layer_impl, cuda) == TE


def transformer_config(cfg: Config, dtype: torch.dtype, cuda: bool) -> TransformerConfig:
    m, par, tr = cfg.model, cfg.parallel, cfg.train
    recompute = {
        Recompute.none: {},
        Recompute.selective: {"recompute_granularity": "selective"},
        Recompute.full: {"recompute_granularity": "full", "recompute_method": "uniform",
                         "recompute_num_layers": tr.recompute_num_layers},
    }[Recompute(tr.recompute)]
    return TransformerConfig(
        num_layers=m.num_layers,
        hidden_size=m.hidden_size,
        ffn_hidden_size=m.ffn_hidden_size,
        num_attention_heads=m.num_attention_heads,
        num_query_groups=m.num_query_groups,
        kv_channels=m.hidden_size // m.num_attention_heads,
        normalization="RMSNorm",
        layernorm_epsilon=m.norm_eps,
        gated_linear_unit=True,
        activation_func=torch.nn.functional.silu,
        add_bias_linear=False,
        add_qkv_bias=False,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        init_method_std=m.init_std,
        # Weights are initialised by alia_train.model.init, identically for every layout.
        perform_initialization=False,
        use_cpu_initialization=not cuda,
        tensor_model_parallel_size=par.tp,
        pipeline_model_parallel_size=par.pp,
        virtual_pipeline_model_parallel_size=virtual_pipeline_size(par.vpp),
        context_parallel_size=par.cp,
        sequence_parallel=par.sp,
        params_dtype=dtype,
        bf16=dtype == torch.bfloat16,
        pipeline_dtype=dtype,
        autocast_dtype=dtype,
        # megatron's torch.compile'd SwiGLU; on CPU compiling it costs more than it saves.
        bias_activation_fusion=tr.fused_swiglu and cuda,
        bias_dropout_fusion=False,
        masked_softmax_fusion=False,
        # megatron's fused RoPE is Transformer Engine's kernel; without TE, train.compile fuses it.
        apply_rope_fusion=False,
        gradient_accumulation_fusion=False,
        persist_layer_norm=False,
        # megatron's native fused cross entropy casts its gradient to bf16: use it only where
        # that is the model's own precision.
        cross_entropy_loss_fusion=cuda and dtype == torch.bfloat16,
        cross_entropy_fusion_impl="native",
        calculate_per_token_loss=True,
        deallocate_pipeline_outputs=cuda,
        # gloo matches point-to-point messages in order of posting; batched isend/irecv of the
        # interleaved schedule can then pair a forward activation with the wrong receive.
        batch_p2p_comm=cuda,
        **recompute,
    )


def build_model(cfg: Config, vocab_size: int, dtype: torch.dtype, device: torch.device) -> list[torch.nn.Module]:
    """Build this rank's model chunks, initialised from cfg.train.seed.

    In bf16 each chunk is wrapped in megatron's Float16Module, as Megatron-LM does: bf16
    weights and activations, fp32 logits out of the last stage; the optimizer keeps fp32 main
    weights (training/optimizer.py)."""
    cuda = device.type == "cuda"
    tcfg = transformer_config(cfg, dtype, cuda)
    impl = resolve_layer_impl(cfg.model.layer_impl, cuda)
    vocab = padded_vocab_size(vocab_size, cfg.model.make_vocab_size_divisible_by, cfg.parallel.tp)
    vpp = tcfg.virtual_pipeline_model_parallel_size or 1
    chunks = []
    model_cls, loss_kwargs = GPTModel, {}
    if cfg.train.loss_impl == LossImpl.chunked:
        model_cls, loss_kwargs = ChunkedLossGPTModel, {"loss_chunk_size": cfg.train.loss_chunk_size}
    for vp_stage in range(vpp):
        chunk = model_cls(
            config=tcfg,
            transformer_layer_spec=block_spec(impl, tcfg, vp_stage if vpp > 1 else None),
            vocab_size=vocab,
            max_sequence_length=cfg.model.max_position_embeddings,
            pre_process=parallel_state.is_pipeline_first_stage(ignore_virtual=False, vp_stage=vp_stage),
            post_process=parallel_state.is_pipeline_last_stage(ignore_virtual=False, vp_stage=vp_stage),
            share_embeddings_and_output_weights=False,
            position_embedding_type="rope",
            rotary_percent=1.0,
            rotary_base=int(cfg.model.rope_theta),
            seq_len_interpolation_factor=(
                cfg.model.rope_scaling_factor if cfg.model.rope_scaling_factor != 1.0 else None
            ),
            vp_stage=vp_stage if vpp > 1 else None,
            **loss_kwargs,
        )
        chunks.append(chunk.to(device))
    initialize_weights(chunks, cfg.model, cfg.train.seed)
    if tcfg.bf16:
        chunks = [Float16Module(tcfg, chunk) for chunk in chunks]
    if cfg.train.compile:
        compile_layers(chunks, str(cfg.train.compile_backend))
    return chunks
